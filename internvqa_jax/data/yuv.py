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
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence

import av
import numpy as np

from internvqa_jax.data import colour
from internvqa_jax.data.video_types import VideoDecodeError, VideoInfo, check_indices

_SIZE = re.compile(r"^(\d+)x(\d+)$")
_FPS = re.compile(r"^(\d+(?:\.\d+)?)fps$", re.IGNORECASE)
_BITS = re.compile(r"^(\d+)bits?$", re.IGNORECASE)
_CHROMA = re.compile(r"^(420|422|444)p?$")


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
  path, indices: Sequence[int] | np.ndarray, *, width=None, height=None, bit_depth=None, fps=None
) -> np.ndarray:
  """uint8 RGB (N, H, W, 3); BT.709 if height >= 720 else BT.601, limited."""
  name = os.fspath(path)
  geo = yuv_geometry(path, width=width, height=height, bit_depth=bit_depth, fps=fps)
  frames = _memmap(path, geo)
  idx = check_indices(indices, frames.shape[0], path)
  if geo.bit_depth_from_default and frames.shape[0] % 2 == 0 and idx.size:
    _reject_hidden_16bit(frames, name)
  matrix = colour.choose_matrix(geo.height)
  w, h = geo.width, geo.height
  out = np.empty((idx.size, h, w, 3), np.uint8)
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
    out[n] = colour.frame_to_rgb(frame, matrix=matrix, full_range=False)
    cache[i] = n
  return out


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
