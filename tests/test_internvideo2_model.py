"""InternVideo2 Flax model: structure, init, numerics vs the PyTorch reference, training knobs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch_ref.internvideo2_ref import InternVideo2Ref, randomize_, state_dict_numpy

from converters import internvideo2 as conv
from internvqa_jax import tree_paths
from internvqa_jax.models import internvideo2 as iv2
from internvqa_jax.models import posembed

ARCH_KEYS = ("embed_dim", "depth", "num_heads", "mlp_hidden", "num_frames", "img_size")


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("return_tokens_after",))
def _forward(model, params, video, return_tokens_after=None):
  return model.apply({"params": params}, video, return_tokens_after=return_tokens_after)


def _video(model, batch=2, seed=0):
  return np.random.default_rng(seed).standard_normal(model.input_shape(batch)).astype(np.float32)


def _random_pair(model, gelu="tanh", seed=0):
  """(torch reference, Flax params) holding the same random weights."""
  ref = InternVideo2Ref(
    **{k: getattr(model, k) for k in ARCH_KEYS}, num_outputs=model.num_outputs, gelu=gelu
  ).eval()
  randomize_(ref, seed)
  params = conv.torch_state_dict_to_params(state_dict_numpy(ref), iv2.model_kwargs(model))
  return ref, params


def _torch_forward(ref, video, **kw):
  with torch.no_grad():
    out = ref(torch.from_numpy(video).permute(0, 4, 1, 2, 3), **kw)
  return {k: v.numpy() for k, v in out.items()}


def _assert_parity(ours, theirs, what):
  tol = 1e-5 * max(1.0, float(np.abs(theirs).max()))
  err = float(np.abs(np.asarray(ours) - theirs).max())
  print(f"{what}: max abs diff {err:.3g} (tolerance {tol:.3g})")
  assert err <= tol, f"{what}: max abs diff {err} > {tol}"


# ----------------------------------------------------------------------------
# Structure.


@pytest.mark.parametrize(
  "variant,expected",
  [("small", 23_046_145), ("base", 89_441_281), ("large", 308_931_585), ("1b", 1_020_710_913)],
)
def test_param_counts_match_spec(variant, expected):
  assert iv2.count_params(iv2.make(variant, num_outputs=1)) == expected


def test_param_paths_mirror_torch_keys():
  model = iv2.make("tiny")
  paths = set(tree_paths.flatten(iv2.abstract_params(model)))
  ref = InternVideo2Ref(**{k: getattr(model, k) for k in ARCH_KEYS})
  assert {conv.path_to_torch_key(p) for p in paths} == set(ref.state_dict())
  assert "blocks_1/attn/q_norm/scale" in paths
  assert "clip_projector/cross_attn/v/bias" in paths


def test_from_kwargs_and_make_errors():
  m = iv2.from_kwargs(**iv2.model_kwargs(iv2.make("tiny")))
  assert m == iv2.make("tiny")
  with pytest.raises(TypeError, match="unknown model_kwargs.*'bogus'"):
    iv2.from_kwargs(**iv2.VARIANTS["tiny"], bogus=1)
  with pytest.raises(ValueError, match="unknown InternVideo2 variant 'huge'"):
    iv2.make("huge")


def test_wrong_input_shape_is_a_clear_error():
  model = iv2.make("tiny")
  params = iv2.abstract_params(model)  # The checks run at trace time: no compute needed.
  apply = lambda video, **kw: jax.eval_shape(
    lambda p, v: model.apply({"params": p}, v, **kw), params, video
  )
  bad = jax.ShapeDtypeStruct((1, 3, 28, 28, 3), jnp.float32)
  with pytest.raises(
    ValueError,
    match=r"expects video of shape \(B, 2, 28, 28, 3\).*"
    r"found \(1, 3, 28, 28, 3\)",
  ):
    apply(bad)
  with pytest.raises(ValueError, match=r"return_tokens_after=2 is not a block index in \[0, 1\]"):
    apply(_video(model), return_tokens_after=2)
  assert apply(_video(model))["feature"].shape == (2, 768)


# ----------------------------------------------------------------------------
# Initialisation (spec section 2.3).


def test_init_follows_the_spec():
  model = iv2.make("tiny", depth=3, embed_dim=128, mlp_hidden=512, num_heads=4)
  p = jax.jit(model.init)(jax.random.key(1), _video(model, 1))["params"]
  assert np.all(p["blocks_0"]["ls1"]["gamma"] == np.float32(1e-5))
  assert np.all(p["blocks_2"]["ls2"]["gamma"] == np.float32(1e-5))
  assert np.all(p["blocks_1"]["attn"]["q_norm"]["scale"] == 1.0)
  assert np.all(p["clip_projector"]["norm1_k"]["scale"] == 1.0)
  assert np.all(p["clip_projector"]["cross_attn"]["q"]["bias"] == 0.0)
  assert np.all(p["blocks_0"]["mlp"]["fc1"]["bias"] == 0.0)
  assert np.all(p["fc_norm"]["bias"] == 0.0)
  # trunc_normal(0.02), and fix_init_weight's 1/sqrt(2 * layer_id) on proj and fc2.
  np.testing.assert_allclose(np.std(p["blocks_0"]["mlp"]["fc1"]["kernel"]), 0.02, rtol=0.03)
  for i in range(3):
    want = 0.02 / np.sqrt(2.0 * (i + 1))
    np.testing.assert_allclose(np.std(p[f"blocks_{i}"]["mlp"]["fc2"]["kernel"]), want, rtol=0.03)
    np.testing.assert_allclose(np.std(p[f"blocks_{i}"]["attn"]["proj"]["kernel"]), want, rtol=0.06)
  # Head scaled by init_scale; torch-default (kaiming a=sqrt(5)) conv: U(+-1/sqrt(588)).
  np.testing.assert_allclose(np.std(p["head"]["kernel"]), 0.02 * 1e-3, rtol=0.2)
  bound = 1 / np.sqrt(588)
  k = p["patch_embed"]["proj"]["kernel"]
  assert k.shape == (1, 14, 14, 3, 128) and np.abs(k).max() <= bound
  np.testing.assert_allclose(np.std(k), bound / np.sqrt(3), rtol=0.03)
  np.testing.assert_allclose(np.std(p["cls_token"]), 0.02, rtol=0.3)


def test_pos_embed_init_is_3d_sincos_with_w_first():
  model = iv2.make("tiny")  # C = 64, 2 frames, 2x2 grid.
  params = jax.jit(model.init)(jax.random.key(0), _video(model, 1))["params"]
  pe = np.asarray(params["pos_embed"])[0]
  np.testing.assert_array_equal(pe, posembed.sincos_3d(64, 2, 2))
  c, g = 64, 2
  row = lambda t, h, w: pe[1 + t * g * g + h * g + w]
  assert np.all(pe[0] == 0)  # cls row.
  np.testing.assert_allclose(row(0, 0, 0)[: c // 8], 0.0)  # sin(0) for every frequency.
  np.testing.assert_allclose(row(0, 0, 0)[c // 8 : c // 4], 1.0)
  np.testing.assert_allclose(row(1, 0, 0)[0], np.sin(1.0), rtol=1e-6)  # temporal, freq 0.
  # Spatial part: the first 3C/8 channels encode the column w, the next 3C/8 the row h.
  np.testing.assert_allclose(row(0, 0, 1)[c // 4], np.sin(1.0), rtol=1e-6)
  np.testing.assert_allclose(row(0, 1, 0)[c // 4], 0.0)
  np.testing.assert_allclose(row(0, 1, 0)[c // 4 + 3 * c // 8], np.sin(1.0), rtol=1e-6)


# ----------------------------------------------------------------------------
# Numerics vs the PyTorch reference (converter-free checkpoints are in the
# converter tests).


@pytest.mark.parametrize("gelu,img,impl", [("tanh", 28, "xla"), ("erf", 112, "chunked")])
def test_small_width_matches_torch_and_tokens(gelu, img, impl):
  # 'xla' is jax.nn.dot_product_attention's generic path; 'chunked' the CPU default.
  model = iv2.make(
    "small", num_frames=2, img_size=img, gelu_approximate=(gelu == "tanh"), attention_impl=impl
  )
  ref, params = _random_pair(model, gelu, seed=3)
  video = _video(model)
  ours = _forward(model, params, video, return_tokens_after=5)
  theirs = _torch_forward(ref, video, return_tokens_after=5)
  for k in ("score", "feature", "tokens"):
    assert ours[k].shape == theirs[k].shape
    _assert_parity(ours[k], theirs[k], f"small-width 2x{img} {gelu} {impl} {k}")
  assert ours["score"].dtype == jnp.float32 and ours["feature"].shape == (2, 768)


def test_chunked_attention_equals_dot_product_attention():
  rng = np.random.default_rng(8)
  q, k, v = (jnp.asarray(rng.standard_normal((2, 300, 3, 16)), jnp.float32) for _ in range(3))
  want = jax.nn.dot_product_attention(q, k, v, scale=0.3)
  for chunk in (64, 100, 300, 512):  # Padding, exact fit, single chunk.
    got = iv2.chunked_attention(q, k, v, 0.3, chunk=chunk)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"chunk {chunk}")
  # Pooling shape: one query over 300 keys.
  np.testing.assert_allclose(
    iv2.chunked_attention(q[:, :1], k, v, 0.3),
    jax.nn.dot_product_attention(q[:, :1], k, v, scale=0.3),
    rtol=1e-5,
    atol=1e-6,
  )
  # Gradients through the lax.map equal those of the generic path.
  loss = lambda f: lambda q, k, v: jnp.sum(jnp.sin(f(q, k, v)))
  got = jax.grad(
    loss(lambda q, k, v: iv2.chunked_attention(q, k, v, 0.3, chunk=128)), argnums=(0, 1, 2)
  )(q, k, v)
  want_g = jax.grad(
    loss(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, scale=0.3)), argnums=(0, 1, 2)
  )(q, k, v)
  for name, a, b in zip("qkv", got, want_g):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=f"d{name}")
  # bf16 inputs: bf16 output, float32 softmax inside.
  qb, kb, vb = (x.astype(jnp.bfloat16) for x in (q, k, v))
  got_b = iv2.chunked_attention(qb, kb, vb, 0.3, chunk=128)
  assert got_b.dtype == jnp.bfloat16
  np.testing.assert_allclose(got_b.astype(jnp.float32), want, atol=3e-2)
  # The default (None) on CPU: chunked from CHUNKED_MIN_SCORES scores per head, else generic.
  assert jax.default_backend() == "cpu"
  for t, chunked in ((300, True), (256, True), (255, False), (200, False)):
    qt, kt, vt = q[:, :t], k[:, :t], v[:, :t]
    expect = (
      iv2.chunked_attention(qt, kt, vt, 0.3)
      if chunked
      else jax.nn.dot_product_attention(qt, kt, vt, scale=0.3)
    )
    np.testing.assert_array_equal(
      iv2.attention(qt, kt, vt, 0.3, None), expect, err_msg=f"{t} tokens"
    )
  np.testing.assert_array_equal(iv2.attention(q, k, v, 0.3, "xla"), want)
  with pytest.raises(ValueError, match="attention_impl must be one of"):
    iv2.attention(q, k, v, 0.3, "flash")


def test_multi_output_head_shape():
  model = iv2.make("tiny", num_outputs=5)
  ref, params = _random_pair(model)
  video = _video(model)
  ours = _forward(model, params, video)
  assert ours["score"].shape == (2, 5)
  _assert_parity(ours["score"], _torch_forward(ref, video)["score"], "5-output score")


def test_bfloat16_forward_close_to_float32():
  """Relative error := max|bf16 - f32| / max|f32|, per output."""
  model = iv2.make("small", num_frames=2, img_size=56)
  _, params = _random_pair(model, seed=4)
  video = _video(model)
  f32 = _forward(model, params, video)
  bf16 = _forward(model.clone(dtype="bfloat16"), params, video)
  for k in ("score", "feature"):
    assert bf16[k].dtype == jnp.float32
    rel = float(np.abs(bf16[k] - f32[k]).max() / np.abs(f32[k]).max())
    print(f"bf16 vs f32 {k}: relative {rel:.3g}")
    assert rel <= 2e-2


# ----------------------------------------------------------------------------
# Training knobs.


def _loss_grads(model, params, video, train=False):
  def loss(p):
    rngs = {"drop_path": jax.random.key(9)} if train else None
    return jnp.sum(model.apply({"params": p}, video, train=train, rngs=rngs)["score"] ** 2)

  return jax.jit(jax.grad(loss))(params)


def test_frozen_blocks_stop_gradients_at_the_boundary():
  model = iv2.make("tiny", depth=3)
  _, params = _random_pair(model, seed=5)
  video = _video(model)
  frozen = model.clone(frozen_blocks=2)
  np.testing.assert_array_equal(
    _forward(model, params, video)["score"], _forward(frozen, params, video)["score"]
  )
  g = _loss_grads(frozen, params, video)
  norm = lambda t: float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(t)))
  for name in ("patch_embed", "cls_token", "pos_embed", "blocks_0", "blocks_1"):
    assert norm(g[name]) == 0.0, name
  for name in ("blocks_2", "clip_projector", "fc_norm", "head"):
    assert norm(g[name]) > 0.0, name
  g_all = _loss_grads(model, params, video)
  assert norm(g_all["patch_embed"]) > 0.0 and norm(g_all["blocks_0"]) > 0.0


@pytest.mark.parametrize("train", [False, True])
def test_remat_is_numerically_transparent(train):
  """Same gradients with and without remat, drop-path masks included."""
  model = iv2.make("tiny", drop_path_rate=0.5 if train else 0.0)
  _, params = _random_pair(model, seed=6)
  video = _video(model)
  g0 = _loss_grads(model, params, video, train)
  g1 = _loss_grads(model.clone(remat=True), params, video, train)
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_drop_path_and_dropout_only_in_training():
  base = iv2.make("tiny", depth=3)
  _, params = _random_pair(base, seed=7)
  video = np.repeat(_video(base, 1), 8, axis=0)  # 8 identical samples.
  model = base.clone(drop_path_rate=0.5, fc_drop_rate=0.5)
  ref = _forward(base, params, video)["score"]
  np.testing.assert_array_equal(_forward(model, params, video)["score"], ref)
  rngs = lambda s: {"dropout": jax.random.key(s), "drop_path": jax.random.key(s + 100)}
  train_fn = jax.jit(lambda p, v, r: model.apply({"params": p}, v, train=True, rngs=r))
  train = lambda s: train_fn(params, video, rngs(s))
  out1, out2 = train(1), train(2)
  # Per-sample masks: identical inputs give different outputs within the batch.
  assert len(np.unique(np.asarray(out1["score"]))) > 1
  assert not np.allclose(out1["score"], out2["score"])
  np.testing.assert_array_equal(out1["score"], train(1)["score"])
  # The feature is taken before the head dropout: only drop path changes it.
  only_fc = base.clone(fc_drop_rate=0.5)
  f = jax.jit(lambda p, v, r: only_fc.apply({"params": p}, v, train=True, rngs=r))(
    params, video, rngs(3)
  )
  np.testing.assert_allclose(
    f["feature"], _forward(base, params, video)["feature"], rtol=1e-5, atol=1e-5
  )
  assert not np.allclose(f["score"], ref)
  with pytest.raises(Exception, match="drop_path"):
    model.apply({"params": params}, video, train=True, rngs={"dropout": jax.random.key(0)})
