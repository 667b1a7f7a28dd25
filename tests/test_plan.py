"""The planner: ahead-of-time compiles of tiny runs for a TPU slice (libtpu) and for cpu:N.

TPU tests need libtpu (`pip install -e ".[plan]"`, which CI installs); without it they skip.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from internvqa_jax import flop_count, hlo_collectives, plan, sharding, train
from tests.train_configs import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "tests", "train_configs", "tiny.py")
needs_libtpu = pytest.mark.skipif(
  importlib.util.find_spec("libtpu") is None,
  reason="libtpu is not installed (pip install -e '.[plan]'): no TPU compiler to plan with",
)
TPU = "v5e:2x2"


def _distill(preset: str, batch: int = 8):
  c = tiny.get_config(f"mode=distill,preset={preset},batch_size={batch}")
  with c.unlocked():
    c.teacher.kwargs.update(embed_dim=64, depth=2, mlp_hidden=128)  # Smaller: faster compiles.
  return c


def _finetune(batch: int = 8, depth: int = 1):
  c = tiny.get_config(f"mode=finetune,batch_size={batch}")
  with c.unlocked():
    c.model.kwargs.depth = depth
  return c


_CACHE = {}


def _plan(key, config, topology, **kw):
  """Each distinct compile once per session."""
  if key not in _CACHE:
    _CACHE[key] = plan.plan(config, plan.make_target(topology), predict=False, **kw)
  return _CACHE[key]


def _logical_shard_bytes(tree, mesh) -> int:
  """One device's bytes from each leaf's PartitionSpec and the mesh shape (no padding)."""
  total = 0
  for x in jax.tree.leaves(tree):
    shape = list(x.shape)
    for dim, axes in enumerate(x.sharding.spec):
      for a in (axes,) if isinstance(axes, str) else axes or ():
        assert shape[dim] % mesh.shape[a] == 0
        shape[dim] //= mesh.shape[a]
    total += math.prod(shape) * x.dtype.itemsize
  return total


def _abstract_inputs(config, topology):
  target = plan.make_target(topology)
  mesh = sharding.make_mesh(data=config.mesh.data, fsdp=config.mesh.fsdp, devices=target.devices)
  run = train.build_run(config, mesh, jax.random.key(0), log=lambda *a: None, abstract=True)
  batch = plan.abstract_batch(run.parts, config.batch_size, mesh)
  return run, batch, mesh


# ------------------------------------------------------------ bytes, FLOPs --


@pytest.mark.parametrize("topology", ["cpu:4", pytest.param(TPU, marks=needs_libtpu)])
def test_argument_bytes_are_the_sharded_params_optimizer_and_batch(topology):
  config = _distill("paper")
  r = _plan(("distill", "paper", topology), config, topology)
  assert r["fits"] and r["compiled"]
  run, batch, mesh = _abstract_inputs(config, topology)
  params = _logical_shard_bytes({k: run.state[k]["params"] for k in run.parts}, mesh)
  opt = _logical_shard_bytes({k: run.state[k]["opt"] for k in run.parts}, mesh)
  frozen = _logical_shard_bytes(run.frozen, mesh)
  data = _logical_shard_bytes(batch, mesh)
  step = 4  # int32 step counter; the tiny run draws no random numbers, so jit drops the rng.
  independent = params + opt + frozen + data + step
  a = r["argument_breakdown"]
  # The compiler's argument bytes are exactly the shards the planner attributes to each group.
  assert r["per_chip_bytes"]["arguments"] == sum(a.values())
  if topology.startswith("cpu"):  # No layout padding on the host: the plain shard sizes.
    assert a["params"] == params and a["optimizer"] == opt
    assert a["frozen_params"] == frozen and a["batch"] == data
    assert r["per_chip_bytes"]["arguments"] == independent
  else:  # TPU tiles pad small dimensions (e.g. a (5, 7) float32 array takes one 8x128 tile).
    assert a["params"] >= params and a["optimizer"] >= opt and a["frozen_params"] >= frozen
    assert a["batch"] >= data
  assert r["hbm_bytes"] == (16 * 2**30 if topology == TPU else None)


def test_laid_out_bytes_match_tpu_layouts_measured_with_the_compiler():
  # Argument bytes the v5e compiler reported for single arrays in these layouts.
  L = lambda order, tile: type("L", (), dict(major_to_minor=order, tiling=(tile,)))()
  assert plan.laid_out_bytes((5, 7), 4, L((0, 1), (8, 128))) == 4096
  assert plan.laid_out_bytes((9, 130), 4, L((0, 1), (8, 128))) == 16384
  assert plan.laid_out_bytes((5, 7), 2, L((0, 1), (8, 128))) == 2048
  assert plan.laid_out_bytes((2, 3, 5), 4, L((1, 0, 2), (2, 128))) == 3072
  assert plan.laid_out_bytes((2, 3, 5, 7), 4, L((1, 2, 0, 3), (2, 128))) == 15360
  assert plan.laid_out_bytes((130,), 4, L((0,), (256,))) == 1024
  assert plan.laid_out_bytes((), 4, L((), (128,))) == 512
  assert plan.laid_out_bytes((5, 7), 4, None) == 140


@needs_libtpu
def test_memory_grows_with_batch():
  # Far apart: at small batches the compiler's temporaries move by a few MiB either way
  # (8 -> 64 clips went from 7.3 to 5.7 MiB), more than the clips themselves weigh;
  # 8 -> 1024 clips measured 9.0 -> 11.7 MiB in total.
  small = _plan(("finetune", 8), _finetune(8), TPU)
  large = _plan(("finetune", 1024), _finetune(1024), TPU)
  assert large["argument_breakdown"]["batch"] > 10 * small["argument_breakdown"]["batch"]
  assert large["per_chip_bytes"]["total"] > small["per_chip_bytes"]["total"]
  assert large["compiled_flops_per_chip"] > small["compiled_flops_per_chip"]


@needs_libtpu
def test_paper_step_compiles_fewer_flops_than_authors_code():
  paper = _plan(("distill", "paper", TPU), _distill("paper"), TPU)
  authors = _plan(("distill", "authors_code", TPU), _distill("authors_code"), TPU)
  # authors_code back-propagates through the whole trunk (its patch/pos embeddings train).
  assert paper["compiled_flops_per_chip"] < authors["compiled_flops_per_chip"]
  assert paper["model_flops_per_step"] < authors["model_flops_per_step"]
  # authors_code also trains the embeddings: more optimizer state, less frozen.
  pa, aa = paper["argument_breakdown"], authors["argument_breakdown"]
  assert pa["optimizer"] < aa["optimizer"] and pa["frozen_params"] > aa["frozen_params"]


@needs_libtpu
def test_absurd_batch_reports_does_not_fit_without_traceback(tmp_path):
  out = tmp_path / "plan.json"
  p = subprocess.run(
    [
      sys.executable,
      "-m",
      "internvqa_jax.plan",
      f"--config={CONFIG}:mode=finetune",
      f"--topology={TPU}",
      "--config.batch_size=4194304",
      "--nopredict",
      f"--json={out}",
    ],
    cwd=REPO,
    env={**os.environ, "PYTHONPATH": REPO},
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert p.returncode == 1, p.stderr[-2000:]
  assert "Traceback" not in p.stderr and "Traceback" not in p.stdout
  assert "fits: NO (the compiler ran out of memory" in p.stdout
  r = json.loads(out.read_text())
  assert r["fits"] is False and r["compiled"] is False
  oom = r["out_of_memory"]
  assert "RESOURCE_EXHAUSTED" in oom["message"] or oom.get("used_bytes")
  assert oom["used_bytes"] > oom["capacity_bytes"] > 0  # The compiler's own numbers.


def test_unknown_topology_is_a_clear_error():
  with pytest.raises(plan.PlanError, match="v0x:2x2"):
    plan.make_target("v0x:2x2")
  with pytest.raises(plan.PlanError, match="XLA_FLAGS"):
    plan.make_target("cpu:4096")


# ------------------------------------------------------------- model FLOPs --


def _hand_forward_flops(m, batch: int) -> int:
  """InternVideo2 forward matmul FLOPs, written out layer by layer."""
  c, h, nh = m.embed_dim, m.mlp_hidden, m.depth
  patches = (m.num_frames // m.tubelet_size) * (m.img_size // m.patch_size) ** 2
  n = 1 + patches
  patch_embed = 2 * patches * (m.tubelet_size * m.patch_size**2 * 3) * c
  block = (
    2 * n * c * 3 * c  # qkv
    + 2 * n * n * c  # q k^T over all heads
    + 2 * n * n * c  # scores x v
    + 2 * n * c * c  # proj
    + 2 * n * c * h * 2  # fc1, fc2
  )
  pool = (
    2 * c * c  # q of the one mean token
    + 2 * 2 * n * c * c  # k, v
    + 2 * 2 * n * c  # one query over n keys: scores and values
    + 2 * c * m.pool_dim  # proj
  )
  head = 2 * m.pool_dim * m.num_outputs
  return batch * (patch_embed + nh * block + pool + head), batch * patch_embed


def test_model_flops_equal_a_hand_count_for_a_two_block_model():
  config = _finetune(batch=4, depth=2)
  mesh = sharding.make_mesh(data=1, fsdp=1, devices=jax.devices()[:1])
  run = train.build_run(config, mesh, jax.random.key(0), log=lambda *a: None, abstract=True)
  module = run.parts["model"].module
  assert module.depth == 2
  batch = plan.abstract_batch(run.parts, 4, mesh)
  forward, patch_embed = _hand_forward_flops(module, 4)
  predict = flop_count.count(
    lambda t, f, b: module.apply({"params": {**t, **f}}, b["video"])["score"],
    run.state["model"]["params"],
    run.frozen["model"],
    batch,
  )
  assert predict == forward
  rng = jax.ShapeDtypeStruct((), jax.eval_shape(lambda: jax.random.key(0)).dtype)
  step = plan.model_flops(run, run.state, run.frozen, batch, rng)
  # Backward: every matmul twice (both operands' gradients), except that the video
  # itself needs no gradient, so the patch embedding's backward is its weight gradient only.
  assert step == 3 * forward - patch_embed


def test_scan_bodies_count_once_per_iteration():
  x = jax.ShapeDtypeStruct((4, 8), np.float32)
  w = jax.ShapeDtypeStruct((5, 8, 8), np.float32)
  f = lambda x, w: jax.lax.scan(lambda c, wi: (c @ wi, None), x, w)[0]
  assert flop_count.count(f, x, w) == 5 * 2 * 4 * 8 * 8


# ------------------------------------------------------------- collectives --

_HLO = """
ENTRY %main {
  %p0 = f32[16,128]{1,0} parameter(0)
  %all-gather.1 = f32[64,128]{1,0} all-gather(f32[16,128]{1,0} %p0), replica_groups=[1,4]<=[4], dimensions={0}
  %ars = bf16[256]{0} all-reduce-start(bf16[256]{0} %x), replica_groups={{0,1,2,3}}, to_apply=%add
  %ard = bf16[256]{0} all-reduce-done(bf16[256]{0} %ars)
  %rs = f32[4,128]{1,0} reduce-scatter(f32[16,128]{1,0} %y), replica_groups={{0,1,2,3}}, dimensions={0}
  %ags = (f32[8]{0}, f32[32]{0}) all-gather-start(f32[8]{0} %z), replica_groups={{0,1,2,3}}
  %agd = f32[32]{0} all-gather-done((f32[8]{0}, f32[32]{0}) %ags)
}
"""


def test_collective_bytes_read_from_hlo():
  b = hlo_collectives.collective_bytes(_HLO)
  assert b["all-gather"] == 64 * 128 * 4 + 32 * 4
  assert b["all-gather_count"] == 2
  assert b["all-reduce"] == 256 * 2 and b["all-reduce_count"] == 1
  assert b["reduce-scatter"] == 16 * 128 * 4
  assert b["all-to-all"] == 0 and b["collective-permute"] == 0


_LOOPED_HLO = """
%inner_body (p: (s32[], f32[8])) -> (s32[], f32[8]) {
  %ag = f32[32]{0} all-gather(f32[8]{0} %x), replica_groups={{0,1,2,3}}, dimensions={0}
}
%inner_cond (p: (s32[], f32[8])) -> pred[] {
  %c = pred[] compare(s32[] %i, s32[] %n), direction=LT
}
%outer_body (p: (s32[], f32[8])) -> (s32[], f32[8]) {
  %w = (s32[], f32[8]{0}) while((s32[], f32[8]{0}) %t), condition=%inner_cond, body=%inner_body, backend_config={"known_trip_count":{"n":"3"}}
  %ar = f32[16]{0} all-reduce(f32[16]{0} %y), replica_groups={{0,1,2,3}}, to_apply=%add
}
%outer_cond (p: (s32[], f32[8])) -> pred[] {
  %c = pred[] compare(s32[] %i, s32[] %n), direction=LT
}
%unknown_body (p: (s32[], f32[8])) -> (s32[], f32[8]) {
  %ar2 = f32[4]{0} all-reduce(f32[4]{0} %y), replica_groups={{0,1,2,3}}, to_apply=%add
}
ENTRY %main (a: f32[8]) -> f32[8] {
  %w1 = (s32[], f32[8]{0}) while((s32[], f32[8]{0}) %t), condition=%outer_cond, body=%outer_body, backend_config={"known_trip_count":{"n":"5"}}
  %w2 = (s32[], f32[8]{0}) while((s32[], f32[8]{0}) %t), condition=%outer_cond, body=%unknown_body
  %ag0 = f32[64]{0} all-gather(f32[16]{0} %a), replica_groups={{0,1,2,3}}, dimensions={0}
}
"""


def test_collectives_in_loop_bodies_count_once_per_iteration():
  b = hlo_collectives.collective_bytes(_LOOPED_HLO)
  # Entry gather once; the inner loop runs 3 times per outer iteration, the outer 5 times.
  assert b["all-gather"] == 64 * 4 + 5 * 3 * 32 * 4
  assert b["all-gather_count"] == 1 + 15
  # The outer body's all-reduce 5 times; the loop without a trip count once, and reported.
  assert b["all-reduce"] == 5 * 16 * 4 + 4 * 4
  assert b["unknown_trip_loops"] == 1
  assert hlo_collectives.loop_trip_counts(_LOOPED_HLO) == [3, 5, 0]


_COUNTER_LOOP_HLO = """
%cond (p: (s32[], f32[8])) -> pred[] {
  %constant.5 = s32[]{:T(128)} constant(7)
  %gte = s32[]{:T(128)} get-tuple-element(%p), index=0
  ROOT %lt = pred[]{:T(512)} compare(%gte, %constant.5), direction=LT
}
%body (p: (s32[], f32[8])) -> (s32[], f32[8]) {
  %ag = f32[32]{0} all-gather(f32[8]{0} %x), replica_groups={{0,1,2,3}}, dimensions={0}
}
ENTRY %main (a: f32[8]) -> f32[8] {
  %w = (s32[], f32[8]{0}) while((s32[], f32[8]{0}) %t), condition=%cond, body=%body
}
"""


def test_trip_count_read_from_a_counter_condition():
  # XLA:TPU writes no known_trip_count: the scan-form condition `counter < 7` gives it.
  assert hlo_collectives.loop_trip_counts(_COUNTER_LOOP_HLO) == [7]
  b = hlo_collectives.collective_bytes(_COUNTER_LOOP_HLO)
  assert b["all-gather"] == 7 * 32 * 4 and b["unknown_trip_loops"] == 0


@needs_libtpu
def test_collectives_of_a_scan_compiled_for_tpu_count_every_iteration():
  target = plan.make_target("v5e:2x2")
  mesh = jax.sharding.Mesh(np.array(target.devices), ("fsdp",))
  replicated = NamedSharding(mesh, P())

  def loss(ws, x):
    def body(x, w):
      return jnp.tanh(x @ jax.lax.with_sharding_constraint(w, replicated)), None

    return jax.lax.scan(body, x, ws)[0].sum()

  ws = jax.ShapeDtypeStruct(
    (6, 256, 256), jnp.float32, sharding=NamedSharding(mesh, P(None, "fsdp"))
  )
  x = jax.ShapeDtypeStruct((8, 256), jnp.float32, sharding=replicated)
  text = jax.jit(jax.grad(loss)).lower(ws, x).compile().as_text()
  assert hlo_collectives.loop_trip_counts(text) == [6, 6]  # forward and backward scans
  b = hlo_collectives.collective_bytes(text)
  assert b["unknown_trip_loops"] == 0
  moved = sum(b[k] for k in hlo_collectives.KINDS)
  # Every iteration of both loops exchanges at least a (8, 256) bf16 activation block.
  assert moved >= 2 * 6 * 8 * 256 * 2


def test_collectives_of_a_compiled_scan_count_every_iteration():
  # A 6-step scan whose weights are sharded over 4 devices: every iteration exchanges either its
  # gathered (64, 64) weight or its (8, 64) partial product (XLA picks), never nothing.
  mesh = jax.make_mesh((4,), ("fsdp",), devices=jax.devices("cpu")[:4])
  replicated = NamedSharding(mesh, P())

  def loss(ws, x):
    def body(x, w):
      return jnp.tanh(x @ jax.lax.with_sharding_constraint(w, replicated)), None

    return jax.lax.scan(body, x, ws)[0].sum()

  ws = jax.ShapeDtypeStruct((6, 64, 64), jnp.float32, sharding=NamedSharding(mesh, P(None, "fsdp")))
  x = jax.ShapeDtypeStruct((8, 64), jnp.float32, sharding=replicated)
  text = jax.jit(loss).lower(ws, x).compile().as_text()
  assert 6 in hlo_collectives.loop_trip_counts(text)
  b = hlo_collectives.collective_bytes(text)
  assert b["all-gather_count"] + b["all-reduce_count"] >= 6
  assert b["all-gather"] + b["all-reduce"] >= 6 * 8 * 64 * 4
  assert b["unknown_trip_loops"] == 0


# ------------------------------------------------------------------ search --


@needs_libtpu
def test_search_returns_a_batch_that_fits_and_the_next_does_not():
  # 8 frames of 112 x 112 (513 tokens): memory per clip dominates, so it grows with batch.
  def config(batch):
    c = _finetune(batch)
    with c.unlocked():
      c.model.kwargs.update(num_frames=8, img_size=112)
      c.mesh.data, c.mesh.fsdp = 4, 1
    return c

  at8 = _plan(("search", 8), config(8), TPU)
  at12 = _plan(("search", 12), config(12), TPU)
  assert at8["per_chip_bytes"]["total"] < at12["per_chip_bytes"]["total"]
  # A device with room for 8 clips (2 per chip) but not for 12.
  budget = (at8["per_chip_bytes"]["total"] + at12["per_chip_bytes"]["total"]) // 2
  s = plan.search(
    config(4), plan.make_target(TPU), remats=(False,), splits=[(4, 1)], hbm_bytes=budget
  )
  row = s["best"]
  assert (row["max_batch"], row["first_failing_batch"]) == (8, 12)
  assert row["per_chip_bytes"] == at8["per_chip_bytes"]["total"] <= budget
  assert at8["compiled"] and at12["compiled"]  # Both compile; 12 exceeds the device's memory.
  assert (
    plan.plan(config(12), plan.make_target(TPU), predict=False, hbm_bytes=budget)["fits"] is False
  )


def test_out_of_memory_numbers_read_from_the_compiler_message():
  msg = (
    "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
    "temporaries (100.07G) exceeds available HBM (15.75G)."
  )  # What the v5e compiler said for a 4M-clip batch of the tiny model.
  oom = plan._oom_numbers(msg)
  assert oom["used_bytes"] == int(100.07 * 2**30) and oom["capacity_bytes"] == int(15.75 * 2**30)
  assert oom["used_for"] == "HLO temporaries" and oom["memory_space"] == "HBM"


# -------------------------------------------------------------- plan table --


def _plan_table():
  spec = importlib.util.spec_from_file_location(
    "plan_table", os.path.join(os.path.dirname(__file__), "..", "benchmarks", "plan_table.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_plan_table_derives_waterloo_rows_from_their_bvihd_twin():
  t = _plan_table()
  twin = dict(
    config="internvqa_small_bvihd",
    generation="v5e",
    smallest="v5e:2x2",
    tried=[],
    per_chip_gib=1.5,
    model_tflop_per_step=2.0,
    clips_per_s_at_40=100.0,
    epoch_seconds_at_40=3.12,
    host_cores=10.0,
  )
  r = t.derived_row("internvqa_small_waterloo", twin)
  assert r["derived_from"] == "internvqa_small_bvihd" and r["smallest"] == "v5e:2x2"
  assert r["per_chip_gib"] == 1.5 and r["model_tflop_per_step"] == 2.0
  assert r["epoch_seconds_at_40"] == pytest.approx(960 / 100.0)  # Waterloo: 960 clips per epoch
  assert r["host_cores"] == pytest.approx(40.0)  # 3840x2160 frames: 4x the 1080p decode cost
  # Every Waterloo config's twin trains the identical step: only schedule lengths differ.
  for name, twin_name in t.TWINS.items():
    a, b = t.load(name).to_dict(), t.load(twin_name).to_dict()
    for c in (a, b):
      c.pop("total_steps"), c.pop("eval_every"), c.pop("data")
      for opt in ("optim", "teacher_optim"):
        c.get(opt, {}).pop("warmup_steps", None)
    assert a == b, name


def test_plan_table_markdown_and_preset_ratios():
  t = _plan_table()
  row = lambda name, gib, tflop: dict(
    config=name,
    generation="v5e",
    smallest="v5e:2x2",
    tried=[],
    per_chip_gib=gib,
    model_tflop_per_step=tflop,
    epoch_seconds_at_40=5.8,
    host_cores=25.0,
  )
  rows = [
    row("internvqa_dist_small_bvihd", 2.0, 40.0),
    row("internvqa_dist_small_bvihd_authors_code", 4.0, 80.0),
    dict(
      config="teacher_6b_finetune_bvihd",
      generation="v5e",
      smallest=None,
      tried=[
        dict(topology="v5e:2x2", fits=False, per_chip_bytes=None),
        dict(topology="v5e:2x4", fits=False, per_chip_bytes=17.5 * 2**30),
        dict(topology="v5e:4x4", fits=False, why="batch not divisible by devices"),
      ],
    ),
  ]
  text = t.markdown(rows)
  assert "| `internvqa_dist_small_bvihd` | 40.0 | 2x2: 2.0 GiB, 5.8 s, 25 cores |" in text
  assert (
    "| `teacher_6b_finetune_bvihd` | - | none fits (2x4 needs 17.5 GiB; larger: batch not "
    "divisible by devices) |" in text
  )
  assert "- v5e: `paper` / `authors_code` model FLOPs per step 0.50; per-chip memory 0.50" in text
