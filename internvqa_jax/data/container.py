"""Frame-exact random access to the frames of video containers, with PyAV.

Containers (mp4, mkv, webm, ivf, h264/hevc elementary streams, ...). A frame's index is
its rank in presentation order, defined by the container's packet
timestamps, never by a frame-rate estimate:

1. Index: demux every packet of the video stream once (no decoding; cheap)
   and sort the presentation timestamps. Frame i is the packet with the i-th
   smallest pts; keyframe packets give the seek points. The frame count is
   the packet count, checked against the container's own count (mp4) or, for
   Matroska/WebM, its duration tag against the end time of the last packet
   (a shortfall means a truncated file). Durations are compared as times,
   never converted to frames with the nominal rate, so variable-frame-rate
   files (dropped frames) are read as they are. Streams without
   usable timestamps (raw .h264/.hevc elementary streams) fall back to
   counting decoded frames in decode-output order.
2. Plan: sort the unique requested indices; each needs decoding from the
   last keyframe at or before it. A target joins the current forward pass
   unless a keyframe lies more than `_SEEK_SLACK` frames past the previous
   target, in which case it is cheaper to seek.
3. Decode: seek to the keyframe's pts and decode forward, keeping the frames
   whose pts are wanted. Frames are accepted only once the decoder has output
   the keyframe we sought to, so a demuxer that lands on a later keyframe
   (the open-GOP HEVC failure of decord) is detected, and the pass is retried
   from the keyframe before. A wanted frame the decoder never outputs, or
   flags as corrupt, is an error, not a substitution.

Y'CbCr -> RGB uses the stream's matrix tag, else BT.709 for height >= 720 and
BT.601 below, limited range unless the stream says full (`colour.py`).
"""

from __future__ import annotations

import collections
import dataclasses
import io
import os
import re
from collections.abc import Sequence

import av
import numpy as np

from internvqa_jax.data import colour
from internvqa_jax.data.video_types import (
  Source,
  VideoDecodeError,
  VideoInfo,
  check_indices,
  source_name,
)

# Decoding this many extra frames beats a seek (demuxer seek, decoder flush,
# refilling the frame-thread pipeline).
_SEEK_SLACK = 4
_INDEX_CACHE_SIZE = 256
# Decoders whose per-packet AVDISCARD_NONREF drops exactly the frames no
# other frame references (FFmpeg's native H.264 / HEVC). libdav1d reads the
# setting asynchronously and then loses wanted frames, so it is not listed.
_SKIP_NONREF_DECODERS = frozenset({"h264", "hevc"})


@dataclasses.dataclass(frozen=True)
class _Index:
  """Presentation-order frame table of one video stream.

  pts: sorted int64 pts, one per frame, or None when the stream has no usable
    timestamps (then frames are numbered in decoder output order).
  keyframes: sorted frame indices where decoding may start; always has 0.
  """

  num_frames: int
  pts: np.ndarray | None
  keyframes: np.ndarray


def _open(src: Source):
  name = source_name(src)
  file = (
    io.BytesIO(bytes(src)) if isinstance(src, (bytes, bytearray, memoryview)) else os.fspath(src)
  )
  if isinstance(file, str) and not os.path.isfile(file):
    raise FileNotFoundError(f"{name}: no such file")
  try:
    container = av.open(file, mode="r", metadata_errors="ignore")
  except av.FFmpegError as e:
    raise VideoDecodeError(
      f"{name}: cannot open as a video container (corrupt, truncated or not a video): {e}"
    ) from e
  if not container.streams.video:
    container.close()
    raise VideoDecodeError(f"{name}: no video stream in the container")
  return container


def _video_stream(container, src: Source, threads: int):
  """First video stream, with a decoder configured; raises if no decoder."""
  stream = container.streams.video[0]
  try:
    ctx = stream.codec_context
    codec_name = ctx.codec.name if ctx is not None else None
  except (av.FFmpegError, ValueError):
    ctx, codec_name = None, None
  if ctx is None or codec_name is None:
    raise VideoDecodeError(
      f"{source_name(src)}: this FFmpeg build (PyAV {av.__version__}) has no "
      f"decoder for the codec of video stream #{stream.index} "
      f"({container.format.name} container); re-encode or "
      "pre-decode it (e.g. AVS2 needs an FFmpeg with libdavs2)"
    )
  ctx.thread_type = "AUTO" if threads != 1 else "SLICE"
  ctx.thread_count = max(0, int(threads))
  return stream


_DURATION_TAG = re.compile(r"^(\d+):(\d\d):(\d\d(?:\.\d+)?)$")


def _expected_frames(stream) -> int | None:
  """Frame count the container claims (mp4/mov: the sample table), or None."""
  return int(stream.frames) if stream.frames else None


def _expected_seconds(stream) -> float | None:
  """Track duration the container claims (Matroska/WebM: the muxer's DURATION tag), or None."""
  tag = (stream.metadata or {}).get("DURATION")
  m = _DURATION_TAG.match(tag.strip()) if tag else None
  return int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3]) if m else None


def _check_complete(stream, pts: list, durations: list, name: str) -> None:
  """Raises if the stream holds fewer frames (or less time) than its container promises."""
  expected = _expected_frames(stream)
  if expected is not None and len(pts) < expected:
    raise VideoDecodeError(
      f"{name}: truncated: the container promises {expected} frames but only {len(pts)} are present"
    )
  seconds = _expected_seconds(stream)
  if seconds is None or not stream.time_base or any(p is None for p in pts):
    return
  rate = stream.average_rate or stream.guessed_rate
  period = 1.0 / float(rate) if rate else 0.0
  tb = float(stream.time_base)
  # The tag is the end time of the track's last frame (matroskaenc: max of pts + duration),
  # so it is compared with the packets' end time, not with their span.
  ends = [(p + d) * tb if d else p * tb + period for p, d in zip(pts, durations)]
  present = max(ends)
  # Half a frame period: exact enough to notice one missing frame at the nominal rate.
  slack = 0.5 * (period or max((d or 0) * tb for d in durations)) + 1e-3
  if present < seconds - slack:
    raise VideoDecodeError(
      f"{name}: truncated: the container promises {seconds:.3f} s of video but the packets "
      f"present ({len(pts)} frames) end at {present:.3f} s"
    )


def _build_index(container, stream, src: Source) -> _Index:
  name = source_name(src)
  pts, key, durations = [], [], []
  usable = True
  try:
    for packet in container.demux(stream):
      if packet.size == 0:  # PyAV's end-of-stream flush packet
        continue
      if packet.is_discard:  # outside the edit list: never presented
        continue
      if packet.pts is None:
        usable = False
      pts.append(packet.pts)
      durations.append(packet.duration)
      key.append(bool(packet.is_keyframe))
  except av.FFmpegError as e:
    raise VideoDecodeError(
      f"{name}: demuxing failed after {len(pts)} packets (corrupt or truncated file): {e}"
    ) from e
  if not pts:
    raise VideoDecodeError(f"{name}: the video stream has no packets")
  _check_complete(stream, pts, durations, name)
  if usable:
    arr = np.asarray(pts, np.int64)
    order = np.argsort(arr, kind="stable")
    sorted_pts = arr[order]
    usable = bool(np.all(np.diff(sorted_pts) > 0))  # duplicates: no pts order
  if not usable:
    return _decode_order_index(container, stream, src)
  key_idx = np.searchsorted(sorted_pts, arr[np.asarray(key, bool)])
  keyframes = np.unique(np.concatenate([[0], key_idx])).astype(np.int64)
  return _Index(len(sorted_pts), sorted_pts, keyframes)


def _decode_order_index(container, stream, src: Source) -> _Index:
  """Counts frames by decoding everything: exact for timestamp-less streams."""
  del container, stream  # raw elementary streams often cannot seek: reopen
  count = 0
  try:
    for _ in _decode_from_start(src, threads=0):
      count += 1
  except av.FFmpegError as e:
    raise VideoDecodeError(f"{source_name(src)}: decoding failed after {count} frames: {e}") from e
  return _Index(count, None, np.zeros(1, np.int64))


def _decode_from_start(src: Source, threads: int):
  """Yields every frame in decoder output order from a fresh container."""
  container = _open(src)
  with container:
    stream = _video_stream(container, src, threads)
    yield from container.decode(stream)


# Index cache for files, keyed by (realpath, size, mtime): training reads
# the same file many times, and indexing demuxes the whole file.
_INDEX_CACHE: collections.OrderedDict = collections.OrderedDict()


def _index_for(container, stream, src: Source) -> _Index:
  if isinstance(src, (bytes, bytearray, memoryview)):
    return _build_index(container, stream, src)
  path = os.path.realpath(os.fspath(src))
  st = os.stat(path)
  key = (path, st.st_size, st.st_mtime_ns)
  index = _INDEX_CACHE.get(key)
  if index is None:
    index = _build_index(container, stream, src)
    _INDEX_CACHE[key] = index
    while len(_INDEX_CACHE) > _INDEX_CACHE_SIZE:
      _INDEX_CACHE.popitem(last=False)
  else:
    _INDEX_CACHE.move_to_end(key)
  return index


def _bit_depth(pix_fmt: str | None) -> int:
  if not pix_fmt:
    return 8
  try:
    return max(c.bits for c in av.VideoFormat(pix_fmt).components)
  except Exception:  # pylint: disable=broad-except
    return 8


def _plan(targets: np.ndarray, keyframes: np.ndarray) -> list[tuple[int, list[int]]]:
  """Groups sorted unique targets into (keyframe ordinal, targets) passes."""
  runs: list[tuple[int, list[int]]] = []
  for t in targets.tolist():
    k = int(np.searchsorted(keyframes, t, side="right")) - 1
    if runs and keyframes[k] <= runs[-1][1][-1] + _SEEK_SLACK:
      runs[-1][1].append(t)
    else:
      runs.append((k, [t]))
  return runs


class _Reader:
  """Decodes planned passes from one open container."""

  def __init__(
    self, container, stream, index: _Index, src: Source, threads: int, high_precision: bool
  ):
    self.high_precision = high_precision
    self.container, self.stream, self.index = container, stream, index
    self.src, self.name = src, source_name(src)
    self.threads = threads
    self.skip_nonref = stream.codec_context.codec.name in _SKIP_NONREF_DECODERS
    self.sws_threads = 1 if threads == 1 else 0

  def _to_rgb(self, frame, index: int) -> np.ndarray:
    try:
      return colour.frame_to_rgb(
        frame, threads=self.sws_threads, high_precision=self.high_precision
      )
    except ValueError as e:
      raise VideoDecodeError(f"{self.name}: frame {index}: {e}") from e

  def read(self, targets: np.ndarray) -> dict[int, np.ndarray]:
    out: dict[int, np.ndarray] = {}
    if self.index.pts is None:
      self._read_sequential(targets, out)
      return out
    for key_ord, run in _plan(targets, self.index.keyframes):
      self._read_run(key_ord, run, out)
    return out

  def _read_run(self, key_ord: int, run: list[int], out) -> None:
    pending, corrupt, attempts = run, set(), 0
    while True:
      pending = self._attempt(key_ord, pending, out, corrupt)
      if not pending:
        return
      if key_ord == 0:
        bad = sorted(corrupt.intersection(pending))
        why = (
          f"frame(s) {bad[:8]} decoded with errors (corrupt bitstream)"
          if bad
          else f"frame(s) {pending[:8]} were not produced by the "
          "decoder (corrupt, truncated or undecodable leading frames)"
        )
        raise VideoDecodeError(f"{self.name}: {why}, even when decoding from the first frame")
      # The demuxer overshot, or the keyframe was no real random-access
      # point: go back a keyframe, then (after a few tries) to the start.
      attempts += 1
      key_ord = key_ord - 1 if attempts < 3 else 0

  def _attempt(self, key_ord: int, run: list[int], out, corrupt) -> list[int]:
    """One seek + forward decode; returns the targets still missing."""
    pts = self.index.pts
    key_frame = int(self.index.keyframes[key_ord])
    seek_pts = int(pts[key_frame])
    wanted = {int(pts[t]): t for t in run}
    last = int(pts[run[-1]])
    # From the first frame nothing can precede the seek point; elsewhere only
    # trust output once the keyframe we asked for has come out.
    synced = key_ord == 0
    ctx = self.stream.codec_context
    try:
      self.container.seek(seek_pts, stream=self.stream, backward=True, any_frame=False)
      for frame in self._decode(ctx, wanted):
        p = frame.pts
        if p is None:
          raise VideoDecodeError(f"{self.name}: decoder output a frame without a timestamp")
        if not synced:
          if p > seek_pts:
            return run  # landed past the keyframe: retry from an earlier one
          synced = p == seek_pts
          if not synced:  # started before the keyframe: decode on
            continue
        t = wanted.get(p)
        if t is not None and t not in out:
          if frame.is_corrupt:  # concealed decoding errors: not the frame
            corrupt.add(t)
          else:
            out[t] = self._to_rgb(frame, t)
        if p >= last:
          break
    except av.FFmpegError as e:
      raise VideoDecodeError(
        f"{self.name}: corrupt or truncated bitstream: decoding frames "
        f"{run[0]}..{run[-1]} from keyframe {key_frame} failed: {e}"
      ) from e
    return [t for t in run if t not in out]

  def _decode(self, ctx, wanted):
    """Decodes from the current position, skipping unwanted non-reference frames.

    A frame no other frame references (H.264 nal_ref_idc 0, HEVC sub-layer
    non-reference, ...) cannot change any later frame, so when its packet is
    not wanted the decoder may drop it (AVDISCARD_NONREF, set per packet).
    Wanted packets are always decoded in full.
    """
    try:
      for packet in self.container.demux(self.stream):
        if self.skip_nonref:
          ctx.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in wanted else "NONREF"
        yield from ctx.decode(packet)
    finally:
      ctx.skip_frame = "DEFAULT"

  def _read_sequential(self, targets: np.ndarray, out) -> None:
    want = set(targets.tolist())
    last = int(targets.max())
    i = -1
    frames = _decode_from_start(self.src, self.threads)
    try:
      for i, frame in enumerate(frames):
        if i in want:
          if frame.is_corrupt:
            raise VideoDecodeError(
              f"{self.name}: frame {i} decoded with errors (corrupt bitstream)"
            )
          out[i] = self._to_rgb(frame, i)
        if i >= last:
          break
    except av.FFmpegError as e:
      raise VideoDecodeError(f"{self.name}: decoding failed after frame {i}: {e}") from e
    finally:
      frames.close()
    missing = sorted(want - set(out))
    if missing:
      raise VideoDecodeError(f"{self.name}: frame(s) {missing[:8]} not produced by the decoder")


def probe(src: Source) -> VideoInfo:
  """Stream facts with an exact frame count (see the module docstring)."""
  container = _open(src)
  with container:
    stream = _video_stream(container, src, threads=1)
    index = _index_for(container, stream, src)
    ctx = stream.codec_context
    rate = stream.average_rate or stream.guessed_rate
    rate = float(rate) if rate else None
    pix_fmt = ctx.pix_fmt or ""
    return VideoInfo(
      num_frames=index.num_frames,
      fps=rate,
      width=ctx.width,
      height=ctx.height,
      codec=stream.codec_context.codec.name,
      bit_depth=_bit_depth(pix_fmt),
      pix_fmt=pix_fmt,
      duration=index.num_frames / rate if rate else None,
    )


def read_frames(
  src: Source,
  indices: Sequence[int] | np.ndarray,
  *,
  width: int | None = None,
  height: int | None = None,
  bit_depth: int | None = None,
  threads: int = 0,
  keep_bit_depth: bool = False,
) -> np.ndarray:
  """Frames `indices` (any order, duplicates allowed) as uint8 (N, H, W, 3) RGB.

  width/height/bit_depth, if given, must match the stream. threads: decoder
  threads (0 = FFmpeg's automatic choice, 1 = none). keep_bit_depth: float32
  RGB on the 0-255 scale for streams deeper than 8 bits (decode.read_frames).
  """
  container = _open(src)
  with container:
    stream = _video_stream(container, src, threads)
    _check_geometry(stream, src, width, height, bit_depth)
    index = _index_for(container, stream, src)
    idx = check_indices(indices, index.num_frames, src)
    ctx = stream.codec_context
    high = keep_bit_depth and _bit_depth(ctx.pix_fmt) > 8
    if idx.size == 0:
      return np.zeros((0, ctx.height, ctx.width, 3), np.float32 if high else np.uint8)
    frames = _Reader(container, stream, index, src, threads, high).read(np.unique(idx))
  return np.stack([frames[int(i)] for i in idx])


def _check_geometry(stream, src, width, height, bit_depth) -> None:
  ctx = stream.codec_context
  actual = {"width": ctx.width, "height": ctx.height, "bit_depth": _bit_depth(ctx.pix_fmt)}
  for key, want in (("width", width), ("height", height), ("bit_depth", bit_depth)):
    if want is not None and int(want) != actual[key]:
      raise VideoDecodeError(
        f"{source_name(src)}: expected {key}={want} but the stream has {key}={actual[key]}"
      )
