"""A calibrated scale: raw model outputs mapped to label units by the 4-parameter logistic.

At export the trainer fits `metrics.logistic4` from the model's per-video predictions to the raw
labels (MOS or DMOS as the dataset gives them, not the scaled/flipped training target) of its
held-out split, and stores in meta.json under "calibration":

  {"mapping": "logistic4", "params": [b1, b2, b3, b4],
   "label": "mos" | "dmos", "direction": "higher_is_better" | "lower_is_better",
   "range": [min, max],          # labels seen on the fit split
   "fit_split": "...", "num_videos": N, "dataset": "..."}

`internvqa_jax.score` then writes `mos = f(score)` next to the raw score. The logistic is
monotonic, so a score interval maps to the interval between the mapped end points. Models without
a calibration (converted checkpoints) get raw scores only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from internvqa_jax import metrics

DIRECTIONS = {"mos": "higher_is_better", "dmos": "lower_is_better"}


class CalibrationError(ValueError):
  """A calibration cannot be fitted or read (names what is wrong)."""


def fit(
  predictions: Sequence[float],
  labels: Sequence[float],
  label_kind: str,
  *,
  fit_split: str = "",
  dataset: str = "",
) -> dict[str, Any]:
  """The meta.json "calibration" entry for predictions -> labels (raises CalibrationError)."""
  if label_kind not in DIRECTIONS:
    raise CalibrationError(f"label kind {label_kind!r}; expected one of {sorted(DIRECTIONS)}")
  y = np.asarray(labels, np.float64)
  try:
    beta = metrics.fit_logistic4(predictions, y)
  except (metrics.LogisticFitError, ValueError) as e:
    raise CalibrationError(f"logistic fit of {len(y)} videos failed: {e}") from e
  return {
    "mapping": "logistic4",
    "params": [float(b) for b in beta],
    "label": label_kind,
    "direction": DIRECTIONS[label_kind],
    "range": [float(y.min()), float(y.max())],
    "fit_split": fit_split,
    "dataset": dataset,
    "num_videos": len(y),
  }


def check(cal: Mapping[str, Any], where: str) -> dict[str, Any]:
  """Validates a stored calibration; returns it as a dict."""
  cal = dict(cal)
  params = cal.get("params")
  if cal.get("mapping") != "logistic4":
    raise CalibrationError(
      f"{where}: calibration mapping {cal.get('mapping')!r}, expected logistic4"
    )
  if (
    not isinstance(params, list)
    or len(params) != 4
    or not all(isinstance(p, (int, float)) and math.isfinite(p) for p in params)
    or params[3] == 0
  ):
    raise CalibrationError(
      f"{where}: calibration params must be 4 finite numbers with b4 != 0, got {params!r}"
    )
  if cal.get("label") not in DIRECTIONS:
    raise CalibrationError(f"{where}: calibration label {cal.get('label')!r}, expected mos or dmos")
  return cal


def apply(cal: Mapping[str, Any], x) -> np.ndarray:
  """Raw scores -> label units (float64)."""
  return metrics.logistic4(np.asarray(x, np.float64), *cal["params"])


def apply_interval(cal: Mapping[str, Any], low: float, high: float) -> tuple[float, float]:
  """The interval [low, high] of raw scores in label units (ordered low, high)."""
  if math.isnan(low) or math.isnan(high):
    return float("nan"), float("nan")
  a, b = (float(v) for v in apply(cal, [low, high]))
  return min(a, b), max(a, b)


def describe_scale(cal: Mapping[str, Any] | None) -> str:
  """One line for the score CSV's header: what `mos` means, or that there is none."""
  if cal is None:
    return "raw model output only (no calibration in meta.json: converted checkpoint)"
  lo, hi = cal["range"]
  better = "higher is better" if cal["direction"] == "higher_is_better" else "lower is better"
  where = f" of {cal['dataset']}" if cal.get("dataset") else ""
  return (
    f"mos = {cal['label'].upper()}{where} ({better}; labels seen {lo:g}..{hi:g}) from the raw "
    f"score by the 4-parameter logistic fitted on {cal.get('num_videos', '?')} "
    f"{cal.get('fit_split') or 'held-out'} videos"
  )
