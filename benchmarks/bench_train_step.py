"""The real train step on whatever backend is present: step time, clips/s, MFU, peak memory.

Runs the step `internvqa_jax.train` runs (train.build_run), with freshly
initialised parameters (no checkpoint) and random batches (no dataset), for
Table I configs:

  finetune_small    configs/internvqa_small_bvihd.py   (InternVideo2-S, all trainable)
  finetune_base     configs/internvqa_base_bvihd.py    (InternVideo2-B)
  distill_1b_small  configs/internvqa_dist_small_bvihd.py (1B teacher 'paper' -> S)

  python benchmarks/bench_train_step.py --runs finetune_small,finetune_base,distill_1b_small \
      --batch 8 --out results.json
  # On a 2-core CPU: small clips, few steps
  python benchmarks/bench_train_step.py --runs finetune_small --batch 2 --frames 2 --img 112 --steps 3

MFU = model FLOPs of the step (internvqa_jax.flop_count: matmuls of forward
and backward where gradients flow, remat not counted) / step time / (devices x
the chip's peak bf16 FLOP/s from internvqa_jax.chips); no peak is known for
CPUs. Peak memory is device.memory_stats()['peak_bytes_in_use'] where the
backend reports it (GPU, TPU).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from internvqa_jax import chips, plan, sharding, train

RUNS = {
  "finetune_small": ("configs/internvqa_small_bvihd.py", ""),
  "finetune_base": ("configs/internvqa_base_bvihd.py", ""),
  "distill_1b_small": ("configs/internvqa_dist_small_bvihd.py", "preset=paper"),
}


def load_config(name: str, batch: int, frames: int | None, img: int | None):
  path, arg = RUNS[name]
  spec = importlib.util.spec_from_file_location(
    "cfg", os.path.join(os.path.dirname(__file__), "..", path)
  )
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config(arg or None)
  with c.unlocked():
    c.batch_size = batch
    for role in ("model", "teacher", "student"):
      if role not in c:
        continue
      c[role].init = ""  # Fresh parameters: speed does not depend on their values.
      if frames:
        c[role].kwargs.num_frames = frames
      if img:
        c[role].kwargs.img_size = img
  return c


def random_batch(run, batch_size: int, mesh):
  """(abstract shapes, a global batch of random clips and labels) for `run`'s train step."""
  shapes = plan.abstract_batch(run.parts, batch_size, mesh)
  rng = np.random.default_rng(0)
  host = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in shapes.items()}
  host["label"] = rng.uniform(0.2, 0.9, batch_size).astype(np.float32)
  return shapes, sharding.make_global_batch(host, mesh)


def bench(name: str, args) -> dict:
  config = load_config(name, args.batch, args.frames, args.img)
  n = jax.device_count()
  if config.batch_size % n:
    raise SystemExit(f"--batch {config.batch_size} must be divisible by the {n} devices")
  mesh = sharding.make_mesh(data=config.mesh.data, fsdp=config.mesh.fsdp)
  t0 = time.perf_counter()
  run = train.build_run(config, mesh, jax.random.key(0), log=lambda *a: None)
  init_s = time.perf_counter() - t0
  shapes, batch = random_batch(run, config.batch_size, mesh)
  key = jax.random.key(1)
  state = run.state
  t0 = time.perf_counter()
  state, m = run.train_step(state, run.frozen, batch, key)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t0
  for _ in range(args.warmup):
    state, m = run.train_step(state, run.frozen, batch, key)
  jax.block_until_ready(m)
  times = []
  for _ in range(args.steps):
    t0 = time.perf_counter()
    state, m = run.train_step(state, run.frozen, batch, key)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  step_s = float(np.median(times))
  abstract_state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
  mflops = plan.model_flops(run, abstract_state, run.frozen, batch, key)
  dev = jax.devices()[0]
  chip = chips.for_device_kind(dev.device_kind)
  peak = chip.per_device(1)[1] if chip else None
  stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
  return dict(
    run=name,
    backend=jax.default_backend(),
    device_kind=dev.device_kind,
    devices=n,
    batch=config.batch_size,
    input_shape={k: list(v.shape) for k, v in shapes.items()},
    loss=float(m["loss"]),
    init_seconds=round(init_s, 2),
    first_step_seconds=round(compile_s, 2),
    step_seconds=round(step_s, 4),
    step_seconds_all=[round(t, 4) for t in times],
    clips_per_s=round(config.batch_size / step_s, 3),
    model_flops_per_step=mflops,
    model_tflops_per_s=round(mflops / step_s / 1e12, 3),
    mfu=None if peak is None else round(mflops / step_s / (n * peak), 4),
    peak_bytes_in_use=(stats or {}).get("peak_bytes_in_use"),
  )


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--runs", default="finetune_small,finetune_base,distill_1b_small")
  ap.add_argument("--batch", type=int, default=8, help="global batch (divisible by devices)")
  ap.add_argument("--frames", type=int, default=None, help="override frames per clip")
  ap.add_argument("--img", type=int, default=None, help="override the clip size (multiple of 14)")
  ap.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
  ap.add_argument("--warmup", type=int, default=1, help="untimed steps after the first")
  ap.add_argument("--out", default=None, help="write the rows as JSON")
  args = ap.parse_args()
  rows = []
  print(
    "| run | backend | devices | batch | input | step s | clips/s | model TFLOP/s | MFU | peak GiB |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|")
  for name in args.runs.split(","):
    if name not in RUNS:
      raise SystemExit(f"--runs: unknown run {name!r}; known: {sorted(RUNS)}")
    r = bench(name, args)
    rows.append(r)
    peak = r["peak_bytes_in_use"]
    print(
      f"| {name} | {r['backend']} ({r['device_kind']}) | {r['devices']} | {r['batch']} | "
      f"{next(iter(r['input_shape'].values()))} | {r['step_seconds']:.3f} | {r['clips_per_s']:.2f} | "
      f"{r['model_tflops_per_s']:.3f} | {r['mfu'] if r['mfu'] is not None else '-'} | "
      f"{'-' if peak is None else f'{peak / 2**30:.2f}'} |",
      flush=True,
    )
  if args.out:
    with open(args.out, "w") as f:
      json.dump(rows, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
