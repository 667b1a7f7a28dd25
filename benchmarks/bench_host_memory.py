"""malloc huge pages on and off, side by side: the demo's train steps on the CPU backend.

For each setting the script starts a child process (glibc reads GLIBC_TUNABLES
only at process start) that builds a stage of configs/demo.py with
train.build_run, the step the trainer runs, with fresh parameters and a random
batch, and times --steps steps after compiling. The children alternate
(off, on, off, on, ...) so that both settings meet the same phases of the
machine. Reported per step: minor page faults, user and system CPU seconds,
wall seconds; and the on/off ratios of the medians.

  python benchmarks/bench_host_memory.py --stages student,distill --repeats 3 --out hm.json

See internvqa_jax/host_memory.py for why, docs/benchmarks.md for results.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench_train_step import random_batch  # This script's folder is on sys.path.

from internvqa_jax import config_files, sharding, train

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SETTINGS = {"off": "", "on": "glibc.malloc.hugetlb=1"}


def demo_stage(name: str):
  demo = config_files.load_by_path(os.path.join(REPO, "configs", "demo.py"))
  c = demo.get_config().stage_configs[name]
  with c.unlocked():
    for role in ("model", "teacher", "student"):
      if role in c:
        c[role].init = ""  # Fresh parameters: speed does not depend on their values.
  return c


def child(stage: str, steps: int) -> dict:
  """One setting, in this process: per-step faults and CPU of the stage's train step."""
  config = demo_stage(stage)
  mesh = sharding.make_mesh(data=1, fsdp=1)
  run = train.build_run(config, mesh, jax.random.key(0), log=lambda *a: None)
  _, batch = random_batch(run, config.batch_size, mesh)
  key = jax.random.key(1)
  state = run.state
  for _ in range(3):  # Compile and warm up.
    state, m = run.train_step(state, run.frozen, batch, key)
  jax.block_until_ready(m)
  r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
  for _ in range(steps):
    state, m = run.train_step(state, run.frozen, batch, key)
  jax.block_until_ready(m)
  wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
  return dict(
    faults=(r1.ru_minflt - r0.ru_minflt) / steps,
    user_s=(r1.ru_utime - r0.ru_utime) / steps,
    system_s=(r1.ru_stime - r0.ru_stime) / steps,
    wall_s=wall / steps,
    loss=float(m["loss"]),
  )


def spawn(stage: str, setting: str, steps: int) -> dict:
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  env["JAX_PLATFORMS"] = "cpu"
  if SETTINGS[setting]:
    env["GLIBC_TUNABLES"] = SETTINGS[setting]
  cmd = [sys.executable, __file__, "--child", stage, "--steps", str(steps)]
  out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
  if out.returncode:
    raise SystemExit(f"{stage} ({setting}) failed:\n{out.stderr[-3000:]}")
  return json.loads(out.stdout.splitlines()[-1])


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--stages", default="student,distill", help="stages of configs/demo.py")
  ap.add_argument("--steps", type=int, default=30, help="timed steps per child")
  ap.add_argument("--repeats", type=int, default=2, help="children per setting, alternating")
  ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
  ap.add_argument("--out", default=None, help="write the rows as JSON")
  args = ap.parse_args()
  if args.child:
    print(json.dumps(child(args.child, args.steps)))
    return
  rows = []
  print("| stage | huge pages | faults/step | user s/step | system s/step | wall s/step |")
  print("|---|---|---|---|---|---|")
  for stage in args.stages.split(","):
    runs = {s: [] for s in SETTINGS}
    for _ in range(args.repeats):
      for setting in SETTINGS:
        runs[setting].append(spawn(stage, setting, args.steps))
    med = {s: {k: float(np.median([r[k] for r in rs])) for k in rs[0]} for s, rs in runs.items()}
    for s in SETTINGS:
      m = med[s]
      print(
        f"| {stage} | {s} | {m['faults']:.0f} | {m['user_s']:.3f} | {m['system_s']:.3f} | "
        f"{m['wall_s']:.3f} |",
        flush=True,
      )
    ratio = {k: med["on"][k] / med["off"][k] for k in ("faults", "system_s", "wall_s")}
    print(
      f"| {stage} | on / off | {ratio['faults']:.3f} | | {ratio['system_s']:.3f} | "
      f"{ratio['wall_s']:.3f} |"
    )
    rows.append(dict(stage=stage, steps=args.steps, runs=runs, median=med, ratio_on_off=ratio))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(rows, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
