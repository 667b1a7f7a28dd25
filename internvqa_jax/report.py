"""Evaluation report: predictions (score CSV) against subjective labels.

  python -m internvqa_jax.report --scores scores.csv --labels labels.csv \
      --label-column mos --out-dir report/

Inputs:
  * scores CSV: as written by `internvqa_jax.score` (leading '#' header lines,
    one row per video and model: `path`, `model`, `score`, ...), or a `path`
    column with one `score_<model>` column per model, or a single `score` column.
  * labels CSV: a `video_id` or `path` column and a label column
    (--label-column; default: the first of mos, dmos, score, label present).

Joining: a `video_id` matches the scored file's name, with or without its
extension (KoNViD ids such as 3339962845 match 3339962845.mp4). A `path`
matches the scored path after normalisation, else the file name when file
names are unique on both sides. A scored video without a label is an error
naming it; labels without a score are an error too unless
--ignore-extra-labels (then the report says how many were left out).

Outputs in --out-dir: report.md (metrics table + per-video table),
report.json, and scatter_<model>.png (prediction vs label with the fitted
4-parameter logistic) per model. Metrics come from
`internvqa_jax.metrics.evaluate` (SRCC, KRCC, PLCC, PLCC after the logistic
fit, RMSE in label units). For DMOS labels (lower = better) the correlations
of a good model are negative.

Constant predictions (a collapsed model) have no defined correlation with the
labels: the report stops with an error naming the model, unless
--allow-constant-predictions, which writes the report with those correlations
marked undefined. Errors follow internvqa_jax.cli_errors (one line, exit code
2 for usage, 1 for input; --verbose for the traceback).
"""

from __future__ import annotations

import argparse
import collections
import csv
import itertools
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from internvqa_jax import cli_errors
from internvqa_jax import metrics as metrics_lib
from internvqa_jax.evaluate import format_table

LABEL_COLUMNS = ("mos", "dmos", "score", "label")


class ReportError(ValueError):
  """Inputs cannot be joined or evaluated (names the files/videos involved)."""


def _read_csv(path: str) -> tuple[list[str], list[dict[str, str]]]:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such file")
  # utf-8-sig: Excel writes CSV files with a byte-order mark, which would otherwise
  # stick to the first column name.
  with open(path, newline="", encoding="utf-8-sig") as f:
    first = f.readline()
    while first.startswith("#"):  # The score CSV's header comments.
      first = f.readline()
    reader = csv.DictReader(itertools.chain([first], f))
    if not reader.fieldnames:
      raise ReportError(f"{path}: empty CSV (no header)")
    fields = [c.strip() for c in reader.fieldnames]
    rows = [{k.strip(): (v or "").strip() for k, v in r.items() if k is not None} for r in reader]
  return fields, rows


def _number(value: str, what: str) -> float:
  try:
    x = float(value)
  except ValueError:
    raise ReportError(f"{what}: {value!r} is not a number") from None
  if not math.isfinite(x):
    raise ReportError(f"{what}: {value!r} is not finite")
  return x


def read_scores(path: str) -> tuple[list[str], dict[str, np.ndarray]]:
  """(paths, {model: predictions}) from a score CSV."""
  fields, rows = _read_csv(path)
  if "path" not in fields:
    raise ReportError(f"{path}: no 'path' column (columns: {fields})")
  if "model" in fields and "score" in fields:
    return _read_long_scores(path, rows)
  cols = [c for c in fields if c.startswith("score_")] or (["score"] if "score" in fields else [])
  if not cols:
    raise ReportError(f"{path}: no 'score_<model>' or 'score' column (columns: {fields})")
  paths = [r["path"] for r in rows]
  if not paths:
    raise ReportError(f"{path}: no scored videos")
  dup = sorted(p for p, n in collections.Counter(paths).items() if n > 1)
  if dup:
    raise ReportError(f"{path}: videos scored more than once: {dup[:10]}")
  preds = {}
  for c in cols:
    name = c[len("score_") :] if c.startswith("score_") else "score"
    preds[name] = np.array([_number(r[c], f"{path}: {r['path']} column {c}") for r in rows])
  return paths, preds


def _read_long_scores(path: str, rows: list[dict[str, str]]):
  """One row per (path, model) -> (paths, {model: predictions}); every video needs every model."""
  models = list(dict.fromkeys(r["model"] for r in rows))
  paths = list(dict.fromkeys(r["path"] for r in rows))
  if not paths:
    raise ReportError(f"{path}: no scored videos")
  table: dict[tuple[str, str], float] = {}
  for r in rows:
    key = (r["path"], r["model"])
    if key in table:
      raise ReportError(f"{path}: {r['path']} scored more than once by {r['model']}")
    table[key] = _number(r["score"], f"{path}: {r['path']} model {r['model']}")
  preds = {}
  for m in models:
    missing = [p for p in paths if (p, m) not in table]
    if missing:
      raise ReportError(f"{path}: model {m} has no score for {missing[:10]}")
    preds[m] = np.array([table[(p, m)] for p in paths])
  return paths, preds


def _stem(p: str) -> str:
  return os.path.splitext(os.path.basename(p))[0]


def join_labels(
  paths: Sequence[str],
  labels_path: str,
  label_column: str | None = None,
  ignore_extra: bool = False,
) -> tuple[np.ndarray, str, int]:
  """Label per scored path: (labels aligned with `paths`, column used, #extra labels)."""
  fields, rows = _read_csv(labels_path)
  if label_column is None:
    found = [c for c in LABEL_COLUMNS if c in fields]
    if not found:
      raise ReportError(
        f"{labels_path}: no label column among {list(LABEL_COLUMNS)} "
        f"(columns: {fields}); pass --label-column"
      )
    label_column = found[0]
  elif label_column not in fields:
    raise ReportError(f"{labels_path}: no column {label_column!r} (columns: {fields})")
  if "video_id" in fields:
    key_col = "video_id"
  elif "path" in fields:
    key_col = "path"
  else:
    raise ReportError(f"{labels_path}: needs a 'video_id' or 'path' column (columns: {fields})")

  labels: dict[str, float] = {}
  for i, r in enumerate(rows):
    key = r[key_col]
    if not key:
      raise ReportError(f"{labels_path}: row {i + 2} has an empty {key_col}")
    if key_col == "path":
      key = os.path.normpath(key)
    if key in labels:
      raise ReportError(f"{labels_path}: {key_col} {key!r} appears more than once")
    labels[key] = _number(
      r[label_column], f"{labels_path}: {key_col} {key!r} column {label_column}"
    )

  matched: dict[str, str] = {}  # scored path -> label key
  if key_col == "video_id":
    for p in paths:
      hits = [k for k in (os.path.basename(p), _stem(p)) if k in labels]
      if hits:
        matched[p] = hits[0]
    owners: dict[str, list[str]] = {}
    for p, k in matched.items():
      owners.setdefault(k, []).append(p)
    clash = {k: v for k, v in owners.items() if len(v) > 1}
    if clash:
      raise ReportError(
        f"{labels_path}: video_id(s) match several scored files: {dict(list(clash.items())[:5])}"
      )
  else:
    for p in paths:
      if os.path.normpath(p) in labels:
        matched[p] = os.path.normpath(p)
    unmatched = [p for p in paths if p not in matched]
    free = [k for k in labels if k not in set(matched.values())]
    by_name = {}
    for k in free:
      by_name.setdefault(os.path.basename(k), []).append(k)
    score_names = collections.Counter(os.path.basename(p) for p in paths)
    for p in unmatched:
      name = os.path.basename(p)
      if len(by_name.get(name, [])) == 1 and score_names[name] == 1:
        matched[p] = by_name[name][0]

  missing = [p for p in paths if p not in matched]
  if missing:
    raise ReportError(
      f"{len(missing)} scored video(s) have no label in {labels_path} "
      f"(matched by {key_col}): {missing[:20]}"
    )
  extra = sorted(set(labels) - set(matched.values()))
  if extra and not ignore_extra:
    raise ReportError(
      f"{len(extra)} labelled video(s) in {labels_path} have no score: "
      f"{extra[:20]}; score them or pass --ignore-extra-labels"
    )
  return np.array([labels[matched[p]] for p in paths]), label_column, len(extra)


def plot_scatter(
  path: str, pred: np.ndarray, label: np.ndarray, title: str, label_column: str
) -> bool:
  """Scatter of prediction vs label with the fitted logistic; returns fit success."""
  # Imported where it draws: choosing the Agg backend is process-wide, so only plotting makes it.
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(5, 4.2), dpi=120)
  ax.scatter(pred, label, s=12, alpha=0.7, edgecolors="none")
  try:
    beta = metrics_lib.fit_logistic4(pred, label)
    xs = np.linspace(pred.min(), pred.max(), 200)
    ax.plot(xs, metrics_lib.logistic4(xs, *beta), color="C3", lw=1.5, label="4-parameter logistic")
    ax.legend(loc="best", fontsize=8)
    ok = True
  except metrics_lib.LogisticFitError as e:
    ax.text(
      0.02, 0.98, f"logistic fit failed: {e}"[:80], transform=ax.transAxes, va="top", fontsize=7
    )
    ok = False
  ax.set_xlabel("prediction")
  ax.set_ylabel(label_column)
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return ok


def _safe(name: str) -> str:
  return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def make_report(
  scores_csv: str,
  labels_csv: str,
  out_dir: str,
  *,
  label_column: str | None = None,
  ignore_extra: bool = False,
  allow_constant: bool = False,
) -> dict[str, Any]:
  """Writes report.md, report.json and scatter PNGs to out_dir; returns the JSON dict."""
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise NotADirectoryError(f"--out-dir {out_dir} is a file; expected a directory")
  paths, preds = read_scores(scores_csv)
  labels, label_column, num_extra = join_labels(paths, labels_csv, label_column, ignore_extra)
  constant = {n: float(p[0]) for n, p in preds.items() if np.ptp(p) == 0}
  if constant and not allow_constant:
    raise ReportError(
      f"{scores_csv}: the predictions of {', '.join(f'{n!r} (all {v:g})' for n, v in constant.items())} "
      "are constant, so SRCC/PLCC with the labels are undefined (a collapsed or untrained "
      "model?); pass --allow-constant-predictions to write the report anyway"
    )
  results = {}
  for name, p in preds.items():  # Every metric before any file: an error leaves no report.
    try:
      m = {k: float(v) for k, v in metrics_lib.evaluate(p, labels).items()}
    except ValueError as e:  # e.g. constant labels, fewer than 3 videos
      raise ReportError(f"{scores_csv} against {labels_csv}, model {name!r}: {e}") from e
    if name in constant:  # evaluate() reports 0.0; here they are undefined, not zero.
      m.update({k: float("nan") for k in ("srcc", "krcc", "plcc", "plcc_logistic")})
    results[name] = m
  os.makedirs(out_dir, exist_ok=True)
  plots = {}
  for name, p in preds.items():
    m = results[name]
    png = f"scatter_{_safe(name)}.png"
    plot_scatter(
      os.path.join(out_dir, png),
      p,
      labels,
      f"{name}: SRCC {m['srcc']:.4f}  PLCC {m['plcc']:.4f}  (n={len(p)})",
      label_column,
    )
    plots[name] = png
  report = {
    "scores": os.path.abspath(scores_csv),
    "labels": os.path.abspath(labels_csv),
    "label_column": label_column,
    "num_videos": len(paths),
    "num_extra_labels_ignored": num_extra,
    "metrics": results,
    "plots": plots,
    "videos": [
      {
        "path": p,
        "label": float(labels[i]),
        "predictions": {n: float(v[i]) for n, v in preds.items()},
      }
      for i, p in enumerate(paths)
    ],
  }
  report["constant_predictions"] = sorted(constant)
  with open(os.path.join(out_dir, "report.json"), "w") as f:
    json.dump(report, f, indent=2)  # Undefined correlations are written as NaN.
  with open(os.path.join(out_dir, "report.md"), "w") as f:
    f.write(_markdown(report, preds, labels, paths))
  return report


def _markdown(report, preds, labels, paths) -> str:
  lines = [
    "# Quality-assessment report",
    "",
    f"Predictions `{report['scores']}` against `{report['label_column']}` from "
    f"`{report['labels']}`: {report['num_videos']} videos"
    + (
      f" ({report['num_extra_labels_ignored']} labelled videos without a score ignored)"
      if report["num_extra_labels_ignored"]
      else ""
    )
    + ".",
    "",
    "PLCC is raw Pearson (= after a linear rescale); PLCC-logistic and RMSE follow the "
    "VQEG 4-parameter logistic fit on this set (RMSE in label units).",
    "",
    format_table(report["metrics"]),
    "",
  ]
  failed = [n for n, m in report["metrics"].items() if not m.get("logistic_fit_ok", 1.0)]
  failed = [n for n in failed if n not in report["constant_predictions"]]
  if report["constant_predictions"]:
    lines += [
      f"Predictions of {report['constant_predictions']} are constant: correlation is "
      "undefined (nan) for constant predictions.",
      "",
    ]
  if failed:
    lines += [
      f"Logistic fit failed for {failed}: PLCC-logistic/RMSE fall back to the linear mapping.",
      "",
    ]
  lines += [f"![{n}]({png})" for n, png in report["plots"].items()] + [""]
  names = list(preds)
  lines += [
    "## Per-video",
    "",
    "| video | " + report["label_column"] + " | " + " | ".join(names) + " |",
    "|---" * (len(names) + 2) + "|",
  ]
  for i, p in enumerate(paths):
    lines.append(
      f"| {p} | {labels[i]:.4f} | " + " | ".join(f"{preds[n][i]:.4f}" for n in names) + " |"
    )
  return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
  """The command line, under the project's error convention (internvqa_jax.cli_errors)."""
  return cli_errors.run(_main, argv)


def _main(argv: Sequence[str] | None = None) -> int:
  ap = argparse.ArgumentParser(
    prog="python -m internvqa_jax.report",
    description="Metrics, tables and plots of predictions vs labels.",
  )
  ap.add_argument("--scores", required=True, help="score CSV (internvqa_jax.score --out)")
  ap.add_argument(
    "--labels", required=True, help="labels CSV with video_id or path and a label column"
  )
  ap.add_argument("--label-column", help=f"label column (default: first of {list(LABEL_COLUMNS)})")
  ap.add_argument("--out-dir", default="report", help="output directory (default: report)")
  ap.add_argument(
    "--ignore-extra-labels",
    action="store_true",
    help="allow labelled videos that were not scored (default: error)",
  )
  ap.add_argument(
    "--allow-constant-predictions",
    action="store_true",
    help="write the report although a model's predictions are constant (default: error)",
  )
  cli_errors.add_verbose_argument(ap)
  args = ap.parse_args(argv)
  report = make_report(
    args.scores,
    args.labels,
    args.out_dir,
    label_column=args.label_column,
    ignore_extra=args.ignore_extra_labels,
    allow_constant=args.allow_constant_predictions,
  )
  print(
    format_table(
      report["metrics"], title=f"{report['num_videos']} videos vs {report['label_column']}"
    )
  )
  print(
    f"wrote {os.path.join(args.out_dir, 'report.md')}, report.json and "
    f"{len(report['plots'])} plot(s)",
    file=sys.stderr,
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
