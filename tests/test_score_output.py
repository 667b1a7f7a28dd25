"""Scoring output: confidence, calibration, segments, resume, bit depth, output checks."""

import json
import os
import signal
import subprocess
import sys
import time

import fake_params  # tests/fake_params.py
import numpy as np
import pytest
import videos  # tests/videos.py

from internvqa_jax import calibration, metrics, models, score, score_table, segments, view_stats
from internvqa_jax.data import frames, read_frames
from internvqa_jax.models import checkpoint, internvideo2

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IV2_INPUT = (1, 2, 28, 28, 3)  # internvideo2 'tiny'
CAL = [4.5, 1.0, 0.0, 0.05]  # a known logistic: raw scores around 0 -> 1..4.5


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  root = tmp_path_factory.mktemp("score_out")
  module = internvideo2.make("tiny")
  params = fake_params.random_params(module, IV2_INPUT, 0)
  kw = {"family": module.FAMILY, "model_kwargs": models.model_kwargs(module)}
  raw_dir = checkpoint.save_params(root / "raw", params, kw)
  cal = {
    "mapping": "logistic4",
    "params": CAL,
    "label": "mos",
    "direction": "higher_is_better",
    "range": [1.0, 4.5],
    "fit_split": "test",
    "dataset": "unit",
    "num_videos": 9,
  }
  cal_dir = checkpoint.save_params(root / "cal", params, {**kw, "calibration": cal})
  vdir = root / "videos"
  vdir.mkdir()
  vids = [
    videos.make_video(vdir / f"v{i}.mp4", num_frames=12 + 4 * i, crf=5 + 15 * i) for i in range(3)
  ]
  return dict(root=root, raw=str(raw_dir), cal=str(cal_dir), vids=vids, vdir=str(vdir))


def _cli(*args):
  """The command line in a subprocess (for kills); `_main` runs it in-process (faster)."""
  cmd = [sys.executable, "-m", "internvqa_jax.score", *map(str, args)]
  env = {**os.environ, "PYTHONPATH": REPO}
  return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


class _Result:
  def __init__(self, returncode, stdout, stderr):
    self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def main(capsys):
  def run(*args):
    capsys.readouterr()
    try:
      rc = score.main([str(a) for a in args])
    except SystemExit as e:  # argparse usage errors
      rc = e.code
    out = capsys.readouterr()
    return _Result(rc, out.out, out.err)

  return run


# ------------------------------------------------------------- confidence ---


def test_bootstrap_interval_equals_hand_computation():
  x = [0.10, 0.50, 0.20, 0.90, 0.40]
  n, seed = 9, 3
  # By hand: the documented draw (one (n, V) integers call), then linear-interpolated percentiles.
  draws = np.random.default_rng(seed).integers(0, len(x), size=(n, len(x)))
  means = sorted(sum(x[j] for j in row) / len(x) for row in draws.tolist())

  def pct(q):
    pos = (n - 1) * q
    k = int(pos)
    return means[k] + (pos - k) * (means[min(k + 1, n - 1)] - means[k])

  lo, hi = view_stats.bootstrap_interval(x, n, seed)
  assert lo == pytest.approx(pct(0.025), abs=1e-12) and hi == pytest.approx(pct(0.975), abs=1e-12)
  s = view_stats.summarize(x, bootstrap=n, seed=seed)
  mean = sum(x) / 5
  assert s["score"] == pytest.approx(mean, abs=1e-15)
  sd = (sum((v - mean) ** 2 for v in x) / 4) ** 0.5
  assert s["score_std"] == pytest.approx(sd, abs=1e-15)
  assert (s["score_ci_low"], s["score_ci_high"], s["num"]) == (lo, hi, 5)
  assert lo < mean < hi
  # One view: no spread; no resampling: no interval.
  one = view_stats.summarize([0.3], bootstrap=100)
  assert (one["score_std"], one["score_ci_low"], one["score_ci_high"]) == (0.0, 0.3, 0.3)
  assert np.isnan(view_stats.summarize(x, bootstrap=0)["score_ci_low"])
  # Pools (VMAF's choices).
  y = np.array([1.0, 3.0, 0.0, 7.0])
  assert view_stats.POOLS["harmonic"](y) == pytest.approx(4 / (1 / 2 + 1 / 4 + 1 + 1 / 8) - 1)
  assert view_stats.POOLS["p10"](y) == pytest.approx(0.3)
  with pytest.raises(ValueError, match="harmonic.*> -1"):
    view_stats.check_pool_input(np.array([0.5, -1.5]), "harmonic", "v.mp4")


def test_library_rows_carry_confidence(env):
  rows = score.score_videos(env["raw"], env["vids"], bootstrap=200, seed=5)
  scorer = score.load_scorer(env["raw"])
  for r in rows:
    assert r["num_views"] == 12 and r["bit_depth"] == 8
    assert r["score_ci_low"] <= r["score"] <= r["score_ci_high"] and r["score_std"] > 0
    assert "mos" not in r
  # The interval is the bootstrap of this video's own view scores, with the run's seed.
  from internvqa_jax.data import probe

  v = env["vids"][1]
  per_view = scorer.score_views(
    scorer.make_views(lambda i: read_frames(v, i), probe(v).num_frames, None)
  )
  want = view_stats.summarize(per_view, bootstrap=200, seed=5)
  for k in ("score", "score_std", "score_ci_low", "score_ci_high"):
    assert rows[1][k] == pytest.approx(want[k], rel=1e-6, abs=1e-7)


def test_two_runs_write_identical_csv(env, tmp_path, main):
  outs = [tmp_path / "a.csv", tmp_path / "b.csv"]
  for out in outs:
    res = main("--model", env["raw"], env["vdir"], "--out", out, "--bootstrap", 50)
    assert res.returncode == 0, res.stderr
  assert outs[0].read_bytes() == outs[1].read_bytes()
  text = outs[0].read_text()
  run = score_table.read_run(str(outs[0]))
  assert run["seed"] == 0 and run["bootstrap"] == 50 and run["version"]
  assert run["models"][0]["dir"] == os.path.abspath(env["raw"])
  assert run["models"][0]["protocol"]["test_clips"] == 4
  assert "# scale raw: raw model output only" in text
  assert len(score_table.read_rows(str(outs[0]))) == 3


# ------------------------------------------------------------ calibration ---


def test_calibration_fit_recovers_a_known_logistic():
  x = np.linspace(-0.3, 0.3, 40)
  y = metrics.logistic4(x, *CAL)
  cal = calibration.fit(x, y, "mos", fit_split="val", dataset="d")
  np.testing.assert_allclose(calibration.apply(cal, x), y, atol=1e-6)
  assert cal["direction"] == "higher_is_better" and cal["range"] == [y.min(), y.max()]
  dmos = calibration.fit(x, 100 - 20 * y, "dmos")
  assert dmos["direction"] == "lower_is_better"
  with pytest.raises(calibration.CalibrationError, match="constant"):
    calibration.fit(np.zeros(10), y[:10], "mos")


def test_calibrated_model_writes_mapped_mos(env, tmp_path, main):
  out = tmp_path / "cal.csv"
  res = main("--model", env["cal"], env["vids"][0], env["vids"][2], "--out", out)
  assert res.returncode == 0, res.stderr
  rows = score_table.read_rows(str(out))
  for r in rows:
    s, lo, hi = (float(r[k]) for k in ("score", "score_ci_low", "score_ci_high"))
    assert float(r["mos"]) == pytest.approx(metrics.logistic4(s, *CAL), rel=1e-12)
    assert float(r["mos_ci_low"]) == pytest.approx(metrics.logistic4(lo, *CAL), rel=1e-12)
    assert float(r["mos_ci_high"]) == pytest.approx(metrics.logistic4(hi, *CAL), rel=1e-12)
  assert "# scale cal: mos = MOS of unit (higher is better" in out.read_text()
  # A decreasing curve (DMOS-like) still gives low <= high.
  dec = {"mapping": "logistic4", "params": [1.0, 4.5, 0.0, 0.05], "label": "dmos"}
  lo, hi = calibration.apply_interval(dec, -0.1, 0.2)
  assert lo == pytest.approx(metrics.logistic4(0.2, *dec["params"])) and lo < hi


def test_bad_calibration_is_refused(env, tmp_path):
  module = internvideo2.make("tiny")
  bad = checkpoint.save_params(
    tmp_path / "bad",
    fake_params.random_params(module, IV2_INPUT, 1),
    {
      "family": "internvideo2",
      "model_kwargs": models.model_kwargs(module),
      "calibration": {"mapping": "logistic4", "params": [1, 2, 3], "label": "mos"},
    },
  )
  with pytest.raises(calibration.CalibrationError, match=r"bad.*meta.json.*4 finite"):
    score.load_scorer(str(bad), warmup=False)


# --------------------------------------------------------------- segments ---


def test_segment_windows_of_a_7_3_second_video():
  wins = segments.windows(73, 10.0, 2.0)
  assert [(w.first, w.stop) for w in wins] == [(0, 20), (20, 40), (40, 60), (60, 73)]
  assert [(w.start_s, w.end_s) for w in wins] == [(0, 2), (2, 4), (4, 6), (6, 7.3)]
  strided = segments.windows(73, 10.0, 2.0, stride=1.0)
  assert [w.start_s for w in strided] == [0, 1, 2, 3, 4, 5, 6] and strided[-1].end_s == 7.3
  assert [(w.first, w.stop) for w in segments.windows(73, 10.0, 60.0)] == [(0, 73)]
  with pytest.raises(ValueError, match="frame rate"):
    segments.windows(73, None, 2.0)


def test_one_segment_over_the_whole_video_equals_the_plain_score(env):
  plain = score.score_videos(env["raw"], env["vids"], bootstrap=0)
  seg = score.score_videos(env["raw"], env["vids"], bootstrap=0, segments=100.0)
  for p, s in zip(plain, seg):
    assert s["score"] == p["score"] and s["num_views"] == p["num_views"]
    assert len(s["segments"]) == 1 and s["segments"][0]["start"] == 0
    assert s["segments"][0]["score_std"] == pytest.approx(p["score_std"])


def test_segments_cli_writes_table_and_curves(env, tmp_path, main):
  v = videos.make_video(tmp_path / "long.mp4", num_frames=73, fps=10)
  out = tmp_path / "s.csv"
  res = main("--model", env["raw"], v, "--out", out, "--segments", 2, "--pool", "min")
  assert res.returncode == 0, res.stderr
  seg = score_table.read_rows(str(tmp_path / "s.segments.csv"))
  assert [(float(r["start"]), float(r["end"])) for r in seg] == [(0, 2), (2, 4), (4, 6), (6, 7.3)]
  (row,) = score_table.read_rows(str(out))
  assert float(row["score"]) == pytest.approx(min(float(r["score"]) for r in seg), rel=1e-12)
  assert row["num_views"] == str(4 * 12)
  # Each window is the model's protocol on that window's frames only.
  scorer = score.load_scorer(env["raw"])
  w = segments.windows(73, 10.0, 2.0)[2]
  reader = segments.WindowReader(lambda i: read_frames(v, i), w)
  want = float(np.mean(scorer.score_views(scorer.make_views(reader, reader.num_frames, None))))
  assert float(seg[2]["score"]) == pytest.approx(want, rel=1e-6)
  (png,) = os.listdir(tmp_path / "s.curves")
  assert png.startswith("long.mp4.") and png.endswith(".png")
  assert (tmp_path / "s.curves" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------- resume ---


def test_resume_after_a_kill(env, tmp_path, main):
  vdir = tmp_path / "many"
  vdir.mkdir()
  for i in range(6):
    videos.make_video(vdir / f"m{i}.mp4", num_frames=48, width=160, height=120)
  args = ["--model", env["raw"], vdir, "--clips", 8, "--bootstrap", 20]
  full = tmp_path / "full.csv"
  assert main(*args, "--out", full).returncode == 0
  out = tmp_path / "part.csv"
  cmd = [sys.executable, "-m", "internvqa_jax.score", *map(str, args), "--out", str(out)]
  proc = subprocess.Popen(
    cmd,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
    env={**os.environ, "PYTHONPATH": REPO},
  )
  deadline = time.time() + 240
  while time.time() < deadline:
    if out.exists() and len(score_table.read_rows(str(out))) >= 1:
      break
    time.sleep(0.005)
  proc.send_signal(signal.SIGKILL)
  assert proc.wait() == -signal.SIGKILL  # killed mid-run, not finished
  kept = score_table.read_rows(str(out))
  assert 1 <= len(kept) < 6  # finished videos were on disk before the kill
  with open(out, "a") as f:
    f.write(f"{vdir / 'm5.mp4'},raw,0.12")  # a write cut short by the kill
  res = main(*args, "--out", out, "--resume")
  assert res.returncode == 0, res.stderr
  assert f"resuming: {len(kept)} of 6 videos" in res.stdout
  assert "dropped a partial last line" in res.stderr
  assert out.read_bytes() == full.read_bytes()
  # Another protocol cannot append to it.
  res = main(*args, "--out", out, "--resume", "--seed", 1)
  assert res.returncode == 2 and "seed" in res.stderr and "cannot resume" in res.stderr


# -------------------------------------------------------------- bit depth ---


def test_ten_bit_source_keeps_its_precision(env, tmp_path):
  v = videos.make_video(
    tmp_path / "ten.mkv", codec="libx265", pix_fmt="yuv420p10le", num_frames=12, crf=0
  )
  hi = read_frames(v, [3], keep_bit_depth=True)
  lo = read_frames(v, [3])
  assert hi.dtype == np.float32 and lo.dtype == np.uint8
  # Same picture: the 8-bit frame is the float one rounded (to within swscale's 8-bit rounding),
  # and the float frame has values between the 8-bit levels.
  assert np.abs(np.clip(np.round(hi), 0, 255) - lo).max() <= 1 and np.abs(hi - lo).max() < 2
  assert np.abs(hi - np.round(hi)).max() > 0.1
  keep = score.score_videos(env["raw"], [v], bootstrap=0)[0]
  rounded = score.score_videos(env["raw"], [v], bootstrap=0, keep_bit_depth=False)[0]
  assert keep["bit_depth"] == 10 and rounded["bit_depth"] == 10
  diff = abs(keep["score"] - rounded["score"])
  assert 0 < diff < 0.01 * max(1.0, abs(keep["score"]))
  eight = videos.make_video(tmp_path / "eight.mp4", num_frames=12)
  assert read_frames(eight, [0], keep_bit_depth=True).dtype == np.uint8


def test_float_frames_give_the_views_of_equal_uint8_frames():
  """Float frames (> 8-bit sources) go through the same view code: equal values, equal views."""
  from internvqa_jax.data import pipeline

  frames = np.random.default_rng(0).integers(0, 256, (20, 60, 80, 3), dtype=np.uint8)
  frag = {"recipe": "fastvqa", "variant": "fast_vqa_b"}
  views = pipeline.make_recipes(
    {
      "iv2": {"recipe": "internvideo2", "num_frames": 4, "crop_size": 32, "resize_short": 40},
      "frag": {**frag, "overrides": {"fragments": 3, "fsize": 16, "aligned": 8, "clip_len": 8}},
      # A 96 px grid on 60x80 frames: the reference's upsampling fallback, which truncates
      # uint8 frames to 8 bits after upsampling; float frames keep the fraction.
      "up": {**frag, "overrides": {"fragments": 3, "fsize": 32, "aligned": 8, "clip_len": 8}},
    }
  )
  as_uint8 = lambda i: frames[np.asarray(i)]
  as_float = lambda i: frames[np.asarray(i)].astype(np.float32)
  for name in ("iv2", "frag"):
    a, b = views[name].eval(as_uint8, 20, None), views[name].eval(as_float, 20, None)
    np.testing.assert_allclose(b, a, atol=2e-5, err_msg=name)
  a, b = views["up"].eval(as_uint8, 20, None), views["up"].eval(as_float, 20, None)
  diff = b - a  # normalised units: one 8-bit level is 1 / std (57.12 .. 58.40)
  assert diff.min() > -1e-5 and 0.5 / 58.4 < diff.max() < 1.0 / 57.12 + 1e-5


# ------------------------------------------------------- bad input, outputs ---


def test_output_checked_before_any_work(env, tmp_path, main):
  # An output that cannot be written is an input error (1); one that would replace an input is a
  # usage error (2): the project's convention (internvqa_jax.cli_errors).
  res = main("--model", env["raw"], env["vids"][0], "--out", tmp_path)
  assert res.returncode == 1 and "is a directory" in res.stderr and "model raw" not in res.stderr
  before = open(env["vids"][0], "rb").read()
  res = main("--model", env["raw"], env["vids"][0], "--out", env["vids"][0])
  assert res.returncode == 2 and "would overwrite the input" in res.stderr
  assert open(env["vids"][0], "rb").read() == before
  not_dir = tmp_path / "file"
  not_dir.write_text("x")
  res = main("--model", env["raw"], env["vids"][0], "--out", not_dir / "s.csv")
  assert res.returncode == 1 and "is not a directory" in res.stderr
  for flag in ("--clips", "--crops"):
    for bad in ("0", "-2"):
      res = main("--model", env["raw"], env["vids"][0], flag, bad, "--out", tmp_path / "z.csv")
      assert res.returncode == 2 and flag in res.stderr and "positive integer" in res.stderr
  with pytest.raises(ValueError, match="--clips must be a positive integer"):
    score.load_scorer(env["raw"], clips=0, warmup=False)
  assert not (tmp_path / "z.csv").exists()


def test_skipped_log_survives_hostile_names(env, tmp_path, main):
  vdir = tmp_path / "in"
  vdir.mkdir()
  os.symlink(env["vids"][0], vdir / "good.mp4")
  hostile = vdir / "bad\nname\twith tab.mp4"
  hostile.write_bytes(b"\x00" * 300)
  out = tmp_path / "s.csv"
  res = main("--model", env["raw"], vdir, "--out", out, "--skip-bad")
  assert res.returncode == 0, res.stderr
  (entry,) = score_table.read_skipped(str(out) + ".skipped.jsonl")
  assert entry["path"] == str(hostile) and entry["reason"]
  assert [r["path"] for r in score_table.read_rows(str(out))] == [str(vdir / "good.mp4")]
  lines = (tmp_path / "s.csv.skipped.jsonl").read_text().splitlines()
  assert len(lines) == 1 and json.loads(lines[0]) == entry


# ------------------------------------------------------------- throughput ---


def test_next_video_is_decoded_while_the_model_runs(env, monkeypatch):
  scorer = score.load_scorer(env["raw"])
  events = []
  predict = scorer.predict

  def slow_predict(x):
    events.append(("model start", time.perf_counter()))
    time.sleep(0.5)  # a model slower than decoding
    out = predict(x)
    events.append(("model end", time.perf_counter()))
    return out

  read = frames.FrameCache.__call__

  def logged_read(self, indices):
    events.append((f"decode {os.path.basename(self.source)}", time.perf_counter()))
    return read(self, indices)

  scorer.predict = slow_predict
  monkeypatch.setattr(frames.FrameCache, "__call__", logged_read)
  results, _ = score.score_with([scorer], env["vids"][:2], bootstrap=0)
  assert len(results) == 2
  first_model_end = next(t for e, t in events if e == "model end")
  second_decode = [t for e, t in events if e == "decode v1.mp4"]
  # Video 2 was being decoded before the model had finished video 1 (a sequential loop would
  # decode it only afterwards).
  assert second_decode and min(second_decode) < first_model_end
