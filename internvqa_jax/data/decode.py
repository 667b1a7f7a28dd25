"""Frame-exact random access to video frames: one entry point for every source.

  info = decode.probe("clip.mp4")                     # VideoInfo, exact num_frames
  frames = decode.read_frames("clip.mp4", [0, 5, 9])  # uint8 (3, H, W, 3) RGB

Raw planar 4:2:0 `.yuv` files go to `yuv` (geometry from the file name or the
keyword arguments); everything else (container paths, encoded bytes) to
`container` (PyAV, frames numbered by presentation timestamp).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from internvqa_jax.data import container, yuv
from internvqa_jax.data.video_types import Source, VideoDecodeError, VideoInfo, is_raw_yuv

__all__ = ["Source", "VideoDecodeError", "VideoInfo", "probe", "read_frames"]


def probe(
  src: Source,
  *,
  width: int | None = None,
  height: int | None = None,
  bit_depth: int | None = None,
  fps: float | None = None,
) -> VideoInfo:
  """Stream facts with an exact frame count.

  width/height/bit_depth/fps describe raw .yuv files (they override the
  file-name fields); for containers they are ignored.
  """
  if is_raw_yuv(src):
    return yuv.probe_yuv(src, width=width, height=height, bit_depth=bit_depth, fps=fps)
  return container.probe(src)


def read_frames(
  src: Source,
  indices: Sequence[int] | np.ndarray,
  *,
  width: int | None = None,
  height: int | None = None,
  bit_depth: int | None = None,
  fps: float | None = None,
  threads: int = 0,
  keep_bit_depth: bool = False,
) -> np.ndarray:
  """Frames `indices` (any order, duplicates allowed) as uint8 (N, H, W, 3) RGB.

  src: a path (container or raw planar 4:2:0 `.yuv`) or encoded bytes.
  width/height/bit_depth/fps: raw YUV geometry (override the file name). For
    containers, width/height/bit_depth, if given, must match the stream.
  threads: decoder threads for containers (0 = FFmpeg's automatic choice, 1 = none).
  keep_bit_depth: a source deeper than 8 bits comes back as float32 RGB on
    the 0-255 scale instead of being rounded to uint8; 8-bit sources are uint8
    either way.
  Raises IndexError for out-of-range indices, VideoDecodeError for
  unsupported, corrupt or truncated input.
  """
  if is_raw_yuv(src):
    return yuv.read_yuv_frames(
      src,
      indices,
      width=width,
      height=height,
      bit_depth=bit_depth,
      fps=fps,
      keep_bit_depth=keep_bit_depth,
    )
  return container.read_frames(
    src,
    indices,
    width=width,
    height=height,
    bit_depth=bit_depth,
    threads=threads,
    keep_bit_depth=keep_bit_depth,
  )
