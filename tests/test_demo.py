"""The main job, reduced: configs/demo.py on the 32-clip synthetic set must really learn quality."""

from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_distilled_student_beats_untrained_student(tmp_path):
  env = dict(
    os.environ, TFDS_DATA_DIR=str(tmp_path / "tfds"), JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1"
  )
  env.pop("XLA_FLAGS", None)
  workdir = tmp_path / "demo"
  arg = "data=tiny,steps=150,batch_size=16,untrained,test_clips=2,test_crops=2,workers=0"
  r = subprocess.run(
    [
      sys.executable,
      "-m",
      "internvqa_jax.train",
      "--config",
      f"configs/demo.py:{arg}",
      "--workdir",
      str(workdir),
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  assert "held-out sources" in r.stdout
  results = json.load(open(workdir / "results.json"))
  assert list(results) == ["teacher", "student", "distilled_student", "untrained_student"]
  for row in results.values():
    assert {"plcc", "srcc", "krcc", "plcc_logistic", "rmse"} <= set(row)
    assert row["num_videos"] == 16  # Every clip of the held-out photograph, once.
  srcc = {k: v["srcc"] for k, v in results.items()}
  assert srcc["distilled_student"] > srcc["untrained_student"] + 0.3, srcc
  assert srcc["teacher"] > srcc["untrained_student"] + 0.3, srcc
  # Each stage exported its trained model(s) in the converted-model format.
  for stage, role in [
    ("teacher", "model"),
    ("student", "model"),
    ("distill", "student"),
    ("distill", "teacher"),
  ]:
    assert (workdir / stage / "export" / role / "meta.json").exists()
