"""FAST-VQA Flax model: parameter counts, layout, geometry and float32 parity with PyTorch."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from converters import common
from converters import fastvqa as conv
from internvqa_jax.models import fastvqa, swin3d

try:
  from tests.torch_ref import fastvqa_ref as ref
except ImportError:  # tests/ itself on sys.path
  from torch_ref import fastvqa_ref as ref

PARITY_TOL = 1e-5


def _torch_and_flax(variant, seed=0, **overrides):
  model = fastvqa.make(variant, **overrides)
  tm = ref.randomize_(ref.FastVQARef.from_model_kwargs(model.model_kwargs()).eval(), seed)
  sd = {k: v.numpy() for k, v in tm.state_dict().items()}
  return model, conv.torch_state_dict_to_params(sd, model.model_kwargs()), tm


def _parity(model, params, tm, shape, batch=1, seed=0):
  x = np.random.default_rng(seed).standard_normal((batch, 3) + shape).astype(np.float32)
  with torch.no_grad():
    qmap, feats = tm(torch.from_numpy(x))
  out = jax.jit(model.apply)({"params": params}, jnp.asarray(x.transpose(0, 2, 3, 4, 1)))
  out = jax.tree.map(np.asarray, out)
  qmap, feats = qmap.numpy()[:, 0], feats.numpy()
  assert out["map"].shape == qmap.shape
  assert out["feature"].shape == (batch, feats.shape[1])
  err = {
      "map": float(np.abs(out["map"] - qmap).max()),
      "score": float(np.abs(out["score"] - qmap.mean((1, 2, 3))).max()),
      "feature": float(np.abs(out["feature"] - feats.mean((2, 3, 4))).max()),
  }
  # Guard against a degenerate comparison (e.g. a constant map).
  assert qmap.std() > 1e-3, qmap.std()
  return out, err


# ---------------------------------------------------------------------------
# Parameters.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("variant,expected", [
    ("fast_vqa_b", 28_127_901), ("faster_vqa", 28_127_901), ("faster_vqa_mt", 28_127_901),
    ("faster_vqa_ms", 28_127_901), ("fast_vqa_m", 27_597_255)])
def test_param_counts(variant, expected):
  assert fastvqa.count_params(fastvqa.make(variant)) == expected


def test_param_count_with_full_input_shape():
  assert fastvqa.count_params(fastvqa.make("fast_vqa_b"), (1, 32, 224, 224, 3)) == 28_127_901


def test_param_tree_mirrors_torch_keys():
  flat = {k: v.shape for k, v in
          common.flatten_params(fastvqa.abstract_params(fastvqa.make("fast_vqa_b"))).items()}
  assert {k.split("/")[0] for k in flat} == {"fragments_backbone", "vqa_head"}
  assert not any("relative_position_index" in k for k in flat)
  bb = "fragments_backbone/"
  assert flat[bb + "patch_embed/proj/kernel"] == (2, 4, 4, 3, 96)
  assert flat[bb + "layers_0/blocks_1/attn/relative_position_bias_table"] == (2535, 3)
  assert flat[bb + "layers_2/blocks_5/attn/fragment_position_bias_table"] == (2535, 12)
  assert bb + "layers_3/blocks_0/attn/fragment_position_bias_table" not in flat
  assert flat[bb + "layers_2/downsample/reduction/kernel"] == (1536, 768)
  assert flat[bb + "layers_1/blocks_0/norm1/scale"] == (192,)
  assert flat[bb + "norm/scale"] == (768,)
  assert flat["vqa_head/fc_hid/kernel"] == (768, 64)
  assert flat["vqa_head/fc_last/kernel"] == (64, 1)
  # Every Flax path maps to exactly one original key.
  torch_paths = {conv.torch_key_to_path(k)[0]
                 for k in conv.expected_torch_shapes("fast_vqa_b", with_index=False)}
  assert torch_paths == set(flat)


def test_model_kwargs_json_round_trip():
  model = fastvqa.make("faster_vqa_ms", dtype=jnp.bfloat16, remat=True)
  kw = json.loads(json.dumps(model.model_kwargs()))
  assert fastvqa.FastVQA.from_kwargs(**kw) == model
  assert kw["dtype"] == "bfloat16"
  with pytest.raises(TypeError, match="unknown model_kwargs"):
    fastvqa.FastVQA.from_kwargs(bogus=1)
  with pytest.raises(ValueError, match="unknown FAST-VQA variant"):
    fastvqa.make("fast_vqa_xl")


# ---------------------------------------------------------------------------
# Static geometry against the original definitions.
# ---------------------------------------------------------------------------

def test_relative_position_index_matches_reference():
  for window in [(8, 7, 7), (4, 4, 4), (2, 3, 3)]:
    np.testing.assert_array_equal(swin3d.relative_position_index(window),
                                  ref.relative_index(window).numpy())


def test_adaptive_index_keeps_base_strides():
  base = (8, 7, 7)
  idx = swin3d.bias_index(base, (4, 5, 5), adaptive=True)
  coords = np.stack(np.meshgrid(*[np.arange(n) for n in (4, 5, 5)], indexing="ij")).reshape(3, -1)
  delta = coords[:, :, None] - coords[:, None, :]
  want = ((delta[0] + 7) * 13 * 13 + (delta[1] + 6) * 13 + (delta[2] + 6))
  np.testing.assert_array_equal(idx, want)
  # Fixed mode reads the top-left block of the base index, as the original does.
  np.testing.assert_array_equal(swin3d.bias_index(base, (4, 5, 5), adaptive=False),
                                swin3d.relative_position_index(base)[:100, :100])
  with pytest.raises(ValueError, match="exceeds the base window"):
    swin3d.bias_index(base, (8, 8, 7), adaptive=True)


def test_nearest_index_matches_torch_interpolate():
  for fin in range(1, 10):
    for out in range(fin, 120):
      grid = torch.arange(fin, dtype=torch.float32)[None, None]
      want = F.interpolate(grid, size=out).long()[0, 0].numpy()
      np.testing.assert_array_equal(swin3d._nearest_source_index(out, fin), want, err_msg=f"{fin}->{out}")


def test_clamp_window_uses_less_or_equal():
  # Stage 3 of FAST-VQA-B at 32x224x224: tokens (16, 7, 7).
  assert swin3d.clamp_window((16, 7, 7), (8, 7, 7), (4, 3, 3)) == ((8, 7, 7), (4, 0, 0))
  assert swin3d.adaptive_window((16, 224, 224), (8, 7, 7), (32, 224, 224)) == (4, 7, 7)
  assert swin3d.adaptive_window((32, 160, 160), (8, 7, 7), (32, 224, 224)) == (8, 5, 5)
  assert swin3d.adaptive_window((16, 128, 128), (4, 4, 4), (32, 224, 224)) == (2, 2, 2)


def test_fragment_gate_is_integer_l1_distance():
  # Stage 0 of FAST-VQA-B at 32x224x224, shifted block: wrapped pairs reach 12.
  fc = swin3d.fragment_coords((16, 56, 56), (8, 7, 7), (4, 3, 3))
  gate = np.abs(fc[:, None] - fc[:, :, None]).sum(-1)
  assert set(np.unique(gate)) == {0, 1, 2, 6, 7, 12}
  fc = swin3d.fragment_coords((16, 56, 56), (8, 7, 7), (0, 0, 0))
  assert set(np.unique(np.abs(fc[:, None] - fc[:, :, None]).sum(-1))) == {0, 1, 2}


# ---------------------------------------------------------------------------
# Parity with the PyTorch reference (random weights, random bias tables).
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("variant,shape,adaptive,batch", [
    ("tiny", (8, 48, 48), True, 2),      # base size: shifted windows, clamped last stages
    ("tiny", (6, 40, 44), True, 1),      # patch, window and merge padding; resized windows
    ("tiny", (8, 100, 60), False, 1),    # fixed windows, padding, clamped [:N,:N] index
    ("fast_vqa_b", (8, 64, 64), False, 1),  # real widths; clamped windows, padding
])
def test_parity_small(variant, shape, adaptive, batch):
  model, params, tm = _torch_and_flax(variant, adaptive_window=adaptive)
  _, err = _parity(model, params, tm, shape, batch=batch)
  assert max(err.values()) < PARITY_TOL, err


@pytest.mark.slow
@pytest.mark.parametrize("variant,shape,adaptive", [
    ("fast_vqa_b", (32, 224, 224), True),
    ("fast_vqa_b", (32, 224, 224), False),
    ("faster_vqa_mt", (16, 224, 224), True),
    ("faster_vqa_ms", (32, 160, 160), True),
    ("fast_vqa_m", (16, 128, 128), True),
    ("fast_vqa_m", (16, 128, 128), False),
    ("fast_vqa_b", (20, 200, 216), True),
    ("fast_vqa_b", (12, 96, 130), False),
])
def test_parity_full_size(variant, shape, adaptive):
  model, params, tm = _torch_and_flax(variant, adaptive_window=adaptive)
  out, err = _parity(model, params, tm, shape)
  assert out["map"].shape == (1, shape[0] // 2, -(-shape[1] // 32), -(-shape[2] // 32))
  assert max(err.values()) < PARITY_TOL, err


# ---------------------------------------------------------------------------
# Output contract, training mode, remat, bf16, input checks.
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
  model = fastvqa.make("tiny")
  x = jax.random.normal(jax.random.key(1), (2, 8, 48, 48, 3))
  return model, fastvqa.init_params(model, jax.random.key(0)), x


def test_outputs_contract(tiny):
  model, params, x = tiny
  out = model.apply({"params": params}, x)
  assert set(out) == {"score", "map", "feature"}
  assert out["map"].shape == (2, 4, 2, 2) and out["map"].dtype == jnp.float32
  assert out["score"].shape == (2,) and out["score"].dtype == jnp.float32
  assert out["feature"].shape == (2, 128) and out["feature"].dtype == jnp.float32
  np.testing.assert_allclose(out["score"], out["map"].mean((1, 2, 3)), rtol=1e-6)
  clips = jnp.array([0.25, 0.5, 1.5, 2.0])
  assert float(fastvqa.video_score(clips)) == pytest.approx(1.0625)


def test_train_mode_uses_dropout_and_drop_path(tiny):
  model, params, x = tiny
  model = model.clone(drop_path_rate=0.5)
  ev1 = model.apply({"params": params}, x)["score"]
  ev2 = model.apply({"params": params}, x, train=False)["score"]
  np.testing.assert_array_equal(ev1, ev2)
  rngs = lambda s: {"dropout": jax.random.key(s), "drop_path": jax.random.key(s + 100)}
  tr1 = model.apply({"params": params}, x, train=True, rngs=rngs(0))["score"]
  tr1b = model.apply({"params": params}, x, train=True, rngs=rngs(0))["score"]
  tr2 = model.apply({"params": params}, x, train=True, rngs=rngs(1))["score"]
  np.testing.assert_array_equal(tr1, tr1b)
  assert not np.allclose(tr1, ev1) and not np.allclose(tr1, tr2)
  with pytest.raises(Exception, match="dropout|drop_path"):
    model.apply({"params": params}, x, train=True)


def test_remat_and_bf16(tiny):
  model, params, x = tiny
  ref_out = model.apply({"params": params}, x)["map"]
  remat = model.clone(remat=True)
  np.testing.assert_allclose(remat.apply({"params": params}, x)["map"], ref_out, atol=1e-6)
  loss = lambda p: remat.apply({"params": p}, x)["score"].sum()
  grads = jax.grad(loss)(params)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  assert np.abs(grads["fragments_backbone"]["layers_0"]["blocks_1"]["attn"]
                ["fragment_position_bias_table"]).sum() > 0
  bf16 = model.clone(dtype="bfloat16")
  out = bf16.apply({"params": params}, x)
  assert out["map"].dtype == jnp.float32
  np.testing.assert_allclose(out["map"], ref_out, atol=0.05 + 0.05 * np.abs(ref_out).max())


def test_bad_inputs(tiny):
  model, params, _ = tiny
  with pytest.raises(ValueError, match="expected a video"):
    model.apply({"params": params}, jnp.zeros((8, 48, 48, 3)))
  with pytest.raises(ValueError, match="exceeds the base window"):
    model.apply({"params": params}, jnp.zeros((1, 8, 96, 48, 3)))
  with pytest.raises(ValueError, match="too small for adaptive windows"):
    model.apply({"params": params}, jnp.zeros((1, 2, 48, 48, 3)))
