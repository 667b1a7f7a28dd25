"""Raw planar Y'CbCr 4:2:0 files (BVI-HD, pre-decoded caches) by memmap.

Layout per frame: Y (W*H samples), then Cb and Cr ((W/2)*(H/2) each); 8-bit
samples are bytes, deeper ones little-endian uint16 (`yuv420p10le`). Frame k
is the slice [k*fs, (k+1)*fs) of the memmap, so random access is exact.

Geometry comes from the file name, '_'-separated fields of the stem:
  <W>x<H>          required unless width/height are given, e.g. 1920x1080
  <R>fps           frame rate, e.g. 60fps, 29.97fps
  <B>bit           bit depth, e.g. 10bit (default 8)
  420              chroma format (422 / 444 are rejected: 4:2:0 only)
BVI-HD names: `<Name>_1920x1080_<fps>fps.yuv` (references) and
`<Name>_1920x1080_<fps>fps_HEVC_QP<qp>.yuv`; also e.g.
`Name_1920x1080_60fps_10bit_420.yuv`. Keyword arguments override the name.

A wrong width/height cannot be detected in general, but the common mistakes
(half or double the height or width) put luma rows into the chroma planes,
which then carry luma's fine detail: ChromaLooksLikeLumaWarning names the file
when the first frame read has chroma gradients above CHROMA_DETAIL_LIMIT times
those of the 2x-subsampled luma. Measured on the 10 colour images of
scikit-image's data module as 4:2:0: 0.13-0.70 read right, 1.36-49 read with
half the height or half the width.
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from collections.abc import Sequence

import av
import numpy as np

from internvqa_jax.data import colour
from internvqa_jax.data.video_types import VideoDecodeError, VideoInfo, check_indices

_SIZE = re.compile(r"^(\d+)x(\d+)$")
_FPS = re.compile(r"^(\d+(?:\.\d+)?)fps$", re.IGNORECASE)
_BITS = re.compile(r"^(\d+)bits?$", re.IGNORECASE)
_CHROMA = re.compile(r"^(420|422|444)p?$")
# FFmpeg's av_image_check_size: (w + 128) * (h + 128) must stay below INT_MAX / 8.
_FFMPEG_MAX_AREA = (2**31 - 1) // 8
CHROMA_DETAIL_LIMIT = 1.0
_CHECKED: set = set()  # (path, geometry) whose chroma was checked; each file is checked once.


class ChromaLooksLikeLumaWarning(UserWarning):
  """The chroma planes of a raw .yuv read have luma-like detail: probably a wrong width/height."""


@dataclasses.dataclass(frozen=True)
class YuvGeometry:
  width: int
  height: int
  bit_depth: int
  fps: float | None
  bit_depth_from_default: bool = False

  @property
  def dtype(self) -> np.dtype:
    return np.dtype(np.uint8) if self.bit_depth == 8 else np.dtype("<u2")

  @property
  def frame_samples(self) -> int:
    return self.width * self.height * 3 // 2

  @property
  def frame_bytes(self) -> int:
    return self.frame_samples * self.dtype.itemsize

  @property
  def pix_fmt(self) -> str:
    return "yuv420p" if self.bit_depth == 8 else f"yuv420p{self.bit_depth}le"


def parse_yuv_name(path) -> dict:
  """Fields found in a raw YUV file name: width, height, fps, bit_depth."""
  stem = os.path.splitext(os.path.basename(os.fspath(path)))[0]
  found: dict = {}
  for token in stem.split("_"):
    if m := _SIZE.match(token):
      found["width"], found["height"] = int(m[1]), int(m[2])
    elif m := _FPS.match(token):
      found["fps"] = float(m[1])
    elif m := _BITS.match(token):
      found["bit_depth"] = int(m[1])
    elif m := _CHROMA.match(token):
      found["chroma"] = m[1]
  return found


def yuv_geometry(path, *, width=None, height=None, bit_depth=None, fps=None) -> YuvGeometry:
  """Geometry from the name, overridden by keyword arguments; validated."""
  name = os.fspath(path)
  parsed = parse_yuv_name(name)
  if parsed.get("chroma", "420") != "420":
    raise VideoDecodeError(
      f"{name}: chroma format {parsed['chroma']} is not supported (planar 4:2:0 only)"
    )
  width = width if width is not None else parsed.get("width")
  height = height if height is not None else parsed.get("height")
  if width is None or height is None:
    raise VideoDecodeError(
      f"{name}: frame size unknown: the name has no <W>x<H> field and width/height were not given"
    )
  defaulted = bit_depth is None and "bit_depth" not in parsed
  bit_depth = bit_depth if bit_depth is not None else parsed.get("bit_depth", 8)
  fps = fps if fps is not None else parsed.get("fps")
  width, height, bit_depth = int(width), int(height), int(bit_depth)
  if width <= 0 or height <= 0 or width % 2 or height % 2:
    raise VideoDecodeError(f"{name}: 4:2:0 needs an even positive frame size, got {width}x{height}")
  if not 8 <= bit_depth <= 16:
    raise VideoDecodeError(f"{name}: bit depth {bit_depth} not in [8, 16]")
  if (width + 128) * (height + 128) >= _FFMPEG_MAX_AREA:
    raise VideoDecodeError(
      f"{name}: frame size {width}x{height} is larger than FFmpeg converts "
      "((W+128)*(H+128) < 2^28); wrong --width/--height?"
    )
  return YuvGeometry(width, height, bit_depth, float(fps) if fps else None, defaulted)


def _memmap(path, geo: YuvGeometry) -> np.ndarray:
  """(num_frames, frame_samples) view of the file; checks whole frames."""
  name = os.fspath(path)
  size = os.path.getsize(name)
  if size == 0 or size % geo.frame_bytes:
    raise VideoDecodeError(
      f"{name}: size {size} bytes is not a whole number of "
      f"{geo.width}x{geo.height} {geo.bit_depth}-bit 4:2:0 frames "
      f"({geo.frame_bytes} bytes each); wrong geometry or truncated file"
    )
  data = np.memmap(name, dtype=geo.dtype, mode="r")
  return data.reshape(size // geo.frame_bytes, geo.frame_samples)


def probe_yuv(path, *, width=None, height=None, bit_depth=None, fps=None) -> VideoInfo:
  geo = yuv_geometry(path, width=width, height=height, bit_depth=bit_depth, fps=fps)
  n = _memmap(path, geo).shape[0]
  return VideoInfo(
    num_frames=n,
    fps=geo.fps,
    width=geo.width,
    height=geo.height,
    codec="rawvideo",
    bit_depth=geo.bit_depth,
    pix_fmt=geo.pix_fmt,
    duration=n / geo.fps if geo.fps else None,
  )


def read_yuv_frames(
  path,
  indices: Sequence[int] | np.ndarray,
  *,
  width=None,
  height=None,
  bit_depth=None,
  fps=None,
  keep_bit_depth: bool = False,
) -> np.ndarray:
  """uint8 RGB (N, H, W, 3); BT.709 if height >= 720 else BT.601, limited.

  keep_bit_depth: float32 RGB on the 0-255 scale for bit depths above 8 (see decode.read_frames).
  """
  name = os.fspath(path)
  geo = yuv_geometry(path, width=width, height=height, bit_depth=bit_depth, fps=fps)
  frames = _memmap(path, geo)
  idx = check_indices(indices, frames.shape[0], path)
  if geo.bit_depth_from_default and frames.shape[0] % 2 == 0 and idx.size:
    _reject_hidden_16bit(frames, name)
  if idx.size:
    _check_chroma(frames[int(idx[0])], geo, name)
  matrix = colour.choose_matrix(geo.height)
  w, h = geo.width, geo.height
  high = keep_bit_depth and geo.bit_depth > 8
  out = np.empty((idx.size, h, w, 3), np.float32 if high else np.uint8)
  cache: dict[int, int] = {}
  for n, i in enumerate(idx.tolist()):
    if i in cache:  # duplicate index: copy the converted frame
      out[n] = out[cache[i]]
      continue
    samples = np.asarray(frames[i]).reshape(h * 3 // 2, w)
    if geo.bit_depth > 8 and samples.max() >= (1 << geo.bit_depth):
      raise VideoDecodeError(
        f"{name}: frame {i} has sample values above {geo.bit_depth}-bit range; wrong bit depth?"
      )
    if geo.bit_depth == 8:
      frame = av.VideoFrame.from_ndarray(samples, format="yuv420p")
    elif geo.bit_depth == 10:
      frame = av.VideoFrame.from_ndarray(samples, format="yuv420p10le")
    else:
      frame = _frame_from_planes(samples, geo)
    out[n] = colour.frame_to_rgb(frame, matrix=matrix, full_range=False, high_precision=high)
    cache[i] = n
  return out


def chroma_detail_ratio(samples: np.ndarray, width: int, height: int) -> float:
  """Mean absolute gradient of Cb and Cr over that of the 2x-subsampled luma (one frame).

  Chroma of real pictures is smoother than luma (ratio well below 1); luma
  samples read as chroma keep luma's full-resolution detail (ratio above 1).
  """
  f = np.asarray(samples, np.float32).reshape(-1)
  ny, nc = width * height, (width // 2) * (height // 2)
  y = f[:ny].reshape(height, width)[::2, ::2]
  u = f[ny : ny + nc].reshape(height // 2, width // 2)
  v = f[ny + nc : ny + 2 * nc].reshape(height // 2, width // 2)

  def detail(p):
    gx = np.abs(np.diff(p, axis=1)).mean() if p.shape[1] > 1 else 0.0
    gy = np.abs(np.diff(p, axis=0)).mean() if p.shape[0] > 1 else 0.0
    return float(gx + gy)

  return (detail(u) + detail(v)) / 2 / max(detail(y), 1e-3)


def _check_chroma(samples: np.ndarray, geo: YuvGeometry, name: str) -> None:
  key = (os.path.realpath(name), geo.width, geo.height, geo.bit_depth)
  if key in _CHECKED:
    return
  _CHECKED.add(key)
  ratio = chroma_detail_ratio(samples, geo.width, geo.height)
  if ratio > CHROMA_DETAIL_LIMIT:
    warnings.warn(
      f"{name}: read as {geo.width}x{geo.height}, its chroma planes have {ratio:.1f}x the detail "
      "of its luma, as luma read as chroma would: the width/height are probably wrong",
      ChromaLooksLikeLumaWarning,
      stacklevel=3,
    )


def _frame_from_planes(samples: np.ndarray, geo: YuvGeometry):
  """av.VideoFrame for bit depths PyAV's from_ndarray lacks (e.g. 12)."""
  frame = av.VideoFrame(geo.width, geo.height, geo.pix_fmt)
  w, h = geo.width, geo.height
  flat = samples.reshape(-1)
  ny, nc = w * h, (w // 2) * (h // 2)
  planes = (
    flat[:ny].reshape(h, w),
    flat[ny : ny + nc].reshape(h // 2, w // 2),
    flat[ny + nc :].reshape(h // 2, w // 2),
  )
  for plane, data in zip(frame.planes, planes):
    stride = plane.line_size // 2
    buf = np.zeros((plane.height, stride), "<u2")
    buf[:, : plane.width] = data
    plane.update(buf.tobytes())
  return frame


def _reject_hidden_16bit(frames: np.ndarray, name: str) -> None:
  """Catches 10-bit data read as the default 8-bit.

  Little-endian 10-bit luma puts bytes <= 3 at every odd offset; real 8-bit
  luma essentially never does, across a whole plane.
  """
  luma = np.asarray(frames[0][: frames.shape[1] * 2 // 3])
  if luma[1::2].max() <= 3 < luma[0::2].max():
    raise VideoDecodeError(
      f"{name}: looks like 16-bit little-endian samples (every high byte "
      '<= 3) read as 8-bit; put e.g. "_10bit" in the name or pass bit_depth'
    )
