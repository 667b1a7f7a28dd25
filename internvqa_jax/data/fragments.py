"""Fragments: temporal fragment sampling and Grid Mini-patch Sampling (GMS).

NumPy port of the FAST-VQA / FasterVQA input pipeline (spec fastvqa.md §5).
A video of N decoded uint8 frames (H, W, 3) becomes a normalised float32
array (num_clips, clip_len, S, S, 3) with S = fragments * fsize:

1. Temporal: the video is cut into equal segments; each segment contributes
   `fsize_t` frames at `frame_interval` from a random offset. Indices are
   taken modulo N, so short videos wrap around.
2. Spatial: every frame is covered by a fragments x fragments grid; one
   fsize x fsize patch is cropped per grid cell at a random offset inside the
   cell, shared by each group of `aligned` consecutive sampled frames, and
   the patches are spliced in grid order.
3. Normalisation with the ImageNet mean/std on the 0-255 scale.

Behaviour kept from the reference implementation on purpose:
- test-time sampling is random too (its `train` flag is ignored); a
  deterministic "center" mode and the demo script's "demo" mode are opt-in;
- without `t_frag` the number of test clips doubles as the number of temporal
  segments (one draw over the whole video), with `t_frag` every clip is an
  independent draw of `t_frag` segments;
- frames smaller than the fragment grid are bilinearly upsampled (torch
  semantics: given scale factor, align_corners=False, output possibly one
  pixel short, x255 then truncation to uint8), but the grid is computed from
  the pre-upsample size, so crops only cover the top-left res_h x res_w part
  of the upsampled frame.

Randomness comes only from the `np.random.Generator` passed in, drawn in the
reference order (temporal offsets, then row offsets, then column offsets), so
equal generator states give equal outputs. RNG streams of the PyTorch code are
not reproduced; parity is checked by feeding identical indices and offsets.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable

import numpy as np

from internvqa_jax.data import transforms

# Per-channel RGB statistics on the 0-255 scale (spec §5.5).
MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)

TEST_SAMPLING_MODES = ("random", "center", "demo")

# Frames upsampled per step (the float64 intermediates of 8 frames stay small).
_UPSAMPLE_CHUNK = 8

# Per-variant settings from the reference configs (spec §2, §5.2, §5.4).
# `t_frag=None` is the legacy layout (segments = num_clips, one draw).
VARIANT_SAMPLING: dict[str, dict] = {
  # FAST-VQA-B: 7x7 fragments, 32 frames, 4 test clips, aligned 32.
  "fast_vqa_b": dict(
    fragments=7,
    fsize=32,
    aligned=32,
    clip_len=32,
    frame_interval=2,
    t_frag=None,
    num_clips_train=1,
    num_clips_test=4,
  ),
  # FasterVQA (FAST-VQA-B-3D): 8 temporal fragments x 4 frames.
  "faster_vqa": dict(
    fragments=7,
    fsize=32,
    aligned=8,
    clip_len=32,
    frame_interval=2,
    t_frag=8,
    num_clips_train=1,
    num_clips_test=1,
  ),
  # FasterVQA-MT: same weights, 4 temporal fragments x 4 frames.
  "faster_vqa_mt": dict(
    fragments=7,
    fsize=32,
    aligned=8,
    clip_len=16,
    frame_interval=2,
    t_frag=4,
    num_clips_train=1,
    num_clips_test=1,
  ),
  # FasterVQA-MS: same weights, 5x5 fragments (160x160).
  "faster_vqa_ms": dict(
    fragments=5,
    fsize=32,
    aligned=8,
    clip_len=32,
    frame_interval=2,
    t_frag=8,
    num_clips_train=1,
    num_clips_test=1,
  ),
  # FAST-VQA-M: 4x4 fragments (128x128), 16 frames, 4 test clips.
  "fast_vqa_m": dict(
    fragments=4,
    fsize=32,
    aligned=8,
    clip_len=16,
    frame_interval=2,
    t_frag=None,
    num_clips_train=1,
    num_clips_test=4,
  ),
}


def _check_positive_int(name: str, value, allow_none: bool = False):
  if value is None and allow_none:
    return
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
    raise ValueError(f"fragment sampling: {name} must be a positive int, got {value!r}")


def _check_rng(rng, what: str):
  if not isinstance(rng, np.random.Generator):
    raise TypeError(
      f"{what} needs a np.random.Generator for random sampling, got {type(rng).__name__}"
    )


# ----------------------------------------------------------------------------
# Temporal sampling.
# ----------------------------------------------------------------------------


def fragment_frame_indices(
  num_frames: int,
  fsize_t: int,
  fragments_t: int,
  frame_interval: int = 1,
  num_draws: int = 1,
  rng: np.random.Generator | None = None,
) -> np.ndarray:
  """Temporal fragment sampling (reference `FragmentSampleFrames`).

  Each draw cuts the video into `fragments_t` segments of N // fragments_t
  frames; segment i yields start_i + off_i + k * frame_interval, k <
  fsize_t. off_i is uniform in [0, seg - fsize_t * frame_interval) when the
  segment is longer than that span, else 0. Draws are concatenated and every
  index is taken modulo N (short videos wrap).

  Args:
    rng: random offsets (one integer per segment and draw); None gives the
      deterministic centred offset (seg - span) // 2, which always lies in
      the random range.

  Returns:
    int64 (num_draws * fragments_t * fsize_t,) in sampling order.
  """
  for name, v in [
    ("num_frames", num_frames),
    ("fsize_t", fsize_t),
    ("fragments_t", fragments_t),
    ("frame_interval", frame_interval),
    ("num_draws", num_draws),
  ]:
    _check_positive_int(name, v)
  seg = num_frames // fragments_t
  span = fsize_t * frame_interval
  starts = np.arange(fragments_t, dtype=np.int64) * seg
  if seg > span:
    if rng is None:
      offsets = np.full((num_draws, fragments_t), (seg - span) // 2, np.int64)
    else:
      _check_rng(rng, "fragment_frame_indices")
      offsets = rng.integers(0, seg - span, size=(num_draws, fragments_t), dtype=np.int64)
  else:
    offsets = np.zeros((num_draws, fragments_t), np.int64)
  steps = np.arange(fsize_t, dtype=np.int64) * frame_interval
  idx = starts[None, :, None] + offsets[:, :, None] + steps[None, None, :]
  return np.mod(idx.reshape(-1), num_frames)


def uniform_clip_indices(
  num_frames: int, clip_len: int, num_clips: int = 1, frame_interval: int = 1
) -> np.ndarray:
  """Deterministic evenly spaced clips (reference `SampleFrames`, test mode).

  This is what the reference demo script `vqa.py` uses (interval 1): clip c
  starts at int(avg / 2 + c * avg), avg = (N - clip_len * interval + 1) /
  num_clips, or at 0 when the video is shorter than one clip; indices wrap
  modulo N.

  Returns:
    int64 (num_clips * clip_len,), clip-major.
  """
  for name, v in [
    ("num_frames", num_frames),
    ("clip_len", clip_len),
    ("num_clips", num_clips),
    ("frame_interval", frame_interval),
  ]:
    _check_positive_int(name, v)
  span = clip_len * frame_interval
  if num_frames > span - 1:
    avg = (num_frames - span + 1) / float(num_clips)
    offsets = (np.arange(num_clips) * avg + avg / 2.0).astype(np.int64)
  else:
    offsets = np.zeros(num_clips, np.int64)
  idx = offsets[:, None] + np.arange(clip_len, dtype=np.int64) * frame_interval
  return np.mod(idx.reshape(-1), num_frames)


# ----------------------------------------------------------------------------
# Spatial sampling (Grid Mini-patch Sampling).
# ----------------------------------------------------------------------------


def grid_starts(res: int, fragments: int, fsize: int) -> tuple[np.ndarray, int]:
  """Cell starts min((res // fragments) * i, res - fsize) and cell length."""
  _check_positive_int("res", res)
  _check_positive_int("fragments", fragments)
  _check_positive_int("fsize", fsize)
  if res < fsize:
    # The reference would slice with a negative start and fail; say why.
    raise ValueError(
      f"fragment sampling: frame side {res} is smaller than "
      f"one fragment patch ({fsize}); cannot place the grid"
    )
  length = res // fragments
  starts = np.minimum(length * np.arange(fragments, dtype=np.int64), res - fsize)
  return starts, length


def fragment_offsets(
  res_h: int,
  res_w: int,
  num_groups: int,
  fragments: int,
  fsize: int,
  rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Top-left corners of every patch: (tops, lefts), each (G, F, F) int64.

  `res_h`, `res_w` are the sizes the grid is computed from (the
  pre-upsample size for small videos). Each (group, row, col) draws its
  offset uniformly in [0, cell - fsize) when the cell is longer than the
  patch (else 0); all row offsets are drawn before all column offsets, as in
  the reference. rng=None centres the patch in its cell instead.
  """
  _check_positive_int("num_groups", num_groups)
  hstarts, hlen = grid_starts(res_h, fragments, fsize)
  wstarts, wlen = grid_starts(res_w, fragments, fsize)
  shape = (fragments, fragments, num_groups)  # reference draw layout
  if rng is not None:
    _check_rng(rng, "fragment_offsets")

  def _offsets(length):
    if length <= fsize:
      return np.zeros(shape, np.int64)
    if rng is None:
      return np.full(shape, (length - fsize) // 2, np.int64)
    return rng.integers(0, length - fsize, size=shape, dtype=np.int64)

  rnd_h = _offsets(hlen)
  rnd_w = _offsets(wlen)
  tops = hstarts[None, :, None] + rnd_h.transpose(2, 0, 1)
  lefts = wstarts[None, None, :] + rnd_w.transpose(2, 0, 1)
  return tops, lefts


def _linear_taps(in_size: int, out_size: int, scale_factor: float):
  """Source indices and weights of torch bilinear (align_corners=False).

  With a given scale factor torch maps output o to the source coordinate
  float32(1 / scale_factor) * (o + 0.5) - 0.5, clamped below at 0, and
  computes the weights in float32.
  """
  scale = np.float32(1.0 / scale_factor)
  dst = np.arange(out_size, dtype=np.float32) + np.float32(0.5)
  # torch's CPU kernel evaluates scale * dst - 0.5 as one fused multiply-add:
  # the float32 product is exact in float64, so round once at the end.
  src = (np.float64(scale) * dst.astype(np.float64) - 0.5).astype(np.float32)
  src = np.maximum(src, np.float32(0.0))
  i0 = np.minimum(src.astype(np.int64), in_size - 1)
  i1 = np.where(i0 < in_size - 1, i0 + 1, i0)
  w1 = np.clip(src - i0.astype(np.float32), np.float32(0), np.float32(1))
  w0 = np.float32(1.0) - w1
  return i0, i1, w0, w1


def upsample_small_frames(
  frames: np.ndarray, size_h: int, size_w: int, keep_h: int | None = None, keep_w: int | None = None
) -> tuple[np.ndarray, float]:
  """The reference fallback for frames smaller than the fragment grid.

  ratio = min(H / size_h, W / size_w); if ratio < 1, frames are upsampled by
  scale factor 1 / ratio to floor(H / ratio) x floor(W / ratio) (can be one
  pixel short of the target, e.g. 200 -> 223), bilinear on frames / 255 in
  float32, then x255 and truncated to uint8. Frames with ratio >= 1 are
  returned unchanged.

  Args:
    frames: uint8 (T, H, W, 3).
    keep_h, keep_w: only compute the top-left keep_h x keep_w output pixels
      (a pure crop of the full result; fragment crops never reach further
      than the pre-upsample size).

  Returns:
    (frames, ratio).
  """
  _check_frames(frames, "upsample_small_frames")
  h, w = frames.shape[1:3]
  ratio = min(h / size_h, w / size_w)
  if ratio >= 1:
    return frames, ratio
  scale = 1.0 / ratio
  out_h, out_w = int(h * scale), int(w * scale)
  keep_h = out_h if keep_h is None else min(keep_h, out_h)
  keep_w = out_w if keep_w is None else min(keep_w, out_w)
  h0, h1, wh0, wh1 = (a[:keep_h] for a in _linear_taps(h, out_h, scale))
  c0, c1, ww0, ww1 = (a[:keep_w] for a in _linear_taps(w, out_w, scale))
  rows = np.unique(np.concatenate([h0, h1]))  # input rows that are read
  pos = np.searchsorted(rows, np.arange(h))  # input row -> position in rows
  out = np.empty((frames.shape[0], keep_h, keep_w, 3), frames.dtype)
  for start in range(0, frames.shape[0], _UPSAMPLE_CHUNK):  # bounds memory
    x = frames[start : start + _UPSAMPLE_CHUNK, rows].astype(np.float32)
    x = x / np.float32(255.0)
    # Width pass, then height pass, each t0 * w0 + t1 * w1 evaluated like
    # torch's CPU kernel: fma(t0, w0, t1 * w1).
    xw = _fma32(x[:, :, c0], ww0[None, None, :, None], x[:, :, c1] * ww1[None, None, :, None])
    y = _fma32(xw[:, pos[h0]], wh0[None, :, None, None], xw[:, pos[h1]] * wh1[None, :, None, None])
    # uint8 input: truncated like the reference; float32 (> 8-bit sources) keeps its precision.
    out[start : start + _UPSAMPLE_CHUNK] = (y * np.float32(255.0)).astype(frames.dtype)
  return out, ratio


def _fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
  """float32 a * b + c with one rounding (the product is exact in float64;
  the float64 sum can double-round only in vanishingly rare ties)."""
  return (a.astype(np.float64) * b.astype(np.float64) + c.astype(np.float64)).astype(np.float32)


def gather_fragments(
  frames: np.ndarray,
  tops: np.ndarray,
  lefts: np.ndarray,
  fsize: int,
  aligned: int,
  time_index: np.ndarray | None = None,
) -> np.ndarray:
  """Splices the patches into (T, F * fsize, F * fsize, 3), same dtype.

  Output frame t, cell (i, j) is frames[time_index[t], tops[g, i, j] + a,
  lefts[g, i, j] + b] for a, b < fsize with g = t // aligned.

  Args:
    frames: (U, H, W, 3) decoded (or upsampled) frames.
    tops, lefts: (G, F, F) int patch corners.
    time_index: (T,) positions into `frames`; default arange(U).
  """
  u, h, w = frames.shape[:3]
  t_idx = np.arange(u) if time_index is None else np.asarray(time_index, np.int64)
  t = t_idx.shape[0]
  g, f = tops.shape[0], tops.shape[1]
  if t != g * aligned:
    raise ValueError(f"gather_fragments: {t} frames != {g} offset groups x aligned {aligned}")
  if tops.min() < 0 or lefts.min() < 0 or tops.max() + fsize > h or lefts.max() + fsize > w:
    raise ValueError(f"gather_fragments: patches exceed the {h}x{w} frame")
  group = np.arange(t) // aligned
  a = np.arange(fsize)
  # Index grids shaped (T, F, fsize, F, fsize): time, rows, columns.
  rr = tops[group][:, :, None, :, None] + a[None, None, :, None, None]
  cc = lefts[group][:, :, None, :, None] + a[None, None, None, None, :]
  tt = t_idx[:, None, None, None, None]
  out = frames[tt, rr, cc]  # (T, F, fsize, F, fsize, 3)
  return out.reshape(t, f * fsize, f * fsize, frames.shape[-1])


def grid_mini_patch_sampling(
  frames: np.ndarray,
  fragments: int = 7,
  fsize: int = 32,
  aligned: int = 32,
  rng: np.random.Generator | None = None,
  time_index: np.ndarray | None = None,
  return_offsets: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Grid Mini-patch Sampling (reference `get_spatial_fragments`).

  Args:
    frames: uint8 (U, H, W, 3) decoded frames.
    fragments, fsize: grid size and patch side; output side fragments*fsize.
    aligned: consecutive sampled frames that share patch positions; forced
      to 1 for a single frame (images), as in the reference.
    rng: random offsets; None centres each patch in its cell.
    time_index: (T,) sampled frame order as positions into `frames` (lets
      repeated indices share one decoded frame); default arange(U).

    return_offsets: also return the patch corners (tops, lefts), each
      (T // aligned, F, F), in the pixels of the (possibly upsampled) frames
      the patches were cut from (quality maps place values back with them).

  Returns:
    uint8 (T, S, S, 3) fragments (values equal the reference's 0-255 floats),
    or (fragments, tops, lefts) with return_offsets.
  """
  _check_frames(frames, "grid_mini_patch_sampling")
  _check_positive_int("fragments", fragments)
  _check_positive_int("fsize", fsize)
  _check_positive_int("aligned", aligned)
  t = frames.shape[0] if time_index is None else len(time_index)
  if t == 1:
    aligned = 1
  if t % aligned:
    raise ValueError(
      f"grid_mini_patch_sampling: {t} sampled frames is not a multiple of aligned={aligned}"
    )
  res_h, res_w = frames.shape[1:3]
  size = fragments * fsize
  # Offsets come from the pre-upsample size (reference quirk, spec §5.4.4).
  tops, lefts = fragment_offsets(res_h, res_w, t // aligned, fragments, fsize, rng)
  frames, _ = upsample_small_frames(frames, size, size, keep_h=res_h, keep_w=res_w)
  out = gather_fragments(frames, tops, lefts, fsize, aligned, time_index)
  return (out, tops, lefts) if return_offsets else out


def _check_frames(frames, what: str):
  if not isinstance(frames, np.ndarray):
    raise TypeError(f"{what}: frames must be a numpy array, got {type(frames).__name__}")
  # float32 frames on the 0-255 scale carry sources deeper than 8 bits.
  if frames.dtype not in (np.uint8, np.float32) or frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(
      f"{what}: frames must be uint8 or float32 (N, H, W, 3), got {frames.dtype} {frames.shape}"
    )


# ----------------------------------------------------------------------------
# Config-driven sampler.
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FragmentGeometry:
  """Where the patches of sampled fragments came from in the decoded frames.

  Fragment frame t of clip c is frame `frame_indices[c, t]`; its patch in
  grid cell (i, j) covers rows [tops[c, g, i, j], + fsize) and columns
  [lefts[c, g, i, j], + fsize) with g = t // aligned, in the pixels of the
  frame the patch was cut from. That frame is the decoded one (frame_size =
  (H, W)) unless it was smaller than the fragment grid and upsampled first:
  then one of its pixels spans `scale` (< 1) decoded pixels, and a patch
  covers decoded rows [top * scale, (top + fsize) * scale).
  """

  frame_indices: np.ndarray  # (num_clips, clip_len) int64
  tops: np.ndarray  # (num_clips, clip_len // aligned, F, F) int64
  lefts: np.ndarray  # same shape
  fsize: int
  aligned: int
  frame_size: tuple[int, int]
  scale: float


@dataclasses.dataclass(frozen=True)
class FragmentSamplingConfig:
  """One variant's sampling settings (see VARIANT_SAMPLING)."""

  fragments: int = 7
  fsize: int = 32
  aligned: int = 32
  clip_len: int = 32
  frame_interval: int = 2
  t_frag: int | None = None
  num_clips_train: int = 1
  num_clips_test: int = 4
  # Test-time sampling: "random" (reference evaluation), "center"
  # (deterministic centred offsets) or "demo" (reference vqa.py: evenly
  # spaced contiguous clips at interval 1, random patches).
  test_sampling: str = "random"

  def __post_init__(self):
    for f in dataclasses.fields(self):
      if f.name != "test_sampling":
        _check_positive_int(f.name, getattr(self, f.name), allow_none=f.name == "t_frag")
    if self.t_frag is not None and self.clip_len % self.t_frag:
      raise ValueError(
        f"fragment sampling: clip_len {self.clip_len} is not divisible by t_frag {self.t_frag}"
      )
    if self.clip_len % self.aligned:
      raise ValueError(
        f"fragment sampling: clip_len {self.clip_len} is not a multiple of aligned {self.aligned}"
      )
    if self.test_sampling not in TEST_SAMPLING_MODES:
      raise ValueError(
        f"fragment sampling: test_sampling must be one of "
        f"{TEST_SAMPLING_MODES}, got {self.test_sampling!r}"
      )


def temporal_indices(
  cfg: FragmentSamplingConfig, num_frames: int, rng: np.random.Generator | None, train: bool
) -> np.ndarray:
  """Frame indices (num_clips, clip_len) for a video of `num_frames`."""
  num_clips = cfg.num_clips_train if train else cfg.num_clips_test
  mode = "random" if train else cfg.test_sampling
  if mode == "demo":
    flat = uniform_clip_indices(num_frames, cfg.clip_len, num_clips, 1)
  else:
    rng = rng if mode == "random" else None
    if cfg.t_frag is None:
      # Legacy layout: the clips are the segments of a single draw.
      flat = fragment_frame_indices(num_frames, cfg.clip_len, num_clips, cfg.frame_interval, 1, rng)
    else:
      flat = fragment_frame_indices(
        num_frames, cfg.clip_len // cfg.t_frag, cfg.t_frag, cfg.frame_interval, num_clips, rng
      )
  return flat.reshape(num_clips, cfg.clip_len)


class FragmentSampler:
  """Video -> normalised fragments for one FAST-VQA / FasterVQA variant.

    sampler = FragmentSampler("faster_vqa")
    x = sampler(read_frames, num_video_frames, np.random.default_rng(0),
                train=False)   # float32 (num_clips, clip_len, S, S, 3)

  `read_frames(indices)` must return uint8 (len(indices), H, W, 3) for the
  sorted unique indices it is given; each frame is decoded once and reused.
  """

  def __init__(self, variant: str = "fast_vqa_b", **overrides):
    if variant not in VARIANT_SAMPLING:
      raise ValueError(
        f"unknown fragment sampling variant {variant!r}; known: {sorted(VARIANT_SAMPLING)}"
      )
    known = {f.name for f in dataclasses.fields(FragmentSamplingConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
      raise ValueError(f"unknown fragment sampling override(s) {unknown}; known: {sorted(known)}")
    self.variant = variant
    self.config = FragmentSamplingConfig(**{**VARIANT_SAMPLING[variant], **overrides})

  def num_clips(self, train: bool) -> int:
    return self.config.num_clips_train if train else self.config.num_clips_test

  @property
  def clip_len(self) -> int:
    return self.config.clip_len

  @property
  def size(self) -> int:
    return self.config.fragments * self.config.fsize

  def _needs_rng(self, train: bool) -> bool:
    return train or self.config.test_sampling != "center"

  def frame_indices(
    self, num_video_frames: int, rng: np.random.Generator | None, train: bool
  ) -> np.ndarray:
    """(num_clips, clip_len) int64 frame indices (draws from rng first)."""
    _check_positive_int("num_video_frames", num_video_frames)
    if self._needs_rng(train):
      _check_rng(rng, "FragmentSampler")
    return temporal_indices(self.config, int(num_video_frames), rng, train)

  def __call__(
    self,
    read_frames: Callable[[np.ndarray], np.ndarray],
    num_video_frames: int,
    rng: np.random.Generator | None,
    train: bool,
  ) -> np.ndarray:
    return self.sample_with_geometry(read_frames, num_video_frames, rng, train)[0]

  def sample_with_geometry(
    self,
    read_frames: Callable[[np.ndarray], np.ndarray],
    num_video_frames: int,
    rng: np.random.Generator | None,
    train: bool,
  ) -> tuple[np.ndarray, FragmentGeometry]:
    """Same fragments as __call__ (same draws), plus where every patch came from."""
    cfg = self.config
    transforms.warn_if_short(read_frames, num_video_frames, cfg.clip_len)
    idx = self.frame_indices(num_video_frames, rng, train)
    unique, inverse = np.unique(idx.reshape(-1), return_inverse=True)
    frames = read_frames(unique)
    _check_frames(frames, "FragmentSampler: read_frames result")
    if frames.shape[0] != unique.shape[0]:
      raise ValueError(
        f"FragmentSampler: read_frames returned "
        f"{frames.shape[0]} frames for {unique.shape[0]} "
        f"requested indices"
      )
    spatial_rng = rng if self._needs_rng(train) else None
    x, tops, lefts = grid_mini_patch_sampling(
      frames, cfg.fragments, cfg.fsize, cfg.aligned, spatial_rng, inverse.reshape(-1), True
    )
    x = transforms.normalize(x, MEAN, STD, scale=1.0)
    h, w = frames.shape[1:3]
    size = cfg.fragments * cfg.fsize
    geometry = FragmentGeometry(
      frame_indices=idx,
      tops=tops.reshape(idx.shape[0], -1, cfg.fragments, cfg.fragments),
      lefts=lefts.reshape(idx.shape[0], -1, cfg.fragments, cfg.fragments),
      fsize=cfg.fsize,
      aligned=idx.shape[1] // (tops.shape[0] // idx.shape[0]),
      frame_size=(h, w),
      scale=min(1.0, min(h / size, w / size)),
    )
    return x.reshape(idx.shape + x.shape[1:]), geometry
