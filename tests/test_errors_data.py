"""Bad input and faults against decoding, the dataset builders and the sources (docs/errors.md)."""

import fractions
import glob
import os
import warnings

import av
import numpy as np
import pytest

from internvqa_jax.data import decode, recipes, sources, transforms, yuv
from internvqa_jax.data.builders import DatasetBuildError, bvi_hd
from tests import videos
from tests.test_builders import _bvi_config, _make_bvi_hd

# Nominal 30 fps, 9 of 24 frames dropped (as phones and screen recorders write).
VFR_PTS = [0, 1, 2, 4, 5, 7, 9, 10, 12, 14, 16, 17, 19, 21, 23]


def _make_vfr(path, codec):
  fmt = {".mkv": "matroska", ".webm": "webm", ".mp4": "mp4"}[os.path.splitext(path)[1]]
  with av.open(str(path), "w", format=fmt) as c:
    s = c.add_stream(codec, rate=30)
    s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
    s.codec_context.time_base = fractions.Fraction(1, 30)
    s.options = {"g": "6"} if codec == "libx264" else {"g": "6", "deadline": "realtime"}
    for i, t in enumerate(VFR_PTS):
      rgb = videos.make_frame(i, 64, 48)
      f = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
      f.pts, f.time_base = t, s.codec_context.time_base
      for p in s.encode(f):
        c.mux(p)
    for p in s.encode():
      c.mux(p)
  return str(path)


# Item 3: variable-frame-rate Matroska/WebM read frame-exactly, as MP4 does.
@pytest.mark.parametrize("ext,codec", [(".mkv", "libx264"), (".webm", "libvpx-vp9"),
                                       (".mp4", "libx264")])  # fmt: skip
def test_variable_frame_rate_files_read_frame_exactly(tmp_path, ext, codec):
  path = _make_vfr(tmp_path / f"vfr{ext}", codec)
  assert decode.probe(path).num_frames == len(VFR_PTS)
  order = [14, 0, 7, 3, 3, 11]
  frames = decode.read_frames(path, order)
  assert [videos.frame_number_of(f) for f in frames] == order
  # A cut file still fails, naming it.
  data = open(path, "rb").read()
  cut = tmp_path / f"cut{ext}"
  cut.write_bytes(data[: int(len(data) * 0.6)])
  with pytest.raises(decode.VideoDecodeError, match=rf"cut{ext}.*(truncated|cannot open)"):
    decode.read_frames(cut, [0, len(VFR_PTS) - 1])


def test_matroska_missing_only_its_last_frame_is_truncated(tmp_path):
  """The duration check is exact to a frame: the time test did not loosen truncation."""
  data = open(videos.make_video(tmp_path / "whole.mkv", num_frames=24, gop=6), "rb").read()
  cut = tmp_path / "cut.mkv"
  for drop in range(1, 400):  # The smallest cut that loses a packet (the file ends in blocks).
    cut.write_bytes(data[: len(data) - drop])
    with av.open(str(cut)) as c:
      if sum(1 for q in c.demux(c.streams.video[0]) if q.size) == 23:
        break
  else:
    pytest.fail("no cut of the file loses exactly its last packet")
  with pytest.raises(decode.VideoDecodeError, match=r"cut\.mkv: truncated: .*23 frames"):
    decode.probe(cut)


# Item 5: labels validated at build time, naming file, line and video.
@pytest.mark.parametrize("bad", ["nan", "inf", "-Infinity", "", "good"])
def test_bvi_hd_bad_dmos_is_a_build_error(tmp_path, bad):
  manual = tmp_path / "manual"
  _make_bvi_hd(manual)
  table = manual / bvi_hd.SCORE_FILE
  lines = table.read_text().splitlines()
  fields = lines[2].split(",")
  fields[2] = bad
  lines[2] = ",".join(fields)
  table.write_text("\n".join(lines) + "\n")
  with pytest.raises(DatasetBuildError) as e:
    sources.build("bvi_hd", str(tmp_path / "tfds"), manual_dir=str(manual), config=_bvi_config())
  msg = str(e.value)
  assert f"{table}:3" in msg and fields[1] in msg, msg
  assert not glob.glob(str(tmp_path / "tfds" / "bvi_hd" / "**" / "*.array_record*"), recursive=True)


# Item 13: a Name that leaves manual_dir is refused; the outside file is never read.
def test_bvi_hd_name_outside_manual_dir_is_refused(tmp_path):
  manual = tmp_path / "data" / "manual"
  _make_bvi_hd(manual)
  secret = tmp_path / "secret_64x48_30fps.yuv"
  videos.make_yuv(secret, num_frames=3)
  table = manual / bvi_hd.SCORE_FILE
  lines = table.read_text().splitlines()
  fields = lines[1].split(",")
  fields[1] = "../../secret_64x48_30fps.yuv"
  lines[1] = ",".join(fields)
  table.write_text("\n".join(lines) + "\n")
  with pytest.raises(DatasetBuildError) as e:
    sources.build("bvi_hd", str(tmp_path / "tfds"), manual_dir=str(manual), config=_bvi_config())
  msg = str(e.value)
  assert f"{table}:2" in msg and "../../secret_64x48_30fps.yuv" in msg
  assert "points outside the manual_dir" in msg
  assert not (tmp_path / "tfds" / "bvi_hd").exists() or not glob.glob(
    str(tmp_path / "tfds" / "bvi_hd" / "**" / "*.array_record*"), recursive=True
  )


# Item 8 (data): a damaged ArrayRecord file names itself.
def test_damaged_array_record_names_its_files(tmp_path):
  manual = tmp_path / "manual"
  _make_bvi_hd(manual)
  sources.build("bvi_hd", str(tmp_path / "tfds"), manual_dir=str(manual), config=_bvi_config())
  files = glob.glob(str(tmp_path / "tfds" / "bvi_hd" / "**" / "*.array_record*"), recursive=True)
  assert files
  for f in files:
    data = open(f, "rb").read()
    with open(f, "wb") as out:  # Keep the header, scramble the records.
      out.write(
        data[:64] + bytes(np.random.default_rng(0).integers(0, 256, len(data) - 64, np.uint8))
      )
  src = sources.open_source("bvi_hd/subset", "full", str(tmp_path / "tfds"))
  with pytest.raises(ValueError) as e:
    src[0]
  msg = str(e.value)
  assert "record 0 of split 'full' cannot be read" in msg, msg
  assert "bvi_hd-full.array_record-00000-of-00001" in msg and "rebuild" in msg, msg


# Item 8 (data): a raw frame size FFmpeg cannot convert is named before any FFmpeg call.
def test_huge_raw_yuv_geometry_is_a_clear_error(tmp_path):
  path = videos.make_yuv(tmp_path / "clip.yuv", num_frames=2)
  with pytest.raises(decode.VideoDecodeError, match=r"clip\.yuv: frame size 16384x16384 is larger"):
    decode.read_frames(path, [0], width=16384, height=16384)


# Item 14: short videos and luma-like chroma are warned about, naming the file.
def test_short_video_warns_naming_it(tmp_path):
  path = videos.make_video(tmp_path / "short.mp4", num_frames=3, gop=3)
  recipe = recipes.InternVideo2Recipe(
    num_frames=8, crop_size=32, resize_short=None, test_clips=1, test_crops=1, flip=False
  )

  class Reader:
    def __init__(self, path):
      self.path = path

    def __call__(self, idx):
      return decode.read_frames(self.path, idx)

  with pytest.warns(
    transforms.ShortVideoWarning, match=r"short\.mp4: 3 frame\(s\), fewer than the 8"
  ):
    clip = recipe.eval(Reader(path), 3)
  assert clip.shape == (1, 8, 32, 32, 3)
  long = videos.make_video(tmp_path / "long.mp4", num_frames=8, gop=4)
  with warnings.catch_warnings():
    warnings.simplefilter("error", transforms.ShortVideoWarning)
    recipe.eval(Reader(long), 8)  # Long enough: silent.


def _natural_yuv(path, width=128, height=96):
  """One 4:2:0 frame (BT.601 limited) of scikit-image's bundled astronaut photograph."""
  from skimage import data

  rgb = data.astronaut()[::4, ::4][:height, :width].astype(np.float64)
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
  u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
  v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
  sub = lambda p: p.reshape(height // 2, 2, width // 2, 2).mean((1, 3))
  planes = [y.ravel(), sub(u).ravel(), sub(v).ravel()]
  np.concatenate(planes).round().clip(0, 255).astype(np.uint8).tofile(path)
  return str(path)


def test_wrong_raw_yuv_geometry_warns_chroma_looks_like_luma(tmp_path):
  path = _natural_yuv(tmp_path / "photo_128x96.yuv")
  with warnings.catch_warnings():
    warnings.simplefilter("error", yuv.ChromaLooksLikeLumaWarning)
    decode.read_frames(path, [0])  # The right geometry: no warning.
  with pytest.warns(yuv.ChromaLooksLikeLumaWarning, match=r"photo_128x96\.yuv: read as 128x48"):
    frames = decode.read_frames(path, [0], width=128, height=48)  # Half height: luma in chroma.
  assert frames.shape == (1, 48, 128, 3)  # A warning, not an error: the read goes on.


def test_waterloo_non_finite_mos_names_file_line_and_video(tmp_path):
  from internvqa_jax.data.builders import waterloo_ivc_4k

  path = tmp_path / waterloo_ivc_4k.SCORE_FILE
  path.write_text(
    "encoder,video_number,resolution,level,MOS\nHEVC,1,540p,1,nan\nHEVC,1,540p,2,71.5\n"
  )
  rows, problems = waterloo_ivc_4k.parse_score_file(str(path))
  assert [r["level"] for r in rows] == [2]
  assert len(problems) == 1 and f"{path}:2: video HEVC/1 540p level 1" in problems[0], problems
