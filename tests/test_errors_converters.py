"""Bad input and faults against the converters and converted model directories (docs/errors.md).

Each test checks the exit code, that the message names the thing, and that
nothing was lost or half-written.
"""

import json
import os
import stat
import subprocess
import sys

import jax
import numpy as np
import pytest

import internvqa_jax.models
from converters import common
from converters import internvideo2 as conv
from internvqa_jax import cli_errors
from internvqa_jax.models import checkpoint
from internvqa_jax.models import internvideo2 as iv2

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny_pth(tmp_path_factory):
  """A PyTorch state_dict of InternVideo2 'tiny' (2 frames, 28 px, 1 output)."""
  module = iv2.make("tiny")
  x = np.zeros((1, 2, 28, 28, 3), np.float32)
  params = module.init(jax.random.key(0), x, train=False)["params"]
  sd = {k: np.array(v) for k, v in conv.params_to_torch_state_dict(jax.device_get(params)).items()}
  path = tmp_path_factory.mktemp("src") / "tiny.pth"
  return common.write_torch_state_dict(path, sd)


def _main(args, capsys):
  rc = conv.main([str(a) for a in args])
  return rc, capsys.readouterr().err


def _tree(root):
  return sorted(
    (os.path.relpath(os.path.join(d, f), root), os.path.getsize(os.path.join(d, f)))
    for d, _, fs in os.walk(root)
    for f in fs
  )


# Item 1: --overwrite replaces only a converted model directory.
def test_overwrite_refuses_a_directory_that_is_not_a_converted_model(tmp_path, tiny_pth, capsys):
  precious = tmp_path / "project"
  precious.mkdir()
  (precious / "notes.txt").write_text("keep me")
  (precious / "sub").mkdir()
  (precious / "sub" / "data.bin").write_bytes(b"\x01" * 100)
  before = _tree(precious)
  rc, err = _main([tiny_pth, precious, "--overwrite"], capsys)
  assert rc == 1
  assert str(precious) in err and "not a converted model directory" in err
  assert len(err.strip().splitlines()) == 1
  assert _tree(precious) == before  # Nothing deleted.
  assert [n for n in os.listdir(tmp_path) if ".tmp-" in n] == []
  # The folder holding the source is refused the same way; the source survives.
  rc, err = _main([tiny_pth, os.path.dirname(tiny_pth), "--overwrite"], capsys)
  assert rc == 1 and os.path.isfile(tiny_pth)
  # A converted model is replaced, and the result is a converted model again.
  dst = tmp_path / "model"
  assert _main([tiny_pth, dst], capsys)[0] == 0
  assert _main([tiny_pth, dst, "--overwrite"], capsys)[0] == 0
  assert checkpoint.read_meta(dst)["family"] == "internvideo2"


def test_overwrite_refuses_the_current_directory(tmp_path, tiny_pth, capsys, monkeypatch):
  empty = tmp_path / "here"
  empty.mkdir()
  monkeypatch.chdir(empty)
  rc, err = _main([tiny_pth, ".", "--overwrite"], capsys)
  assert rc == 1 and "current directory" in err
  assert os.listdir(empty) == []


# Item 8 (converters): DST a file, SRC a directory, an empty .pth, a read-only DST parent.
def test_destination_that_is_a_file(tmp_path, tiny_pth, capsys):
  dst = tmp_path / "model"
  dst.write_text("a file")
  for extra in ([], ["--overwrite"]):
    rc, err = _main([tiny_pth, dst, *extra], capsys)
    assert rc == 1 and str(dst) in err and "not a" in err, err
    assert len(err.strip().splitlines()) == 1
  assert dst.read_text() == "a file"


def test_source_that_is_a_directory_or_empty(tmp_path, capsys):
  rc, err = _main([tmp_path, tmp_path / "out"], capsys)
  assert rc == 1 and "is a directory" in err and str(tmp_path) in err
  empty = tmp_path / "empty.pth"
  empty.write_bytes(b"")
  rc, err = _main([empty, tmp_path / "out"], capsys)
  assert rc == 1 and str(empty) in err and "empty (0 bytes)" in err
  assert not (tmp_path / "out").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_destination_parent(tmp_path, tiny_pth, capsys):
  ro = tmp_path / "ro"
  ro.mkdir()
  ro.chmod(0o555)
  try:
    rc, err = _main([tiny_pth, ro / "model"], capsys)
  finally:
    ro.chmod(0o755)
  assert rc == 1 and str(ro) in err and "permission denied" in err
  assert os.listdir(ro) == []


# Item 9 (converters): 0 and negatives are usage errors, never "use the default".
@pytest.mark.parametrize("flag,value", [("--num-outputs", "0"), ("--num-outputs", "-3"),
                                        ("--num-frames", "0")])  # fmt: skip
def test_zero_or_negative_sizes_are_usage_errors(tmp_path, tiny_pth, capsys, flag, value):
  with pytest.raises(SystemExit) as e:
    conv.main([tiny_pth, str(tmp_path / "out"), flag, value])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert flag in err and "expected a positive integer" in err
  assert not (tmp_path / "out").exists()
  with pytest.raises(ValueError, match="num_outputs must be a positive integer"):
    conv.convert(tiny_pth, str(tmp_path / "out"), num_outputs=0, log=lambda *a: None)


# Item 11: stale temporaries of the same DST are removed (and reported); export temporaries too.
def test_stale_temporaries_are_removed_and_reported(tmp_path, tiny_pth, capsys):
  dst = tmp_path / "model"
  stale_old = tmp_path / ".model.tmp-abc123"  # An older naming without host/pid.
  dead = tmp_path / f".model.tmp-{os.uname().nodename}-999999999-xyz"  # A pid that cannot exist.
  other = tmp_path / ".othermodel.tmp-abc123"  # Another destination's: left alone.
  for d in (stale_old, dead, other):
    (d / "params").mkdir(parents=True)
    (d / "params" / "blob").write_bytes(b"0" * 1000)
  rc = conv.main([tiny_pth, str(dst)])
  out = capsys.readouterr().out
  assert rc == 0
  assert not stale_old.exists() and not dead.exists() and other.exists()
  assert "removed 2 temporary folder(s)" in out and str(dst) in out
  # Export: a stale OUT.tmp goes, an existing directory as OUT is refused without leftovers.
  out_pth = tmp_path / "back.pth"
  (tmp_path / "back.pth.tmp").write_bytes(b"partial")
  assert conv.main(["export", str(dst), str(out_pth)]) == 0
  assert "removed" in capsys.readouterr().out
  assert not (tmp_path / "back.pth.tmp").exists() and out_pth.is_file()
  (tmp_path / "dir.pth").mkdir()
  assert conv.main(["export", str(dst), str(tmp_path / "dir.pth"), "--overwrite"]) == 1
  assert "is a directory" in capsys.readouterr().err
  assert not (tmp_path / "dir.pth.tmp").exists() and os.listdir(tmp_path / "dir.pth") == []


# Item 12: model directories respect the umask.
def test_model_directory_respects_umask(tmp_path, tiny_pth):
  old = os.umask(0o022)
  try:
    assert conv.main([tiny_pth, str(tmp_path / "model")]) == 0
  finally:
    os.umask(old)
  root = tmp_path / "model"
  assert stat.S_IMODE(root.stat().st_mode) == 0o755
  modes = {
    stat.S_IMODE(os.stat(os.path.join(d, n)).st_mode)
    for d, ds, fs in os.walk(root)
    for n in ds + fs
  }
  assert modes <= {0o755, 0o644}, modes


# Item 8 (models): meta.json damaged or incomplete, model_kwargs that do not fit the params.
def test_damaged_meta_json_names_the_file(tmp_path, tiny_pth):
  dst = tmp_path / "model"
  assert conv.main([tiny_pth, str(dst)]) == 0
  meta_path = dst / "meta.json"
  good = json.loads(meta_path.read_text())
  meta_path.write_text('{"family": "internvideo2", ')
  with pytest.raises(ValueError, match=f"{meta_path}: not valid JSON"):
    internvqa_jax.models.load(dst)
  meta_path.write_text(json.dumps({k: v for k, v in good.items() if k != "family"}))
  with pytest.raises(ValueError, match=f"{meta_path}: no 'family'"):
    internvqa_jax.models.load(dst)
  wrong = dict(good, model_kwargs=dict(good["model_kwargs"], embed_dim=32))
  meta_path.write_text(json.dumps(wrong))
  fit = r"params .*do not fit.*blocks_0/attn/proj/bias: model expects \(32,\), stored \(64,\)"
  with pytest.raises(ValueError, match=fit):
    internvqa_jax.models.load(dst)
  meta_path.write_text(json.dumps(dict(good, model_kwargs=dict(good["model_kwargs"], bogus=1))))
  with pytest.raises(ValueError, match="model_kwargs do not build"):
    internvqa_jax.models.load(dst)


def test_cli_one_line_and_verbose_traceback(tmp_path, tiny_pth):
  """The convention end to end: one line by default, the traceback with --verbose or the env."""
  (tmp_path / "d").mkdir()
  (tmp_path / "d" / "x").write_text("x")
  cmd = [sys.executable, "-m", "converters.internvideo2", tiny_pth, str(tmp_path / "d")]
  env = {**os.environ, "PYTHONPATH": REPO}
  r = subprocess.run([*cmd, "--overwrite"], capture_output=True, text=True, cwd=REPO, env=env)
  assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
  for extra, env_extra in (["--verbose"], {}), ([], {cli_errors.VERBOSE_ENV: "1"}):
    r = subprocess.run(
      [*cmd, "--overwrite", *extra], capture_output=True, text=True, cwd=REPO,
      env={**env, **env_extra},
    )  # fmt: skip
    assert r.returncode == 1 and "Traceback" in r.stderr and "not a converted model" in r.stderr
  assert (tmp_path / "d" / "x").read_text() == "x"
