"""The model-family interface (internvqa_jax.models): every family exposes the same names,
and the trainer's, pipeline's and scoring's uses of them behave."""

import json

import jax
import numpy as np
import pytest
import videos  # tests/videos.py

from internvqa_jax import model_setup, models
from internvqa_jax.data import frames, pipeline, recipes
from internvqa_jax.models import fastvqa, internvideo2

INTERFACE = (
  "NAME",
  "VARIANTS",
  "make",
  "from_kwargs",
  "model_kwargs",
  "input_shape",
  "abstract_params",
  "fit_param",
  "num_layers",
  "layer_id",
  "with_frozen_layers",
  "input_recipe",
  "default_view",
  "TEST_OPTIONS",
  "apply_test_options",
  "map_layout",
  "local_quality_map",
)


@pytest.mark.parametrize("family", sorted(models.FAMILIES))
def test_every_family_exposes_the_interface(family):
  mod = models.get(family)
  missing = [n for n in INTERFACE if not hasattr(mod, n)]
  assert not missing, f"{family} lacks {missing}"
  assert family == mod.NAME
  module = mod.make("tiny")
  assert family == module.FAMILY and models.family_of(module) is mod
  # Saved kwargs survive JSON and rebuild the same module.
  saved = json.loads(json.dumps(mod.model_kwargs(module)))
  assert models.build(family, **saved) == module
  with pytest.raises(TypeError, match="unknown model_kwargs"):
    mod.from_kwargs(**saved, bogus=1)
  # The input shape initialises the module; abstract params agree with a real init.
  shape = mod.input_shape(module, batch=2)
  assert len(shape) == 5 and shape[0] == 2 and shape[-1] == 3
  abstract = mod.abstract_params(module)
  real = model_setup.init_params(module, jax.random.key(0))
  assert jax.tree.map(lambda a: (a.shape, a.dtype), abstract) == jax.tree.map(
    lambda a: (a.shape, a.dtype), real
  )


def test_unknown_family():
  with pytest.raises(ValueError, match="unknown model family 'tsm'"):
    models.get("tsm")


def test_layer_ids():
  ids = {
    p: internvideo2.layer_id(p, 2)
    for p in (
      "cls_token",
      "patch_embed/proj/kernel",
      "blocks_0/mlp/fc1/kernel",
      "blocks_1/ls1/gamma",
    )
  }
  assert ids == {
    "cls_token": 0,
    "patch_embed/proj/kernel": 0,
    "blocks_0/mlp/fc1/kernel": 1,
    "blocks_1/ls1/gamma": 2,
  }
  assert internvideo2.layer_id("head/kernel", 2) == 3
  with pytest.raises(ValueError, match="outside"):
    internvideo2.layer_id("blocks_2/ls1/gamma", 2)
  assert internvideo2.num_layers(internvideo2.make("tiny")) == 2
  assert internvideo2.with_frozen_layers(internvideo2.make("tiny"), 1).frozen_blocks == 1
  assert fastvqa.num_layers(fastvqa.make("tiny")) is None
  with pytest.raises(ValueError, match="no layer numbering"):
    fastvqa.layer_id("vqa_head/fc_hid/kernel", 4)


def test_fit_param_resamples_internvideo2_pos_embed_only():
  module = internvideo2.make("tiny", num_frames=4)  # 4 frames of a 2x2 grid.
  saved = internvideo2.model_kwargs(internvideo2.make("tiny"))  # 2 frames.
  old = np.random.default_rng(0).standard_normal((1, 1 + 2 * 4, 64)).astype(np.float32)
  new = internvideo2.fit_param("pos_embed", old, module, saved, log=lambda *a: None)
  assert new.shape == (1, 1 + 4 * 4, 64)
  np.testing.assert_array_equal(new[:, 0], old[:, 0])  # The cls row is kept.
  other = np.zeros((3, 5), np.float32)
  assert internvideo2.fit_param("head/kernel", other, module, saved) is other
  assert fastvqa.fit_param("vqa_head/fc_hid/kernel", other, fastvqa.make("tiny"), {}) is other


def test_default_views_make_the_test_protocol(tmp_path):
  path = videos.make_yuv(tmp_path / "clip_64x48.yuv", num_frames=12)
  reader = frames.for_file(path)
  iv2 = internvideo2.make("tiny")  # 2 frames of 28x28.
  view = internvideo2.default_view(iv2, {})
  recipe = pipeline.make_recipe(view)
  assert isinstance(recipe, recipes.InternVideo2Recipe) and recipe.num_eval_examples == 12
  assert recipe.eval(reader, reader.num_frames).shape == (12, 2, 28, 28, 3)
  fv = fastvqa.make("fast_vqa_b")
  view = fastvqa.default_view(fv, {})
  assert view == {"recipe": "fastvqa", "variant": "fast_vqa_b"}
  assert fastvqa.default_view(fv, {"variant": "faster_vqa"})["variant"] == "faster_vqa"
  recipe = pipeline.make_recipe(view)
  assert recipe.num_eval_examples == 4
  with pytest.raises(ValueError, match="no FAST-VQA sampling variant has input size"):
    fastvqa.default_view(fastvqa.make("tiny"), {})
  with pytest.raises(ValueError, match="unknown recipe 'tsm'"):
    pipeline.make_recipe({"recipe": "tsm"})


def test_frame_cache_decodes_each_frame_once(tmp_path):
  path = videos.make_yuv(tmp_path / "clip_64x48.yuv", num_frames=12)
  reader = frames.for_file(path)
  assert reader.num_frames == 12
  got = reader([5, 1, 5])
  assert [videos.frame_number_of(f) for f in got] == [5, 1, 5]
  calls = []

  def read(src, idx, **kw):
    calls.append(list(idx))
    return np.zeros((len(idx), 4, 4, 3), np.uint8)

  cache = frames.FrameCache("x.mp4", 10, read_fn=read)
  cache([3, 1]), cache([1, 3, 4])
  assert calls == [[1, 3], [4]]
  with pytest.raises(IndexError, match=r"outside \[0, 10\) for x.mp4"):
    cache([10])


def test_test_options_go_to_the_family_that_takes_them():
  iv2, fvqa = models.get("internvideo2"), models.get("fastvqa")
  view = iv2.default_view(iv2.make("tiny"), {})
  got = iv2.apply_test_options(view, {"clips": 2, "crops": 1, "resize_short": None})
  assert (got["test_clips"], got["test_crops"], got["resize_short"]) == (2, 1, None)
  assert view["test_clips"] == 4  # the input view is not changed
  with pytest.raises(ValueError, match=r"--test-sampling do not apply to InternVideo2"):
    iv2.apply_test_options(view, {"test_sampling": "center"})
  fv = {"recipe": "fastvqa", "variant": "fast_vqa_b", "overrides": {"fragments_h": 7}}
  got = fvqa.apply_test_options(fv, {"clips": 3, "test_sampling": "random", "fragment": {"a": 1}})
  assert got["overrides"] == {
    "fragments_h": 7,
    "a": 1,
    "test_sampling": "random",
    "num_clips_test": 3,
  }
  with pytest.raises(ValueError, match=r"--crops, --resize-short do not apply to FAST-VQA"):
    fvqa.apply_test_options(fv, {"crops": 2, "resize_short": 224})
