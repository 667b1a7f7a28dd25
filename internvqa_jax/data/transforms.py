"""NumPy video augmentations: InternVideo2 clip sampling, resizing, crops, normalisation.

Everything here works on uint8 frames (N, H, W, 3) from a decoder and returns
float32 channels-last clips, so the same code runs in Grain worker processes
without JAX.

InternVideo2 protocol (official `datasets/kinetics_sparse.py`, adapted for
quality assessment):
  * train: TSN segment sampling (one random frame per segment), optional
    short-side resize, random crop, random horizontal flip, /255, ImageNet
    mean/std. RandAugment, RandomResizedCrop and RandomErasing of the
    classification recipe are deliberately left out: they change exactly the
    compression artefacts a quality model has to see.
  * test: S temporal clips (frame offsets (k + 1) * seg / (S + 1) inside each
    segment) x C spatial crops along the long side after the short-side
    resize.

Resizing: `bilinear_resize` is half-pixel-centred bilinear interpolation
without antialiasing, i.e. torch `F.interpolate(mode='bilinear',
align_corners=False, antialias=False)` in float32 and cv2 `INTER_LINEAR`
(which the reference uses) up to cv2's 8-bit fixed-point rounding (at most one
grey level). Resizing blurs the blocking/ringing that compression introduces,
so for quality assessment `resize_short=None` (native-resolution crops) is
often the better choice; 224 reproduces the InternVideo2/InternVQA recipe.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)

# read_frames(indices) -> uint8 (len(indices), H, W, 3).
FrameReader = Callable[[np.ndarray], np.ndarray]


# ---------------------------------------------------------------- sampling ---


class ShortVideoWarning(UserWarning):
  """A video has fewer frames than one clip reads: frames are repeated to fill the clip."""


def warn_if_short(read_frames: Callable, num_video_frames: int, clip_frames: int) -> None:
  """Warns (once per video and clip length) when a clip must repeat frames.

  The video is named by the reader's `path` or `name` attribute when it has one.
  Silence with warnings.filterwarnings("ignore", category=ShortVideoWarning).
  """
  if not 1 <= num_video_frames < clip_frames:
    return  # Long enough, or invalid (the sampler raises for that).
  name = getattr(read_frames, "path", None) or getattr(read_frames, "name", None) or "a video"
  warnings.warn(
    f"{name}: {num_video_frames} frame(s), fewer than the {clip_frames} a clip reads: "
    "frames are repeated to fill the clip",
    ShortVideoWarning,
    stacklevel=3,
  )


def segment_indices(
  num_video_frames: int,
  num_segments: int,
  rng: np.random.Generator | None = None,
  *,
  clip_index: int = 0,
  num_clips: int = 1,
) -> np.ndarray:
  """Frame indices of one clip, InternVideo2 `_get_seq_frames` semantics.

  seg = (num_video_frames - 1) / num_segments. With `rng` (training) segment i
  contributes a uniform random integer in [round(seg*i), round(seg*(i+1))]
  (both ends inclusive, numpy round-half-to-even); without `rng` (testing)
  clip k of `num_clips` takes round(seg*i) + int(seg / (num_clips + 1) * (k+1)).
  Indices are capped at the last frame, so short videos repeat frames.
  """
  if num_video_frames < 1:
    raise ValueError(f"num_video_frames must be >= 1, got {num_video_frames}")
  if num_segments < 1:
    raise ValueError(f"num_segments must be >= 1, got {num_segments}")
  if not 0 <= clip_index < num_clips:
    raise ValueError(f"clip_index {clip_index} outside [0, {num_clips})")
  seg = max(0.0, (num_video_frames - 1) / num_segments)
  starts = np.round(seg * np.arange(num_segments)).astype(np.int64)
  if rng is not None:
    ends = np.round(seg * np.arange(1, num_segments + 1)).astype(np.int64)
    idx = rng.integers(starts, ends + 1)
  else:
    idx = starts + int(seg / (num_clips + 1) * (clip_index + 1))
  return np.minimum(idx, num_video_frames - 1).astype(np.int64)


# ------------------------------------------------------------------ resize ---


def short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
  """(new_h, new_w) with the short side == size; the long side truncates."""
  if width < height:
    return int(size * height / width), size
  return size, int(size * width / height)


def _linear_taps(in_size: int, out_size: int, start: int, length: int):
  """Source taps and weights for output positions [start, start + length)."""
  scale = in_size / out_size
  dst = np.arange(start, start + length, dtype=np.float64)
  src = np.maximum((dst + 0.5) * scale - 0.5, 0.0)
  i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  i1 = np.minimum(i0 + 1, in_size - 1)
  w1 = (src - i0).astype(np.float32)
  w1[i0 == in_size - 1] = 0.0
  return i0, i1, w1


def bilinear_resize(
  frames: np.ndarray, out_hw: tuple[int, int], *, box: tuple[int, int, int, int] | None = None
) -> np.ndarray:
  """Bilinear resize of (N, H, W, C) frames to out_hw, returned as float32.

  box = (top, left, height, width) computes only that window of the resized
  image (crop after resize without materialising the full resized frame).
  Pixel values keep their range ([0, 255] for uint8 input).
  """
  _n, h, w, _c = frames.shape
  oh, ow = out_hw
  top, left, bh, bw = box if box is not None else (0, 0, oh, ow)
  if top < 0 or left < 0 or top + bh > oh or left + bw > ow:
    raise ValueError(f"box {box} outside the resized frame {out_hw}")
  if (oh, ow) == (h, w):
    return frames[:, top : top + bh, left : left + bw].astype(np.float32)
  y0, y1, wy = _linear_taps(h, oh, top, bh)
  x0, x1, wx = _linear_taps(w, ow, left, bw)
  # Rows first on the (smaller) selection of source rows, then columns.
  a = frames[:, y0].astype(np.float32)
  b = frames[:, y1].astype(np.float32)
  rows = a + (b - a) * wy[None, :, None, None]
  a = rows[:, :, x0]
  b = rows[:, :, x1]
  return a + (b - a) * wx[None, None, :, None]


def normalize(
  frames: np.ndarray,
  mean: np.ndarray = IMAGENET_MEAN,
  std: np.ndarray = IMAGENET_STD,
  *,
  scale: float = 1.0 / 255.0,
) -> np.ndarray:
  """Channels-last RGB -> (x * scale - mean) / std per channel, float32.

  The default is InternVideo2's [0, 1] ImageNet statistics; FAST-VQA gives its
  0-255-scale statistics with scale=1 (no multiplication, as the reference).
  """
  if np.shape(frames)[-1] != 3:
    raise ValueError(f"normalize: expected channels-last RGB (..., 3), got {np.shape(frames)}")
  x = np.asarray(frames, np.float32)
  if scale != 1.0:
    x = x * np.float32(scale)
  return (x - mean) / std


# ------------------------------------------------------------------- crops ---


def resized_hw(
  height: int, width: int, resize_short: int | None, crop_size: int
) -> tuple[int, int]:
  """Frame size after the short-side rule; native if resize_short is None.

  With resize_short=None a frame whose short side is below crop_size is
  upscaled to exactly crop_size: a crop cannot be larger than the frame.
  """
  if resize_short is None:
    if min(height, width) >= crop_size:
      return height, width
    resize_short = crop_size
  if resize_short < crop_size:
    raise ValueError(f"resize_short={resize_short} is smaller than crop_size={crop_size}")
  if min(height, width) == resize_short:  # The reference skips the resize.
    return height, width
  return short_side_size(height, width, resize_short)


def random_crop_box(
  height: int, width: int, crop_size: int, rng: np.random.Generator
) -> tuple[int, int]:
  """Uniform (top, left) of a crop_size square inside height x width."""
  top = int(rng.integers(0, height - crop_size + 1))
  left = int(rng.integers(0, width - crop_size + 1))
  return top, left


def test_crop_boxes(
  height: int, width: int, crop_size: int, num_crops: int
) -> list[tuple[int, int]]:
  """(top, left) of num_crops squares spread along the long side.

  Crop j starts at int(j * (long - crop) / (num_crops - 1)) along the long
  side (H when H >= W, as in the reference) and is centred on the short side;
  a single crop is centred both ways.
  """
  if num_crops < 1:
    raise ValueError(f"num_crops must be >= 1, got {num_crops}")
  along_h = height >= width
  long_, short = (height, width) if along_h else (width, height)
  centre_short = (short - crop_size) // 2
  boxes = []
  for j in range(num_crops):
    if num_crops == 1:
      start = (long_ - crop_size) // 2
    else:
      start = int(j * (long_ - crop_size) / (num_crops - 1))
    boxes.append((start, centre_short) if along_h else (centre_short, start))
  return boxes


def check_frames(frames: np.ndarray, n: int) -> np.ndarray:
  """uint8 frames, or float32 on the same 0-255 scale (sources deeper than 8 bits)."""
  frames = np.asarray(frames)
  if (
    frames.dtype not in (np.uint8, np.float32)
    or frames.ndim != 4
    or frames.shape[0] != n
    or frames.shape[-1] != 3
  ):
    raise ValueError(
      f"read_frames must return uint8 or float32 ({n}, H, W, 3), got {frames.dtype} {frames.shape}"
    )
  return frames
