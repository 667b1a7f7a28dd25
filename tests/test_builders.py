"""TFDS builders (ArrayRecord, no TensorFlow): tiny fake manual-download trees and the synthetic set."""

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.ndimage
import tensorflow_datasets as tfds
import videos  # tests/videos.py (pytest puts tests/ on sys.path)

from internvqa_jax.data import decode, sources, synthetic_video
from internvqa_jax.data.builders import (
  DatasetBuildError,
  bvi_hd,
  canonical_codec,
  synthetic_compressed,
  waterloo_ivc_4k,
)

tfds.disable_progress_bar()


# --------------------------------------------------------------------------- Waterloo IVC 4K

_WATERLOO_CONFIG = dict(
  sources=(1, 5), num_encoders=2, resolutions=("540p", "2160p"), levels=(1, 2)
)


def _waterloo_rows():
  rows = []
  for encoder in ("AV1", "H264"):
    for source in (1, 5):
      for resolution in ("540p", "2160p"):
        for level in (1, 2):
          mos = 10.0 * level + source + (0.5 if encoder == "AV1" else 0.0)
          rows.append((encoder, source, resolution, level, mos))
  return rows


def _make_waterloo(root, header: bool):
  """Tiny stand-ins with the real layout (the content need not be at the labelled resolution)."""
  root.mkdir(parents=True, exist_ok=True)
  rows = _waterloo_rows()
  lines = ["encoder,video_number,resolution,distortion_level,MOS"] if header else []
  lines += [f"{e}, {s}, {r}, {lv}, {m:.2f}" for e, s, r, lv, m in rows]
  (root / "scores.txt").write_text("\n".join(lines) + "\n")
  for encoder, source, resolution, level, _ in rows:
    path = waterloo_ivc_4k.file_path(str(root), encoder, source, resolution, level)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    codec = {"AV1": "libsvtav1", "H264": "libx264"}[encoder]
    videos.make_video(path, codec=codec, num_frames=4, width=64, height=48, gop=4, bframes=0)
  return rows


def test_waterloo_score_file_with_and_without_header(tmp_path):
  rows = _waterloo_rows()
  body = "\n".join(f"{e},{s},{r},{lv},{m}" for e, s, r, lv, m in rows)
  (tmp_path / "plain.txt").write_text(body + "\n")
  (tmp_path / "header.txt").write_text("encoder,number,resolution,level,mos\n" + body + "\n")
  for name in ("plain.txt", "header.txt"):
    parsed, problems = waterloo_ivc_4k.parse_score_file(str(tmp_path / name))
    assert problems == []
    assert len(parsed) == len(rows)  # the first data row is never taken for a header
    assert (parsed[0]["encoder"], parsed[0]["source"], parsed[0]["mos"]) == ("AV1", 1, 11.5)


def test_waterloo_build_and_read_back(tmp_path):
  rows = _make_waterloo(tmp_path / "manual", header=False)
  config = waterloo_ivc_4k.WaterlooConfig(name="subset", **_WATERLOO_CONFIG)
  sources.build(
    "waterloo_ivc_4k", str(tmp_path / "tfds"), manual_dir=str(tmp_path / "manual"), config=config
  )
  assert "tensorflow" not in sys.modules
  source = sources.open_source("waterloo_ivc_4k/subset", "full", str(tmp_path / "tfds"))
  records = [source[i] for i in range(len(source))]
  assert len(records) == len(rows) == 16
  by_id = {r["video_id"]: r for r in records}
  assert len(by_id) == 16
  r = by_id["AV1_05_2160p_2"]
  assert r["source"] == "05" and r["encoder"] == "AV1" and r["resolution"] == "2160p"
  assert r["level"] == 2 and r["score_kind"] == "mos" and r["dataset"] == "waterloo_ivc_4k"
  assert r["score"] == pytest.approx(25.5)
  assert r["path"] == str(tmp_path / "manual" / "AV1" / "05" / "3840x2160_2.mp4")
  assert (r["num_frames"], r["width"], r["height"], r["bit_depth"]) == (4, 64, 48, 8)
  assert r["fps"] == pytest.approx(24.0) and r["codec"] == "av1"  # bitstream name, not 'libdav1d'
  assert by_id["H264_01_540p_1"]["codec"] == "h264"
  assert "video_bytes" not in r
  assert decode.read_frames(r["path"], [3]).shape == (1, 48, 64, 3)
  train, test = sources.open_split("waterloo_ivc_4k/subset", "authors", str(tmp_path / "tfds"))
  assert set(test.sources()) == {"01"} and set(train.sources()) == {"05"}
  assert len(train) + len(test) == 16


def test_waterloo_lists_every_problem_at_once(tmp_path):
  manual = tmp_path / "manual"
  _make_waterloo(manual, header=True)
  missing = waterloo_ivc_4k.file_path(str(manual), "H264", 5, "540p", 1)
  os.remove(missing)
  corrupt = waterloo_ivc_4k.file_path(str(manual), "AV1", 1, "2160p", 2)
  with open(corrupt, "wb") as f:
    f.write(b"this is not a video" * 10)
  lines = (manual / "scores.txt").read_text().splitlines()
  (manual / "scores.txt").write_text("\n".join(lines[:-1]) + "\n")  # drops H264 05 2160p 2
  config = waterloo_ivc_4k.WaterlooConfig(name="subset", **_WATERLOO_CONFIG)
  with pytest.raises(DatasetBuildError) as info:
    sources.build("waterloo_ivc_4k", str(tmp_path / "tfds"), manual_dir=str(manual), config=config)
  problems = info.value.problems
  assert len(problems) == 3, problems
  message = str(info.value)
  assert f"{missing}: missing" in message
  assert f"{corrupt}: cannot decode first frame" in message
  assert "no score row for encoder H264, source 5, 2160p, level 2" in message
  with pytest.raises(FileNotFoundError, match="not built"):
    sources.open_source("waterloo_ivc_4k/subset", "full", str(tmp_path / "tfds"))


# --------------------------------------------------------------------------- BVI-HD

_BVI_SOURCES = ("Boxing", "Music")
_BVI_FPS = {"Boxing": 30, "Music": 30}


def _make_bvi_hd(root, separator=","):
  """Two sources x (HEVC QP22, HEVC-SYNTH level 1) as tiny 64x48 yuv420p files named like BVI-HD's."""
  root.mkdir(parents=True, exist_ok=True)
  lines = [separator.join(("Original_Name", "Name", "dmos", "encoder", "distortion_level"))]
  expected = {}
  for k, name in enumerate(_BVI_SOURCES):
    original = f"{name}_64x48_{_BVI_FPS[name]}fps.yuv"
    for encoder, level, stem in (
      ("HEVC", 22, f"{name}_64x48_30fps_HEVC_QP22"),
      ("HEVC-SYNTH", 1, f"{name}_64x48_30fps_SYNTH_1"),
    ):
      dmos = -3.25 + 10 * k + level / 10
      lines.append(separator.join((original, stem + ".yuv", repr(dmos), encoder, str(level))))
      (root / encoder).mkdir(exist_ok=True)
      videos.make_yuv(root / encoder / f"{stem}.yuv", num_frames=3, width=64, height=48)
      expected[f"{encoder}/{stem}"] = dmos
  (root / bvi_hd.SCORE_FILE).write_text("\n".join(lines) + "\n")
  return expected


def test_bvi_hd_score_table_header_is_detected(tmp_path):
  rows = [
    "Boxing_1920x1080_30fps.yuv Boxing_1920x1080_30fps_HEVC_QP27.yuv 1.61 HEVC 27",
    "Boxing_1920x1080_30fps.yuv Boxing_1920x1080_30fps_HEVC_QP42.yuv 38.67 HEVC QP42",
  ]
  (tmp_path / "plain.txt").write_text("\n".join(rows) + "\n")
  # A header may also reorder the columns.
  (tmp_path / "header.txt").write_text(
    "Name,dmos,Original_Name,encoder,distortion_level\n"
    + "\n".join(",".join([r.split()[1], r.split()[2], r.split()[0]] + r.split()[3:]) for r in rows)
  )
  for name in ("plain.txt", "header.txt"):
    parsed, problems = bvi_hd.parse_score_file(str(tmp_path / name))
    assert problems == [] and len(parsed) == 2
    assert parsed[1]["name"] == "Boxing_1920x1080_30fps_HEVC_QP42.yuv"
    assert float(parsed[1]["dmos"]) == 38.67 and parsed[1]["distortion_level"] == "QP42"
  assert bvi_hd.parse_geometry("Boxing_1920x1080_30fps_HEVC_QP42.yuv") == (1920, 1080, 30.0, 8)


def _bvi_config():
  return bvi_hd.BviHdConfig(name="subset", sources=_BVI_SOURCES, distortions_per_source=2)


def test_bvi_hd_build_and_read_back(tmp_path):
  expected = _make_bvi_hd(tmp_path / "manual", separator="\t")
  sources.build(
    "bvi_hd", str(tmp_path / "tfds"), manual_dir=str(tmp_path / "manual"), config=_bvi_config()
  )
  source = sources.open_source("bvi_hd/subset", "full", str(tmp_path / "tfds"))
  records = {source[i]["video_id"]: source[i] for i in range(len(source))}
  assert sorted(records) == sorted(expected)
  r = records["HEVC/Boxing_64x48_30fps_HEVC_QP22"]
  assert r["score"] == pytest.approx(expected["HEVC/Boxing_64x48_30fps_HEVC_QP22"])
  assert r["score"] < 0  # DMOS kept as is, negative values included
  assert r["score_kind"] == "dmos" and r["source"] == "Boxing" and r["encoder"] == "HEVC"
  assert r["level"] == 22 and r["codec"] == "rawvideo" and r["dataset"] == "bvi_hd"
  assert (r["num_frames"], r["width"], r["height"], r["bit_depth"]) == (3, 64, 48, 8)
  assert r["fps"] == pytest.approx(30.0)
  assert os.path.isabs(r["path"]) and os.path.isfile(r["path"])
  assert records["HEVC-SYNTH/Music_64x48_30fps_SYNTH_1"]["level"] == 1
  train, test = sources.open_split("bvi_hd/subset", "authors", str(tmp_path / "tfds"))
  assert set(test.sources()) == {"Music"} and set(train.sources()) == {"Boxing"}


def test_bvi_hd_lists_every_problem_at_once(tmp_path):
  manual = tmp_path / "manual"
  _make_bvi_hd(manual)
  missing = manual / "HEVC" / "Music_64x48_30fps_HEVC_QP22.yuv"
  missing.unlink()
  truncated = manual / "HEVC-SYNTH" / "Boxing_64x48_30fps_SYNTH_1.yuv"
  truncated.write_bytes(truncated.read_bytes()[:-7])
  with open(manual / bvi_hd.SCORE_FILE, "a") as f:
    f.write("Nowhere_64x48_30fps.yuv,Nowhere_64x48_30fps_HEVC_QP22.yuv,3.0,HEVC,22\n")
  with pytest.raises(DatasetBuildError) as info:
    sources.build("bvi_hd", str(tmp_path / "tfds"), manual_dir=str(manual), config=_bvi_config())
  message = str(info.value)
  assert len(info.value.problems) == 3, info.value.problems
  assert f"{missing}: missing" in message
  assert f"{truncated}: cannot decode first frame" in message and "whole number" in message
  assert "source 'Nowhere'" in message


def test_bvi_hd_wrong_row_count_is_reported(tmp_path):
  manual = tmp_path / "manual"
  _make_bvi_hd(manual)
  config = bvi_hd.BviHdConfig(name="subset", sources=_BVI_SOURCES, distortions_per_source=12)
  with pytest.raises(DatasetBuildError, match="source Boxing has 2 rows, expected 12"):
    sources.build("bvi_hd", str(tmp_path / "tfds"), manual_dir=str(manual), config=config)


@pytest.mark.parametrize("name", ["bvi_hd", "waterloo_ivc_4k"])
def test_missing_manual_dir_shows_instructions(tmp_path, name):
  with pytest.raises(FileNotFoundError, match="manual_dir") as info:
    sources.build(name, str(tmp_path / "tfds"), manual_dir=None)
  assert sources.DATASETS[name].MANUAL_DOWNLOAD_INSTRUCTIONS in str(info.value)
  with pytest.raises(FileNotFoundError, match="Expected layout|layout is"):
    sources.build(name, str(tmp_path / "tfds"), manual_dir=str(tmp_path / "nowhere"))
  # Straight through TFDS (e.g. `tfds build`): the builder raises the same kind of error.
  builder = sources.DATASETS[name](data_dir=str(tmp_path / "tfds"), file_format="array_record")
  with pytest.raises(FileNotFoundError, match="manual-download dataset"):
    builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "empty"))
    )


def test_unknown_dataset_name():
  with pytest.raises(KeyError, match="known:.*synthetic_compressed"):
    sources.build("konvid", "/tmp/unused")


# --------------------------------------------------------------------------- synthetic_compressed


@pytest.fixture(scope="module")
def tiny_builds(tmp_path_factory):
  """The tiny config built twice: here and in a fresh process (some encoder nondeterminism only
  shows between processes)."""
  dirs = [str(tmp_path_factory.mktemp(f"synthetic{k}")) for k in range(2)]
  sources.build("synthetic_compressed/tiny", dirs[0])
  subprocess.run(
    [
      sys.executable,
      "-c",
      "from internvqa_jax.data import sources; "
      f'sources.build("synthetic_compressed/tiny", {dirs[1]!r})',
    ],
    check=True,
    capture_output=True,
  )
  return [sources.open_source("synthetic_compressed/tiny", "full", d) for d in dirs]


def test_synthetic_is_deterministic(tiny_builds):
  a, b = tiny_builds
  config = synthetic_compressed.TINY_CONFIG
  assert len(a) == len(b) == config.num_clips == 32
  for i in range(len(a)):
    ra, rb = a[i], b[i]
    assert ra["video_id"] == rb["video_id"]
    assert ra["score"] == rb["score"] and ra["video_bytes"] == rb["video_bytes"]


def test_synthetic_records_decode_and_labels_are_consistent(tiny_builds):
  source = tiny_builds[0]
  config = synthetic_compressed.TINY_CONFIG
  records = [source[i] for i in range(len(source))]
  assert {(r["width"], r["height"]) for r in records} == set(config.resolutions)
  assert {r["codec"] for r in records} == {"h264", "hevc", "vp9", "av1"}
  for r in records:
    assert r["path"] == "" and r["score_kind"] == "mos" and r["source"] in config.sources
    assert 0 < r["score"] < 100
    assert r["score"] == pytest.approx(synthetic_video.dsnr_to_mos(r["dsnr"]), abs=1e-3)
    assert -30 <= r["dsnr"] <= 30 and 20 < r["psnr"] <= 60
    info = decode.probe(r["video_bytes"])
    assert canonical_codec(info.codec) == r["codec"]
    assert (info.num_frames, info.width, info.height) == (
      config.num_frames,
      r["width"],
      r["height"],
    )
    frames = decode.read_frames(r["video_bytes"], [0, config.num_frames - 1])
    assert frames.shape == (2, r["height"], r["width"], 3)
  # Stronger compression (higher CRF) -> lower score, for every source, resolution and encoder.
  groups = {}
  for r in records:
    groups.setdefault((r["source"], r["width"], r["encoder"]), []).append((r["level"], r["score"]))
  for key, pairs in groups.items():
    scores = [s for _, s in sorted(pairs)]
    assert all(x > y for x, y in itertools.pairwise(scores)), (key, sorted(pairs))
  scores = np.array([r["score"] for r in records])
  assert scores.max() - scores.min() > 40  # the grid covers good and bad quality


def test_synthetic_detail_snr_known_values():
  """DSNR = 10 log10(fine-detail energy / luma MSE) per frame, clipped to +-30 dB, then averaged."""
  rgb = np.random.default_rng(0).integers(0, 256, (3, 16, 24, 3), dtype=np.uint8)
  rgb[2] = 128  # a flat frame: no detail at all
  reference = synthetic_video.to_yuv420p(rgb)
  planes = [f.to_ndarray() for f in reference]
  decoded = [p.copy() for p in planes]
  decoded[0][:16, :12] ^= 3  # luma error on frame 0 ...
  decoded[0][16:] ^= 7  # ... chroma errors do not count
  decoded[2][0, 0] ^= 1  # any error on a flat frame is fully visible
  y = planes[0][:16].astype(np.float64)
  detail = np.mean((y - scipy.ndimage.gaussian_filter(y, 1.0)) ** 2)
  mse = np.mean((decoded[0][:16].astype(np.float64) - y) ** 2)
  assert 0 < 10 * np.log10(detail / mse) < 30
  per_frame = [10 * np.log10(detail / mse), 30.0, -30.0]  # frame 1 is exact, frame 2 flat
  expected = np.mean(per_frame)
  assert synthetic_video.detail_snr(decoded, reference) == pytest.approx(expected, abs=1e-9)
  assert synthetic_video.detail_snr(planes, reference) == 30.0
  assert synthetic_video.dsnr_to_mos(0.0) == pytest.approx(50.0)
  assert synthetic_video.dsnr_to_mos(8.0) == pytest.approx(100 / (1 + np.exp(-2)))


def test_synthetic_pristine_clip_moves_smoothly():
  image = synthetic_video.load_source_image("astronaut")
  path = synthetic_video.random_camera_path(
    synthetic_video.source_seed("astronaut", 0), image.shape[:2], 4 / 3
  )
  clip = synthetic_video.render_clip(image, path, 64, 48, 24).astype(np.float64)
  steps = np.abs(np.diff(clip, axis=0)).mean(axis=(1, 2, 3))
  one_pixel = np.abs(clip[0, :, 1:] - clip[0, :, :-1]).mean()  # change made by a 1-px shift
  assert np.all(steps > 0)  # the camera moves on every frame ...
  assert steps.max() < 2 * one_pixel  # ... by about a pixel at most (smooth, sub-pixel motion) ...
  assert np.abs(clip[-1] - clip[0]).mean() > 4 * steps.max()  # ... adding up to a real pan/zoom
  still = synthetic_video.CameraPath((0.5, 0.5), (0.5, 0.5), 1.0, 1.0, 0.6)
  fixed = synthetic_video.render_clip(image, still, 64, 48, 3)
  assert np.array_equal(fixed[0], fixed[2])


def test_synthetic_missing_images_fail_clearly(tmp_path, monkeypatch):
  monkeypatch.setattr(synthetic_video, "skimage_data_dir", lambda: str(tmp_path))
  with pytest.raises(FileNotFoundError, match="astronaut.*sample images"):
    sources.build("synthetic_compressed/tiny", str(tmp_path / "tfds"))


@pytest.mark.slow
def test_synthetic_default_full_build(tmp_path):
  sources.build("synthetic_compressed", str(tmp_path))
  source = sources.open_source("synthetic_compressed", "full", str(tmp_path))
  assert len(source) == synthetic_compressed.DEFAULT_CONFIG.num_clips == 960
  records = [source[i] for i in range(len(source))]
  scores = np.array([r["score"] for r in records])
  assert scores.min() < 15 and scores.max() > 90 and scores.std() > 20
  assert len({r["source"] for r in records}) == 16
  # Every resolution films its own region: the first frames of one source's resolutions differ.
  firsts = {
    (r["width"], r["height"]): decode.read_frames(r["video_bytes"], [0])[0]
    for r in records
    if r["source"] == "brick" and r["level"] == 18
  }
  small, large = firsts[(64, 48)].astype(np.float64), firsts[(128, 96)].astype(np.float64)
  large_down = large.reshape(48, 2, 64, 2, 3).mean(axis=(1, 3))
  assert np.abs(small - large_down).mean() > 10
