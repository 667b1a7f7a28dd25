"""Evaluation: every eval example of a video is scored, the scores are averaged per video.

`evaluate_model` runs a jitted predict function over one view's eval batches
(internvqa_jax.data.pipeline.make_eval_batches), gathers the per-example scores
of all hosts, drops padding (`mask`), averages per video (`index`) and
computes SRCC, KRCC, PLCC (raw and after the 4-parameter logistic) and RMSE.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from internvqa_jax import metrics as metrics_lib


def _gather(x: np.ndarray) -> np.ndarray:
  """Concatenates a per-process host array over processes (process order)."""
  if jax.process_count() == 1:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(np.asarray(x), tiled=True))


def _global_values(x) -> np.ndarray:
  """A batch-sharded jax.Array -> numpy values of the whole global batch."""
  if getattr(x, "is_fully_addressable", True):
    return np.asarray(jax.device_get(x))
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def collect_predictions(
  predict: Callable[[Mapping[str, Any]], Any],
  batches: Iterable[Mapping],
  make_global: Callable[[Mapping[str, np.ndarray]], Any],
) -> dict[str, np.ndarray]:
  """Returns {"index", "label", "target", "score"}, each (V,): per-video means sorted by index
  (label: the training target; target: the raw MOS/DMOS; score: the model's prediction)."""
  idx, labels, targets, masks, scores = [], [], [], [], []
  for batch in batches:
    out = predict(make_global(batch))
    scores.append(_global_values(out).reshape(-1))
    idx.append(_gather(batch["index"]))
    labels.append(_gather(np.asarray(batch["label"], np.float32)))
    targets.append(_gather(np.asarray(batch["score"], np.float32)))
    masks.append(_gather(batch["mask"]))
  if not idx:
    raise ValueError("the evaluation split yielded no batch")
  mask = np.concatenate(masks).astype(bool)
  index = np.concatenate(idx)[mask]
  vids, lab = metrics_lib.aggregate_by_video(index, np.concatenate(labels)[mask])
  vids2, score = metrics_lib.aggregate_by_video(index, np.concatenate(scores)[mask])
  _, target = metrics_lib.aggregate_by_video(index, np.concatenate(targets)[mask])
  if not np.array_equal(vids, vids2):
    raise AssertionError("per-video aggregation of labels and scores disagree")
  return {"index": np.asarray(vids), "label": lab, "target": target, "score": score}


def metrics_of(preds: Mapping[str, np.ndarray]) -> dict[str, float]:
  """The metrics of `collect_predictions`' output (predictions against the training labels)."""
  m = {k: float(v) for k, v in metrics_lib.evaluate(preds["score"], preds["label"]).items()}
  m["num_videos"] = len(preds["label"])
  return m


def evaluate_model(predict, batches, make_global) -> dict[str, float]:
  return metrics_of(collect_predictions(predict, batches, make_global))


def format_table(results: Mapping[str, Mapping[str, float]], title: str = "") -> str:
  cols = [
    c
    for c in ("plcc", "srcc", "krcc", "plcc_logistic", "rmse")
    if any(c in r for r in results.values())
  ]
  lines = ([title] if title else []) + [
    "| model | " + " | ".join(cols) + " |",
    "|---" * (len(cols) + 1) + "|",
  ]
  for name, r in results.items():
    lines.append(
      f"| {name} | "
      + " | ".join(f"{r[c]:.4f}" if isinstance(r.get(c), (int, float)) else "-" for c in cols)
      + " |"
    )
  return "\n".join(lines)
