"""The planner's Table I table: each config on the smallest fitting slice of each TPU generation.

  python benchmarks/plan_table.py --out /tmp/plan_table.jsonl [--configs a,b] [--gens v5e,v4,v5p]
  python benchmarks/plan_table.py --out /tmp/plan_table.jsonl --markdown   # print the table

Each (config, generation) is one `plan.smallest` search (compiles from the smallest slice up);
rows are appended to --out as they finish, so an interrupted run keeps what it has, and rows
already there are not recomputed. Full-size compiles take minutes each on a small host.

A Waterloo IVC 4K config trains the same step as its BVI-HD twin (same models, batch, mesh and
optimizer; only the schedule's step counts differ), so its row is derived from the twin's
compile: the same slice, memory and FLOPs, with Waterloo's epoch (plan.DATASETS) at the same
clips/s and the input cost scaled by its frame size. Such rows name their twin in `derived_from`.
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


# Waterloo config -> its BVI-HD twin (the identical train step; module docstring).
TWINS = {
  "internvqa_small_waterloo": "internvqa_small_bvihd",
  "internvqa_base_waterloo": "internvqa_base_bvihd",
  "fastvqa_waterloo": "fastvqa_bvihd",
  "internvqa_dist_small_waterloo": "internvqa_dist_small_bvihd",
  "internvqa_dist_base_waterloo": "internvqa_dist_base_bvihd",
  "fastvqa_dist_waterloo": "fastvqa_dist_bvihd",
}


def derived_row(name: str, twin: dict) -> dict:
  """`name`'s row from its BVI-HD twin's: same slice, memory, FLOPs and clips/s."""
  out = dict(twin, config=name, derived_from=twin["config"])
  if twin.get("smallest"):
    own, theirs = load(name).data.dataset, load(twin["config"]).data.dataset
    a, b = plan.DATASETS[own], plan.DATASETS[theirs]
    out["epoch_seconds_at_40"] = a["epoch_clips"] / twin["clips_per_s_at_40"]
    pixels = (a["width"] * a["height"]) / (b["width"] * b["height"])
    out["host_cores"] = round(twin["host_cores"] * pixels, 1)
  return out


def row(name: str, gen: str) -> dict:
  s = plan.smallest(load(name), gen, predict=False, log=lambda *a: print(*a, flush=True))
  r = s["report"]
  out = dict(config=name, generation=gen, smallest=s["smallest"], tried=s["tried"])
  if r:
    out.update(
      clips_per_s_at_40=r["predicted_clips_per_s"],
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


def _cell(r: dict | None) -> str:
  if r is None:
    return "not run"
  if not r.get("smallest"):
    compiled = [t for t in r["tried"] if t.get("per_chip_bytes")]
    text = "none fits"
    if compiled:
      t = compiled[-1]
      text += f" ({t['topology'].split(':')[1]} needs {t['per_chip_bytes'] / 2**30:.1f} GiB"
      text += ")" if t is r["tried"][-1] else f"; larger: {r['tried'][-1].get('why', 'no fit')})"
    return text
  e = r["epoch_seconds_at_40"]
  epoch = f"{e:.1f}" if e < 10 else f"{e:.0f}"
  return f"{r['smallest'].split(':')[1]}: {r['per_chip_gib']} GiB, {epoch} s, {r['host_cores']:.0f} cores"


def markdown(rows: list[dict]) -> str:
  """One line per config: per generation the smallest slice, per-chip GiB, epoch time at 40%
  MFU and the host cores the input needs."""
  gens = list(dict.fromkeys(r["generation"] for r in rows))
  by = {(r["config"], r["generation"]): r for r in rows}
  lines = [
    "| config | step TFLOP | " + " | ".join(gens) + " |",
    "|---|---|" + "---|" * len(gens),
  ]
  for name in dict.fromkeys(r["config"] for r in rows):
    tflop = next(
      (r["model_tflop_per_step"] for r in rows if r["config"] == name and r.get("smallest")), None
    )
    lines.append(
      f"| `{name}` | {'-' if tflop is None else f'{tflop:.1f}'} | "
      + " | ".join(_cell(by.get((name, g))) for g in gens)
      + " |"
    )
  lines += ["", *preset_ratios(rows)]
  return "\n".join(lines)


def preset_ratios(rows: list[dict]) -> list[str]:
  """`paper` / `authors_code` FLOPs and memory of the 1B->S distill step, per generation."""
  by = {(r["config"], r["generation"]): r for r in rows if r.get("smallest")}
  out = []
  for gen in sorted({g for _, g in by}):
    p = by.get(("internvqa_dist_small_bvihd", gen))
    a = by.get(("internvqa_dist_small_bvihd_authors_code", gen))
    if not (p and a):
      continue
    same = p["smallest"] == a["smallest"]
    out.append(
      f"- {gen}: `paper` / `authors_code` model FLOPs per step "
      f"{p['model_tflop_per_step'] / a['model_tflop_per_step']:.2f}; per-chip memory "
      f"{p['per_chip_gib'] / a['per_chip_gib']:.2f}"
      + ("" if same else f" (on different slices: {p['smallest']} and {a['smallest']})")
    )
  return out


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
  have = {(r["config"], r["generation"]): r for r in done}
  names = a.configs.split(",")
  # Twins after the configs they derive from.
  for name in [n for n in names if n not in TWINS] + [n for n in names if n in TWINS]:
    for gen in a.gens.split(","):
      if (name, gen) in have:
        continue
      print(f"== {name} on {gen}", flush=True)
      twin = have.get((TWINS.get(name), gen))
      r = derived_row(name, twin) if twin else row(name, gen)
      have[(name, gen)] = r
      with open(a.out, "a") as f:
        f.write(json.dumps(r) + "\n")
      print(json.dumps(r), flush=True)


if __name__ == "__main__":
  main()
