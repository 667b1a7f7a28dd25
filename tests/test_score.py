"""Scoring CLI/library (internvqa_jax.score) and evaluation report (internvqa_jax.report)."""

import csv
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import fake_params  # tests/fake_params.py
import jax
import numpy as np
import pytest
import videos  # tests/videos.py

from internvqa_jax import metrics, models, report, score, score_table
from internvqa_jax.data import fragments, probe, read_frames
from internvqa_jax.data.recipes import InternVideo2Recipe
from internvqa_jax.models import checkpoint, fastvqa, internvideo2

FRAG = dict(fragments=3, fsize=16, aligned=8, clip_len=8)  # 8x48x48 clips for fastvqa 'tiny'


def _save(dst, module, params):
  checkpoint.save_params(
    dst, params, {"family": module.FAMILY, "model_kwargs": models.model_kwargs(module)}
  )
  return str(dst)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  root = tmp_path_factory.mktemp("score")
  iv2 = internvideo2.make("tiny")
  p = fake_params.random_params(iv2, (1, 2, 28, 28, 3), 0)
  fv = fastvqa.make("tiny")
  q = fake_params.random_params(fv, (1, 8, 48, 48, 3), 1)
  vdir = root / "videos"
  (vdir / "sub").mkdir(parents=True)
  vids = [
    videos.make_video(vdir / f"v{i}.mp4", num_frames=10 + 5 * i, crf=5 + 20 * i) for i in range(3)
  ]
  (vdir / "notes.txt").write_text("not a video")
  videos.make_video(vdir / "sub" / "deep.mkv", num_frames=8)
  iv2_dir, fv_dir = _save(root / "iv2", iv2, p), _save(root / "fv", fv, q)
  return dict(
    root=root,
    vdir=str(vdir),
    vids=vids,
    iv2_dir=iv2_dir,
    iv2=(iv2, p),
    fv_dir=fv_dir,
    fv=(fv, q),
    # Loaded (and compiled) once: compiling the Swin3D is the slow part.
    fv_scorer=score.load_scorer(fv_dir, fragments_variant="fast_vqa_b", fragment_overrides=FRAG),
    iv2_scorer=score.load_scorer(iv2_dir),
  )


def _direct(module, params, views):
  out = jax.jit(lambda p, x: module.apply({"params": p}, x, train=False))(
    params, np.asarray(views, np.float32)
  )
  return float(np.mean(np.asarray(out["score"], np.float64)))


def _reader(path, **geo):
  return lambda idx: read_frames(path, idx, **geo)


def test_internvideo2_scores_equal_direct_apply(env):
  module, params = env["iv2"]
  rows = score.score_videos(env["iv2_dir"], env["vids"], batch_size=5)  # 12 views: 5 + 5 + 2 padded
  assert [r["path"] for r in rows] == [os.path.normpath(v) for v in env["vids"]]
  recipe = InternVideo2Recipe(
    num_frames=2, crop_size=28, resize_short=28, test_clips=4, test_crops=3
  )
  want = [
    _direct(module, params, recipe.eval(_reader(v), probe(v).num_frames)) for v in env["vids"]
  ]
  got = [r["score"] for r in rows]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert np.ptp(got) > 1e-4  # different videos, different scores
  assert all(r["num_views"] == 12 for r in rows)

  # Native-resolution crops, 2 clips x 1 crop.
  rows = score.score_videos(env["iv2_dir"], env["vids"][:1], clips=2, crops=1, resize_short=None)
  recipe = InternVideo2Recipe(
    num_frames=2, crop_size=28, resize_short=None, test_clips=2, test_crops=1
  )
  v = env["vids"][0]
  assert rows[0]["num_views"] == 2
  np.testing.assert_allclose(
    rows[0]["score"],
    _direct(module, params, recipe.eval(_reader(v), probe(v).num_frames)),
    rtol=1e-5,
    atol=1e-6,
  )


def test_fastvqa_scores_equal_direct_apply(env):
  scorer = env["fv_scorer"]
  assert scorer.num_views == 4 and scorer.view_shape == (8, 48, 48, 3)  # fast_vqa_b: 4 clips
  rows, skipped = score.score_with([scorer], env["vids"])
  assert not skipped
  # Independent views; the jitted model call is shared (checked against
  # module.apply in the InternVideo2 test).
  sampler = fragments.FragmentSampler("fast_vqa_b", test_sampling="center", **FRAG)
  want = []
  for v in env["vids"]:
    views = sampler(_reader(v), probe(v).num_frames, None, train=False)
    want.append(float(np.mean(np.asarray(scorer.predict(views), np.float64))))
  got = [r["scores"]["fv"] for r in rows]
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  assert np.ptp(got) > 1e-4
  assert all(r["num_views"]["fv"] == 4 for r in rows)


def test_fastvqa_variant_choice():
  meta = {"family": "fastvqa"}
  variant = lambda size, **kw: score.default_view(meta, SimpleNamespace(base_x_size=size), **kw)
  assert variant((32, 224, 224)) == {"recipe": "fastvqa", "variant": "fast_vqa_b"}
  assert variant([16, 128, 128])["variant"] == "fast_vqa_m"
  assert variant((32, 160, 160))["variant"] == "faster_vqa_ms"
  # An explicit variant wins over the guess (FasterVQA shares FAST-VQA-B's input size).
  assert variant((32, 224, 224), fragments_variant="faster_vqa")["variant"] == "faster_vqa"
  with pytest.raises(ValueError, match=r"\(8, 48, 48\)"):
    variant((8, 48, 48))


def test_fastvqa_unknown_size_needs_variant(env):
  with pytest.raises(ValueError, match="--fragments-variant"):
    score.load_scorer(env["fv_dir"], warmup=False)
  with pytest.raises(ValueError, match="crops"):
    score.load_scorer(
      env["fv_dir"],
      fragments_variant="fast_vqa_b",
      fragment_overrides=FRAG,
      crops=2,
      warmup=False,
    )


def test_directory_expansion(env):
  vdir = env["vdir"]
  flat = score.expand_paths([vdir])
  assert flat == sorted(os.path.join(vdir, f"v{i}.mp4") for i in range(3))  # no .txt, no subdir
  deep = score.expand_paths([vdir, env["vids"][0]], recursive=True)
  assert deep == sorted(flat + [os.path.join(vdir, "sub", "deep.mkv")])  # repeat kept once
  empty = env["root"] / "empty"
  empty.mkdir(exist_ok=True)
  with pytest.raises(ValueError, match="empty.*no video files"):
    score.expand_paths([empty])
  with pytest.raises(FileNotFoundError, match="missing.mp4"):
    score.expand_paths([env["root"] / "missing.mp4"])


def test_bad_video_is_an_error_naming_it_or_skipped(env, tmp_path):
  bad = tmp_path / "broken.mp4"
  data = open(env["vids"][2], "rb").read()
  bad.write_bytes(data[: len(data) // 3])  # truncated
  paths = [env["vids"][0], str(bad)]
  with pytest.raises(score.ScoreError, match="broken.mp4"):
    score.score_with([env["iv2_scorer"]], paths)
  skipped = []
  rows = score.score_videos(env["iv2_dir"], paths, skip_bad=True, skipped=skipped)
  assert [r["path"] for r in rows] == [os.path.normpath(env["vids"][0])]
  assert len(skipped) == 1 and skipped[0][0] == str(bad) and "broken.mp4" in skipped[0][1]


def test_raw_yuv_geometry_flags(env, tmp_path):
  yuv = videos.make_yuv(tmp_path / "clip.yuv", num_frames=6)  # no geometry in the name
  with pytest.raises(score.ScoreError, match="clip.yuv.*frame size unknown"):
    score.score_with([env["iv2_scorer"]], [yuv])
  module, params = env["iv2"]
  rows = score.score_videos(env["iv2_dir"], [yuv], width=64, height=48, clips=1, crops=1)
  recipe = InternVideo2Recipe(
    num_frames=2, crop_size=28, resize_short=28, test_clips=1, test_crops=1
  )
  want = _direct(module, params, recipe.eval(_reader(yuv, width=64, height=48), 6))
  np.testing.assert_allclose(rows[0]["score"], want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------- report ---


def _write_csv(path, header, rows):
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)
  return str(path)


def test_report_metrics_files_and_errors(tmp_path):
  rng = np.random.default_rng(0)
  mos = rng.uniform(1, 5, 12)
  a = mos + rng.normal(0, 0.4, 12)
  b = rng.normal(size=12)
  names = [f"dir/{i:03d}.mp4" for i in range(12)]
  scores = _write_csv(
    tmp_path / "scores.csv",
    ["path", "score_a", "score_b", "num_views_a"],
    [[n, repr(float(x)), repr(float(y)), 12] for n, x, y in zip(names, a, b)],
  )
  labels = _write_csv(
    tmp_path / "labels.csv",
    ["video_id", "mos"],
    [[f"{i:03d}", m] for i, m in reversed(list(enumerate(mos)))],
  )
  out = tmp_path / "rep"
  rep = report.make_report(scores, labels, str(out))
  for name, pred in (("a", a), ("b", b)):
    want = metrics.evaluate(pred, mos)
    for k in ("srcc", "krcc", "plcc", "plcc_logistic", "rmse"):
      assert rep["metrics"][name][k] == pytest.approx(want[k], rel=1e-9, abs=1e-12)
    png = out / f"scatter_{name}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert rep["metrics"]["a"]["srcc"] > 0.8
  saved = json.loads((out / "report.json").read_text())
  assert saved["metrics"]["a"]["srcc"] == pytest.approx(rep["metrics"]["a"]["srcc"])
  assert saved["videos"][3] == {
    "path": names[3],
    "label": pytest.approx(mos[3]),
    "predictions": {"a": pytest.approx(a[3]), "b": pytest.approx(b[3])},
  }
  md = (out / "report.md").read_text()
  assert f"| a | {want_fmt(rep, 'a', 'plcc')}" in md and "| dir/005.mp4 |" in md

  # Missing label: error naming the video; extra label: error unless ignored.
  short = _write_csv(
    tmp_path / "short.csv",
    ["video_id", "mos"],
    [[f"{i:03d}", m] for i, m in enumerate(mos) if i != 7],
  )
  with pytest.raises(report.ReportError, match="dir/007.mp4"):
    report.make_report(scores, short, str(out))
  extra = _write_csv(
    tmp_path / "extra.csv",
    ["video_id", "mos"],
    [[f"{i:03d}", m] for i, m in enumerate(mos)] + [["999", 3.0]],
  )
  with pytest.raises(report.ReportError, match="999"):
    report.make_report(scores, extra, str(out))
  assert (
    report.make_report(scores, extra, str(out), ignore_extra=True)["num_extra_labels_ignored"] == 1
  )
  # path column, matched by file name; explicit label column.
  by_path = _write_csv(
    tmp_path / "bypath.csv",
    ["path", "dmos", "mos"],
    [[f"/data/{i:03d}.mp4", 0, m] for i, m in enumerate(mos)],
  )
  rep2 = report.make_report(scores, by_path, str(tmp_path / "rep2"), label_column="mos")
  assert rep2["metrics"]["a"]["srcc"] == pytest.approx(rep["metrics"]["a"]["srcc"])
  with pytest.raises(report.ReportError, match="'nope'"):
    report.make_report(scores, by_path, str(out), label_column="nope")


def want_fmt(rep, model, key):
  return f"{rep['metrics'][model][key]:.4f}"


# --------------------------------------------------------------------- CLIs ---


def test_command_lines(env, tmp_path):
  vdir = tmp_path / "in"
  vdir.mkdir()
  for v in env["vids"]:
    os.symlink(v, vdir / os.path.basename(v))
  (vdir / "zz_bad.mp4").write_bytes(b"\x00" * 500)
  out = tmp_path / "scores.csv"
  cmd = [
    sys.executable,
    "-m",
    "internvqa_jax.score",
    "--model",
    env["iv2_dir"],
    "--model",
    env["fv_dir"],
    "--fragments-variant",
    "fast_vqa_b",
    *[f"--fragment={k}={v}" for k, v in FRAG.items()],
    str(vdir),
    "--out",
    str(out),
    "--skip-bad",
  ]
  res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stderr
  assert "zz_bad.mp4" not in res.stdout and "skipped 1 video" in res.stderr
  skipped = score_table.read_skipped(str(tmp_path / "scores.csv.skipped.jsonl"))
  assert [s["path"] for s in skipped] == [str(vdir / "zz_bad.mp4")] and skipped[0]["reason"]
  rows = score_table.read_rows(str(out))
  paths = [str(vdir / f"v{i}.mp4") for i in range(3)]
  assert [(r["path"], r["model"]) for r in rows] == [(p, m) for p in paths for m in ("iv2", "fv")]
  lib, _ = score.score_with([env["iv2_scorer"], env["fv_scorer"]], paths)
  for name in ("iv2", "fv"):
    np.testing.assert_allclose(
      [float(r["score"]) for r in rows if r["model"] == name],
      [r["scores"][name] for r in lib],
      rtol=1e-6,
    )
  assert {r["num_views"] for r in rows if r["model"] == "iv2"} == {"12"}
  assert {r["num_views"] for r in rows if r["model"] == "fv"} == {"4"}
  assert {r["bit_depth"] for r in rows} == {"8"} and {r["mos"] for r in rows} == {""}

  # Without --skip-bad the bad file stops the run, named.
  res = subprocess.run(
    [
      sys.executable,
      "-m",
      "internvqa_jax.score",
      "--model",
      env["iv2_dir"],
      str(vdir / "zz_bad.mp4"),
      "--out",
      str(tmp_path / "x.csv"),
    ],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert res.returncode == 1 and "zz_bad.mp4" in res.stderr

  labels = _write_csv(
    tmp_path / "labels.csv", ["video_id", "mos"], [["v0", 4.1], ["v1", 3.0], ["v2", 1.2]]
  )
  res = subprocess.run(
    [
      sys.executable,
      "-m",
      "internvqa_jax.report",
      "--scores",
      str(out),
      "--labels",
      labels,
      "--out-dir",
      str(tmp_path / "rep"),
    ],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert res.returncode == 0, res.stderr
  assert "| iv2 |" in res.stdout and "| fv |" in res.stdout
  for f in ("report.md", "report.json", "scatter_iv2.png", "scatter_fv.png"):
    assert (tmp_path / "rep" / f).is_file()
