"""Tests for internvqa_jax.data.transforms (sampling, resize, crops, recipe)."""

import numpy as np
import pytest
import torch

from internvqa_jax.data import recipes as R
from internvqa_jax.data import transforms as T


def _frames(n=20, h=48, w=64, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _unnormalize(x):
  return (x * T.IMAGENET_STD + T.IMAGENET_MEAN) * 255.0


# ---------------------------------------------------------------- sampling ---


def test_segment_indices_test_mode_hand_computed():
  # N=20, T=4: seg = 19/4 = 4.75; round([0, 4.75, 9.5, 14.25]) = [0, 5, 10, 14]
  # (numpy rounds 9.5 to even). Clip k of 4 adds int(4.75 / 5 * (k + 1)).
  clips = [T.segment_indices(20, 4, clip_index=k, num_clips=4).tolist() for k in range(4)]
  assert clips == [[0, 5, 10, 14], [1, 6, 11, 15], [2, 7, 12, 16], [3, 8, 13, 17]]
  # Single validation clip: offset int(4.75 / 2) = 2.
  assert T.segment_indices(20, 4).tolist() == [2, 7, 12, 16]
  # Short video, more segments than frames: seg = 2/8 = 0.25, repeats frames.
  assert T.segment_indices(3, 8).tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
  assert T.segment_indices(1, 4).tolist() == [0, 0, 0, 0]


def test_segment_indices_train_covers_inclusive_segment_bounds():
  # Segments [round(seg*i), round(seg*(i+1))], both ends inclusive:
  # N=20, T=4 -> [0,5], [5,10], [10,14], [14,19].
  draws = np.stack([T.segment_indices(20, 4, np.random.default_rng(s)) for s in range(400)])
  bounds = [(0, 5), (5, 10), (10, 14), (14, 19)]
  for i, (lo, hi) in enumerate(bounds):
    assert set(draws[:, i].tolist()) == set(range(lo, hi + 1))
  # Capped at the last frame; ends round([0.25 .. 2]) = [0,0,1,1,1,2,2,2].
  short = np.stack([T.segment_indices(3, 8, np.random.default_rng(s)) for s in range(200)])
  assert short.max() == 2 and set(short[:, 0].tolist()) == {0}
  assert set(short[:, 2].tolist()) == {0, 1}


def test_segment_indices_rejects_bad_arguments():
  with pytest.raises(ValueError, match="num_video_frames"):
    T.segment_indices(0, 4)
  with pytest.raises(ValueError, match="clip_index"):
    T.segment_indices(10, 4, clip_index=4, num_clips=4)


# ------------------------------------------------------------------ resize ---


@pytest.mark.parametrize("out_hw", [(32, 42), (21, 29), (97, 130), (48, 64)])
def test_bilinear_resize_matches_torch_interpolate(out_hw):
  frames = _frames(3)
  ours = T.bilinear_resize(frames, out_hw)
  ref = (
    torch.nn.functional.interpolate(
      torch.from_numpy(frames).permute(0, 3, 1, 2).float(),
      size=out_hw,
      mode="bilinear",
      align_corners=False,
      antialias=False,
    )
    .permute(0, 2, 3, 1)
    .numpy()
  )
  assert ours.dtype == np.float32 and ours.shape == (3, *out_hw, 3)
  np.testing.assert_allclose(ours, ref, atol=2e-3)


def test_bilinear_resize_box_equals_crop_of_full_resize():
  frames = _frames(2)
  full = T.bilinear_resize(frames, (40, 53))
  part = T.bilinear_resize(frames, (40, 53), box=(3, 11, 32, 32))
  np.testing.assert_array_equal(part, full[:, 3:35, 11:43])
  with pytest.raises(ValueError, match="outside"):
    T.bilinear_resize(frames, (40, 53), box=(10, 30, 32, 32))


def test_short_side_size_follows_reference_rule():
  assert T.short_side_size(48, 64, 32) == (32, 42)  # int(32 * 64 / 48) = 42
  assert T.short_side_size(64, 48, 32) == (42, 32)
  assert T.short_side_size(1080, 1920, 224) == (224, 398)
  assert T.short_side_size(2160, 3840, 224) == (224, 398)


def test_normalize_known_values():
  pixels = np.array([[0, 0, 0], [255, 255, 255], [51, 102, 153]], np.uint8)
  x = T.normalize(pixels)
  assert x.dtype == np.float32
  np.testing.assert_allclose(x[0], [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225], rtol=1e-6)
  np.testing.assert_allclose(x[1], [0.515 / 0.229, 0.544 / 0.224, 0.594 / 0.225], rtol=1e-6)
  np.testing.assert_allclose(
    x[2], [(0.2 - 0.485) / 0.229, (0.4 - 0.456) / 0.224, (0.6 - 0.406) / 0.225], rtol=1e-5
  )


# ------------------------------------------------------------------- crops ---


def test_test_crop_boxes_along_long_side():
  # Landscape 32x42, crop 32: starts int(j * 10 / 2) along W.
  assert T.test_crop_boxes(32, 42, 32, 3) == [(0, 0), (0, 5), (0, 10)]
  # Portrait: along H (H >= W, as in the reference); centred on the short side.
  assert T.test_crop_boxes(60, 40, 32, 3) == [(0, 4), (14, 4), (28, 4)]
  assert T.test_crop_boxes(48, 64, 32, 1) == [(8, 16)]


# ------------------------------------------------------------------ recipe ---


def test_train_view_is_a_flipped_or_plain_crop_of_the_sampled_frames():
  frames = _frames(20)
  recipe = R.InternVideo2Recipe(num_frames=4, crop_size=32, resize_short=None, flip=True)
  flips = 0
  for seed in range(16):
    out = recipe.train(lambda idx: frames[idx], 20, np.random.default_rng(seed))
    assert out.shape == (4, 32, 32, 3) and out.dtype == np.float32
    # Same draw order as the recipe: segments, crop box, flip.
    rng = np.random.default_rng(seed)
    idx = T.segment_indices(20, 4, rng)
    top, left = T.random_crop_box(48, 64, 32, rng)
    crop = frames[idx, top : top + 32, left : left + 32].astype(np.float32)
    flipped = rng.random() < 0.5
    flips += flipped
    np.testing.assert_allclose(_unnormalize(out), crop[:, :, ::-1] if flipped else crop, atol=1e-3)
  assert 0 < flips < 16


def test_train_view_resizes_short_side_before_cropping():
  frames = _frames(8, 48, 64)
  recipe = R.InternVideo2Recipe(num_frames=2, crop_size=32, resize_short=32, flip=False)
  out = recipe.train(lambda idx: frames[idx], 8, np.random.default_rng(3))
  rng = np.random.default_rng(3)
  idx = T.segment_indices(8, 2, rng)
  top, left = T.random_crop_box(32, 42, 32, rng)
  assert top == 0  # Short side == crop: only the long side has freedom.
  expected = T.bilinear_resize(frames[idx], (32, 42))[:, :, left : left + 32]
  np.testing.assert_allclose(_unnormalize(out), expected, atol=1e-3)


def test_eval_views_order_and_content():
  frames = _frames(20)
  recipe = R.InternVideo2Recipe(
    num_frames=4, crop_size=32, resize_short=32, test_clips=2, test_crops=3
  )
  out = recipe.eval(lambda idx: frames[idx], 20)
  assert out.shape == (6, 4, 32, 32, 3) and recipe.num_eval_examples == 6
  resized = T.bilinear_resize(frames, (32, 42))
  for k in range(2):
    idx = T.segment_indices(20, 4, clip_index=k, num_clips=2)
    for j, (top, left) in enumerate(T.test_crop_boxes(32, 42, 32, 3)):
      np.testing.assert_allclose(
        _unnormalize(out[k * 3 + j]), resized[idx, top : top + 32, left : left + 32], atol=1e-3
      )


def test_native_resolution_smaller_than_crop_is_upscaled():
  frames = _frames(4, 24, 40)
  recipe = R.InternVideo2Recipe(
    num_frames=2, crop_size=32, resize_short=None, test_clips=1, test_crops=1
  )
  out = recipe.eval(lambda idx: frames[idx], 4)
  assert out.shape == (1, 2, 32, 32, 3)


def test_recipe_rejects_bad_settings_and_decoder_output():
  with pytest.raises(ValueError, match="smaller than crop_size"):
    R.InternVideo2Recipe(crop_size=224, resize_short=128)
  recipe = R.InternVideo2Recipe(num_frames=2, crop_size=32)
  with pytest.raises(ValueError, match="uint8 or float32 .*got float64"):
    recipe.eval(lambda idx: np.zeros((len(idx), 48, 64, 3), np.float64), 8)
