"""Quality maps: placement through the sampling geometry, FAST-VQA maps on a model whose
map is an affine function of brightness, InternVideo2 contributions that add up."""

import os

import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest

from internvqa_jax import quality_maps as qm
from internvqa_jax.data import fragments as fr
from internvqa_jax.data import recipes, transforms
from internvqa_jax.models import fastvqa, internvideo2


def grey_video(n, h, w, seed=0):
  """Static-free textured frames: every pixel distinct enough to catch a misplacement."""
  rng = np.random.default_rng(seed)
  g = rng.integers(0, 256, (n, h, w), np.uint8)
  return np.repeat(g[..., None], 3, axis=-1)


def view_grey(views, mean, std, scale=1.0):
  """Normalised RGB views -> the grey level (V, T, H, W) they were made from."""
  return np.rint((views[..., 0] * std[0] + mean[0]) * scale)


# ------------------------------------------------------------- placement ---


@pytest.mark.parametrize("mode", ["random", "center"])
def test_fragment_placement_is_pixel_exact(mode):
  n, h, w = 40, 230, 300
  video = grey_video(n, h, w)
  sampler = fr.FragmentSampler("fast_vqa_m", test_sampling=mode)  # 4 clips, 4x4 of 32
  views, geom = sampler.sample_with_geometry(lambda i: video[i], n, np.random.default_rng(1), False)
  placement = qm.fragment_placement(geom)
  # A per-pixel "map" (stride 1) equal to the view's grey level must land on the
  # frame pixels that grey level came from.
  values = view_grey(views, fr.MEAN, fr.STD)
  checked = 0
  for f in np.unique(placement.frame_indices)[::5]:
    footprint, cells, boxes = qm.place(values, (1, 1, 1), placement, int(f))
    covered = ~np.isnan(footprint)
    np.testing.assert_array_equal(footprint[covered], video[f, ..., 0][covered])
    # Coverage is exactly the union of the patches cut from this frame.
    expect = np.zeros((h, w), bool)
    for c, t in zip(*np.nonzero(geom.frame_indices == f)):
      g = t // geom.aligned
      for top, left in zip(geom.tops[c, g].ravel(), geom.lefts[c, g].ravel()):
        expect[top : top + 32, left : left + 32] = True
    np.testing.assert_array_equal(covered, expect)
    assert len(boxes) == 16 * np.sum(geom.frame_indices == f)
    # Cells tile the grid: every pixel of the 4x4 grid area gets a cell value.
    assert not np.isnan(cells[: 4 * (h // 4), : 4 * (w // 4)]).any()
    checked += 1
  assert checked >= 3


def test_crop_placement_native_is_pixel_exact():
  n, h, w = 12, 40, 60
  video = grey_video(n, h, w, seed=2)
  recipe = recipes.InternVideo2Recipe(
    num_frames=3, crop_size=28, resize_short=None, test_clips=2, test_crops=3
  )
  views = recipe.eval(lambda i: video[i], n)
  placement = qm.crop_placement(recipe, n, (h, w))
  assert placement.frame_indices.shape == (6, 3)
  std, mean = transforms.IMAGENET_STD * 255, transforms.IMAGENET_MEAN * 255
  values = view_grey(views, mean, std)
  for f in np.unique(placement.frame_indices):
    footprint, _, boxes = qm.place(values, (1, 1, 1), placement, int(f))
    covered = ~np.isnan(footprint)
    np.testing.assert_array_equal(footprint[covered], video[f, ..., 0][covered])
    # Three 28x28 crops along the 60-pixel side, centred on the 40-pixel side.
    assert covered.sum() == 28 * 60 and covered[6:34].all()
    np.testing.assert_array_equal(boxes[:, 1], [0, 16, 32])


def test_crop_placement_through_resize():
  n, h, w = 6, 90, 120
  y, x = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  ramp = (y + x).astype(np.uint8)  # Smooth: bilinear resampling keeps it nearly linear.
  video = np.repeat(np.repeat(ramp[None, ..., None], n, 0), 3, -1)
  recipe = recipes.InternVideo2Recipe(
    num_frames=2, crop_size=28, resize_short=30, test_clips=1, test_crops=3
  )
  views = recipe.eval(lambda i: video[i], n)
  idx, boxes, (oh, ow) = recipe.eval_geometry(n, h, w)
  assert (oh, ow) == (30, 40)
  # eval_geometry describes eval exactly.
  resized = transforms.bilinear_resize(video[idx[0]], (oh, ow))
  for v, (top, left) in enumerate(boxes):
    np.testing.assert_array_equal(
      views[v], transforms.normalize(resized[:, top : top + 28, left : left + 28])
    )
  placement = qm.crop_placement(recipe, n, (h, w))
  std, mean = transforms.IMAGENET_STD * 255, transforms.IMAGENET_MEAN * 255
  values = views[..., 0] * std[0] + mean[0]
  footprint, _, _ = qm.place(values, (1, 1, 1), placement, int(idx[0, 0]))
  covered = ~np.isnan(footprint)
  assert covered[3:87, :].all()  # Crops of 28/30 of the short side: 84 of 90 rows.
  # One resized pixel spans 3 source pixels on a ramp of slope 2 per pixel (x + y).
  assert np.max(np.abs(footprint[covered] - ramp[covered])) <= 4.0


# ------------------------------------------------------- FAST-VQA model ---


def brightness_model():
  """Tiny FAST-VQA whose head map is an affine function of each token's mean input.

  Every block's residual branches are zeroed (blocks are the identity, so no
  token mixing); the patch embedding writes +-mean(patch) to two channels at
  a scale where every LayerNorm sees a variance far below its epsilon (so it
  only rescales); merges average the four tokens; the head's hidden unit sits
  at GELU(10 + small), where GELU is the identity to float precision.
  """
  model = fastvqa.make("tiny", base_x_size=(8, 96, 96), drop_path_rate=0.0)
  # Parameter shapes do not depend on the input: a one-token input in fixed-window mode.
  small = model.clone(adaptive_window=False)
  init = jax.jit(small.init)(jax.random.key(0), jnp.zeros((1, 2, 4, 4, 3), jnp.float32))
  params = jax.tree.map(np.array, init["params"])
  bb = params["fragments_backbone"]
  c = model.embed_dim
  kernel = np.zeros(bb["patch_embed"]["proj"]["kernel"].shape, np.float32)
  n_in = np.prod(kernel.shape[:4])
  kernel[..., 0], kernel[..., 1] = 1e-5 / n_in, -1e-5 / n_in
  bb["patch_embed"]["proj"] = {"kernel": kernel, "bias": np.zeros(c, np.float32)}
  bb["patch_embed"]["norm"] = {
    "scale": np.full(c, 1e-3, np.float32),
    "bias": np.zeros(c, np.float32),
  }
  for i in range(len(model.depths)):
    layer = bb[f"layers_{i}"]
    width = c * 2**i
    for j in range(model.depths[i]):
      block = layer[f"blocks_{j}"]
      for branch in (block["attn"]["proj"], block["mlp"]["fc2"]):
        branch["kernel"][:] = 0
        branch["bias"][:] = 0
    if "downsample" in layer:
      layer["downsample"]["norm"] = {
        "scale": np.full(4 * width, 1e-3, np.float32),
        "bias": np.zeros(4 * width, np.float32),
      }
      red = np.zeros((4 * width, 2 * width), np.float32)
      for k in range(4):  # Concatenated neighbours: channel 0 and 1 of each, averaged.
        red[k * width, 0], red[k * width + 1, 1] = 0.25, 0.25
      layer["downsample"]["reduction"]["kernel"] = red
  last = c * 2 ** (len(model.depths) - 1)
  bb["norm"] = {"scale": np.ones(last, np.float32), "bias": np.zeros(last, np.float32)}
  hid = np.zeros(params["vqa_head"]["fc_hid"]["kernel"].shape, np.float32)
  hid[0, 0] = 3e4
  hbias = np.zeros(hid.shape[1], np.float32)
  hbias[0] = 10.0
  params["vqa_head"]["fc_hid"] = {"kernel": hid, "bias": hbias}
  out_k = np.zeros(params["vqa_head"]["fc_last"]["kernel"].shape, np.float32)
  out_k[0, 0] = 1.0
  params["vqa_head"]["fc_last"] = {"kernel": out_k, "bias": np.zeros(1, np.float32)}
  return model, jax.tree.map(jnp.asarray, params)


def bright_square_video(n=20, h=300, w=400):
  """Dark frames with a bright top-left rectangle (rows < 150, columns < 200)."""
  v = np.full((n, h, w, 3), 40, np.uint8)
  v[:, :150, :200] = 220
  return v


def test_fastvqa_map_follows_brightness_onto_the_frame(tmp_path):
  model, params = brightness_model()
  video = bright_square_video()
  n = video.shape[0]
  sampler = fr.FragmentSampler(
    "fast_vqa_b", fragments=3, clip_len=8, aligned=8, num_clips_test=2, test_sampling="random"
  )
  maker = qm.MapMaker(model, params, sampler, name="bright")
  assert maker.stride == (2, 32, 32) and maker.pooling == "mean"
  views, placement = maker.views(lambda i: video[i], n, np.random.default_rng(3))
  out = maker.local_maps(views)
  assert out["map"].shape == (2, 4, 3, 3)
  np.testing.assert_allclose(out["score"], out["map"].mean(axis=(1, 2, 3)), rtol=1e-6)
  # The map is an affine, increasing function of each token's mean input.
  token = views.reshape(2, 4, 2, 3, 32, 3, 32, 3).mean(axis=(2, 4, 6, 7))
  a = np.stack([token.ravel(), np.ones(token.size)], 1)
  (slope, offset), *_ = np.linalg.lstsq(a, out["map"].ravel().astype(np.float64), rcond=None)
  assert slope > 0
  spread = np.ptp(out["map"])
  assert spread > 1.0
  np.testing.assert_allclose(out["map"].ravel(), a @ [slope, offset], atol=1e-3 * spread)

  # Placed back, every patch footprint carries that function of the frame's own pixels.
  mean_in = ((video[..., :].astype(np.float64) - fr.MEAN) / fr.STD).mean(-1)
  frames, counts = np.unique(placement.frame_indices, return_counts=True)
  f = int(frames[counts == 1][0])  # Sampled once: no other view's patches average in.
  footprint, cells, boxes = qm.place(out["map"], maker.stride, placement, f)
  for y, x, bh, bw in boxes.astype(int):
    expect = slope * mean_in[f, y : y + bh, x : x + bw].mean() + offset
    np.testing.assert_allclose(footprint[y : y + bh, x : x + bw], expect, atol=2e-3 * spread)
  # High values sit on the bright rectangle, low ones off it.
  hi = np.unravel_index(np.nanargmax(cells), cells.shape)
  lo = np.unravel_index(np.nanargmin(cells), cells.shape)
  assert hi[0] < 150 and hi[1] < 200
  assert not (lo[0] < 150 and lo[1] < 200)

  paths = qm.write_maps(
    str(tmp_path), maker, "/videos/a b.mp4", lambda i: video[i], n, rng=np.random.default_rng(3)
  )
  assert len(paths) == 4 and all(os.path.dirname(p) == str(tmp_path) for p in paths)
  assert all(os.path.basename(p).startswith("a_b.mp4.bright.") for p in paths)
  img = matplotlib.image.imread(paths[0])
  assert img.ndim == 3 and img.shape[0] > 100 and np.ptp(img[..., :3]) > 0.5
  saved = np.load(paths[0].rsplit(".frame", 1)[0] + ".map.npz")
  np.testing.assert_array_equal(saved["map"], out["map"])
  np.testing.assert_array_equal(saved["frame_indices"], placement.frame_indices)


# --------------------------------------------------- InternVideo2 model ---


@pytest.fixture(scope="module")
def tiny_iv2():
  model = internvideo2.make("tiny")
  x = jax.random.normal(jax.random.key(1), model.input_shape(3))
  params = dict(jax.jit(model.init)(jax.random.key(0), x)["params"])
  k = jax.random.split(jax.random.key(2), 4)
  # Non-trivial fc_norm and head (their init is the identity LayerNorm and a tiny head).
  params["fc_norm"] = {
    "scale": 1 + 0.3 * jax.random.normal(k[0], (768,)),
    "bias": 0.2 * jax.random.normal(k[1], (768,)),
  }
  params["head"] = {"kernel": jax.random.normal(k[2], (768, 1)), "bias": jnp.array([0.7])}
  return model, params, x


def test_internvideo2_contributions_add_up_to_the_score(tiny_iv2):
  model, params, x = tiny_iv2
  apply = jax.jit(model.apply, static_argnames="return_contributions")
  plain = apply({"params": params}, x)
  out = apply({"params": params}, x, return_contributions=True)
  # Asking for contributions leaves the score and feature as they are.
  np.testing.assert_array_equal(out["score"], plain["score"])
  np.testing.assert_array_equal(out["feature"], plain["feature"])
  c, offset = out["contributions"], out["contribution_offset"]
  assert c.shape == (3, 1 + model.num_patches) and offset.shape == (3,)
  # Offset = w . beta + b, independent of the input.
  w = params["head"]["kernel"][:, 0]
  np.testing.assert_allclose(offset, jnp.dot(params["fc_norm"]["bias"], w) + 0.7, rtol=1e-6)
  total = c.sum(-1) + offset
  np.testing.assert_allclose(total, out["score"], rtol=2e-6, atol=2e-6 * float(jnp.abs(c).sum()))
  assert float(jnp.std(c[:, 1:])) > 1e-3 * float(jnp.abs(out["score"]).max())

  lm = jax.jit(lambda p, v: internvideo2.local_quality_map(model, p, v))(params, x)
  g = model.grid_size
  assert lm["map"].shape == (3, model.num_frames, g, g)
  np.testing.assert_allclose(
    lm["map"].sum((1, 2, 3)) + lm["rest"], lm["score"], rtol=2e-6, atol=2e-5
  )
  np.testing.assert_array_equal(lm["map"].reshape(3, -1), c[:, 1:])


def test_internvideo2_terms_are_the_pooling():
  """Per-token pooling terms sum to the pooled vector (before the head)."""
  pool = internvideo2.AttentionPooling(num_heads=4, out_dim=24)
  tokens = jax.random.normal(jax.random.key(9), (2, 9, 16))
  p = jax.jit(pool.init)(jax.random.key(3), tokens)
  apply = jax.jit(pool.apply, static_argnames="return_terms")
  pooled = apply(p, tokens)
  pooled2, terms = apply(p, tokens, return_terms=True)
  np.testing.assert_array_equal(pooled, pooled2)
  np.testing.assert_allclose(terms.sum(1), pooled, rtol=1e-5, atol=1e-5)


def test_internvideo2_contributions_errors(tiny_iv2):
  model, params, x = tiny_iv2
  with pytest.raises(ValueError, match="train=False and num_outputs == 1"):
    model.apply({"params": params}, x, train=True, return_contributions=True)


def test_internvideo2_write_maps(tmp_path, tiny_iv2):
  model, params, _ = tiny_iv2
  video = bright_square_video(n=10, h=40, w=56)
  recipe = recipes.InternVideo2Recipe(
    num_frames=2, crop_size=28, resize_short=28, test_clips=2, test_crops=2
  )
  maker = qm.MapMaker(model, params, recipe, name="iv2", batch_size=3)
  assert maker.stride == (1, 14, 14) and maker.pooling == "sum"
  views, placement = maker.views(lambda i: video[i], 10)
  assert placement.frame_indices.shape == (4, 2) and placement.frame_size == (40, 56)
  out = maker.local_maps(views)
  assert out["map"].shape == (4, 2, 2, 2)
  np.testing.assert_allclose(
    out["map"].sum((1, 2, 3)) + out["rest"], out["score"], rtol=2e-6, atol=2e-5
  )
  paths = qm.write_maps(str(tmp_path), maker, "v.y4m", lambda i: video[i], 10, max_frames=2)
  assert len(paths) == 2 and all(os.path.exists(p) for p in paths)


def test_map_maker_takes_the_fragment_recipe():
  model, params = brightness_model()
  recipe = recipes.FragmentRecipe("fast_vqa_m")
  maker = qm.MapMaker(model, params, recipe, name="m")
  assert maker.pipeline is recipe.sampler


def test_display_scales():
  np.testing.assert_allclose(qm._display_rgb(np.full((1, 1, 3), 255, np.uint8)), 1.0)
  np.testing.assert_allclose(qm._display_rgb(np.full((1, 1, 3), 127.5, np.float32)), 0.5)
  np.testing.assert_allclose(qm._display_rgb(np.full((1, 1, 3), 1023, np.uint16)), 1.0)


def test_map_maker_errors(tiny_iv2):
  model, params, _ = tiny_iv2
  with pytest.raises(TypeError, match="FragmentSampler or a recipes.InternVideo2Recipe"):
    qm.MapMaker(model, params, object(), name="x")
  with pytest.raises(ValueError, match="batch_size must be >= 1"):
    qm.MapMaker(model, params, recipes.InternVideo2Recipe(), name="x", batch_size=0)
  placement = qm.crop_placement(
    recipes.InternVideo2Recipe(num_frames=2, crop_size=28, test_clips=1, test_crops=1),
    4,
    (28, 28),
  )
  with pytest.raises(ValueError, match="V = 1 views"):
    qm.place(np.zeros((2, 2, 2, 2)), (1, 14, 14), placement, 0)
  with pytest.raises(ValueError, match="max_frames must be >= 1"):
    qm.select_frames(np.arange(4), 0)


def test_select_frames_and_stems():
  np.testing.assert_array_equal(qm.select_frames(np.array([[5, 1], [9, 1]]), 4), [1, 5, 9])
  np.testing.assert_array_equal(qm.select_frames(np.arange(100), 3), [0, 50, 99])
  a = qm.map_stem("/x/clip.mp4", "run/student")
  b = qm.map_stem("/y/clip.mp4", "run/student")
  assert a.startswith("clip.mp4.run_student.") and a != b
