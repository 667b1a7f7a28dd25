"""The trainer: frozen teacher, sharded steps, resume, NaN stop, preemption, config errors.

Everything runs on tiny InternVideo2 models; the data tests use the
`synthetic_compressed/tiny` set (32 really-encoded clips), built once per
session into a temporary TFDS directory.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from internvqa_jax import sharding, train, tree_paths
from internvqa_jax.config_files import load_by_path
from tests.train_configs import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "tests", "train_configs", "tiny.py")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  from internvqa_jax.data import sources

  d = str(tmp_path_factory.mktemp("tfds"))
  sources.build("synthetic_compressed/tiny", d)
  return d


def _batch(config, n, seed=0):
  rng = np.random.default_rng(seed)
  return {
    "video": rng.standard_normal((n, 2, 28, 28, 3)).astype(np.float32),
    "label": rng.uniform(0.2, 0.9, n).astype(np.float32),
  }


def _run(config, mesh, seed=0):
  return train.build_run(config, mesh, jax.random.key(seed), log=lambda *a: None)


def _host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


def _steps(run, config, mesh, n):
  state, losses = run.state, []
  for i in range(n):
    batch = sharding.make_global_batch(_batch(config, config.batch_size, seed=i), mesh)
    state, m = run.train_step(state, run.frozen, batch, jax.random.key(1))
    losses.append(float(m["loss"]))
  return state, losses


# ------------------------------------------------------------ frozen teacher --


@pytest.mark.parametrize("preset", ["paper", "authors_code"])
def test_frozen_teacher_parameters_stay_bit_identical(preset):
  config = tiny.get_config(f"mode=distill,preset={preset}")
  mesh = sharding.make_mesh(data=1, fsdp=1, devices=jax.devices()[:1])
  run = _run(config, mesh)
  teacher0 = tree_paths.flatten(
    _host(tree_paths.merge_trees(run.state["teacher"]["params"], run.frozen["teacher"]))
  )
  student0 = tree_paths.flatten(_host(run.state["student"]["params"]))
  state, _ = _steps(run, config, mesh, 3)
  teacher1 = tree_paths.flatten(
    _host(tree_paths.merge_trees(state["teacher"]["params"], run.frozen["teacher"]))
  )
  student1 = tree_paths.flatten(_host(state["student"]["params"]))

  depth = tiny.TEACHER["depth"]
  trainable = re.compile(
    rf"blocks_{depth - 1}/.*|clip_projector/.*|fc_norm/.*|head/.*"
    + ("|patch_embed/.*|cls_token|pos_embed" if preset == "authors_code" else "")
  )
  assert set(tree_paths.flatten(run.frozen["teacher"])) == {
    k for k in teacher0 if not trainable.fullmatch(k)
  }
  for k in teacher0:
    if trainable.fullmatch(k):
      assert not np.array_equal(teacher0[k], teacher1[k]), f"trainable {k} did not change"
    else:
      assert np.array_equal(teacher0[k], teacher1[k]), f"frozen {k} changed"
  changed = [k for k in student0 if not np.array_equal(student0[k], student1[k])]
  assert len(changed) == len(student0), set(student0) - set(changed)
  # Frozen leaves have no optimizer state at all.
  opt_leaves = jax.tree.leaves(state["teacher"]["opt"])
  n_opt = sum(int(np.prod(x.shape)) for x in opt_leaves if hasattr(x, "shape") and x.ndim)
  n_trainable = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state["teacher"]["params"]))
  assert n_opt == 2 * n_trainable  # Adam mu and nu for trainable leaves only.


def test_paper_preset_skips_backward_through_frozen_trunk():
  """The stop_gradient boundary removes the trunk's backward pass: fewer FLOPs than authors_code."""
  mesh = sharding.make_mesh(data=1, fsdp=1, devices=jax.devices()[:1])
  flops = {}
  for preset in ("paper", "authors_code"):
    config = tiny.get_config(f"mode=distill,preset={preset}")
    # Unrolled blocks: XLA's cost analysis counts a scan's loop body once.
    config.teacher.kwargs.scan_blocks = False
    run = _run(config, mesh)
    batch = sharding.make_global_batch(_batch(config, config.batch_size), mesh)
    compiled = run.train_step.lower(run.state, run.frozen, batch, jax.random.key(0)).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops[preset] = cost["flops"]
  assert flops["paper"] < 0.8 * flops["authors_code"], flops


# ------------------------------------------------------------------ sharding --


def test_sharded_distill_step_splits_teacher_and_matches_unsharded():
  config = tiny.get_config("mode=distill,fsdp=4")
  mesh8 = sharding.make_mesh(data=2, fsdp=4)
  mesh1 = sharding.make_mesh(data=1, fsdp=1, devices=jax.devices()[:1])
  run8, run1 = _run(config, mesh8), _run(config, mesh1)

  # Large teacher tensors are split 4 ways over 'fsdp' (frozen trunk and trainable block alike).
  fc1_frozen = run8.frozen["teacher"]["blocks_0"]["mlp"]["fc1"]["kernel"]  # (128, 512)
  fc1_train = run8.state["teacher"]["params"]["blocks_2"]["mlp"]["fc1"]["kernel"]
  for arr in (fc1_frozen, fc1_train):
    assert arr.shape == (128, 512)
    assert {s.data.shape for s in arr.addressable_shards} == {(128, 128)}
    assert len(arr.addressable_shards) == 8
  mu = run8.state["teacher"]["opt"]
  mu_leaves = [x for x in jax.tree.leaves(mu) if getattr(x, "shape", None) == (128, 512)]
  assert mu_leaves and all(
    {s.data.shape for s in x.addressable_shards} == {(128, 128)} for x in mu_leaves
  )
  # Small tensors stay whole.
  ln = run8.state["teacher"]["params"]["fc_norm"]["scale"]
  assert {s.data.shape for s in ln.addressable_shards} == {(768,)}

  _, losses8 = _steps(run8, config, mesh8, 3)
  _, losses1 = _steps(run1, config, mesh1, 3)
  np.testing.assert_allclose(losses8, losses1, rtol=2e-5)
  assert losses8[2] != losses8[0]


# ------------------------------------------------------ end-to-end via CLI ---


def _cli(args, env_extra=None, timeout=600, **popen):
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)  # Each run chooses its own device count.
  env["JAX_PLATFORMS"] = "cpu"
  env.update(env_extra or {})
  cmd = [sys.executable, "-m", "internvqa_jax.train", *args]
  if popen:
    return subprocess.Popen(
      cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen
    )
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _losses(workdir):
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _export(workdir, role="model"):
  from internvqa_jax.models import checkpoint

  params, _ = checkpoint.load_params(os.path.join(workdir, "export", role))
  return tree_paths.flatten(params)


def test_resume_equals_straight_run(data_dir, tmp_path):
  arg = f"{CONFIG}:steps=6,data_dir={data_dir}"
  env = {"JAX_NUM_CPU_DEVICES": "2"}
  straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
  r = _cli(["--config", arg, "--workdir", straight], env)
  assert r.returncode == 0, r.stdout + r.stderr
  r = _cli(["--config", arg, "--workdir", split, "--config.stop_after_steps=3"], env)
  assert r.returncode == 0, r.stdout + r.stderr
  assert "stop_after_steps=3: saved step 3" in r.stdout
  assert not os.path.exists(os.path.join(split, "export"))
  r = _cli(["--config", arg, "--workdir", split], env)
  assert r.returncode == 0, r.stdout + r.stderr
  assert "resumed from step 3" in r.stdout
  a, b = _losses(straight), _losses(split)
  assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]
  assert a == b  # Same data order and same parameters: bit-identical losses.
  pa, pb = _export(straight), _export(split)
  assert all(np.array_equal(pa[k], pb[k]) for k in pa)
  results = json.load(open(os.path.join(split, "results.json")))
  assert set(results["model"]) >= {"plcc", "srcc", "krcc", "plcc_logistic", "rmse"}
  # The exported model carries its eval protocol, which the scoring tool reuses.
  from internvqa_jax import score

  scorer = score.load_scorer(os.path.join(split, "export", "model"), warmup=False)
  assert scorer.num_views == 1 and scorer.view["resize_short"] is None, scorer.protocol


def test_two_processes_match_one_process(data_dir, tmp_path):
  """2 processes x 2 CPU devices (gloo) give the losses of 1 process x 4 devices."""
  arg = f"{CONFIG}:mode=distill,steps=3,data_dir={data_dir},fsdp=2,ckpt_every=0"
  one = str(tmp_path / "one")
  r = _cli(["--config", arg, "--workdir", one], {"JAX_NUM_CPU_DEVICES": "4"})
  assert r.returncode == 0, r.stdout + r.stderr
  import socket

  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  two = str(tmp_path / "two")
  procs = [
    _cli(
      ["--config", arg, "--workdir", two],
      {
        "JAX_NUM_CPU_DEVICES": "2",
        "INTERNVQA_DISTRIBUTED": "1",
        "INTERNVQA_COORDINATOR": f"127.0.0.1:{port}",
        "INTERNVQA_NUM_PROCESSES": "2",
        "INTERNVQA_PROCESS_ID": str(i),
      },
      bufsize=1,
    )
    for i in range(2)
  ]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs
  assert "2 process(es), 4 device(s)" in outs[0]
  la, lb = _losses(one), _losses(two)
  assert sorted(la) == sorted(lb) == [1, 2, 3]
  np.testing.assert_allclose([lb[k] for k in sorted(lb)], [la[k] for k in sorted(la)], rtol=1e-5)
  ra = json.load(open(os.path.join(one, "results.json")))
  rb = json.load(open(os.path.join(two, "results.json")))
  assert ra["student"]["num_videos"] == rb["student"]["num_videos"] == 16
  np.testing.assert_allclose(rb["student"]["srcc"], ra["student"]["srcc"], atol=1e-6)


def test_sigterm_saves_checkpoint_and_exits_cleanly(data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  arg = f"{CONFIG}:steps=100000,data_dir={data_dir},ckpt_every=0"
  p = _cli(["--config", arg, "--workdir", workdir], {"JAX_NUM_CPU_DEVICES": "1"}, bufsize=1)
  metrics = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + 300
  while not (os.path.exists(metrics) and os.path.getsize(metrics) > 0):
    assert p.poll() is None, p.stdout.read()
    assert time.time() < deadline, "training did not start"
    time.sleep(0.5)
  p.send_signal(signal.SIGTERM)
  out = p.communicate(timeout=300)[0]
  assert p.returncode == 0, out
  m = re.search(r"SIGTERM: saved step (\d+)", out)
  assert m, out
  step = int(m.group(1))
  assert os.path.isdir(os.path.join(workdir, "checkpoints", str(step)))


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  # lr 1e30: the first update is fine, the second step's score overflows float32.
  arg = f"{CONFIG}:steps=6,data_dir={data_dir},ckpt_every=1,lr=1e30"
  r = _cli(["--config", arg, "--workdir", workdir], {"JAX_NUM_CPU_DEVICES": "1"})
  assert r.returncode == 1  # One line under the cli_errors convention, not a traceback.
  m = re.search(
    r"^error: loss is (nan|inf) at step (\d+); stopping\. The last good "
    r"checkpoint is step (\d+)",
    r.stderr,
    re.MULTILINE,
  )
  assert m, r.stderr[-3000:]
  bad, last = int(m.group(2)), int(m.group(3))
  assert last == bad - 1
  steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  assert steps[-1] == last


def test_unknown_config_key_is_an_error(tmp_path):
  r = _cli(["--config", CONFIG, "--workdir", str(tmp_path), "--config.optim.learning_rate=1"])
  assert r.returncode != 0
  assert "learning_rate" in r.stderr


def test_stage_init_must_name_an_earlier_stage(tmp_path):
  demo = load_by_path(os.path.join(REPO, "configs", "demo.py"))
  c = demo.get_config("runlocal")
  with c.unlocked():
    c.stages = ["distill"]
  with pytest.raises(ValueError, match="names a stage that has not run yet"):
    train.run_stages(c, str(tmp_path))


def test_heterogeneous_distill_fastvqa_student(data_dir, tmp_path):
  """InternVideo2 teacher on clips + FAST-VQA student on its own fragments of the same videos."""
  workdir = str(tmp_path / "w")
  arg = f"{CONFIG}:mode=distill,student=fastvqa,steps=2,data_dir={data_dir},ckpt_every=0"
  r = _cli(["--config", arg, "--workdir", workdir], {"JAX_NUM_CPU_DEVICES": "1"})
  assert r.returncode == 0, r.stdout + r.stderr[-3000:]
  assert "student: fastvqa/tiny" in r.stdout
  losses = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert {"loss/feature", "loss/teacher_score", "loss/student_score"} <= set(losses[0])
  results = json.load(open(os.path.join(workdir, "results.json")))
  assert results["student"]["num_videos"] == results["teacher"]["num_videos"] == 16
  from internvqa_jax import models

  model, _params = models.load(os.path.join(workdir, "export", "student"))
  assert model.FAMILY == "fastvqa"


def test_distill_feature_width_mismatch_is_an_error():
  config = tiny.get_config("mode=distill,student=fastvqa")
  with config.unlocked():
    config.teacher.kwargs.pool_dim = 768
  mesh = sharding.make_mesh(data=1, fsdp=1, devices=jax.devices()[:1])
  with pytest.raises(ValueError, match="student's feature has 128 dims, the teacher's 768"):
    _run(config, mesh)
