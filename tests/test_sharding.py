"""Mesh, FSDP sharding inference, global batches and sharded steps on 8 fake CPU devices."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from internvqa_jax import sharding, tree_paths


@pytest.fixture(scope="module")
def mesh():
  assert jax.device_count() == 8, "tests/conftest.py should provide 8 CPU devices"
  return sharding.make_mesh(data=2, fsdp=4)


def test_make_mesh():
  m = sharding.make_mesh()
  assert dict(m.shape) == {"data": 8, "fsdp": 1}
  m = sharding.make_mesh(data=2, fsdp=-1)
  assert dict(m.shape) == {"data": 2, "fsdp": 4}
  assert m.axis_names == ("data", "fsdp")
  assert all(t == AxisType.Auto for t in m.axis_types)
  m = sharding.make_mesh(data=-1, fsdp=2, devices=jax.devices()[:4])
  assert dict(m.shape) == {"data": 2, "fsdp": 2}


@pytest.mark.parametrize(
  "kw, match",
  [
    (dict(data=3, fsdp=2), "6 devices, but 8 are available"),
    (dict(data=-1, fsdp=3), "not divisible by 3"),
    (dict(data=-1, fsdp=-1), "only one"),
    (dict(data=0, fsdp=8), "positive int or -1"),
  ],
)
def test_make_mesh_errors(kw, match):
  with pytest.raises(ValueError, match=match):
    sharding.make_mesh(**kw)


def test_fsdp_spec():
  assert sharding.fsdp_spec((64, 256), 4, min_size=1) == P(None, "fsdp")
  assert sharding.fsdp_spec((256, 64), 4, min_size=1) == P("fsdp", None)
  assert sharding.fsdp_spec((6, 256), 8, min_size=1) == P(None, "fsdp")
  assert sharding.fsdp_spec((256, 6), 3, min_size=1) == P(None, "fsdp")  # 256 % 3 != 0
  assert sharding.fsdp_spec((5, 7), 4, min_size=1) == P()  # nothing divisible
  assert sharding.fsdp_spec((64, 256), 4, min_size=64 * 256 + 1) == P()  # too small
  assert sharding.fsdp_spec((64, 256), 1, min_size=1) == P()
  assert sharding.fsdp_spec((8, 8), 4, min_size=1) == P("fsdp", None)  # first of equals


def _tree():
  rng = np.random.default_rng(0)
  return {
    "big": {"kernel": rng.standard_normal((64, 256)).astype(np.float32)},
    "small": {"bias": rng.standard_normal((16,)).astype(np.float32)},
    "pos_embed": rng.standard_normal((1, 256, 64)).astype(np.float32),
  }


def test_shard_shapes(mesh):
  params = _tree()
  abstract = jax.eval_shape(lambda: params)
  shard = sharding.infer_param_shardings(abstract, mesh, min_size=2**10)
  assert shard["big"]["kernel"].spec == P(None, "fsdp")
  assert shard["small"]["bias"].spec == P()
  placed = sharding.place_host_tree(params, shard)
  for s in placed["big"]["kernel"].addressable_shards:
    assert s.data.shape == (64, 64)
  for s in placed["small"]["bias"].addressable_shards:
    assert s.data.shape == (16,)
  for s in placed["pos_embed"].addressable_shards:
    assert s.data.shape == (1, 64, 64)  # 256 is the largest divisible dim
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), placed, params)
  # Rules: first match wins; specific paths can be replicated.
  shard2 = sharding.infer_param_shardings(
    abstract, mesh, [("pos_embed", "replicate"), (".*", "fsdp")], min_size=2**10
  )
  assert shard2["pos_embed"].spec == P() and shard2["big"]["kernel"].spec == P(None, "fsdp")
  with pytest.raises(ValueError, match="match no sharding rule"):
    sharding.infer_param_shardings(abstract, mesh, [("big/.*", "fsdp")])
  with pytest.raises(ValueError, match="unknown tactic"):
    sharding.infer_param_shardings(abstract, mesh, [(".*", "model")])


def test_opt_state_shardings(mesh):
  """The trainer's path: the optimizer state's shardings inferred from its own shapes."""
  params = _tree()
  abstract = jax.eval_shape(lambda: params)
  tx = optax.adamw(1e-3)
  abstract_state = jax.eval_shape(tx.init, abstract)
  sshard = sharding.infer_param_shardings(abstract_state, mesh, min_size=2**10)
  names = tree_paths.tree_names(abstract_state)
  specs = {n: s.spec for n, s in zip(jax.tree.leaves(names), jax.tree.leaves(sshard))}
  assert specs["0/mu/big/kernel"] == P(None, "fsdp") and specs["0/nu/big/kernel"] == P(None, "fsdp")
  assert specs["0/count"] == P()
  # The state is born sharded: each device holds a quarter of mu for the big kernel.
  pshard = sharding.infer_param_shardings(abstract, mesh, min_size=2**10)
  state = jax.jit(tx.init, out_shardings=sshard)(sharding.place_host_tree(params, pshard))
  assert {s.data.shape for s in state[0].mu["big"]["kernel"].addressable_shards} == {(64, 64)}


def _loss(params, batch):
  h = jnp.tanh(batch["x"] @ params["big"]["kernel"])  # (B, 256), kernel split on 256
  h = h @ params["pos_embed"][0]  # (B, 64), contracts the split 256 axis
  pred = jnp.sum(h, axis=-1) + params["small"]["bias"].sum()
  return jnp.mean((pred - batch["y"]) ** 2)


def _sgd_step(params, batch):
  loss, g = jax.value_and_grad(_loss)(params, batch)
  return jax.tree.map(lambda p, gg: p - 1e-3 * gg, params, g), loss


def test_sharded_sgd_step_matches_unsharded(mesh):
  params = jax.tree.map(jnp.asarray, _tree())
  rng = np.random.default_rng(1)
  batch = {
    "x": rng.standard_normal((16, 64)).astype(np.float32),
    "y": rng.standard_normal((16,)).astype(np.float32),
    "video_id": np.array([f"v{i}" for i in range(16)]),
  }
  ref_p, ref_loss = jax.jit(_sgd_step)(params, {k: batch[k] for k in ("x", "y")})

  shard = sharding.infer_param_shardings(jax.eval_shape(lambda: params), mesh, min_size=2**10)
  gbatch = sharding.make_global_batch(batch, mesh)
  assert isinstance(gbatch["video_id"], np.ndarray)  # strings stay on the host
  bshard = sharding.batch_sharding(mesh)
  assert gbatch["x"].sharding == bshard and gbatch["x"].shape == (16, 64)
  for s in gbatch["x"].addressable_shards:
    assert s.data.shape == (2, 64)  # 16 rows over data x fsdp = 8 devices
  num = {k: gbatch[k] for k in ("x", "y")}
  step = jax.jit(
    _sgd_step,
    in_shardings=(shard, {"x": bshard, "y": bshard}),
    out_shardings=(shard, NamedSharding(mesh, P())),
  )
  new_p, loss = step(sharding.place_host_tree(_tree(), shard), num)
  assert new_p["big"]["kernel"].sharding.spec == P(None, "fsdp")
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-6, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), new_p, ref_p)


def test_make_global_batch_errors(mesh):
  with pytest.raises(ValueError, match="not divisible by the 8 local devices"):
    sharding.make_global_batch({"x": np.zeros((6, 2), np.float32)}, mesh)
  with pytest.raises(ValueError, match="has 4 rows but"):
    sharding.make_global_batch({"x": np.zeros((8, 2)), "y": np.zeros(4)}, mesh)
  with pytest.raises(ValueError, match="scalar"):
    sharding.make_global_batch({"x": np.float32(1.0)}, mesh)
