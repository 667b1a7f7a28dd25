"""Frame-exact decoding of containers and raw YUV, colour matrices, errors."""

import collections
import os

import av
import numpy as np
import pytest
from videos import (  # tests/videos.py
  encode_frames,
  frame_number_of,
  make_video,
  make_video_bytes,
  make_yuv,
)

from internvqa_jax.data import VideoDecodeError, VideoInfo, probe, read_frames
from internvqa_jax.data import container as container_lib
from internvqa_jax.data import yuv as yuv_lib
from internvqa_jax.data.colour import frame_to_rgb, rgb_to_yuv_reference, yuv_to_rgb_reference

N = 48
GOP = 12
# Unsorted, with duplicates, spanning every GOP; first and last frame.
INDICES = [37, 5, 13, 13, 0, 47, 23, 12, 11, 36, 24, 5, 30, 18, 46, 1]


def _numbers(frames):
  return [frame_number_of(f) for f in frames]


@pytest.fixture(scope="module")
def vdir(tmp_path_factory):
  return tmp_path_factory.mktemp("videos")


_CASES = {
  "h264_bframes_mp4": dict(codec="libx264", ext="mp4"),
  "hevc_open_gop_mp4": dict(codec="libx265", ext="mp4", open_gop=True),
  "hevc_open_gop_mkv": dict(codec="libx265", ext="mkv", open_gop=True),
  "vp9_altref_webm": dict(codec="libvpx-vp9", ext="webm"),
  "av1_ivf": dict(codec="libsvtav1", ext="ivf"),
  "av1_open_gop_mp4": dict(codec="libsvtav1", ext="mp4", open_gop=True),
  "hevc_10bit_mkv": dict(codec="libx265", ext="mkv", pix_fmt="yuv420p10le"),
}


@pytest.fixture(scope="module")
def videos(vdir):
  out = {}
  for name, kw in _CASES.items():
    kw = dict(kw)
    ext = kw.pop("ext")
    out[name] = make_video(vdir / f"{name}.{ext}", num_frames=N, gop=GOP, **kw)
  return out


@pytest.mark.parametrize("name", sorted(_CASES))
def test_random_access_is_frame_exact(videos, name):
  path = videos[name]
  frames = read_frames(path, INDICES)
  assert frames.dtype == np.uint8 and frames.shape == (len(INDICES), 48, 64, 3)
  assert _numbers(frames) == INDICES
  # Single-frame reads (a fresh seek each) and a full sequential read.
  for i in (47, 25, 6):
    assert _numbers(read_frames(path, [i])) == [i]
  assert _numbers(read_frames(path, np.arange(N))) == list(range(N))


def test_probe(videos):
  info = probe(videos["hevc_open_gop_mkv"])
  assert info == VideoInfo(
    num_frames=N,
    fps=24.0,
    width=64,
    height=48,
    codec="hevc",
    bit_depth=8,
    pix_fmt="yuv420p",
    duration=2.0,
  )
  info10 = probe(videos["hevc_10bit_mkv"])
  assert (info10.bit_depth, info10.pix_fmt) == (10, "yuv420p10le")
  assert probe(videos["av1_ivf"]).codec == "libdav1d"


def test_hevc_file_really_is_open_gop(videos):
  # Open GOP: some packet that follows a later keyframe in decode order is
  # presented before it (a leading picture). Closed-GOP H.264 has none.
  def has_leading_pictures(path):
    with av.open(path) as c:
      packets = [(p.pts, p.is_keyframe) for p in c.demux(video=0) if p.size]
    key_pts = None
    for pts, key in packets:
      if key and pts > 0:
        key_pts = pts
      elif key_pts is not None and pts < key_pts:
        return True
    return False

  assert has_leading_pictures(videos["hevc_open_gop_mp4"])
  assert has_leading_pictures(videos["hevc_open_gop_mkv"])
  assert not has_leading_pictures(videos["h264_bframes_mp4"])


def test_threads_do_not_change_frames(videos):
  path = videos["hevc_open_gop_mp4"]
  a = read_frames(path, INDICES, threads=1)
  b = read_frames(path, INDICES, threads=3)
  np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["h264_bframes_mp4", "hevc_open_gop_mkv"])
def test_skipping_unwanted_nonref_frames_changes_no_pixel(videos, name, monkeypatch):
  fast = read_frames(videos[name], INDICES)
  monkeypatch.setattr(container_lib, "_SKIP_NONREF_DECODERS", frozenset())
  np.testing.assert_array_equal(read_frames(videos[name], INDICES), fast)


def test_bytes_input():
  data = make_video_bytes("matroska", codec="libx265", open_gop=True, num_frames=N, gop=GOP)
  assert probe(data).num_frames == N
  assert _numbers(read_frames(data, INDICES)) == INDICES


def test_elementary_stream_without_timestamps(vdir):
  path = make_video(vdir / "raw.h264", codec="libx264", num_frames=30, gop=GOP)
  assert probe(path).num_frames == 30
  assert _numbers(read_frames(path, [29, 3, 3, 15])) == [29, 3, 3, 15]


class _LateSeekContainer:
  """Container proxy whose first seek lands one GOP past the target."""

  def __init__(self, container, fps):
    self._c, self._fps, self.seeks = container, fps, 0

  def seek(self, offset, **kw):
    self.seeks += 1
    if self.seeks == 1:
      offset += round(GOP / self._fps / kw["stream"].time_base)
    return self._c.seek(offset, **kw)

  def __getattr__(self, name):
    return getattr(self._c, name)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return self._c.__exit__(*exc)


def test_demuxer_overshoot_is_detected_and_retried(videos, monkeypatch):
  opened = []
  real_open = container_lib._open

  def late_open(src):
    opened.append(_LateSeekContainer(real_open(src), 24))
    return opened[-1]

  monkeypatch.setattr(container_lib, "_open", late_open)
  path = videos["hevc_open_gop_mp4"]
  assert _numbers(read_frames(path, [14])) == [14]
  assert opened[-1].seeks == 2  # landed at frame 24, retried from frame 0


def test_wrong_keyframe_flags_are_harmless(videos, monkeypatch):
  # Claim every frame is a keyframe: each seek then lands on the true
  # keyframe before the target and frames are still matched by pts.
  real_build = container_lib._build_index

  def every_frame_key(*args):
    index = real_build(*args)
    return container_lib._Index(index.num_frames, index.pts, np.arange(index.num_frames))

  monkeypatch.setattr(container_lib, "_build_index", every_frame_key)
  monkeypatch.setattr(container_lib, "_INDEX_CACHE", collections.OrderedDict())
  for name in ("hevc_open_gop_mkv", "h264_bframes_mp4"):
    assert _numbers(read_frames(videos[name], INDICES)) == INDICES


def test_plan_groups_close_targets_and_seeks_far_ones():
  keyframes = np.array([0, 12, 24, 36])
  runs = container_lib._plan(np.array([1, 3, 13, 14, 30, 40]), keyframes)
  # 13 is past keyframe 12 but only 9 frames after 3: decoding on is cheaper
  # than a seek only within the slack, so it starts a new pass at 12.
  assert runs == [(0, [1, 3]), (1, [13, 14]), (2, [30]), (3, [40])]
  assert container_lib._plan(np.array([10, 13]), keyframes) == [(0, [10, 13])]


def test_out_of_range_index_names_file_index_and_count(videos):
  path = videos["h264_bframes_mp4"]
  with pytest.raises(IndexError, match=rf"{os.path.basename(path)}.*48.*48 frames"):
    read_frames(path, [3, 48])
  with pytest.raises(IndexError, match="-1 out of range"):
    read_frames(path, [-1])


def test_garbage_file_is_a_decode_error(vdir):
  path = vdir / "garbage.mp4"
  path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
  with pytest.raises(VideoDecodeError, match="garbage.mp4.*cannot open"):
    read_frames(path, [0])
  assert issubclass(VideoDecodeError, ValueError)


@pytest.mark.parametrize("ext,frac", [("mkv", 0.6), ("mp4", 0.6), ("ivf", 0.6)])
def test_truncated_file_is_a_decode_error(vdir, ext, frac):
  codec = "libsvtav1" if ext == "ivf" else "libx264"
  full = make_video(vdir / f"whole.{ext}", codec=codec, num_frames=N, gop=GOP)
  data = open(full, "rb").read()
  cut = vdir / f"cut.{ext}"
  cut.write_bytes(data[: int(len(data) * frac)])
  # mp4 keeps its sample table at the end: it cannot even be opened.
  # mkv / ivf announce their length: fewer packets than promised.
  with pytest.raises(VideoDecodeError, match=r"cut\." + ext + ".*(truncated|cannot open)"):
    read_frames(cut, [0, N - 1])


def test_unsupported_codec_is_a_decode_error(videos, vdir):
  # Relabel the H.264 sample entry as AVS3, which this FFmpeg cannot decode
  # (like AVS2 without libdavs2).
  data = open(videos["h264_bframes_mp4"], "rb").read()
  assert b"avc1" in data  # ftyp brand and the sample entry
  path = vdir / "avs3.mp4"
  path.write_bytes(data.replace(b"avc1", b"avs3"))
  for fn in (lambda: read_frames(path, [0]), lambda: probe(path)):
    with pytest.raises(VideoDecodeError, match="avs3.mp4.*no decoder"):
      fn()


def test_missing_frames_are_an_error_not_a_substitution(videos, vdir):
  # The cavs (AVS1) decoder fed H.264 data produces no frames.
  data = open(videos["h264_bframes_mp4"], "rb").read()
  path = vdir / "cavs.mp4"
  path.write_bytes(data.replace(b"avc1", b"cavs"))
  with pytest.raises(VideoDecodeError, match="cavs.mp4.*not produced"):
    read_frames(path, [0, 5])


def test_geometry_mismatch_for_container(videos):
  with pytest.raises(VideoDecodeError, match="width=1920"):
    read_frames(videos["h264_bframes_mp4"], [0], width=1920)


# --- colour --------------------------------------------------------------

_RGB = np.array([200, 30, 60])


def _solid(width, height, yuv, n=2):
  y, u, v = yuv
  arr = np.concatenate(
    [
      np.full((height, width), y, np.uint8),
      np.full((height // 4, width), u, np.uint8),
      np.full((height // 4, width), v, np.uint8),
    ]
  )
  return [av.VideoFrame.from_ndarray(arr, format="yuv420p") for _ in range(n)]


@pytest.mark.parametrize(
  "width,height,tag,rng_tag,expected",
  [
    (128, 72, None, None, "bt601"),  # SD: BT.601
    (1280, 720, None, None, "bt709"),  # HD: BT.709
    (128, 72, 1, None, "bt709"),  # SD tagged BT.709
    (1280, 720, 6, None, "bt601"),  # HD tagged SMPTE 170M
    (128, 72, None, 2, "full"),  # tagged full range
  ],
)
def test_colour_matrix_and_range(vdir, width, height, tag, rng_tag, expected):
  # Lossless H.264 of one Y'CbCr colour: the BT.601 code values of _RGB.
  yuv = [round(c) for c in rgb_to_yuv_reference(_RGB, bit_depth=8, matrix="bt601")]
  path = vdir / f"solid_{width}_{tag}_{rng_tag}.mkv"
  encode_frames(
    path,
    _solid(width, height, yuv),
    codec="libx264",
    width=width,
    height=height,
    options={"qp": "0", "preset": "ultrafast"},
    colorspace=tag,
    color_range=rng_tag,
  )
  got = read_frames(path, [1])[0].reshape(-1, 3)
  assert (got == got[0]).all()  # flat
  one = [np.full((2, 2), yuv[0]), np.full((1, 1), yuv[1]), np.full((1, 1), yuv[2])]
  if expected == "full":
    want = yuv_to_rgb_reference(*one, bit_depth=8, matrix="bt601", full_range=True)
  else:
    want = yuv_to_rgb_reference(*one, bit_depth=8, matrix=expected)
  np.testing.assert_allclose(got[0], want[0, 0], atol=1)
  if expected == "bt601":
    np.testing.assert_allclose(got[0], _RGB, atol=2)  # the known colour
  else:  # the choice matters: far from the BT.601 answer
    assert np.abs(got[0].astype(int) - _RGB).max() >= 7


def test_fast_conversion_matches_reference_10bit():
  h, w = 72, 128
  yy, xx = np.mgrid[0:h, 0:w]
  y = (64 + 876 * (0.5 + 0.5 * np.sin(xx / 9.0) * np.cos(yy / 7.0))).astype(np.uint16)
  # Chroma varies slowly (<= 8 codes per chroma sample) so that upsampling
  # filters agree to ~1 level; the luma has full detail.
  u = (512 + 300 * np.sin(xx[::2, ::2] / 40.0)).astype(np.uint16)
  v = (512 + 300 * np.cos(yy[::2, ::2] / 40.0)).astype(np.uint16)
  frame = av.VideoFrame.from_ndarray(
    np.concatenate([y, u.reshape(-1, w), v.reshape(-1, w)]), format="yuv420p10le"
  )
  got = frame_to_rgb(frame, matrix="bt709", full_range=False).astype(int)
  want = yuv_to_rgb_reference(y, u, v, bit_depth=10, matrix="bt709").astype(int)
  # A wrong matrix, range or bit depth would be off by tens.
  assert np.abs(got - want).max() <= 3
  assert abs((got - want).mean()) < 0.1


# --- raw YUV -------------------------------------------------------------


@pytest.mark.parametrize(
  "name,fields",
  [
    ("BallUnderWater_1920x1080_60fps.yuv", dict(width=1920, height=1080, fps=60.0)),
    ("Boxing_1920x1080_50fps_HEVC_QP27.yuv", dict(width=1920, height=1080, fps=50.0)),
    (
      "Name_1920x1080_60fps_10bit_420.yuv",
      dict(width=1920, height=1080, fps=60.0, bit_depth=10, chroma="420"),
    ),
    ("clip_3840x2160_29.97fps_8bit.yuv", dict(width=3840, height=2160, fps=29.97, bit_depth=8)),
    ("noinfo.yuv", {}),
  ],
)
def test_yuv_name_parsing(name, fields):
  assert yuv_lib.parse_yuv_name("/data/BVI-HD/" + name) == fields


@pytest.mark.parametrize("bit_depth", [8, 10])
def test_yuv_read_frame_exact(vdir, bit_depth):
  path = make_yuv(vdir / f"Seq_64x48_30fps_{bit_depth}bit.yuv", num_frames=10, bit_depth=bit_depth)
  info = probe(path)
  assert (info.num_frames, info.width, info.height, info.fps, info.bit_depth) == (
    10,
    64,
    48,
    30.0,
    bit_depth,
  )
  idx = [9, 2, 2, 0, 5]
  assert _numbers(read_frames(path, idx)) == idx


def test_yuv_kwargs_override_and_colour(vdir):
  # A flat BT.601 colour in 10 bit; geometry only from keyword arguments.
  y, u, v = (round(c) for c in rgb_to_yuv_reference(_RGB, bit_depth=10, matrix="bt601"))
  frame = np.concatenate([np.full(64 * 48, y), np.full(32 * 24, u), np.full(32 * 24, v)]).astype(
    "<u2"
  )
  path = vdir / "flat.yuv"
  path.write_bytes(frame.tobytes() * 3)
  got = read_frames(path, [2], width=64, height=48, bit_depth=10)
  np.testing.assert_allclose(got.reshape(-1, 3), np.broadcast_to(_RGB, (64 * 48, 3)), atol=1)
  # Read as the (default) 8 bit, the same bytes are caught, not misread.
  with pytest.raises(VideoDecodeError, match="flat.yuv.*16-bit"):
    read_frames(path, [0], width=64, height=48)


def test_yuv_partial_frame_is_an_error(vdir):
  path = vdir / "Bad_64x48_30fps.yuv"
  path.write_bytes(b"\x10" * (64 * 48 * 3 // 2 * 2 + 100))
  with pytest.raises(
    VideoDecodeError, match=r"Bad_64x48_30fps.yuv: size 9316 bytes.*4608 bytes each"
  ):
    read_frames(path, [0])


def test_yuv_errors(vdir):
  path = make_yuv(vdir / "Seq_64x48.yuv", num_frames=4)
  with pytest.raises(IndexError, match=r"Seq_64x48.yuv.*index 4 out of range.*4 frames"):
    read_frames(path, [0, 4])
  with pytest.raises(VideoDecodeError, match="frame size unknown"):
    read_frames(vdir / "nosize.yuv", [0])
  with pytest.raises(VideoDecodeError, match="4:2:0 only"):
    yuv_lib.yuv_geometry("A_64x48_422.yuv")
