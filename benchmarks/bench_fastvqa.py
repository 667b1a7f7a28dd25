"""Forward time of FAST-VQA in Flax (jitted) vs the PyTorch reference, on CPU.

  python benchmarks/bench_fastvqa.py                       # FAST-VQA-B, one 32x224x224 clip
  python benchmarks/bench_fastvqa.py --runs 10 --out bench_fastvqa.json
  taskset -c 0-3 python benchmarks/bench_fastvqa.py        # pin both frameworks to 4 cores

Both frameworks get the same weights (random, converted), the same input and
the same CPU threads: torch.set_num_threads(len(sched_getaffinity)) and XLA's
CPU thread pool, which also follows the process affinity. Reports medians (and
minima) over `--runs` timed calls after `--warmup` calls, and the max-abs
difference between the two outputs as a sanity check. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # For tests.torch_ref.


def _time(fn, runs: int, warmup: int) -> list[float]:
  for _ in range(warmup):
    fn()
  out = []
  for _ in range(runs):
    t = time.perf_counter()
    fn()
    out.append(time.perf_counter() - t)
  return out


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--variant", default="fast_vqa_b")
  ap.add_argument(
    "--shape",
    type=int,
    nargs=3,
    default=None,
    metavar=("T", "H", "W"),
    help="clip size (default: the variant's nominal input)",
  )
  ap.add_argument("--batch", type=int, default=1)
  ap.add_argument("--runs", type=int, default=5)
  ap.add_argument("--warmup", type=int, default=1)
  ap.add_argument(
    "--dtype",
    default="float32",
    choices=["float32", "bfloat16"],
    help="Flax compute dtype (the reference always runs float32)",
  )
  ap.add_argument("--skip-torch", action="store_true")
  ap.add_argument("--out", help="also write the results as JSON here")
  a = ap.parse_args(argv)
  # torch's idle OpenMP workers would spin on the cores XLA uses between the alternating runs.
  os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

  import jax
  import jax.numpy as jnp
  import torch

  from converters import fastvqa as conv
  from internvqa_jax.models import fastvqa
  from tests.torch_ref import fastvqa_ref as ref

  threads = len(os.sched_getaffinity(0))
  torch.set_num_threads(threads)
  shape = tuple(a.shape) if a.shape else fastvqa.INPUT_SIZES[a.variant]
  model = fastvqa.make(a.variant, dtype=a.dtype)
  tm = ref.randomize_(ref.FastVQARef.from_model_kwargs(fastvqa.model_kwargs(model)).eval(), seed=0)
  params = conv.torch_state_dict_to_params(
    {k: v.numpy() for k, v in tm.state_dict().items()}, fastvqa.model_kwargs(model)
  )
  params = jax.device_put(params)
  x = np.random.default_rng(0).standard_normal((a.batch, 3) + shape).astype(np.float32)
  x_jax = jax.device_put(jnp.asarray(x.transpose(0, 2, 3, 4, 1)))

  fwd = jax.jit(lambda p, v: model.apply({"params": p}, v)["map"])
  t = time.perf_counter()
  compiled = fwd.lower(params, x_jax).compile()
  compile_s = time.perf_counter() - t
  run_flax = lambda: compiled(params, x_jax).block_until_ready()
  flax_t = _time(run_flax, a.runs, a.warmup)
  rows = [(f"Flax (jit, {a.dtype})", flax_t)]

  diff = None
  if not a.skip_torch:
    xt = torch.from_numpy(x)

    def run_torch():
      with torch.no_grad():
        return tm(xt)[0]

    torch_t = _time(run_torch, a.runs, a.warmup)
    rows.append(("PyTorch reference (eval, no_grad, float32)", torch_t))
    diff = float(np.abs(np.asarray(run_flax()) - run_torch().numpy()[:, 0]).max())

  print(
    f"\nFAST-VQA forward, variant {a.variant}, input {a.batch}x{shape[0]}x{shape[1]}x{shape[2]}, "
    f"{threads} CPU threads ({platform.processor() or platform.machine()}), "
    f"jax {jax.__version__}, torch {torch.__version__}\n"
  )
  print("| implementation | median s | min s | runs |")
  print("|---|---|---|---|")
  for name, ts in rows:
    print(f"| {name} | {statistics.median(ts):.3f} | {min(ts):.3f} | {len(ts)} |")
  if len(rows) == 2:
    speedup = statistics.median(rows[1][1]) / statistics.median(rows[0][1])
    print(
      f"\nFlax speed-up over PyTorch (medians): {speedup:.2f}x; "
      f"Flax compile {compile_s:.1f} s; max |map difference| {diff:.2e}"
    )
  else:
    print(f"\nFlax compile {compile_s:.1f} s")
  if a.out:
    result = {
      "variant": a.variant,
      "shape": [a.batch, *shape],
      "threads": threads,
      "dtype": a.dtype,
      "flax_s": flax_t,
      "flax_compile_s": compile_s,
      "torch_s": rows[1][1] if len(rows) == 2 else None,
      "max_abs_map_diff": diff,
      "jax": jax.__version__,
      "torch": torch.__version__,
    }
    with open(a.out, "w") as f:
      json.dump(result, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
