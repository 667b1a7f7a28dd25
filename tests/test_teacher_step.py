"""How the teacher's train step runs: blocks under scan, bfloat16 frozen storage, TPU attention.

Scanning the blocks over stacked parameters, storing the frozen trunk in the
compute dtype and the padded Pallas attention change how the step is compiled,
not what it computes: each is checked here against the plain form on tiny
models (the TPU kernel itself only where libtpu is installed, by compiling for
a v5e topology).
"""

from __future__ import annotations

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from internvqa_jax import model_setup, optim, sharding, steps, tree_paths
from internvqa_jax.models import internvideo2 as iv2

TEACHER = dict(embed_dim=64, depth=4, num_heads=2, mlp_hidden=128, num_frames=2, img_size=28)
STUDENT = dict(embed_dim=32, depth=2, num_heads=2, mlp_hidden=64, num_frames=2, img_size=28)


def _teacher_trainable(preset: str, depth: int) -> list[str]:
  paper = [f"blocks_{depth - 1}/.*", "clip_projector/.*", "fc_norm/.*", "head/.*"]
  return paper if preset == "paper" else paper + ["patch_embed/.*", "cls_token", "pos_embed"]


def _distill_parts(preset: str, scan: bool, dtype: str = "float32"):
  """Teacher (preset split, drop path, remat) and student parts plus their parameters."""
  teacher = iv2.InternVideo2(
    **TEACHER,
    drop_path_rate=0.3,
    remat=True,
    scan_blocks=scan,
    frozen_blocks=model_setup.preset_frozen_layers(preset, TEACHER["depth"]),
    dtype=dtype,
  )
  student = iv2.InternVideo2(**STUDENT, drop_path_rate=0.1, scan_blocks=scan, dtype=dtype)
  parts, trainable, frozen = {}, {}, {}
  for i, (name, module) in enumerate((("teacher", teacher), ("student", student))):
    params = model_setup.init_params(module, jax.random.key(i))
    regexes = _teacher_trainable(preset, module.depth) if name == "teacher" else [".*"]
    trainable[name], frozen[name] = tree_paths.split_tree(
      params, model_setup.regex_mask(params, regexes)
    )
    tx, _ = optim.make_optimizer({"lr": 1e-3, "schedule": "constant"}, trainable[name])
    parts[name] = steps.Part(name=name, module=module, batch_key="video", tx=tx)
  return parts, trainable, frozen


def _two_steps(parts, trainable, frozen):
  cfg = steps.LossConfig(mode="distill")
  step = jax.jit(steps.make_train_step(parts, cfg))
  state = {"step": jnp.zeros((), jnp.int32)}
  for name, part in parts.items():
    state[name] = {"params": trainable[name], "opt": part.tx.init(trainable[name])}
  frozen = steps.frozen_storage(parts, frozen)
  rng = np.random.default_rng(0)
  metrics = []
  for _ in range(2):
    batch = {
      "video": jnp.asarray(rng.standard_normal((3, 2, 28, 28, 3)), jnp.float32),
      "label": jnp.asarray(rng.uniform(0.2, 0.9, 3), jnp.float32),
    }
    state, m = step(state, frozen, batch, jax.random.key(5))
    metrics.append(jax.device_get(m))
  return state, metrics


@pytest.mark.parametrize("preset", ["paper", "authors_code"])
def test_scanned_blocks_train_like_unrolled(preset):
  """Two optimizer steps (drop path, remat, frozen trunk): same losses and gradient norms."""
  runs = {}
  for scan in (True, False):
    parts, trainable, frozen = _distill_parts(preset, scan)
    runs[scan] = _two_steps(parts, trainable, frozen)
  (_, m_s), (_, m_u) = runs[True], runs[False]
  for step_s, step_u in zip(m_s, m_u):
    assert set(step_s) == set(step_u)
    for k in step_s:
      np.testing.assert_allclose(step_s[k], step_u[k], rtol=1e-5, err_msg=k)
  # The second step ran on updated parameters (Adam's normalised updates turn
  # float rounding in near-zero gradients into lr-sized parameter differences,
  # so the parameters themselves are compared through these losses).
  assert abs(m_s[0]["loss"] - m_s[1]["loss"]) > 1e-3


def test_block_runs_split_at_trunk_tokens_and_dtype():
  model = iv2.InternVideo2(**TEACHER, frozen_blocks=3)
  params = model_setup.init_params(model, jax.random.key(0))
  assert model._block_runs(params, None) == [(0, 3), (3, 4)]
  assert model._block_runs(params, 0) == [(0, 1), (1, 3), (3, 4)]
  mixed = dict(params)
  mixed["blocks_1"] = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params["blocks_1"])
  assert model.clone(frozen_blocks=0)._block_runs(mixed, None) == [(0, 1), (1, 2), (2, 4)]


def test_scanned_tokens_and_bf16_trunk_match_unrolled():
  """return_tokens_after and a bfloat16-stored trunk next to float32 blocks, eval mode."""
  model = iv2.InternVideo2(**TEACHER, dtype="bfloat16", frozen_blocks=3)
  params = model_setup.init_params(model, jax.random.key(0))
  parts = {"t": steps.Part("t", model, "video", None)}
  trunk = {k: v for k, v in params.items() if k.startswith("blocks_") and k != "blocks_3"}
  stored = steps.frozen_storage(parts, {"t": trunk})["t"]
  assert {x.dtype for x in jax.tree.leaves(stored)} == {jnp.dtype(jnp.bfloat16)}
  mixed = {**params, **stored}
  video = jax.random.normal(jax.random.key(1), model.input_shape(2))
  out = {
    scan: model.clone(scan_blocks=scan).apply({"params": mixed}, video, return_tokens_after=1)
    for scan in (True, False)
  }
  for k in ("score", "feature", "tokens"):
    np.testing.assert_array_equal(
      np.asarray(out[True][k], np.float32), np.asarray(out[False][k], np.float32), err_msg=k
    )


def test_frozen_storage_casts_floats_only_and_keeps_sharding():
  mesh = sharding.make_mesh(data=1, fsdp=4, devices=jax.devices()[:4])
  sh = NamedSharding(mesh, P("fsdp"))
  model = iv2.InternVideo2(**TEACHER, dtype="bfloat16")
  parts = {"teacher": steps.Part("teacher", model, "video", None)}
  frozen = {
    "teacher": {
      "w": jax.device_put(jnp.arange(8, dtype=jnp.float32) / 3, sh),
      "n": jnp.arange(3, dtype=jnp.int32),
      "a": jax.ShapeDtypeStruct((8,), jnp.float32, sharding=sh),
    }
  }
  out = steps.frozen_storage(parts, frozen)["teacher"]
  assert out["w"].dtype == jnp.bfloat16 and out["w"].sharding == sh
  np.testing.assert_array_equal(
    np.asarray(out["w"], np.float32),
    np.asarray(jnp.asarray(np.arange(8) / 3, jnp.bfloat16), np.float32),
  )
  assert out["n"].dtype == jnp.int32
  assert out["a"] == jax.ShapeDtypeStruct((8,), jnp.bfloat16, sharding=sh)
  # float32 compute: nothing changes.
  f32 = {"teacher": steps.Part("teacher", model.clone(dtype="float32"), "video", None)}
  assert steps.frozen_storage(f32, frozen)["teacher"]["w"].dtype == jnp.float32


def _masking_kernel(q, k, v, segment_ids, sm_scale):
  """Reference for the Pallas kernel's contract: (B, N, L, H), segment-id masking."""
  s = jnp.einsum("bnqh,bnkh->bnqk", q, k) * sm_scale
  if segment_ids is not None:
    same = segment_ids.q[:, None, :, None] == segment_ids.kv[:, None, None, :]
    s = jnp.where(same, s, -jnp.inf)
  return jnp.einsum("bnqk,bnkh->bnqh", jax.nn.softmax(s, axis=-1), v)


@pytest.mark.parametrize("tokens", [33, 128, 130])
def test_padded_attention_masks_padding(tokens):
  """Padding to the kernel's tile and masking the padded keys is exact attention."""
  ks = jax.random.split(jax.random.key(0), 3)
  q, k, v = (jax.random.normal(key, (2, tokens, 3, 8)) for key in ks)
  want = jax.nn.dot_product_attention(q, k, v, scale=0.4)
  calls = []

  def kernel(*args):
    calls.append((args[0].shape, args[3] is None))
    return _masking_kernel(*args)

  got = iv2.padded_attention(q, k, v, 0.4, kernel, block=64)
  padded = -(-tokens // 64) * 64
  assert calls == [((2, 3, padded, 8), padded == tokens)]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # Without the mask the padded (zero) keys would take softmax weight.
  unmasked = iv2.padded_attention(
    q, k, v, 0.4, lambda q, k, v, ids, s: _masking_kernel(q, k, v, None, s), block=64
  )
  assert padded == tokens or not np.allclose(unmasked, want, atol=1e-3)


def test_pallas_attention_needs_mesh_and_divisible_batch():
  q = jnp.zeros((3, 256, 2, 8))
  with pytest.raises(ValueError, match="needs the device mesh"):
    iv2.attention(q, q, q, 0.3, "pallas")
  mesh = sharding.make_mesh(data=1, fsdp=2, devices=jax.devices()[:2])
  with (
    jax.sharding.use_abstract_mesh(mesh.abstract_mesh),
    pytest.raises(ValueError, match="batch 3 is not divisible"),
  ):
    iv2.attention(q, q, q, 0.3, "pallas")


def test_default_attention_follows_the_traced_platform():
  """Under a CPU mesh the default stays the CPU kernel; the pool's one query stays generic."""
  mesh = sharding.make_mesh(data=1, fsdp=2, devices=jax.devices()[:2])
  ks = jax.random.split(jax.random.key(0), 3)
  q, k, v = (jax.random.normal(key, (2, 256, 2, 8)) for key in ks)
  with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
    assert iv2.target_platform() == "cpu"
    got = iv2.attention(q, k, v, 0.3, None)
  np.testing.assert_array_equal(got, iv2.chunked_attention(q, k, v, 0.3))


def _tpu_topology(name):
  if importlib.util.find_spec("libtpu") is None:
    pytest.skip("libtpu is not installed (pip install 'jax[tpu]' at the installed jax version)")
  from jax.experimental import topologies

  try:
    return topologies.get_topology_desc(platform="tpu", topology_name=name)
  except Exception as e:  # Another process may hold libtpu's lock.
    pytest.skip(f"TPU topology {name} unavailable here: {e}")


def test_paper_step_compiles_for_tpu_with_pallas_attention():
  """The scanned paper-preset step with the Pallas kernel lowers and compiles for v5e:2x2."""
  topo = _tpu_topology("v5e:2x2")
  mesh = sharding.make_mesh(data=1, fsdp=4, devices=topo.devices)
  dims = dict(embed_dim=256, depth=3, num_heads=2, mlp_hidden=256, num_frames=2, img_size=224)
  parts, abstract_trainable, abstract_frozen = {}, {}, {}
  for name, module in (
    ("teacher", iv2.InternVideo2(**dims, frozen_blocks=2, dtype="bfloat16", remat=True)),
    ("student", iv2.InternVideo2(**{**dims, "depth": 1}, dtype="bfloat16")),
  ):
    abstract = model_setup.abstract_params(module)
    regexes = _teacher_trainable("paper", module.depth) if name == "teacher" else [".*"]
    mask = model_setup.regex_mask(abstract, regexes)
    abstract_trainable[name], abstract_frozen[name] = tree_paths.split_tree(abstract, mask)
    tx, _ = optim.make_optimizer({"lr": 1e-3, "schedule": "constant"}, abstract_trainable[name])
    parts[name] = steps.Part(name=name, module=module, batch_key="video", tx=tx)
  state = jax.eval_shape(
    lambda t: {
      "step": jnp.zeros((), jnp.int32),
      **{n: {"params": t[n], "opt": parts[n].tx.init(t[n])} for n in parts},
    },
    abstract_trainable,
  )
  frozen = steps.frozen_storage(parts, abstract_frozen)
  state_sh = sharding.infer_param_shardings(state, mesh)
  frozen_sh = sharding.infer_param_shardings(frozen, mesh)
  batch_sh = sharding.batch_sharding(mesh)
  rep = NamedSharding(mesh, P())
  sds = lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
  batch = {
    "video": jax.ShapeDtypeStruct((4, 2, 224, 224, 3), jnp.float32, sharding=batch_sh),
    "label": jax.ShapeDtypeStruct((4,), jnp.float32, sharding=batch_sh),
  }
  step = steps.make_train_step(parts, steps.LossConfig(mode="distill"), mesh=mesh)
  # Training runs at the default matmul precision (config matmul_precision ""); the test
  # suite's float32-parity "highest" would ask Mosaic for fp32 contraction of the kernel's
  # bf16 operands, which it rejects ("Bad lhs type").
  with jax.default_matmul_precision("default"):
    lowered = jax.jit(
      step,
      in_shardings=(state_sh, frozen_sh, batch_sh, rep),
      out_shardings=(state_sh, None),
    ).lower(
      jax.tree.map(sds, state, state_sh),
      jax.tree.map(sds, frozen, frozen_sh),
      batch,
      jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=rep),
    )
    hlo = lowered.compile().as_text()
  # 513 tokens: Mosaic kernels for the teacher's and the student's blocks (forward and backward).
  assert hlo.count("tpu_custom_call") >= 2
  assert "while" in hlo  # The frozen trunk runs under a loop.
