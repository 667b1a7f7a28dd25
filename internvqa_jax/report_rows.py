"""The per-video, per-model result row that quality maps and the HTML report take.

A row is a plain dict (one per video and model, as `score` computes them):

  key            type                 meaning
  path           str                  the video file (required)
  model          str                  the model's column name (required)
  score          float                mean score over the test views (required)
  score_std      float                standard deviation over the views
  score_ci_low   float                95% bootstrap interval of the mean, low end
  score_ci_high  float                ... high end
  num_views      int                  views averaged
  mos            float                calibrated score in label units
  mos_ci_low     float                the interval mapped through the calibration
  mos_ci_high    float
  bit_depth      int                  the source's bit depth
  segments       list[dict]           quality over time: {'start', 'end' (seconds),
                                      'score', optional 'score_std'} per window
  curve_png      str                  a PNG of the quality-over-time curve
  maps           list[str]            PNG map overlays (what quality_maps.write_maps
                                      returns)

Only path, model and score are required; a missing optional key, or None or
NaN in a numeric one, is shown as absent. Other keys are ignored.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

REQUIRED = ("path", "model", "score")
NUMBERS = (
  "score",
  "score_std",
  "score_ci_low",
  "score_ci_high",
  "num_views",
  "mos",
  "mos_ci_low",
  "mos_ci_high",
  "bit_depth",
)
SEGMENT_NUMBERS = ("start", "end", "score", "score_std")


def present(row: Mapping[str, Any], key: str) -> bool:
  """True when `row[key]` holds a value (not missing, None or NaN)."""
  v = row.get(key)
  if v is None:
    return False
  return not (isinstance(v, float) and math.isnan(v))


def _is_number(v) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


def check_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
  """Validates rows (see the module docstring); errors name the row and key."""
  if isinstance(rows, Mapping) or not isinstance(rows, Sequence):
    raise TypeError(f"rows must be a sequence of dicts, got {type(rows).__name__}")
  if not rows:
    raise ValueError("rows: no rows to report")
  for i, row in enumerate(rows):
    if not isinstance(row, Mapping):
      raise TypeError(f"rows[{i}]: expected a dict, got {type(row).__name__}")
    for key in REQUIRED:
      if key not in row:
        raise ValueError(f"rows[{i}]: missing required key {key!r} (required: {REQUIRED})")
    for key in ("path", "model"):
      if not isinstance(row[key], str) or not row[key]:
        raise ValueError(f"rows[{i}]: {key!r} must be a non-empty string, got {row[key]!r}")
    if not _is_number(row["score"]) or not math.isfinite(row["score"]):
      raise ValueError(f"rows[{i}] ({row['path']}): 'score' must be a finite number")
    for key in NUMBERS:
      if present(row, key) and not _is_number(row[key]):
        raise ValueError(f"rows[{i}] ({row['path']}): {key!r} must be a number, got {row[key]!r}")
    if present(row, "segments"):
      segs = row["segments"]
      if isinstance(segs, (str, Mapping)) or not isinstance(segs, Sequence):
        raise ValueError(f"rows[{i}] ({row['path']}): 'segments' must be a list of dicts")
      for j, seg in enumerate(segs):
        if not isinstance(seg, Mapping):
          raise ValueError(f"rows[{i}] ({row['path']}): segments[{j}] is not a dict")
        for key in SEGMENT_NUMBERS:
          if key == "score_std" and not present(seg, key):
            continue
          if not _is_number(seg.get(key)):
            raise ValueError(
              f"rows[{i}] ({row['path']}): segments[{j}][{key!r}] must be a number, "
              f"got {seg.get(key)!r}"
            )
    if present(row, "maps"):
      maps = row["maps"]
      if isinstance(maps, str) or not isinstance(maps, Sequence):
        raise ValueError(f"rows[{i}] ({row['path']}): 'maps' must be a list of PNG paths")
  return list(rows)
