"""Bad input and faults against `internvqa_jax.train` (docs/errors.md).

Fast cases fail before any data or model is built; the resume and SIGTERM
cases train the tiny InternVideo2 of tests/train_configs/tiny.py for a few
steps on synthetic_compressed/tiny.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from internvqa_jax import metric_writer, saved_config, workdir_lock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "tests", "train_configs", "tiny.py")
STAGES = os.path.join(REPO, "tests", "train_configs", "tiny_stages.py")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  from internvqa_jax.data import sources

  d = str(tmp_path_factory.mktemp("tfds"))
  sources.build("synthetic_compressed/tiny", d)
  return d


def _cli(args, timeout=600, **popen):
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  env.update(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1", PYTHONPATH=REPO)
  cmd = [sys.executable, "-m", "internvqa_jax.train", *args]
  if popen:
    return subprocess.Popen(
      cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen
    )
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _one_line_error(r, *needles):
  err = r.stderr.strip()
  assert "Traceback" not in err, err[-3000:]
  last = err.splitlines()[-1]
  assert last.startswith("error: "), err[-3000:]
  for n in needles:
    assert n in last, last
  return last


def _steps(workdir):
  """Steps of the training rows of metrics.jsonl (evaluation rows have no 'loss')."""
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return [r["step"] for r in rows if "loss" in r]


# Item 8 (train): usage errors are one line with exit code 2, before anything is written.
@pytest.mark.parametrize(
  "override,needles",
  [
    ("--config.optim.lr_typo=1", ["--config.optim.lr_typo=1", "no key 'lr_typo'"]),
    ("--config.mode=finetunee", ["config.mode='finetunee'", "expected 'finetune' or 'distill'"]),
    ("--config.compute_dtype=bf16", ["config.compute_dtype='bf16'", "expected one of"]),
  ],
)
def test_config_typos_are_one_line_usage_errors(tmp_path, override, needles):
  workdir = tmp_path / "w"
  r = _cli(["--config", CONFIG, "--workdir", str(workdir), override])
  assert r.returncode == 2, r.stderr[-3000:]
  _one_line_error(r, *needles)
  assert not workdir.exists() or os.listdir(workdir) == []
  r = _cli(["--config", CONFIG, "--workdir", str(workdir), override, "--verbose"])
  assert r.returncode == 2 and "Traceback" in r.stderr


def test_workdir_that_is_a_file(tmp_path):
  path = tmp_path / "w"
  path.write_text("not a directory")
  r = _cli(["--config", CONFIG, "--workdir", str(path)])
  assert r.returncode == 1
  _one_line_error(r, str(path), "is a file; expected a directory")
  assert path.read_text() == "not a directory"


# Item 7: one trainer per workdir.
def test_second_trainer_is_refused_and_stale_lock_taken_over(tmp_path):
  workdir = tmp_path / "w"
  workdir.mkdir()
  with workdir_lock.WorkdirLock(str(workdir), log=lambda *a: None):  # A live owner: this process.
    r = _cli(["--config", CONFIG, "--workdir", str(workdir)])
    assert r.returncode == 1
    _one_line_error(r, str(workdir), "in use by another trainer", f"pid {os.getpid()}")
    assert os.listdir(workdir) == [workdir_lock.LOCK_FILE]  # Nothing else written.
  assert not (workdir / workdir_lock.LOCK_FILE).exists()  # Released on exit.
  # A lock of a process that is gone is stale: taken over, and said so.
  (workdir / workdir_lock.LOCK_FILE).write_text(
    json.dumps({"pid": 999_999_999, "host": os.uname().nodename})
  )
  said = []
  with workdir_lock.WorkdirLock(str(workdir), log=said.append) as lock:
    owner = json.loads((workdir / workdir_lock.LOCK_FILE).read_text())
    assert lock.held and owner["pid"] == os.getpid()
  assert "stale lock of process 999999999" in said[0]
  # An empty lock file (its writer died between creating and writing it) is debris once old.
  lock_path = workdir / workdir_lock.LOCK_FILE
  lock_path.write_text("")
  with pytest.raises(workdir_lock.WorkdirLockedError):  # Young: maybe being written right now.
    workdir_lock.WorkdirLock(str(workdir)).acquire()
  old = time.time() - 2 * workdir_lock.EMPTY_LOCK_GRACE_S
  os.utime(lock_path, (old, old))
  with workdir_lock.WorkdirLock(str(workdir), log=said.append):
    assert json.loads(lock_path.read_text())["pid"] == os.getpid()
  assert "empty or unreadable lock" in said[-1]


# Item 6: a changed config is compared before anything is written.
def test_changed_config_is_refused_and_saved_config_kept(tmp_path):
  workdir = tmp_path / "w"
  workdir.mkdir()
  saved = {"mode": "finetune", "total_steps": 4, "optim": {"lr": 0.001}}
  (workdir / "config.json").write_text(json.dumps(saved))
  (workdir / "checkpoints" / "2").mkdir(parents=True)
  before = (workdir / "config.json").read_text()
  new = {"mode": "finetune", "total_steps": 4, "optim": {"lr": 0.002}}
  with pytest.raises(saved_config.ConfigChangedError, match=r"optim\.lr: 0\.001 -> 0\.002"):
    saved_config.check_and_save(json.dumps(new), str(workdir), allow_change=True)
  assert (workdir / "config.json").read_text() == before
  longer = {**saved, "total_steps": 8}
  with pytest.raises(saved_config.ConfigChangedError, match="total_steps: 4 -> 8.*--allow_config"):
    saved_config.check_and_save(json.dumps(longer), str(workdir))
  assert (workdir / "config.json").read_text() == before
  said = []
  saved_config.check_and_save(json.dumps(longer), str(workdir), allow_change=True, log=said.append)
  assert json.loads((workdir / "config.json").read_text())["total_steps"] == 8
  assert json.loads((workdir / "config.previous.json").read_text()) == saved
  assert "total_steps: 4 -> 8" in said[0]
  # The dataset may move (operational); the loader's worker count is in the iterator state.
  data = {"data_dir": "/a", "pipeline": {"worker_count": 2}}
  (workdir / "config.json").write_text(json.dumps({**longer, "data": data}))
  moved = {**longer, "data": {**data, "data_dir": "/b"}}
  saved_config.check_and_save(json.dumps(moved), str(workdir), log=said.append)
  assert 'data.data_dir: "/a" -> "/b"' in said[-1]
  more = {**moved, "data": {"data_dir": "/b", "pipeline": {"worker_count": 4}}}
  with pytest.raises(saved_config.ConfigChangedError, match=r"data\.pipeline\.worker_count"):
    saved_config.check_and_save(json.dumps(more), str(workdir), allow_change=True)


def test_changed_config_cli_exit_code(tmp_path):
  workdir = tmp_path / "w"
  (workdir / "checkpoints" / "2").mkdir(parents=True)
  saved = '{"mode": "finetune", "marker": "the original config"}'
  (workdir / "config.json").write_text(saved)
  r = _cli(["--config", CONFIG, "--workdir", str(workdir)])
  assert r.returncode == 2
  _one_line_error(r, str(workdir / "config.json"), "differs from the one")
  assert (workdir / "config.json").read_text() == saved


# Item 11: metrics.jsonl is cut back to the restored step on resume.
def test_resume_logs_each_step_once(data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  arg = f"{CONFIG}:steps=5,data_dir={data_dir},ckpt_every=2"
  r = _cli(["--config", arg, "--workdir", workdir, "--config.stop_after_steps=3"])
  assert r.returncode == 0, r.stdout + r.stderr[-3000:]
  assert _steps(workdir) == [1, 2, 3]
  # A kill after step 3 was logged but before its checkpoint: only step 2's survives.
  import shutil

  shutil.rmtree(os.path.join(workdir, "checkpoints", "3"))
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write('{"step": 4, "lo')  # A row torn by the kill.
  r = _cli(["--config", arg, "--workdir", workdir])
  assert r.returncode == 0, r.stdout + r.stderr[-3000:]
  assert "resumed from step 2" in r.stdout
  assert "dropped 2 row(s) logged after step 2" in r.stdout
  assert "config changed on resume (operational keys): stop_after_steps: 3 -> 0" in r.stdout
  assert _steps(workdir) == [1, 2, 3, 4, 5]


def test_metric_writer_truncate_after(tmp_path):
  w = metric_writer.MetricWriter(str(tmp_path), tensorboard=False)
  for s in (1, 2, 3, 4):
    w.write(s, {"loss": float(s)})
  assert w.truncate_after(2) == 2
  w.write(3, {"loss": 30.0})
  w.close()
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [(r["step"], r["loss"]) for r in rows] == [(1, 1.0), (2, 2.0), (3, 30.0)]


# Item 2: SIGTERM in a staged config stops the whole run (exit 0); a rerun resumes that stage.
def test_sigterm_in_a_stage_stops_the_run_and_rerun_resumes_it(data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  arg = f"{STAGES}:steps_a=100000,data_dir={data_dir}"
  p = _cli(["--config", arg, "--workdir", workdir], bufsize=1)
  metrics = os.path.join(workdir, "a", "metrics.jsonl")
  deadline = time.time() + 300
  while not (os.path.exists(metrics) and os.path.getsize(metrics) > 0):
    assert p.poll() is None, p.stdout.read()
    assert time.time() < deadline, "training did not start"
    time.sleep(0.5)
  p.send_signal(signal.SIGTERM)
  out = p.communicate(timeout=300)[0]
  assert p.returncode == 0, out[-3000:]
  assert "stopped in stage a" in out and "Traceback" not in out
  assert not os.path.exists(os.path.join(workdir, "b"))
  assert not os.path.exists(os.path.join(workdir, "results.json"))
  stopped = max(_steps(os.path.join(workdir, "a")))
  # Rerun with stage a shortened to finish soon (a results-only change: --allow_config_change).
  arg = f"{STAGES}:steps_a={stopped + 1},data_dir={data_dir}"
  r = _cli(["--config", arg, "--workdir", workdir, "--allow_config_change"])
  assert r.returncode == 0, r.stdout + r.stderr[-3000:]
  assert f"resumed from step {stopped}" in r.stdout
  results = json.load(open(os.path.join(workdir, "results.json")))
  assert set(results) == {"first", "second"}
  # A third run finds both stages finished and trains nothing.
  r = _cli(["--config", arg, "--workdir", workdir, "--allow_config_change"])
  assert r.returncode == 0 and r.stdout.count("finished earlier") == 2, r.stdout
