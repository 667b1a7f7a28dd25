"""Input recipes: how a view config becomes training clips and evaluation examples.

A recipe is what a model family's `input_recipe(view)` returns (see
internvqa_jax.models). It has:

  train(read_frames, num_video_frames, rng) -> float32 (T, H, W, 3)
      one augmented training clip;
  eval(read_frames, num_video_frames, rng) -> float32 (E, T, H, W, 3)
      the E evaluation examples of one video (their scores are averaged);
  num_eval_examples: E.

`read_frames(indices)` returns uint8 frames (len(indices), H, W, 3), or float32
on the same 0-255 scale for sources deeper than 8 bits. Recipes
are plain NumPy and picklable, so Grain worker processes run them without JAX.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from internvqa_jax.data import fragments, transforms

# FAST-VQA test sampling unless a view sets its own: deterministic, so that training-time
# evaluation and `internvqa_jax.score` give the same numbers on every run. The reference's random
# test draws are overrides={"test_sampling": "random"} (seeded per video and example).
DEFAULT_TEST_SAMPLING = "center"


@dataclasses.dataclass(frozen=True)
class InternVideo2Recipe:
  """InternVideo2 clips: TSN sampling, crops and flips (the protocol in data/transforms.py).

  Attributes:
    num_frames: T, frames per clip (one per temporal segment).
    crop_size: side of the square crop fed to the model.
    resize_short: short side after resizing; None keeps native resolution.
    flip: random horizontal flip (p = 0.5) in training.
    test_clips: S temporal clips per video in evaluation.
    test_crops: C spatial crops per clip in evaluation.
  """

  num_frames: int = 8
  crop_size: int = 224
  resize_short: int | None = 224
  flip: bool = True
  test_clips: int = 4
  test_crops: int = 3

  def __post_init__(self):
    for name in ("num_frames", "crop_size", "test_clips", "test_crops"):
      if int(getattr(self, name)) < 1:
        raise ValueError(f"InternVideo2Recipe.{name} must be >= 1, got {getattr(self, name)}")
    if self.resize_short is not None and self.resize_short < self.crop_size:
      raise ValueError(
        f"resize_short={self.resize_short} is smaller than crop_size={self.crop_size}"
      )

  @property
  def num_eval_examples(self) -> int:
    return self.test_clips * self.test_crops

  def settings(self) -> dict[str, Any]:
    """The view config that rebuilds this recipe, defaults filled in."""
    return {"recipe": "internvideo2", **dataclasses.asdict(self)}

  def train(
    self, read_frames: transforms.FrameReader, num_video_frames: int, rng: np.random.Generator
  ) -> np.ndarray:
    """One augmented clip, float32 (T, crop, crop, 3), normalized."""
    transforms.warn_if_short(read_frames, num_video_frames, self.num_frames)
    idx = transforms.segment_indices(num_video_frames, self.num_frames, rng)
    frames = transforms.check_frames(read_frames(idx), len(idx))
    h, w = frames.shape[1:3]
    oh, ow = transforms.resized_hw(h, w, self.resize_short, self.crop_size)
    top, left = transforms.random_crop_box(oh, ow, self.crop_size, rng)
    clip = transforms.bilinear_resize(
      frames, (oh, ow), box=(top, left, self.crop_size, self.crop_size)
    )
    if self.flip and rng.random() < 0.5:
      clip = clip[:, :, ::-1]
    return np.ascontiguousarray(transforms.normalize(clip))

  def eval(
    self,
    read_frames: transforms.FrameReader,
    num_video_frames: int,
    rng: np.random.Generator | None = None,
  ) -> np.ndarray:
    """All test examples, float32 (S*C, T, crop, crop, 3); example = clip*C + crop."""
    del rng  # The test protocol is deterministic.
    transforms.warn_if_short(read_frames, num_video_frames, self.num_frames)
    c = self.crop_size
    examples = []
    # Clip by clip, cropping before the float conversion: peak memory stays at
    # one clip of decoded frames even for 4K video at native resolution.
    for k in range(self.test_clips):
      idx = transforms.segment_indices(
        num_video_frames, self.num_frames, clip_index=k, num_clips=self.test_clips
      )
      frames = transforms.check_frames(read_frames(idx), len(idx))
      h, w = frames.shape[1:3]
      oh, ow = transforms.resized_hw(h, w, self.resize_short, c)
      if (oh, ow) != (h, w):  # One resize per clip, shared by its crops.
        frames = transforms.bilinear_resize(frames, (oh, ow))
      for top, left in transforms.test_crop_boxes(oh, ow, c, self.test_crops):
        examples.append(transforms.normalize(frames[:, top : top + c, left : left + c]))
    return np.stack(examples)

  def eval_geometry(
    self, num_video_frames: int, height: int, width: int
  ) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Where `eval`'s examples come from, for frames of height x width.

    Returns (frame indices (S*C, T) int64, crop boxes (S*C, 2) = (top, left)
    of each crop_size square in the resized frame, resized (height, width)).
    """
    idx, boxes = [], []
    oh, ow = transforms.resized_hw(height, width, self.resize_short, self.crop_size)
    for k in range(self.test_clips):
      clip = transforms.segment_indices(
        num_video_frames, self.num_frames, clip_index=k, num_clips=self.test_clips
      )
      for box in transforms.test_crop_boxes(oh, ow, self.crop_size, self.test_crops):
        idx.append(clip)
        boxes.append(box)
    return np.stack(idx), np.asarray(boxes, np.int64), (oh, ow)


class FragmentRecipe:
  """FAST-VQA fragments through `fragments.FragmentSampler(variant, **overrides)`."""

  def __init__(self, variant: str, overrides: Mapping[str, Any] | None = None):
    self.variant = variant
    self.overrides = {"test_sampling": DEFAULT_TEST_SAMPLING, **(overrides or {})}
    self.sampler = fragments.FragmentSampler(variant, **self.overrides)
    if self.sampler.num_clips(True) != 1:
      raise ValueError(
        f"fastvqa view {variant!r}: training needs num_clips_train=1 (one clip per "
        f"sample), got {self.sampler.num_clips(True)}"
      )

  @property
  def num_eval_examples(self) -> int:
    """Test clips per video (each becomes its own eval example)."""
    return self.sampler.num_clips(False)

  def settings(self) -> dict[str, Any]:
    """The view config that rebuilds this recipe, defaults filled in."""
    return {"recipe": "fastvqa", "variant": self.variant, "overrides": dict(self.overrides)}

  def train(self, read_frames, num_video_frames, rng):
    clips = np.asarray(self.sampler(read_frames, num_video_frames, rng, True), np.float32)
    if clips.ndim != 5 or clips.shape[0] != 1:
      raise ValueError(
        f"fastvqa view '{self.variant}' must give 1 training clip (1, T, S, S, 3), "
        f"got shape {clips.shape}"
      )
    return clips[0]

  def eval(self, read_frames, num_video_frames, rng):
    clips = np.asarray(self.sampler(read_frames, num_video_frames, rng, False), np.float32)
    if clips.ndim != 5:
      raise ValueError(
        f"fastvqa view '{self.variant}' must give (num_clips, T, S, S, 3), got {clips.shape}"
      )
    return clips
