"""CPU forward benchmark: Flax InternVideo2 (jitted) vs the PyTorch reference (eager).

  python benchmarks/bench_internvideo2.py [--variant small] [--frames 8] [--img 224]
      [--batch 1] [--threads N] [--repeats 5] [--attention default xla]
      [--torch naive sdpa] [--out results.json]

Both sides run the same random weights, float32, batch 1 by default, on the
same CPU cores with the same thread count:
  * the process is pinned to the first N CPUs (os.sched_setaffinity) before
    jax or torch is imported; XLA sizes its intra-op pool from the schedulable
    CPUs, and `--xla_cpu_multi_thread_eigen` is left on (off for N = 1);
  * torch.set_num_threads(N) and set_num_interop_threads(1); OMP_WAIT_POLICY=PASSIVE so
    that torch's idle OpenMP workers do not spin on the cores XLA is using.
The PyTorch side is the test reference in eval mode under torch.no_grad(),
timed twice: with the non-fused attention of the spec (q*scale @ k^T, softmax,
@ v: the original InternVideo2's CPU path, flash-attn being CUDA-only), and
with F.scaled_dot_product_attention, torch's fused CPU kernel and the stronger
baseline. The Flax side is timed with the default attention (chunked on CPU)
and with the generic XLA path of jax.nn.dot_product_attention. All are warmed
up (compile / first run), then timed round-robin `--repeats` times; medians
are reported.

FLOPs are counted analytically (multiply-add = 2 FLOPs; norms, softmax and
GELU are ignored), per clip, N = 1 + T*(S/p)^2 tokens, C width, H MLP width:
  patch embed  2*(N-1)*(3*p*p*tubelet)*C
  per block    2*N*C*3C (qkv) + 4*N^2*C (scores, AV) + 2*N*C^2 (proj) + 4*N*C*H (MLP)
  pool         2*C^2 (q) + 4*N*C^2 (k, v) + 4*N*C (scores, AV) + 2*C*768 (proj)
  head         2*768*outputs
and cross-checked against XLA's cost_analysis. The matmul peak is the best of
a large float32 matmul in NumPy and in jitted JAX on the same threads.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time


def _pin(threads: int) -> int:
  cpus = sorted(os.sched_getaffinity(0))
  threads = min(threads or len(cpus), len(cpus))
  os.sched_setaffinity(0, cpus[:threads])
  flags = os.environ.get("XLA_FLAGS", "")
  eigen = "true" if threads > 1 else "false"
  os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen={eigen}".strip()
  for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = str(threads)
  # Both frameworks share the cores, alternating: torch's OpenMP workers would otherwise
  # spin-wait after each op and steal the cores from XLA's threads (measured: Flax 1.72 s ->
  # 1.16 s per clip, torch unchanged at 1.18-1.23 s). Passive waiting costs torch nothing here.
  os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
  return threads


def forward_flops(c, depth, hidden, frames, img, patch=14, tubelet=1, outputs=1, pool_dim=768):
  n_patch = (frames // tubelet) * (img // patch) ** 2
  n = 1 + n_patch
  embed = 2 * n_patch * (3 * patch * patch * tubelet) * c
  block = 2 * n * c * 3 * c + 4 * n * n * c + 2 * n * c * c + 4 * n * c * hidden
  pool = 2 * c * c + 4 * n * c * c + 4 * n * c + 2 * c * pool_dim
  return embed + depth * block + pool + 2 * pool_dim * outputs


def _time(fn, repeats):
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times), times


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--variant", default="small")
  ap.add_argument("--frames", type=int, default=8)
  ap.add_argument("--img", type=int, default=224)
  ap.add_argument("--batch", type=int, default=1)
  ap.add_argument("--threads", type=int, default=0, help="0 = all schedulable CPUs")
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--matmul-size", type=int, default=2048)
  ap.add_argument(
    "--attention",
    nargs="+",
    default=["default", "xla"],
    choices=["chunked", "default", "xla"],
    help="Flax attention_impl values to time ('default' = None: chunked on CPU)",
  )
  ap.add_argument(
    "--torch",
    nargs="+",
    default=["naive", "sdpa"],
    choices=["naive", "sdpa"],
    help="PyTorch reference attention: the spec's non-fused path and/or SDPA",
  )
  ap.add_argument(
    "--schedule",
    default="round-robin",
    choices=["round-robin", "blocks"],
    help="interleave the sides each repeat, or time each side's repeats in a block",
  )
  ap.add_argument("--out", help="write the numbers as JSON here")
  a = ap.parse_args(argv)
  threads = _pin(a.threads)

  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch

  sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
  from torch_ref.internvideo2_ref import InternVideo2Ref, randomize_, state_dict_numpy

  from converters import internvideo2 as conv
  from internvqa_jax.models import internvideo2 as iv2

  torch.set_num_threads(threads)
  torch.set_num_interop_threads(1)

  model = iv2.make(a.variant, num_frames=a.frames, img_size=a.img)
  refs = {}
  for name in ["sdpa", "naive"]:  # Same weights; the sdpa copy is randomised first.
    refs[name] = InternVideo2Ref(
      model.embed_dim,
      model.depth,
      model.num_heads,
      model.mlp_hidden,
      model.num_frames,
      model.img_size,
      gelu="tanh",
      use_sdpa=name == "sdpa",
    ).eval()
  randomize_(refs["sdpa"], 0)
  refs["naive"].load_state_dict(refs["sdpa"].state_dict())
  ref = refs["sdpa"]
  params = jax.device_put(
    conv.torch_state_dict_to_params(state_dict_numpy(ref), iv2.model_kwargs(model))
  )
  video = np.random.default_rng(0).standard_normal(model.input_shape(a.batch)).astype(np.float32)
  video_t = torch.from_numpy(video).permute(0, 4, 1, 2, 3).contiguous()
  video_j = jax.device_put(video)

  def compile_flax(impl):
    m = model.clone(attention_impl=impl)
    t = time.perf_counter()
    compiled = jax.jit(lambda p, v: m.apply({"params": p}, v)).lower(params, video_j).compile()
    return compiled, time.perf_counter() - t

  def run_torch(name):
    with torch.no_grad():
      return refs[name](video_t)

  out_t = run_torch("sdpa")
  torch_diff = float(np.abs(run_torch("naive")["score"].numpy() - out_t["score"].numpy()).max())
  for name in a.torch:
    run_torch(name)  # Warm-up.
  flax_runs, runners = {}, {}
  for impl in a.attention:
    impl = None if impl == "default" else impl
    compiled, compile_s = compile_flax(impl)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    out_j = compiled(params, video_j)  # Warm-up, and a check that both compute the same.
    diff = float(np.abs(np.asarray(out_j["score"]) - out_t["score"].numpy()).max())
    runners[impl or "default"] = functools.partial(
      lambda c: jax.block_until_ready(c(params, video_j)), compiled
    )
    runners[impl or "default"]()
    flax_runs[impl or "default"] = {
      "compile_s": compile_s,
      "score_max_abs_diff_vs_torch": diff,
      "xla_flops": float(cost.get("flops", "nan")) if cost else None,
    }
  for name in a.torch:
    runners["torch_" + name] = functools.partial(run_torch, name)
  times = {k: [] for k in runners}
  if a.schedule == "round-robin":  # Load changes on a shared machine hit every side alike.
    for _ in range(a.repeats):
      for k, run in runners.items():
        t = time.perf_counter()
        run()
        times[k].append(time.perf_counter() - t)
  else:  # One side at a time, after one more warm-up run: no side runs in another's wake.
    for k, run in runners.items():
      run()
      times[k] = _time(run, a.repeats)[1]
  for k in flax_runs:
    flax_runs[k].update(s=statistics.median(times[k]), times=times[k])
  torch_s = {
    k[len("torch_") :]: statistics.median(v) for k, v in times.items() if k.startswith("torch_")
  }
  torch_all = {k[len("torch_") :]: v for k, v in times.items() if k.startswith("torch_")}

  # Matmul peak on the same threads.
  m = a.matmul_size
  x = np.random.default_rng(1).standard_normal((m, m)).astype(np.float32)
  # Best of 5, not the median: a peak is the fastest the cores were seen to go.
  np_s = min(_time(lambda: x @ x, 5)[1])
  xj = jax.device_put(x)
  mm = jax.jit(jnp.dot)
  jax.block_until_ready(mm(xj, xj))
  jmm_s = min(_time(lambda: jax.block_until_ready(mm(xj, xj)), 5)[1])
  peak = 2 * m**3 / min(np_s, jmm_s) / 1e9

  flops = a.batch * forward_flops(model.embed_dim, model.depth, model.mlp_hidden, a.frames, a.img)
  rows = []
  labels = {
    "default": "Flax jit, attention_impl=None (chunked on CPU)",
    "chunked": "Flax jit, attention_impl='chunked'",
    "xla": "Flax jit, attention_impl='xla' (generic jax.nn.dot_product_attention)",
    "torch_naive": "PyTorch eager, reference (non-fused attention)",
    "torch_sdpa": "PyTorch eager, SDPA attention",
  }
  named = [(labels[k], v["s"]) for k, v in flax_runs.items()]
  named += [(labels["torch_" + k], v) for k, v in torch_s.items()]
  for name, s in named:
    gflops = flops / s / 1e9
    rows.append(
      {
        "impl": name,
        "s_per_clip": s / a.batch,
        "gflops": gflops,
        "peak_fraction": gflops / peak,
        **{f"speedup_vs_torch_{k}": v / s for k, v in torch_s.items()},
      }
    )

  print(
    f"\nInternVideo2-{a.variant} forward, {a.batch}x{a.frames}x{a.img}x{a.img}, float32, "
    f"{threads} thread(s), median of {a.repeats}\n"
  )
  vs = list(torch_s)
  print(
    "| implementation | s / clip | GFLOP/s | fraction of matmul peak | "
    + " | ".join(f"speedup vs PyTorch {k}" for k in vs)
    + " |"
  )
  print("|---|---|---|---|" + "---|" * len(vs))
  for r in rows:
    print(
      f"| {r['impl']} | {r['s_per_clip']:.3f} | {r['gflops']:.1f} | "
      f"{r['peak_fraction']:.2f} | "
      + " | ".join(f"{r['speedup_vs_torch_' + k]:.2f}x" for k in vs)
      + " |"
    )
  print(
    f"\nA clip at the matmul peak would take {flops / a.batch / peak / 1e9:.3f} s; PyTorch "
    f"reference non-fused vs SDPA score max abs diff {torch_diff:.2e}"
  )
  # cost_analysis counts a while loop's body once, so only the unchunked
  # program is a fair cross-check of the analytic count.
  xla = flax_runs.get("xla", {}).get("xla_flops") or float("nan")
  print(
    f"analytic FLOPs/clip {flops / a.batch / 1e9:.2f} G; XLA cost_analysis "
    f"(attention_impl='xla') {xla / a.batch / 1e9:.2f} G"
  )
  print(
    f"float32 matmul peak ({m}^3): {peak:.1f} GFLOP/s (numpy {2 * m**3 / np_s / 1e9:.1f}, "
    f"jax {2 * m**3 / jmm_s / 1e9:.1f})"
  )
  for k, v in flax_runs.items():
    print(
      f"attention_impl={k}: XLA compile {v['compile_s']:.1f} s, score max abs diff vs "
      f"torch {v['score_max_abs_diff_vs_torch']:.2e}"
    )

  result = {
    "variant": a.variant,
    "frames": a.frames,
    "img": a.img,
    "batch": a.batch,
    "threads": threads,
    "repeats": a.repeats,
    "rows": rows,
    "flax": flax_runs,
    "torch_times": torch_all,
    "torch_naive_vs_sdpa_score_diff": torch_diff,
    "flops_per_clip": flops / a.batch,
    "s_per_clip_at_peak": flops / a.batch / peak / 1e9,
    "matmul_peak_gflops": peak,
    "jax": jax.__version__,
    "torch": torch.__version__,
  }
  if a.out:
    with open(a.out, "w") as f:
      json.dump(result, f, indent=2)
  return result


if __name__ == "__main__":
  main()
