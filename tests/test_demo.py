"""The main job, reduced: configs/demo.py on the 32-clip synthetic set must really learn quality."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from internvqa_jax import demo_results

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_learns_and_the_teacher_beats_the_student(tmp_path):
  env = dict(
    os.environ, TFDS_DATA_DIR=str(tmp_path / "tfds"), JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1"
  )
  env.pop("XLA_FLAGS", None)
  workdir = tmp_path / "demo"
  arg = "data=tiny,seeds=2,steps=150,teacher_steps=60,batch_size=16,test_clips=2,test_crops=2"
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
  assert "mean ± std over 2 seeds" in r.stdout
  results = json.load(open(workdir / "results.json"))
  assert list(results) == ["teacher", "student", "distilled_student", "untrained_student"]
  for row in results.values():
    assert {"plcc", "srcc", "krcc", "plcc_logistic", "rmse"} <= set(row)
    assert row["num_videos"] == 16  # Every clip of the held-out photograph, once.
    assert row["seeds"] == [0, 1]
    assert len(row["per_seed"]["srcc"]) == 2
    assert row["srcc"] == pytest.approx(sum(row["per_seed"]["srcc"]) / 2)
  srcc = {k: v["srcc"] for k, v in results.items()}
  assert srcc["distilled_student"] > srcc["untrained_student"] + 0.3, srcc
  assert srcc["teacher"] > srcc["untrained_student"] + 0.3, srcc
  # The paper's teacher claim, stable here (docs/demo.md: 0.860 against 0.828, each +-0.006 over
  # the seeds). Distilled against student is not asserted: distillation is neutral in the demo.
  assert srcc["teacher"] > srcc["student"], srcc
  assert (workdir / "results.png").stat().st_size > 0
  # Each stage of each seed exported its trained model(s) in the converted-model format.
  for seed in ("seed0", "seed1"):
    for stage, role in [
      ("teacher", "model"),
      ("student", "model"),
      ("distill", "student"),
      ("distill", "teacher"),
    ]:
      assert (workdir / seed / stage / "export" / role / "meta.json").exists()


def test_summarize_means_stds_and_gaps():
  per_seed = [
    {"a": {"srcc": 0.8, "plcc": 0.7, "num_videos": 3}, "b": {"srcc": 0.5, "plcc": 0.4}},
    {"a": {"srcc": 0.6, "plcc": 0.9, "num_videos": 3}, "b": {"srcc": 0.7, "plcc": 0.6}},
  ]
  s = demo_results.summarize(per_seed, [3, 7])
  assert s["a"]["srcc"] == pytest.approx(0.7)
  assert s["a"]["std"]["srcc"] == pytest.approx(0.1414213, abs=1e-6)  # sample std (ddof=1)
  assert s["a"]["per_seed"]["plcc"] == [0.7, 0.9]
  assert s["a"]["seeds"] == [3, 7] and s["a"]["num_videos"] == 3
  assert demo_results.pooled_std(s["a"], s["b"]) == pytest.approx(0.1414213, abs=1e-6)
  text = demo_results.format_summary(s, ["a", "b"])
  assert "| a | 0.800 ± 0.141 | 0.700 ± 0.141 | 0.800 0.600 |" in text
  assert "srcc a - b: +0.100 (pooled std 0.141)" in text
  with pytest.raises(ValueError, match="seed 7 reports models"):
    demo_results.summarize([per_seed[0], {"a": per_seed[1]["a"]}], [3, 7])
