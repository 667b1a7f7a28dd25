"""Initialising a configured model from a converted checkpoint: dont_load, pos_embed resampling, errors."""

from __future__ import annotations

import jax
import ml_collections as mlc
import numpy as np
import pytest

from internvqa_jax import model_setup, models, sharding, tree_paths
from internvqa_jax.models import checkpoint, posembed


def _cfg(path, frames=2, dont_load=(), **kw):
  return mlc.ConfigDict(
    dict(
      family="internvideo2",
      variant="tiny",
      init=path,
      dont_load=list(dont_load),
      trainable=".*",
      view="video",
      kwargs=dict(num_frames=frames, **kw),
    )
  )


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  module = models.make("internvideo2", "tiny", num_frames=2)
  params = jax.device_get(model_setup.init_params(module, jax.random.key(1)))
  path = str(tmp_path_factory.mktemp("ckpt") / "tiny")
  checkpoint.save_params(
    path, params, {"family": "internvideo2", "model_kwargs": models.model_kwargs(module)}
  )
  return path, tree_paths.flatten(params)


def _init(cfg):
  module = model_setup.build_module(cfg, "float32")
  mesh = sharding.make_mesh(data=1, fsdp=1, devices=jax.devices()[:1])
  params = model_setup.init_sharded(
    module, jax.random.key(7), mesh, None, model_cfg=cfg, log=lambda *a: None
  )
  return tree_paths.flatten(jax.device_get(params))


def test_loads_every_tensor_except_dont_load(saved):
  path, ref = saved
  got = _init(_cfg(path, dont_load=["head/.*"]))
  for k, v in ref.items():
    if k == "head/kernel":
      assert not np.array_equal(got[k], v), k  # Fresh (seed 7), not the checkpoint's (seed 1).
    elif k == "head/bias":
      np.testing.assert_array_equal(got[k], 0.0)  # Fresh: zero-initialised.
    else:
      np.testing.assert_array_equal(got[k], v, err_msg=k)


def test_pos_embed_is_resampled_when_frames_differ(saved):
  path, ref = saved
  got = _init(_cfg(path, frames=4))
  want = posembed.resample_pos_embed(
    ref["pos_embed"], src_frames=2, src_grid=2, dst_frames=4, dst_grid=2
  )
  assert got["pos_embed"].shape == (1, 1 + 4 * 4, 64)
  np.testing.assert_allclose(got["pos_embed"], want, rtol=0, atol=1e-7)


def test_checkpoint_that_does_not_fit_lists_every_offending_path(saved):
  path, _ = saved
  with pytest.raises(ValueError) as e:
    _init(_cfg(path, embed_dim=32, mlp_hidden=128))
  msg = str(e.value)
  assert path in msg
  assert "shape: blocks_0/attn/qkv/kernel expected (32, 96), checkpoint (64, 192)" in msg
  assert "shape: cls_token expected (1, 1, 32), checkpoint (1, 1, 64)" in msg
  with pytest.raises(ValueError, match=r"missing: blocks_2/norm1/scale"):
    _init(_cfg(path, depth=3))
  with pytest.raises(ValueError, match="holds a 'internvideo2' model, config asks for 'fastvqa'"):
    cfg = _cfg(path)
    cfg.family, cfg.variant, cfg.kwargs = "fastvqa", "tiny", {}
    _init(cfg)


def test_missing_checkpoint_directory_names_the_path(tmp_path):
  with pytest.raises(FileNotFoundError, match="meta.json is missing"):
    _init(_cfg(str(tmp_path / "nope")))
