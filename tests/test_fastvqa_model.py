"""FAST-VQA Flax model: parameter counts, layout, geometry and float32 parity with PyTorch."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from converters import fastvqa as conv
from internvqa_jax import tree_paths
from internvqa_jax.models import fastvqa, swin3d

try:
  from tests.torch_ref import fastvqa_ref as ref
except ImportError:  # tests/ itself on sys.path
  from torch_ref import fastvqa_ref as ref

PARITY_TOL = 1e-5


def _torch_and_flax(variant, seed=0, **overrides):
  model = fastvqa.make(variant, **overrides)
  tm = ref.randomize_(ref.FastVQARef.from_model_kwargs(fastvqa.model_kwargs(model)).eval(), seed)
  sd = {k: v.numpy() for k, v in tm.state_dict().items()}
  return model, conv.torch_state_dict_to_params(sd, fastvqa.model_kwargs(model)), tm


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


@pytest.mark.parametrize(
  "variant,expected", [("fast_vqa_b", 28_127_901), ("fast_vqa_m", 27_597_255)]
)
def test_param_counts(variant, expected):
  assert fastvqa.count_params(fastvqa.make(variant)) == expected


def test_faster_vqa_settings_share_the_b_architecture():
  for v in ("faster_vqa", "faster_vqa_mt", "faster_vqa_ms"):
    assert fastvqa.make(v) == fastvqa.make("fast_vqa_b")


def test_param_count_with_full_input_shape():
  assert fastvqa.count_params(fastvqa.make("fast_vqa_b"), (1, 32, 224, 224, 3)) == 28_127_901


def test_param_tree_mirrors_torch_keys():
  flat = {
    k: v.shape
    for k, v in tree_paths.flatten(fastvqa.abstract_params(fastvqa.make("fast_vqa_b"))).items()
  }
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
  torch_paths = {
    conv.torch_key_to_path(k)[0] for k in conv.expected_torch_shapes("fast_vqa_b", with_index=False)
  }
  assert torch_paths == set(flat)


def test_model_kwargs_json_round_trip():
  model = fastvqa.make("faster_vqa_ms", dtype=jnp.bfloat16, remat=True)
  kw = json.loads(json.dumps(fastvqa.model_kwargs(model)))
  assert fastvqa.from_kwargs(**kw) == model
  assert kw["dtype"] == "bfloat16"
  with pytest.raises(TypeError, match="unknown model_kwargs"):
    fastvqa.from_kwargs(bogus=1)
  with pytest.raises(ValueError, match="unknown FAST-VQA variant"):
    fastvqa.make("fast_vqa_xl")


# ---------------------------------------------------------------------------
# Static geometry against the original definitions.
# ---------------------------------------------------------------------------


def test_relative_position_index_matches_reference():
  for window in [(8, 7, 7), (4, 4, 4), (2, 3, 3)]:
    np.testing.assert_array_equal(
      swin3d.relative_position_index(window), ref.relative_index(window).numpy()
    )


def test_adaptive_index_keeps_base_strides():
  base = (8, 7, 7)
  idx = swin3d.bias_index(base, (4, 5, 5), adaptive=True)
  coords = np.stack(np.meshgrid(*[np.arange(n) for n in (4, 5, 5)], indexing="ij")).reshape(3, -1)
  delta = coords[:, :, None] - coords[:, None, :]
  want = (delta[0] + 7) * 13 * 13 + (delta[1] + 6) * 13 + (delta[2] + 6)
  np.testing.assert_array_equal(idx, want)
  # Fixed mode reads the top-left block of the base index, as the original does.
  np.testing.assert_array_equal(
    swin3d.bias_index(base, (4, 5, 5), adaptive=False),
    swin3d.relative_position_index(base)[:100, :100],
  )
  with pytest.raises(ValueError, match="exceeds the base window"):
    swin3d.bias_index(base, (8, 8, 7), adaptive=True)


def test_nearest_index_matches_torch_interpolate():
  for fin in range(1, 10):
    for out in range(fin, 120):
      grid = torch.arange(fin, dtype=torch.float32)[None, None]
      want = F.interpolate(grid, size=out).long()[0, 0].numpy()
      np.testing.assert_array_equal(
        swin3d._nearest_source_index(out, fin), want, err_msg=f"{fin}->{out}"
      )


def test_clamp_window_uses_less_or_equal():
  # Stage 3 of FAST-VQA-B at 32x224x224: tokens (16, 7, 7).
  assert swin3d.clamp_window((16, 7, 7), (8, 7, 7), (4, 3, 3)) == ((8, 7, 7), (4, 0, 0))
  assert swin3d.adaptive_window((16, 224, 224), (8, 7, 7), (32, 224, 224)) == (4, 7, 7)
  assert swin3d.adaptive_window((32, 160, 160), (8, 7, 7), (32, 224, 224)) == (8, 5, 5)
  assert swin3d.adaptive_window((16, 128, 128), (4, 4, 4), (32, 224, 224)) == (2, 2, 2)


def test_fragment_gate_is_integer_l1_distance():
  # Stage 0 of FAST-VQA-B at 32x224x224, shifted block: wrapped pairs reach 12.
  # The d index is always 0, so the first 64 windows (d = 0) hold every pattern.
  gate = lambda fc: np.unique(np.abs(fc[:64, None].astype(np.int16) - fc[:64, :, None]).sum(-1))
  fc = swin3d.fragment_coords((16, 56, 56), (8, 7, 7), (4, 3, 3))
  assert (fc[..., 0] == 0).all()
  assert set(gate(fc)) == {0, 1, 2, 6, 7, 12}
  assert set(gate(swin3d.fragment_coords((16, 56, 56), (8, 7, 7), (0, 0, 0)))) == {0, 1, 2}


# ---------------------------------------------------------------------------
# Parity with the PyTorch reference (random weights, random bias tables).
# ---------------------------------------------------------------------------

TINY_SHAPE = (8, 48, 48)


@pytest.fixture(scope="module")
def tiny():
  """Tiny model, converted random torch weights, a 2-clip batch and its jitted eval output."""
  model, params, tm = _torch_and_flax("tiny")
  out, err = _parity(model, params, tm, TINY_SHAPE, batch=2)
  x = np.random.default_rng(0).standard_normal((2, 3) + TINY_SHAPE).astype(np.float32)
  return model, params, jnp.asarray(x.transpose(0, 2, 3, 4, 1)), out, err


def test_parity_tiny_batch(tiny):
  # Base input size: shifted windows everywhere, clamped windows in the last stages.
  assert max(tiny[4].values()) < PARITY_TOL, tiny[4]


@pytest.mark.parametrize(
  "variant,shape,adaptive",
  [
    ("tiny", (6, 40, 44), True),  # patch, window and merge padding; resized windows
    ("tiny", (8, 100, 60), False),  # fixed windows, padding, clamped [:N,:N] index
    ("fast_vqa_b", (8, 64, 64), False),  # real widths; clamped windows, padding
  ],
)
def test_parity_small(variant, shape, adaptive):
  model, params, tm = _torch_and_flax(variant, adaptive_window=adaptive)
  _, err = _parity(model, params, tm, shape)
  assert max(err.values()) < PARITY_TOL, err


@pytest.mark.slow
@pytest.mark.parametrize(
  "variant,shape,adaptive",
  [
    ("fast_vqa_b", (32, 224, 224), True),
    ("fast_vqa_b", (32, 224, 224), False),
    ("faster_vqa_mt", (16, 224, 224), True),
    ("faster_vqa_ms", (32, 160, 160), True),
    ("fast_vqa_m", (16, 128, 128), True),
    ("fast_vqa_m", (16, 128, 128), False),
    ("fast_vqa_b", (20, 200, 216), True),
    ("fast_vqa_b", (12, 96, 130), False),
  ],
)
def test_parity_full_size(variant, shape, adaptive):
  model, params, tm = _torch_and_flax(variant, adaptive_window=adaptive)
  out, err = _parity(model, params, tm, shape)
  assert out["map"].shape == (1, shape[0] // 2, -(-shape[1] // 32), -(-shape[2] // 32))
  assert max(err.values()) < PARITY_TOL, err


# ---------------------------------------------------------------------------
# Output contract, training mode, remat, bf16, input checks.
# ---------------------------------------------------------------------------


def test_outputs_contract(tiny):
  _, _, _, out, _ = tiny
  assert set(out) == {"score", "map", "feature"}
  assert out["map"].shape == (2, 4, 2, 2) and out["map"].dtype == np.float32
  assert out["score"].shape == (2,) and out["score"].dtype == np.float32
  assert out["feature"].shape == (2, 128) and out["feature"].dtype == np.float32
  np.testing.assert_allclose(out["score"], out["map"].mean((1, 2, 3)), rtol=1e-6)


def test_train_mode_remat_and_gradients(tiny):
  """One compile covers remat, dropout + drop-path rngs and gradients through the bias tables."""
  model, params, x, ev, _ = tiny
  model = model.clone(drop_path_rate=0.5, remat=True)

  @jax.jit
  def train_step(p, seed):
    rngs = {"dropout": jax.random.key(seed), "drop_path": jax.random.key(seed + 100)}
    loss = lambda q: model.apply({"params": q}, x, train=True, rngs=rngs)["score"].sum()
    return jax.value_and_grad(loss)(p)

  (l1, g1), (l1b, _), (l2, _) = (train_step(params, s) for s in (0, 0, 1))
  assert float(l1) == float(l1b)
  assert not np.isclose(l1, ev["score"].sum()) and not np.isclose(l1, l2)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(g1))
  for i in range(3):
    assert (
      np.abs(
        g1["fragments_backbone"][f"layers_{i}"]["blocks_1"]["attn"]["fragment_position_bias_table"]
      ).sum()
      > 0
    )
  with pytest.raises(Exception, match="dropout|drop_path"):
    jax.eval_shape(lambda p: model.apply({"params": p}, x, train=True), params)
  # Eval mode (the default) ignores both rates and needs no rng; remat changes no value.
  out = jax.jit(model.apply)({"params": params}, x)
  np.testing.assert_allclose(out["map"], ev["map"], atol=1e-6)


def test_bf16_compute(tiny):
  model, params, x, ev, _ = tiny
  out = jax.jit(model.clone(dtype="bfloat16").apply)({"params": params}, x)
  assert out["map"].dtype == jnp.float32 and out["feature"].dtype == jnp.float32
  np.testing.assert_allclose(out["map"], ev["map"], atol=0.05 + 0.05 * np.abs(ev["map"]).max())


def test_bad_inputs(tiny):
  model, params, _, _, _ = tiny
  check = lambda shape: jax.eval_shape(
    lambda p: model.apply({"params": p}, jnp.zeros(shape)), params
  )
  with pytest.raises(ValueError, match="expected a video"):
    check((8, 48, 48, 3))
  with pytest.raises(ValueError, match="exceeds the base window"):
    check((1, 8, 96, 48, 3))
  with pytest.raises(ValueError, match="too small for adaptive windows"):
    check((1, 2, 48, 48, 3))
