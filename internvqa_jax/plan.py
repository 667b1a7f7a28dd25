r"""Plans a training run before paying for it: compiles its steps ahead of time for a target.

  python -m internvqa_jax.plan --config configs/NAME.py[:ARG] --topology v5e:2x4 \
      [--config.key=value ...] [--json OUT.json] [--mfu 0.4] [--search] [--smallest v5e]

The train step and the eval predict step are built by `train.build_run`, the
function training uses, from abstract parameters (no checkpoint, no dataset),
and compiled with jax.jit(...).lower(<ShapeDtypeStructs with shardings>).compile()
for the target:
  TPU topologies by libtpu's name (v4:2x2x1, v5e:2x4, v5p:2x2x2, v6e:4x4, ...),
    with the real TPU compiler (needs libtpu: pip install -e ".[plan]");
  cpu:N, N host devices: the sharding plan, without memory truth;
  gpu (or local): the local accelerators with their own compiler.
docs/planning.md explains every reported number.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any

# libtpu takes a process-wide lock by default; planning never runs a TPU program,
# so several planners (and other JAX processes) may load it at once.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from internvqa_jax import chips, flop_count, hlo_collectives, model_setup, sharding, train
from internvqa_jax import steps as steps_lib

GiB = 2**30

# Training clips per epoch (one clip per training video of the authors' split,
# configs/common.STEPS_PER_EPOCH x 8) and the videos' frame size, per dataset.
DATASETS = {
  "bvi_hd": dict(epoch_clips=26 * 12, width=1920, height=1080),
  "waterloo_ivc_4k": dict(epoch_clips=16 * 60, width=3840, height=2160),
}

# CPU seconds to decode one 8-frame 1080p clip with segment sampling and a
# 224 crop: benchmarks/bench_decode.py, our reader, slowest of its three codecs
# (AV1, 0.468 s; H.264 0.362 s, HEVC 0.402 s), quiet 2-core machine.
DEFAULT_DECODE = dict(cpu_s_per_clip=0.468, frames=8, width=1920, height=1080)


class PlanError(ValueError):
  """A plan that cannot be made as asked (bad topology, batch not divisible, ...)."""


# ---------------------------------------------------------------- targets --


@dataclasses.dataclass
class Target:
  name: str
  platform: str  # "tpu" | "cpu" | "gpu"
  devices: list
  chip: chips.Chip | None
  devices_per_chip: int = 1

  @property
  def num_devices(self) -> int:
    return len(self.devices)

  @property
  def num_chips(self) -> int:
    return self.num_devices // self.devices_per_chip

  def device_figures(self) -> tuple[int | None, float | None, float | None]:
    """(HBM bytes, peak bf16 FLOP/s, HBM bytes/s) of one device; None where unknown."""
    if self.chip is None:
      return None, None, None
    return self.chip.per_device(self.devices_per_chip)


def make_target(topology: str) -> Target:
  """'cpu:N', 'gpu' / 'local', or a libtpu topology name such as 'v5e:2x4'."""
  if topology.startswith("cpu:"):
    n = int(topology[4:])
    have = jax.devices("cpu")
    if n > len(have):
      raise PlanError(
        f"--topology {topology}: this process has {len(have)} CPU devices; start it with "
        f"XLA_FLAGS=--xla_force_host_platform_device_count={n} (the CLI does this itself)"
      )
    return Target(topology, "cpu", have[:n], None)
  if topology in ("gpu", "local"):
    devs = jax.devices()
    kind = devs[0].device_kind
    return Target(topology, devs[0].platform, devs, chips.for_device_kind(kind))
  from jax.experimental import topologies

  try:
    # Chips with two TensorCores (v4, v5p) run as one device per chip ("megacore"), as JAX runs
    # them and as jax.make_mesh requires; single-core generations have no such configuration.
    try:
      desc = topologies.get_topology_desc(
        platform="tpu", topology_name=topology, chip_config_name="megacore"
      )
    except Exception:
      desc = topologies.get_topology_desc(platform="tpu", topology_name=topology)
  except Exception as e:  # libtpu missing or the name unknown: say which.
    raise PlanError(
      f"--topology {topology}: libtpu could not describe it ({str(e).splitlines()[0][:300]}). "
      f"TPU names look like v5e:2x4 or v4:2x2x2 (pip install -e '.[plan]' brings libtpu)"
    ) from None
  devs = list(desc.devices)
  chips_seen = {tuple(getattr(d, "coords", (d.id,))) for d in devs}
  return Target(
    topology,
    "tpu",
    devs,
    chips.for_device_kind(devs[0].device_kind),
    devices_per_chip=max(1, len(devs) // max(1, len(chips_seen))),
  )


# --------------------------------------------------------------- the steps --


def _roles(config) -> list[str]:
  return ["model"] if config.mode == "finetune" else ["teacher", "student"]


def _unrolled(config):
  """A copy of config whose models run their blocks unrolled (same parameters, same maths)."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    for role in _roles(c):
      module = model_setup.build_module(c[role], c.compute_dtype)
      if getattr(module, "scan_blocks", False):
        c[role].kwargs.scan_blocks = False
  return c


def attention_choices(config, target: Target) -> dict[str, str]:
  """Per role, the attention the compiled step uses (reported, never changed: the planner
  compiles what `train` runs). attention_impl=None is resolved by the model at trace time for
  the platform of the mesh it is traced under (models/internvideo2.attention), so an AOT
  compile for TPU from a CPU host gets the TPU choice: Pallas flash attention for long
  sequences."""
  out = {}
  for role in _roles(config):
    module = model_setup.build_module(config[role], config.compute_dtype)
    if hasattr(module, "attention_impl"):
      out[role] = module.attention_impl or f"auto for {target.platform}"
  return out


def abstract_batch(parts: dict, batch: int, mesh) -> dict[str, jax.ShapeDtypeStruct]:
  """The training batch as the data pipeline makes it: float32 views + label, batch-sharded."""
  sh = sharding.batch_sharding(mesh)
  out = {}
  for part in parts.values():
    shape = model_setup.input_shape(part.module, batch)
    out[part.batch_key] = jax.ShapeDtypeStruct(shape, np.float32, sharding=sh)
  out["label"] = jax.ShapeDtypeStruct((batch,), np.float32, sharding=sh)
  return out


def laid_out_bytes(shape, itemsize: int, layout) -> int:
  """Bytes of an array of `shape` in a device layout: dims in major-to-minor order, the
  minor-most dims padded up to the layout's first tile (TPU tiles such as (8, 128)).

  Without a layout or tiling (CPU) this is the plain size.
  """
  n = math.prod(shape)
  tiling = getattr(layout, "tiling", None) if layout is not None else None
  order = getattr(layout, "major_to_minor", None) if layout is not None else None
  if not tiling or order is None:
    return n * itemsize
  dims = [shape[i] for i in order] if shape else [1]
  tile = tiling[0]
  k = len(tile)
  dims = [1] * max(0, k - len(dims)) + dims
  padded = dims[:-k] + [-(-d // t) * t for d, t in zip(dims[-k:], tile)]
  return math.prod(padded) * itemsize


def argument_bytes(args, formats=None) -> int:
  """Bytes of one device's shards of a tree of ShapeDtypeStructs, laid out as `formats` says."""
  leaves = jax.tree.leaves(args)
  fmts = jax.tree.leaves(formats) if formats is not None else [None] * len(leaves)
  if len(fmts) != len(leaves):
    fmts = [None] * len(leaves)
  total = 0
  for x, f in zip(leaves, fmts):
    if f is not None and getattr(f, "sharding", True) is None:
      continue  # An argument the program does not use: jit drops it (keep_unused=False).
    shape = tuple(x.sharding.shard_shape(x.shape) if x.sharding is not None else x.shape)
    itemsize = x.dtype.itemsize
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):  # Stored as its key data.
      data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(shape, x.dtype))
      shape, itemsize = tuple(data.shape), data.dtype.itemsize
    total += laid_out_bytes(shape, itemsize, getattr(f, "layout", None))
  return total


def model_flops(run, state, frozen, batch, rng) -> int:
  """Matmul FLOPs of one train step (whole batch), remat off (flop_count)."""
  parts = {
    name: dataclasses.replace(p, module=p.module.clone(remat=False))
    if hasattr(p.module, "remat")
    else p
    for name, p in run.parts.items()
  }
  step = steps_lib.make_train_step(parts, run.loss_cfg, run.schedules)
  return flop_count.count(step, state, frozen, batch, rng)


def _oom_numbers(msg: str) -> dict[str, Any]:
  """The compiler's figures from a RESOURCE_EXHAUSTED message (as many as it states)."""
  out = {"message": msg.strip().splitlines()[0][:500]}
  m = re.search(r"Used ([0-9.]+)([KMGT])? of ([0-9.]+)([KMGT])? (\w+)", msg)
  if m:
    unit = {None: 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    out["used_bytes"] = int(float(m.group(1)) * unit[m.group(2)])
    out["capacity_bytes"] = int(float(m.group(3)) * unit[m.group(4)])
    out["memory_space"] = m.group(5)
  m = re.search(
    r"required for ([\w ]+?) \(([0-9.]+)([KMGT])?\) exceeds available (\w+) \(([0-9.]+)([KMGT])?\)",
    msg,
  )
  if m:  # "the total memory required for HLO temporaries (100.07G) exceeds available HBM (15.75G)"
    unit = {None: 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    out["used_bytes"] = int(float(m.group(2)) * unit[m.group(3)])
    out["used_for"] = m.group(1)
    out["capacity_bytes"] = int(float(m.group(5)) * unit[m.group(6)])
    out["memory_space"] = m.group(4)
  m = re.search(r"[Ee]xceeded \w+ capacity by ([0-9.]+)([KMGT])?", msg)
  if m:
    out["exceeded_by_bytes"] = int(
      float(m.group(1)) * {None: 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[m.group(2)]
    )
  return out


def compile_one(fn, args) -> dict[str, Any]:
  """Lowers and compiles fn(*args); memory, cost, collectives, or the out-of-memory figures."""
  t0 = time.perf_counter()
  try:
    compiled = fn.lower(*args).compile()
  except Exception as e:
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    return dict(
      compiled=False,
      out_of_memory=_oom_numbers(str(e)),
      compile_seconds=round(time.perf_counter() - t0, 1),
    )
  seconds = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = (cost[0] if cost else {}) if isinstance(cost, (list, tuple)) else (cost or {})
  b = {
    "arguments": int(mem.argument_size_in_bytes),
    "temporaries": int(mem.temp_size_in_bytes),
    "outputs": int(mem.output_size_in_bytes),
    "aliased": int(mem.alias_size_in_bytes),
    "generated_code": int(getattr(mem, "generated_code_size_in_bytes", 0) or 0),
  }
  b["total"] = b["arguments"] + b["temporaries"] + b["outputs"] - b["aliased"]
  text = compiled.as_text()
  coll = hlo_collectives.collective_bytes(text)
  try:
    formats = compiled.input_formats[0]
  except Exception:  # Not every backend reports input layouts; plain sizes then.
    formats = None
  return dict(
    compiled=True,
    input_formats=formats,
    per_chip_bytes=b,
    compiled_flops_per_chip=float(cost.get("flops", 0.0)),
    bytes_accessed_per_chip=float(cost.get("bytes accessed", 0.0)),
    collective_bytes_per_chip={k: coll[k] for k in hlo_collectives.KINDS},
    collective_counts={k: coll[f"{k}_count"] for k in hlo_collectives.KINDS},
    # XLA's cost analysis counts a loop body once: with loops (scanned blocks) the compiled
    # FLOPs and bytes accessed above are lower bounds; the collectives are per run.
    loop_trip_counts=hlo_collectives.loop_trip_counts(text),
    compile_seconds=round(seconds, 1),
  )


# ----------------------------------------------------------- input budget --


def decode_cost(decode_json: str | None) -> dict[str, Any]:
  """CPU seconds per clip and the clip it was measured on (bench_decode.py --out, or default)."""
  if not decode_json:
    return dict(DEFAULT_DECODE, source="default (docs/planning.md)")
  with open(decode_json) as f:
    d = json.load(f)
  try:
    rows = [r for r in d["results"] if r["reader"] == "ours" and r["cpu_s_per_clip"]]
    args = d["args"]
    cost = max(r["cpu_s_per_clip"] for r in rows)
    return dict(
      cpu_s_per_clip=cost,
      frames=int(args["frames"]),
      width=int(args["width"]),
      height=int(args["height"]),
      source=decode_json,
    )
  except (KeyError, ValueError, TypeError) as e:
    raise PlanError(
      f"--decode-rate-json {decode_json}: expected benchmarks/bench_decode.py --out output "
      f"(results[] rows with reader 'ours' and cpu_s_per_clip, args.frames/width/height): {e!r}"
    ) from None


def input_budget(config, parts, clips_per_s: float, decode: dict) -> dict[str, Any]:
  """Host CPU cores the input pipeline needs to keep up with `clips_per_s`."""
  ds = DATASETS.get(config.data.dataset)
  frames = sum(
    {p.batch_key: model_setup.input_shape(p.module)[1] for p in parts.values()}.values()
  )  # Views decode their own frames; count them all.
  if ds is None:
    return dict(note=f"no frame size known for dataset {config.data.dataset!r}")
  scale = (
    (frames / decode["frames"])
    * (ds["width"] * ds["height"])
    / (decode["width"] * decode["height"])
  )
  per_clip = decode["cpu_s_per_clip"] * scale
  return dict(
    frames_per_sample=frames,
    resolution=f"{ds['width']}x{ds['height']}",
    cpu_s_per_sample=round(per_clip, 3),
    host_cores=round(clips_per_s * per_clip, 1),
    decode_source=decode["source"],
  )


# -------------------------------------------------------------------- plan --


def plan(
  config,
  target: Target,
  *,
  mfu: float = 0.4,
  predict: bool = True,
  decode: dict | None = None,
  epoch_clips: int | None = None,
  hbm_bytes: int | None = None,
  unrolled_costs: bool = False,
  log: Callable[..., None] = lambda *a: None,
) -> dict[str, Any]:
  """Compiles config's train step (and predict steps) for `target`; returns the report dict.

  XLA's cost analysis counts a loop body once, so with scanned blocks the compiled FLOPs and
  bytes accessed are lower bounds (`costs_from`). unrolled_costs=True compiles a second copy of
  the train step with every model's blocks unrolled (scan_blocks=False, the same arithmetic)
  and takes those two figures and the roofline from it; memory stays the scanned program's.
  """
  config = config.copy_and_resolve_references()
  attention = attention_choices(config, target)
  n = target.num_devices
  batch = int(config.batch_size)
  if batch % n:
    raise PlanError(
      f"config.batch_size={batch} must be divisible by the {n} devices of {target.name}"
    )
  try:
    mesh = sharding.make_mesh(data=config.mesh.data, fsdp=config.mesh.fsdp, devices=target.devices)
  except ValueError as e:
    raise PlanError(f"mesh for {target.name}: {e}") from None
  precision = config.get("matmul_precision") or None
  with jax.default_matmul_precision(precision):
    run = train.build_run(config, mesh, jax.random.key(0), log=lambda *a: None, abstract=True)
    b = abstract_batch(run.parts, batch, mesh)
    rng = jax.ShapeDtypeStruct(
      (), jax.eval_shape(lambda: jax.random.key(0)).dtype, sharding=NamedSharding(mesh, P())
    )
    log(f"compiling the train step for {target.name} ({n} devices, mesh {dict(mesh.shape)}) ...")
    step = compile_one(run.train_step, (run.state, run.frozen, b, rng))
    mflops = model_flops(run, run.state, run.frozen, b, rng)
    step["costs_from"] = "compiled step"
    if step["compiled"] and step["loop_trip_counts"]:
      step["costs_from"] = "compiled step, loop bodies counted once (lower bounds)"
      if unrolled_costs:
        log("compiling an unrolled copy of the train step for its FLOPs and bytes ...")
        unrolled = _unrolled(config)
        urun = train.build_run(
          unrolled, mesh, jax.random.key(0), log=lambda *a: None, abstract=True
        )
        u = compile_one(urun.train_step, (urun.state, urun.frozen, b, rng))
        if u["compiled"]:
          step.update(
            compiled_flops_per_chip=u["compiled_flops_per_chip"],
            bytes_accessed_per_chip=u["bytes_accessed_per_chip"],
            costs_from=f"unrolled copy (compiled in {u['compile_seconds']} s)",
          )
    predicts = {}
    if predict:
      eval_batch = max(n, -(-int(config.data.get("eval_batch_size", batch)) // n) * n)
      for role, fn in run.predict.items():
        eb = abstract_batch({role: run.parts[role]}, eval_batch, mesh)
        eb.pop("label")
        log(f"compiling the {role} predict step (batch {eval_batch}) ...")
        predicts[role] = compile_one(fn, (run.state[role]["params"], run.frozen[role], eb))
        predicts[role]["batch"] = eval_batch

  hbm, peak, bw = target.device_figures()
  if hbm_bytes:
    hbm = int(hbm_bytes)
  # Per argument group, as the compiled program lays the shards out (TPU tiles pad small dims).
  fmt = step.pop("input_formats", None)
  for p in predicts.values():
    p.pop("input_formats", None)
  if fmt is None:
    fmt = (None, None, None, None)
  state_fmt, frozen_fmt, batch_fmt, rng_fmt = fmt
  roles = list(run.parts)
  sub = lambda tree, key: None if tree is None else {r: tree[r][key] for r in roles}
  args_breakdown = {
    "params": argument_bytes({r: run.state[r]["params"] for r in roles}, sub(state_fmt, "params")),
    "optimizer": argument_bytes({r: run.state[r]["opt"] for r in roles}, sub(state_fmt, "opt")),
    "frozen_params": argument_bytes(run.frozen, frozen_fmt),
    "batch": argument_bytes(b, batch_fmt),
    "step_and_rng": argument_bytes(
      (run.state["step"], rng), None if state_fmt is None else (state_fmt["step"], rng_fmt)
    ),
  }
  out: dict[str, Any] = dict(
    config=config.get("name", None) or None,
    mode=config.mode,
    topology=target.name,
    platform=target.platform,
    chip=target.chip.name if target.chip else None,
    num_chips=target.num_chips,
    num_devices=n,
    mesh=dict(mesh.shape),
    global_batch=batch,
    attention_impl=attention,
    remat={r: bool(getattr(p.module, "remat", False)) for r, p in run.parts.items()},
    hbm_bytes=hbm,
    argument_breakdown=args_breakdown,
    model_flops_per_step=mflops,
    mfu_assumed=mfu,
  )
  out.update(step)
  if not step["compiled"]:
    out["fits"] = False
    oom = step["out_of_memory"]
    if "capacity_bytes" in oom and hbm is None:
      out["hbm_bytes"] = oom["capacity_bytes"]
    out["predict"] = predicts
    return out
  total = step["per_chip_bytes"]["total"]
  out["fits"] = bool(hbm is None or total <= hbm)
  out["fits_basis"] = (
    "compiler"
    if target.platform == "tpu"
    else ("total vs HBM" if hbm else "no memory limit known (cpu: sharding plan only)")
  )
  out["headroom_bytes"] = None if hbm is None else hbm - total
  out["predict"] = predicts
  if peak:
    t_flops = step["compiled_flops_per_chip"] / peak
    t_bytes = step["bytes_accessed_per_chip"] / bw
    step_s = mflops / (n * peak * mfu)
    clips_s = batch / step_s
    ds = DATASETS.get(config.data.dataset, {})
    clips_epoch = epoch_clips or ds.get("epoch_clips")
    out.update(
      peak_flops_per_chip=peak,
      hbm_bandwidth_per_chip=bw,
      roofline=dict(
        compute_seconds=t_flops,
        memory_seconds=t_bytes,
        lower_bound_seconds=max(t_flops, t_bytes),
        bound="compute" if t_flops >= t_bytes else "memory",
      ),
      model_step_seconds_at_peak=mflops / (n * peak),
      predicted_step_seconds=step_s,
      predicted_clips_per_s=clips_s,
      epoch_clips=clips_epoch,
      predicted_epoch_seconds=(clips_epoch / clips_s) if clips_epoch else None,
      predicted_run_seconds=step_s * int(config.total_steps),
      input=input_budget(config, run.parts, clips_s, decode or decode_cost(None)),
    )
  return out


# ------------------------------------------------------------------ search --

# Slices of each generation, smallest first (libtpu topology names).
SLICES = {
  "v5e": ["v5e:2x2", "v5e:2x4", "v5e:4x4", "v5e:4x8", "v5e:8x8", "v5e:8x16", "v5e:16x16"],
  "v6e": ["v6e:2x2", "v6e:2x4", "v6e:4x4", "v6e:4x8", "v6e:8x8", "v6e:8x16", "v6e:16x16"],
  "v4": ["v4:2x2x1", "v4:2x2x2", "v4:2x2x4", "v4:2x4x4", "v4:4x4x4", "v4:4x4x8"],
  "v5p": ["v5p:2x2x1", "v5p:2x2x2", "v5p:2x2x4", "v5p:2x4x4", "v5p:4x4x4", "v5p:4x4x8"],
}


def _with(config, **changes):
  c = config.copy_and_resolve_references()
  with c.unlocked():
    for key, value in changes.items():
      if key == "remat":
        for role in _roles(c):
          module = model_setup.build_module(c[role], c.compute_dtype)
          if hasattr(module, "remat"):
            c[role].kwargs.remat = bool(value)
      elif key == "mesh":
        c.mesh.data, c.mesh.fsdp = value
      else:
        c[key] = value
  return c


def _fits(config, target, **kw) -> tuple[bool, dict]:
  r = plan(config, target, predict=False, **kw)
  return r["fits"], r


def largest_batch(config, target, *, max_batch: int = 4096, log=lambda *a: None, **kw):
  """Largest multiple of the device count that fits: doubling, then bisection.

  Returns (batch or 0, report at that batch or None, smallest failing batch or None).
  """
  n = target.num_devices
  lo, lo_rep, hi = 0, None, None
  k = 1
  while k * n <= max_batch:
    ok, rep = _fits(_with(config, batch_size=k * n), target, **kw)
    log(f"  batch {k * n}: {'fits' if ok else 'does not fit'}")
    if not ok:
      hi = k
      break
    lo, lo_rep = k, rep
    k *= 2
  if hi is None:
    return lo * n, lo_rep, None
  while hi - lo > 1:
    mid = (lo + hi) // 2
    ok, rep = _fits(_with(config, batch_size=mid * n), target, **kw)
    log(f"  batch {mid * n}: {'fits' if ok else 'does not fit'}")
    if ok:
      lo, lo_rep = mid, rep
    else:
      hi = mid
  return lo * n, lo_rep, hi * n


def search(
  config,
  target,
  *,
  remats=(False, True),
  splits=None,
  log=lambda *a: None,
  max_batch: int = 4096,
  **kw,
) -> dict:
  """The largest global batch over remat on/off and (data, fsdp) splits of the target."""
  n = target.num_devices
  if splits is None:
    splits = [(n // f, f) for f in range(1, n + 1) if n % f == 0]
  rows = []
  for remat in remats:
    for data, fsdp in splits:
      log(f"remat={remat} data={data} fsdp={fsdp}")
      c = _with(config, remat=remat, mesh=(data, fsdp))
      best, rep, first_fail = largest_batch(c, target, max_batch=max_batch, log=log, **kw)
      rows.append(
        dict(
          remat=remat,
          data=data,
          fsdp=fsdp,
          max_batch=best,
          first_failing_batch=first_fail,
          per_chip_bytes=rep["per_chip_bytes"]["total"] if rep else None,
          compile_seconds=rep["compile_seconds"] if rep else None,
        )
      )
  best = max(rows, key=lambda r: (r["max_batch"], -(r["per_chip_bytes"] or 0)))
  return dict(topology=target.name, num_devices=n, frontier=rows, best=best)


def smallest(config, gen: str, *, log=lambda *a: None, **kw) -> dict:
  """The smallest slice of generation `gen` on which config (as given) fits."""
  if gen not in SLICES:
    raise PlanError(f"--smallest {gen}: known generations {sorted(SLICES)}")
  tried = []
  for name in SLICES[gen]:
    target = make_target(name)
    if int(config.batch_size) % target.num_devices:
      tried.append(dict(topology=name, fits=False, why="batch not divisible by devices"))
      break
    log(f"{name}: compiling ...")
    rep = plan(config, target, **kw)
    tried.append(
      dict(
        topology=name,
        fits=rep["fits"],
        per_chip_bytes=rep.get("per_chip_bytes", {}).get("total"),
        compile_seconds=rep["compile_seconds"],
      )
    )
    if rep["fits"]:
      return dict(generation=gen, smallest=name, report=rep, tried=tried)
  return dict(generation=gen, smallest=None, report=None, tried=tried)


# ------------------------------------------------------------------ report --


def _gib(x):
  return "-" if x is None else f"{x / GiB:.2f} GiB"


def format_report(r: dict) -> str:
  lines = [
    f"plan: {r['mode']} on {r['topology']} ({r['num_chips']} chips, {r['num_devices']} devices, "
    f"{r['chip'] or r['platform']}), mesh {r['mesh']}, global batch {r['global_batch']}, "
    f"remat {r['remat']}",
  ]
  if r["attention_impl"]:
    lines.append(f"attention_impl: {r['attention_impl']}")
  if not r["compiled"]:
    oom = r["out_of_memory"]
    lines += [
      f"fits: NO (the compiler ran out of memory after {r['compile_seconds']} s)",
      f"  compiler: {oom['message']}",
    ]
    if "used_bytes" in oom:
      lines.append(
        f"  needs {_gib(oom['used_bytes'])} of {_gib(oom['capacity_bytes'])} {oom['memory_space']}"
      )
    return "\n".join(lines)
  b, a = r["per_chip_bytes"], r["argument_breakdown"]
  lines += [
    "",
    "| per device | bytes |",
    "|---|---|",
    f"| arguments | {_gib(b['arguments'])} |",
    f"|   params (trainable) | {_gib(a['params'])} |",
    f"|   optimizer states | {_gib(a['optimizer'])} |",
    f"|   frozen params | {_gib(a['frozen_params'])} |",
    f"|   batch | {_gib(a['batch'])} |",
    f"| temporaries | {_gib(b['temporaries'])} |",
    f"| outputs | {_gib(b['outputs'])} |",
    f"| aliased (donated) | {_gib(b['aliased'])} |",
    f"| **total** | **{_gib(b['total'])}** |",
    f"| HBM | {_gib(r['hbm_bytes'])} |",
    f"| headroom | {_gib(r.get('headroom_bytes'))} |",
    "",
    f"fits: {'yes' if r['fits'] else 'NO'} ({r['fits_basis']}); compile {r['compile_seconds']} s",
    f"compiled FLOPs per device per step: {r['compiled_flops_per_chip'] / 1e12:.3f} T; "
    f"bytes accessed: {r['bytes_accessed_per_chip'] / 1e9:.2f} GB (from the {r['costs_from']})",
    f"model FLOPs per step (all devices, remat off): {r['model_flops_per_step'] / 1e12:.3f} T",
    "collectives per device per step: "
    + ", ".join(f"{k} {v / 1e9:.3f} GB" for k, v in r["collective_bytes_per_chip"].items() if v)
    or "none",
  ]
  if "roofline" in r:
    rf = r["roofline"]
    lines += [
      f"roofline: compute {rf['compute_seconds'] * 1e3:.1f} ms, HBM {rf['memory_seconds'] * 1e3:.1f} ms"
      f" -> at least {rf['lower_bound_seconds'] * 1e3:.1f} ms per step, {rf['bound']}-bound",
      f"at {r['mfu_assumed']:.0%} MFU: {r['predicted_step_seconds'] * 1e3:.1f} ms per step, "
      f"{r['predicted_clips_per_s']:.1f} clips/s"
      + (
        f", epoch ({r['epoch_clips']} clips) {r['predicted_epoch_seconds']:.1f} s"
        if r.get("predicted_epoch_seconds")
        else ""
      )
      + f", whole run {r['predicted_run_seconds'] / 3600:.2f} h",
    ]
    inp = r["input"]
    if "host_cores" in inp:
      lines.append(
        f"input: {inp['frames_per_sample']} frames at {inp['resolution']} per sample, "
        f"{inp['cpu_s_per_sample']} CPU s each -> {inp['host_cores']} host cores "
        f"(decode cost: {inp['decode_source']})"
      )
  for role, p in r.get("predict", {}).items():
    if p["compiled"]:
      lines.append(
        f"predict[{role}] batch {p['batch']}: {_gib(p['per_chip_bytes']['total'])} per device, "
        f"compile {p['compile_seconds']} s"
      )
    else:
      lines.append(
        f"predict[{role}] batch {p['batch']}: does not fit ({p['out_of_memory']['message']})"
      )
  return "\n".join(lines)


def format_search(s: dict) -> str:
  lines = [
    f"largest global batch on {s['topology']} ({s['num_devices']} devices):",
    "",
    "| remat | data | fsdp | largest batch | first failing | per device at largest | compile s |",
    "|---|---|---|---|---|---|---|",
  ]
  for r in s["frontier"]:
    lines.append(
      f"| {r['remat']} | {r['data']} | {r['fsdp']} | {r['max_batch']} | "
      f"{r['first_failing_batch'] or '-'} | {_gib(r['per_chip_bytes'])} | {r['compile_seconds']} |"
    )
  bst = s["best"]
  lines.append(
    f"\nbest: batch {bst['max_batch']} (remat={bst['remat']}, data={bst['data']}, fsdp={bst['fsdp']})"
  )
  return "\n".join(lines)


def format_smallest(s: dict) -> str:
  lines = [f"smallest {s['generation']} slice: {s['smallest'] or 'none of those tried'}"]
  for t in s["tried"]:
    lines.append(
      f"  {t['topology']}: {'fits' if t['fits'] else 'does not fit'}"
      + (f", {_gib(t.get('per_chip_bytes'))}" if t.get("per_chip_bytes") else "")
      + (f" ({t['why']})" if t.get("why") else "")
    )
  if s["report"]:
    lines += ["", format_report(s["report"])]
  return "\n".join(lines)


# --------------------------------------------------------------------- CLI --


def _cpu_devices_wanted(argv: list[str]) -> int | None:
  for i, a in enumerate(argv):
    v = (
      a.split("=", 1)[1]
      if a.startswith("--topology=")
      else (argv[i + 1] if a == "--topology" and i + 1 < len(argv) else None)
    )
    if v and v.startswith("cpu:"):
      return int(v[4:])
  return None


def main(argv):
  from absl import flags

  fl = flags.FLAGS
  if len(argv) > 1:
    raise SystemExit(f"unexpected arguments: {argv[1:]}")
  config = train._CONFIG.value  # train.py's --config flag: same files, same locking.
  log = lambda *a: print(*a, file=sys.stderr, flush=True)
  decode = decode_cost(fl.decode_rate_json)
  kw = dict(
    mfu=fl.mfu,
    decode=decode,
    epoch_clips=fl.epoch_clips or None,
    hbm_bytes=int(fl.hbm_gib * GiB) if fl.hbm_gib else None,
  )
  try:
    if fl.smallest:
      result = smallest(config, fl.smallest, log=log, **kw)
      text = format_smallest(result)
    else:
      if not fl.topology:
        raise PlanError("--topology is required (or --smallest GENERATION)")
      target = make_target(fl.topology)
      if fl.search:
        result = search(config, target, log=log, max_batch=fl.max_batch, **kw)
        text = format_search(result)
      else:
        result = plan(
          config, target, predict=fl.predict, unrolled_costs=fl.unrolled_costs, log=log, **kw
        )
        text = format_report(result)
  except PlanError as e:
    print(f"plan: {e}", file=sys.stderr)
    return 2
  print(text)
  if fl.json:
    with open(fl.json, "w") as f:
      json.dump(result, f, indent=1, default=str)
  if not fl.search and not fl.smallest and not result.get("fits", True):
    return 1
  return 0


def run_cli():
  n = _cpu_devices_wanted(sys.argv)
  if n:  # Must happen before the CPU backend starts.
    jax.config.update("jax_num_cpu_devices", n)
  from absl import app, flags

  flags.DEFINE_string("topology", None, "v5e:2x4, v4:2x2x2, ..., cpu:N, or gpu.")
  flags.DEFINE_string("json", None, "Write the report as JSON here.")
  flags.DEFINE_float("mfu", 0.4, "Model FLOPs utilisation assumed for time predictions.")
  flags.DEFINE_bool("search", False, "Largest batch over remat and (data, fsdp) splits.")
  flags.DEFINE_string(
    "smallest", None, "Smallest slice of this generation that fits (v5e, v4, ...)."
  )
  flags.DEFINE_bool("predict", True, "Also compile the eval predict step(s).")
  flags.DEFINE_bool(
    "unrolled_costs",
    False,
    "Exact compiled FLOPs and bytes for scanned models: also compile an unrolled copy (slow).",
  )
  flags.DEFINE_integer("max_batch", 4096, "--search: largest global batch tried.")
  flags.DEFINE_integer("epoch_clips", 0, "Training clips per epoch (default: known datasets).")
  flags.DEFINE_float("hbm_gib", 0.0, "Memory per device to plan against (cpu:N, unknown GPUs).")
  flags.DEFINE_string("decode_rate_json", None, "benchmarks/bench_decode.py --out file.")
  flags.mark_flag_as_required("config")
  app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
  run_cli()
