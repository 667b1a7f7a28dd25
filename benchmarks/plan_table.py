"""The planner's Table I table: each config on the smallest fitting slice of each TPU generation.

  python benchmarks/plan_table.py --out /tmp/plan_table.jsonl [--configs a,b] [--gens v5e,v4,v5p]
  python benchmarks/plan_table.py --out /tmp/plan_table.jsonl --markdown   # print the table

Each (config, generation) is one `plan.smallest` search (compiles from the smallest slice up);
rows are appended to --out as they finish, so an interrupted run keeps what it has, and rows
already there are not recomputed. Full-size compiles take minutes each on a small host.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from internvqa_jax import plan

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
# name -> (config file, argument, overrides); the teachers' finetune rows use the 1B config.
CONFIGS = {
  "internvqa_small_bvihd": ("configs/internvqa_small_bvihd.py", None, {}),
  "internvqa_base_bvihd": ("configs/internvqa_base_bvihd.py", None, {}),
  "fastvqa_bvihd": ("configs/fastvqa_bvihd.py", None, {}),
  "internvqa_dist_small_bvihd": ("configs/internvqa_dist_small_bvihd.py", None, {}),
  "internvqa_dist_base_bvihd": ("configs/internvqa_dist_base_bvihd.py", None, {}),
  "fastvqa_dist_bvihd": ("configs/fastvqa_dist_bvihd.py", None, {}),
  "internvqa_small_waterloo": ("configs/internvqa_small_waterloo.py", None, {}),
  "internvqa_base_waterloo": ("configs/internvqa_base_waterloo.py", None, {}),
  "fastvqa_waterloo": ("configs/fastvqa_waterloo.py", None, {}),
  "internvqa_dist_small_waterloo": ("configs/internvqa_dist_small_waterloo.py", None, {}),
  "internvqa_dist_base_waterloo": ("configs/internvqa_dist_base_waterloo.py", None, {}),
  "fastvqa_dist_waterloo": ("configs/fastvqa_dist_waterloo.py", None, {}),
  "teacher_1b_finetune_bvihd": ("configs/internvqa_1b_bvihd.py", None, {}),
  "teacher_6b_finetune_bvihd": ("configs/internvqa_1b_bvihd.py", None, {"variant": "6b"}),
  "internvqa_dist_small_bvihd_authors_code": (
    "configs/internvqa_dist_small_bvihd.py",
    "preset=authors_code",
    {},
  ),
}


def load(name: str):
  path, arg, over = CONFIGS[name]
  spec = importlib.util.spec_from_file_location("cfg", os.path.join(REPO, path))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config(arg)
  if "variant" in over:
    with c.unlocked():
      c.model.variant = over["variant"]
  return c


def row(name: str, gen: str) -> dict:
  s = plan.smallest(load(name), gen, predict=False, log=lambda *a: print(*a, flush=True))
  r = s["report"]
  out = dict(config=name, generation=gen, smallest=s["smallest"], tried=s["tried"])
  if r:
    out.update(
      per_chip_gib=round(r["per_chip_bytes"]["total"] / 2**30, 2),
      temporaries_gib=round(r["per_chip_bytes"]["temporaries"] / 2**30, 2),
      model_tflop_per_step=round(r["model_flops_per_step"] / 1e12, 3),
      compiled_tflop_per_chip=round(r["compiled_flops_per_chip"] / 1e12, 3),
      bytes_accessed_gb=round(r["bytes_accessed_per_chip"] / 1e9, 2),
      bound=r["roofline"]["bound"],
      epoch_seconds_at_40=r["predicted_epoch_seconds"],
      host_cores=r["input"].get("host_cores"),
      compile_seconds=r["compile_seconds"],
    )
  return out


def markdown(rows: list[dict]) -> str:
  lines = [
    "| config | generation | smallest slice | per-chip GiB | step TFLOP | epoch at 40% MFU | host cores |",
    "|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    if r.get("smallest"):
      lines.append(
        f"| {r['config']} | {r['generation']} | {r['smallest']} | {r['per_chip_gib']} | "
        f"{r['model_tflop_per_step']} | {r['epoch_seconds_at_40']:.0f} s | {r['host_cores']} |"
      )
    else:
      lines.append(f"| {r['config']} | {r['generation']} | none fits ({r['tried']}) | | | | |")
  return "\n".join(lines)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--out", required=True)
  ap.add_argument("--configs", default=",".join(CONFIGS))
  ap.add_argument("--gens", default="v5e,v4,v5p")
  ap.add_argument("--markdown", action="store_true")
  a = ap.parse_args()
  done = []
  if os.path.exists(a.out):
    with open(a.out) as f:
      done = [json.loads(line) for line in f if line.strip()]
  if a.markdown:
    print(markdown(done))
    return
  have = {(r["config"], r["generation"]) for r in done}
  for name in a.configs.split(","):
    for gen in a.gens.split(","):
      if (name, gen) in have:
        continue
      print(f"== {name} on {gen}", flush=True)
      r = row(name, gen)
      with open(a.out, "a") as f:
        f.write(json.dumps(r) + "\n")
      print(json.dumps(r), flush=True)


if __name__ == "__main__":
  main()
