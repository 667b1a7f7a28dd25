"""Types and checks shared by the video readers (decode, container, yuv) and the pipeline."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

Source = str | os.PathLike | bytes


class VideoDecodeError(ValueError):
  """A video cannot be opened or decoded exactly (names file and reason)."""


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  """Stream facts. `num_frames` is exact; `duration` = num_frames / fps.

  fps is the container's average frame rate (None for raw YUV without one).
  """

  num_frames: int
  fps: float | None
  width: int
  height: int
  codec: str
  bit_depth: int
  pix_fmt: str
  duration: float | None


def source_name(src: Source) -> str:
  """How a source is named in error messages."""
  if isinstance(src, (bytes, bytearray, memoryview)):
    return f"<{len(src)} bytes of encoded video in memory>"
  return os.fspath(src)


def is_raw_yuv(src: Source) -> bool:
  """Raw planar YUV is recognised by its .yuv extension (it has no header)."""
  if isinstance(src, (bytes, bytearray, memoryview)):
    return False
  return os.fspath(src).lower().endswith(".yuv")


def check_indices(indices, num_frames: int, src: Source) -> np.ndarray:
  idx = np.asarray(indices)
  if idx.ndim != 1:
    raise ValueError(f"{source_name(src)}: indices must be 1-D, got shape {idx.shape}")
  if idx.size and not np.issubdtype(idx.dtype, np.integer):
    raise TypeError(f"{source_name(src)}: indices must be integers, got {idx.dtype}")
  idx = idx.astype(np.int64)
  bad = idx[(idx < 0) | (idx >= num_frames)]
  if bad.size:
    raise IndexError(
      f"{source_name(src)}: frame index {int(bad[0])} out of range: the video has {num_frames} frames"
    )
  return idx


def record_name(record: Mapping[str, Any]) -> str:
  """How a dataset record is named in error messages."""
  return f"video_id={record.get('video_id', '?')!r} path={(record.get('path') or '<in-memory>')!r}"
