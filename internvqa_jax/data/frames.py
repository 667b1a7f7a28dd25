"""One video's frames on demand: the `read_frames(indices)` callable recipes take.

  reader = frames.for_record(record)     # a dataset record (pipeline)
  reader = frames.for_file("clip.mp4")   # a file on disk (scoring); probes the frame count
  clip = reader([0, 4, 8])               # uint8 (3, H, W, 3)

Recipes ask for their own indices (the fragment sampler chooses its own), so
with several recipes on one video the frames they share are decoded once and
reused (cache=True). Without the cache, memory is bounded by one call (one clip
in evaluation).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from internvqa_jax.data import decode
from internvqa_jax.data.video_types import Source, is_raw_yuv, record_name, source_name

ReadFn = Callable[..., np.ndarray]  # decode.read_frames(source, indices, **read_kwargs)

_GEOMETRY_FIELDS = ("width", "height", "bit_depth", "fps")


class FrameCache:
  """read_frames(indices) -> uint8 (len(indices), H, W, 3) of one video (float32 on the same
  scale when the reader keeps a deeper bit depth)."""

  def __init__(
    self,
    source: Source,
    num_frames: int,
    *,
    read_fn: ReadFn = decode.read_frames,
    read_kwargs: Mapping[str, Any] | None = None,
    cache: bool = True,
    name: str | None = None,
  ):
    self.source = source
    self.num_frames = int(num_frames)
    self.name = name or source_name(source)
    self._read_fn = read_fn
    self._read_kwargs = dict(read_kwargs or {})
    self._use_cache = cache
    self._cache: dict[int, np.ndarray] = {}

  def __call__(self, indices) -> np.ndarray:
    idx = np.asarray(indices, np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= self.num_frames):
      raise IndexError(
        f"frame indices {idx.tolist()} outside [0, {self.num_frames}) for {self.name}"
      )
    missing = np.unique([i for i in idx.tolist() if i not in self._cache]).astype(np.int64)
    if missing.size:
      frames = np.asarray(self._read_fn(self.source, missing, **self._read_kwargs))
      # float32 (0-255 scale) carries sources deeper than 8 bits (decode keep_bit_depth).
      if (
        frames.dtype not in (np.uint8, np.float32)
        or frames.ndim != 4
        or frames.shape[0] != missing.size
      ):
        raise ValueError(
          f"decoder returned {frames.dtype} {frames.shape} for {missing.size} frames of {self.name}"
        )
      if not self._use_cache:
        return frames[np.searchsorted(missing, idx)]
      for i, frame in zip(missing.tolist(), frames):
        self._cache[i] = frame
    return np.stack([self._cache[i] for i in idx.tolist()])


def _raw_geometry(source: Source, geometry: Mapping[str, Any]) -> dict[str, Any]:
  """The geometry fields that apply: raw YUV carries no header, containers do."""
  if not is_raw_yuv(source):
    return {}
  return {k: geometry[k] for k in _GEOMETRY_FIELDS if geometry.get(k) is not None}


def for_record(
  record: Mapping[str, Any], *, read_fn: ReadFn = decode.read_frames, cache: bool = True
) -> FrameCache:
  """Frames of a dataset record: its `path` (or in-memory `video_bytes`), `num_frames`,
  and for raw YUV its width/height/bit_depth/fps fields."""
  name = record_name(record)
  num_frames = int(record.get("num_frames") or 0)
  if num_frames < 1:
    raise ValueError(f"record {name} has num_frames={record.get('num_frames')!r}")
  source = record.get("path") or record.get("video_bytes")
  if not source:
    raise ValueError(f"record {name} has neither 'path' nor 'video_bytes'")
  return FrameCache(
    source,
    num_frames,
    read_fn=read_fn,
    read_kwargs=_raw_geometry(source, record),
    cache=cache,
    name=name,
  )


def for_file(
  path: str,
  *,
  width: int | None = None,
  height: int | None = None,
  bit_depth: int | None = None,
  fps: float | None = None,
  threads: int = 0,
  cache: bool = True,
) -> FrameCache:
  """Frames of a video file; the frame count is probed. width/height/bit_depth/fps apply
  to raw YUV only, decoder `threads` to containers only."""
  geometry = _raw_geometry(path, dict(width=width, height=height, bit_depth=bit_depth, fps=fps))
  num_frames = decode.probe(path, **geometry).num_frames
  read_kwargs = geometry if is_raw_yuv(path) else {"threads": threads}
  return FrameCache(path, num_frames, read_kwargs=read_kwargs, cache=cache)
