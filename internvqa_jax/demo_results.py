"""Several seeds of a staged config (configs/demo.py): run each, then report mean ± std per model.

`run_seeds(config, workdir, run_stages)` runs `run_stages` (internvqa_jax.train) once per seed in
`config.seeds`, in WORKDIR/seed<k>, with every stage's `seed` set to k (initialisation, data order
and augmentation); compiled steps are cached in WORKDIR/jax_cache. Then it writes

  WORKDIR/results.json  {model: {"plcc": mean, "srcc": mean, ... (every metric, mean over seeds),
                                 "std": {metric: sample std}, "per_seed": {metric: [values]},
                                 "seeds": [k, ...]}}
  WORKDIR/results.png   SRCC and PLCC per model: bars at the mean, error bars ± 1 std, one dot
                        per seed

and prints a table of mean ± std per model plus the gaps between consecutive rows of
`config.ranking`, each with the pooled standard deviation sqrt((s_a^2 + s_b^2) / 2) of the two.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

METRICS = ("plcc", "srcc", "krcc", "plcc_logistic", "rmse")


def seed_config(config, seed: int):
  """A copy of a staged config whose every stage uses `seed`."""
  cfg = config.copy_and_resolve_references()
  with cfg.unlocked():
    for name in cfg.stages:
      cfg.stage_configs[name].seed = int(seed)
  return cfg


def summarize(per_seed: Sequence[Mapping[str, Mapping[str, float]]], seeds: Sequence[int]):
  """Per-seed reports ({model: metrics}) -> {model: means, "std", "per_seed", "seeds"}."""
  if not per_seed or len(per_seed) != len(seeds):
    raise ValueError(f"need one report per seed, got {len(per_seed)} for seeds {list(seeds)}")
  models = list(per_seed[0])
  for k, report in zip(seeds, per_seed, strict=True):
    if list(report) != models:
      raise ValueError(f"seed {k} reports models {list(report)}, seed {seeds[0]} {models}")
  out = {}
  for m in models:
    keys = [c for c in METRICS if all(c in r[m] for r in per_seed)]
    values = {c: [float(r[m][c]) for r in per_seed] for c in keys}
    row: dict[str, Any] = {c: float(np.mean(v)) for c, v in values.items()}
    row["num_videos"] = int(per_seed[0][m].get("num_videos", 0))
    row["std"] = {c: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for c, v in values.items()}
    row["per_seed"] = values
    row["seeds"] = [int(k) for k in seeds]
    out[m] = row
  return out


def pooled_std(a: Mapping[str, Any], b: Mapping[str, Any], metric: str = "srcc") -> float:
  return math.sqrt((a["std"][metric] ** 2 + b["std"][metric] ** 2) / 2)


def format_summary(summary: Mapping[str, Mapping[str, Any]], ranking: Sequence[str] = ()) -> str:
  n = len(next(iter(summary.values()))["seeds"])
  lines = [
    f"held-out sources, mean ± std over {n} seeds",
    "| model | plcc | srcc | srcc per seed |",
    "|---|---|---|---|",
  ]
  for name, r in summary.items():
    lines.append(
      f"| {name} | {r['plcc']:.3f} ± {r['std']['plcc']:.3f} | {r['srcc']:.3f} ± "
      f"{r['std']['srcc']:.3f} | {' '.join(f'{v:.3f}' for v in r['per_seed']['srcc'])} |"
    )
  for hi, lo in itertools.pairwise(ranking):
    gap = summary[hi]["srcc"] - summary[lo]["srcc"]
    lines.append(
      f"srcc {hi} - {lo}: {gap:+.3f} (pooled std {pooled_std(summary[hi], summary[lo]):.3f})"
    )
  return "\n".join(lines)


def plot(summary: Mapping[str, Mapping[str, Any]], path: str) -> None:
  import matplotlib  # Lazy: only a multi-seed run draws.

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  names = list(summary)
  fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
  for ax, metric in zip(axes, ("srcc", "plcc")):
    x = np.arange(len(names))
    means = [summary[m][metric] for m in names]
    stds = [summary[m]["std"][metric] for m in names]
    ax.bar(x, means, yerr=stds, capsize=6, color="#9ab", edgecolor="#345")
    for i, m in enumerate(names):
      vals = summary[m]["per_seed"][metric]
      ax.scatter(np.full(len(vals), i) + np.linspace(-0.15, 0.15, len(vals)), vals, c="k", s=14)
    ax.set_xticks(x, [m.replace("_", "\n") for m in names])
    ax.set_title(f"held-out {metric.upper()}: mean ± std, dots = seeds")
    ax.axhline(0, color="grey", lw=0.5)
  axes[0].set_ylabel("correlation with the label")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def run_seeds(config, workdir: str, run_stages: Callable[[Any, str], dict]) -> dict:
  seeds = [int(k) for k in config.seeds]
  if len(set(seeds)) != len(seeds):
    raise ValueError(f"config.seeds has repeats: {seeds}")
  # Every seed compiles the same steps: XLA's persistent cache (in the workdir) compiles them once.
  import jax

  jax.config.update("jax_compilation_cache_dir", os.path.join(workdir, "jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  per_seed = []
  for k in seeds:
    print(f"##### seed {k} ({seeds.index(k) + 1} of {len(seeds)}) #####", flush=True)
    per_seed.append(run_stages(seed_config(config, k), os.path.join(workdir, f"seed{k}")))
  summary = summarize(per_seed, seeds)
  print(format_summary(summary, list(config.get("ranking", []))), flush=True)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(summary, f, indent=2)
  plot(summary, os.path.join(workdir, "results.png"))
  return summary
