"""Synthetic test videos encoded with real codecs, each frame numbered.

Every frame carries its index as a 12-bit binary code plus its 12-bit
complement in large black/white cells (top-left, raster order), so a decoded
frame can be identified exactly even after lossy coding: `frame_number_of`.
The rest of the frame is a moving colour gradient so that encoders use motion
compensation and B-frames, which is what makes wrong-frame seeking visible.

  path = make_video(tmp_path / 'a.mp4', codec='libx265', open_gop=True)
  frame_number_of(read_frames(path, [5])[0]) == 5

The container follows the file extension (.mp4 .mkv .webm .ivf .mov, and
.h264 / .hevc raw elementary streams, which carry no timestamps).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable

import numpy as np

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1: errors only.

import av

_BITS = 12
_FORMATS = {
  ".mp4": "mp4",
  ".mov": "mov",
  ".mkv": "matroska",
  ".webm": "webm",
  ".ivf": "ivf",
  ".h264": "h264",
  ".264": "h264",
  ".hevc": "hevc",
  ".265": "hevc",
}


def _cell_size(height: int, width: int) -> int:
  cell = 8 * max(1, min(height, width) // 48)
  if (width // cell) * (height // cell) < 2 * _BITS:
    raise ValueError(
      f"{width}x{height} is too small for the frame-number pattern ({2 * _BITS} cells of {cell}px)"
    )
  return cell


def make_frame(index: int, width: int, height: int) -> np.ndarray:
  """The exact RGB uint8 (H, W, 3) source frame number `index`."""
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
  t = float(index)
  # Smooth colour field drifting 2 px per frame: cheap to code, real motion.
  r = 128 + 90 * np.sin((xx - 2 * t) / 23.0)
  g = 128 + 90 * np.cos((yy + t) / 17.0)
  b = 128 + 90 * np.sin((xx + yy - 3 * t) / 31.0)
  rgb = np.stack([r, g, b], axis=-1).astype(np.uint8)
  return draw_frame_number(rgb, index)


def draw_frame_number(rgb: np.ndarray, index: int) -> np.ndarray:
  """Draws the code of `index` into an RGB (H, W, 3) uint8 frame in place."""
  if not 0 <= index < (1 << _BITS):
    raise ValueError(f"frame index {index} does not fit in {_BITS} bits")
  height, width = rgb.shape[:2]
  cell = _cell_size(height, width)
  cols = width // cell
  bits = [(index >> k) & 1 for k in range(_BITS)]
  bits += [1 - b_ for b_ in bits]
  for k, bit in enumerate(bits):
    row, col = divmod(k, cols)
    rgb[row * cell : (row + 1) * cell, col * cell : (col + 1) * cell] = 255 * bit
  return rgb


def frame_number_of(rgb_frame: np.ndarray) -> int:
  """Decode the frame index drawn by `make_frame`; ValueError if unreadable."""
  rgb_frame = np.asarray(rgb_frame)
  height, width = rgb_frame.shape[:2]
  cell = _cell_size(height, width)
  cols = width // cell
  margin = max(1, cell // 4)  # ignore ringing and chroma bleed at cell edges
  bits = []
  for k in range(2 * _BITS):
    row, col = divmod(k, cols)
    patch = rgb_frame[
      row * cell + margin : (row + 1) * cell - margin,
      col * cell + margin : (col + 1) * cell - margin,
    ]
    bits.append(int(patch.mean() > 127.5))
  value, check = bits[:_BITS], bits[_BITS:]
  if any(a == b_ for a, b_ in zip(value, check)):
    raise ValueError("frame-number pattern unreadable (complement check failed)")
  return sum(bit << k for k, bit in enumerate(value))


def codec_options(
  codec: str, *, gop: int, bframes: int, open_gop: bool, crf: int | None, preset: str | None
) -> dict[str, str]:
  if codec == "libx264":
    params = (
      f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}"
      f":b-adapt=0:open-gop={int(open_gop)}"
    )
    opts = {"x264-params": params, "preset": preset or "veryfast"}
    if crf == 0:
      opts["qp"] = "0"  # lossless
    else:
      opts["crf"] = str(18 if crf is None else crf)
    return opts
  if codec == "libx265":
    params = (
      f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}"
      f":b-adapt=0:open-gop={int(open_gop)}:log-level=error"
    )
    if crf == 0:
      params += ":lossless=1"
    else:
      params += f":crf={18 if crf is None else crf}"
    return {"x265-params": params, "preset": preset or "ultrafast"}
  if codec == "libvpx-vp9":
    # lag-in-frames + auto-alt-ref make hidden alt-ref frames (superframes).
    return {
      "crf": str(20 if crf is None else crf),
      "b": "0",
      "g": str(gop),
      "deadline": "good",
      "cpu-used": "8",
      "lag-in-frames": "16",
      "auto-alt-ref": "1",
      "row-mt": "1",
    }
  if codec == "libsvtav1":
    # irefresh-type 1 = open GOP (forward key frames), 2 = closed (KEY frames).
    # Faster presets (10 at 1080p, 12 at 360p) leave code cells of
    # non-base-layer frames half-updated, making frame numbers unreadable.
    return {
      "preset": preset or "8",
      "crf": str(30 if crf is None else crf),
      "svtav1-params": f"keyint={gop}:irefresh-type={1 if open_gop else 2}:enable-tf=0",
    }
  return {}


def encode_frames(
  dst,
  frames: Iterable[np.ndarray | av.VideoFrame],
  *,
  codec: str,
  width: int,
  height: int,
  fps: float = 24,
  pix_fmt: str = "yuv420p",
  options: dict[str, str] | None = None,
  container_format: str | None = None,
  gop: int | None = None,
  colorspace: int | None = None,
  color_range: int | None = None,
) -> None:
  """Encodes RGB arrays or ready av.VideoFrames into `dst` (path or file).

  colorspace / color_range (AVColorSpace / AVColorRange ints) tag the stream.
  """
  fmt = container_format or _FORMATS[os.path.splitext(str(dst))[1].lower()]
  with av.open(dst, "w", format=fmt) as container:
    rate = round(fps) if float(fps).is_integer() else fps
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    if gop is not None:
      stream.codec_context.gop_size = gop
    if colorspace is not None:
      stream.codec_context.colorspace = colorspace
    if color_range is not None:
      stream.codec_context.color_range = color_range
    stream.options = dict(options or {})
    for i, frame in enumerate(frames):
      if not isinstance(frame, av.VideoFrame):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        frame = frame.reformat(format=pix_fmt)
      frame.pts = i
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def make_video(
  path,
  codec: str = "libx264",
  num_frames: int = 24,
  width: int = 64,
  height: int = 48,
  fps: float = 24,
  open_gop: bool = False,
  pix_fmt: str = "yuv420p",
  gop: int = 12,
  bframes: int = 3,
  crf: int | None = None,
  preset: str | None = None,
) -> str:
  """Writes a numbered test video and returns its path (as str)."""
  frames = (make_frame(i, width, height) for i in range(num_frames))
  opts = codec_options(codec, gop=gop, bframes=bframes, open_gop=open_gop, crf=crf, preset=preset)
  encode_frames(
    str(path),
    frames,
    codec=codec,
    width=width,
    height=height,
    fps=fps,
    pix_fmt=pix_fmt,
    options=opts,
    gop=gop,
  )
  return str(path)


def make_video_bytes(container_format: str = "mp4", **kwargs) -> bytes:
  """Like `make_video` but returns the encoded file as bytes."""
  codec = kwargs.pop("codec", "libx264")
  num_frames = kwargs.pop("num_frames", 24)
  width, height = kwargs.pop("width", 64), kwargs.pop("height", 48)
  fps, pix_fmt = kwargs.pop("fps", 24), kwargs.pop("pix_fmt", "yuv420p")
  gop = kwargs.pop("gop", 12)
  opts = codec_options(
    codec,
    gop=gop,
    bframes=kwargs.pop("bframes", 3),
    open_gop=kwargs.pop("open_gop", False),
    crf=kwargs.pop("crf", None),
    preset=kwargs.pop("preset", None),
  )
  if kwargs:
    raise TypeError(f"unexpected arguments {sorted(kwargs)}")
  buf = io.BytesIO()
  frames = (make_frame(i, width, height) for i in range(num_frames))
  encode_frames(
    buf,
    frames,
    codec=codec,
    width=width,
    height=height,
    fps=fps,
    pix_fmt=pix_fmt,
    options=opts,
    container_format=container_format,
    gop=gop,
  )
  return buf.getvalue()


def make_yuv(
  path, num_frames: int = 12, width: int = 64, height: int = 48, bit_depth: int = 8
) -> str:
  """Raw planar 4:2:0 file of numbered frames (BT.601 limited, as SD).

  10-bit samples are stored as little-endian uint16.
  """
  from internvqa_jax.data.colour import rgb_to_yuv_reference

  dtype = np.dtype("<u2") if bit_depth > 8 else np.uint8
  with open(path, "wb") as f:
    for i in range(num_frames):
      y, u, v = rgb_to_yuv_reference(
        make_frame(i, width, height), bit_depth=bit_depth, matrix="bt601"
      )
      # 4:2:0 by averaging 2x2 blocks.
      u = u.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))
      v = v.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))
      for plane in (y, u, v):
        f.write(np.rint(plane).astype(dtype).tobytes())
  return str(path)
