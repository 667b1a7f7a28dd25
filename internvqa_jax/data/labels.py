"""Quality labels from raw dataset scores.

InternVQA trains on MOS/100 (Waterloo IVC 4K) and DMOS/100 (BVI-HD, where a
higher DMOS means worse quality). `flip_dmos=True` negates DMOS labels so that
every label grows with quality; PLCC/SRCC magnitudes are unaffected, only the
sign of the correlation with the raw DMOS changes.

Config (a mapping or ml_collections.ConfigDict), either one setting for all
records:
  labels = {'scale': 0.01, 'flip_dmos': False}
or per dataset, chosen by each record's `dataset_key` field (default
'dataset'), with an optional 'default' entry:
  labels = {'per_dataset': {'bvihd': {'flip_dmos': True}},
            'default': {'scale': 0.01}, 'dataset_key': 'dataset'}
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from internvqa_jax.config_dicts import config_dict
from internvqa_jax.data.video_types import record_name

SCORE_KINDS = ("mos", "dmos")


@dataclasses.dataclass(frozen=True)
class LabelTransform:
  """label = score * scale, negated for DMOS records when flip_dmos."""

  scale: float = 0.01
  flip_dmos: bool = False

  def __post_init__(self):
    if not math.isfinite(self.scale) or self.scale == 0:
      raise ValueError(f"label scale must be finite and non-zero, got {self.scale}")

  def __call__(self, record: Mapping[str, Any]) -> np.float32:
    if "score" not in record:
      raise KeyError(f"record {record_name(record)} has no 'score' field")
    try:
      score = float(record["score"])
    except (TypeError, ValueError) as e:
      raise ValueError(f"score {record['score']!r} of {record_name(record)} is not a number") from e
    if not math.isfinite(score):
      raise ValueError(f"non-finite score {score} for {record_name(record)}")
    kind = str(record.get("score_kind", "mos")).lower()
    if kind not in SCORE_KINDS:
      raise ValueError(f"score_kind {kind!r} of {record_name(record)} is not one of {SCORE_KINDS}")
    label = score * self.scale
    if self.flip_dmos and kind == "dmos":
      label = -label
    return np.float32(label)

  def inverse(self, label: np.ndarray, score_kind: str = "mos") -> np.ndarray:
    """Maps labels (or predictions) back to the raw score scale."""
    y = np.asarray(label, np.float64)
    if self.flip_dmos and score_kind == "dmos":
      y = -y
    return y / self.scale


def _from_mapping(cfg: Mapping[str, Any] | None) -> LabelTransform:
  cfg = config_dict(cfg, "labels config")
  unknown = set(cfg) - {"scale", "flip_dmos"}
  if unknown:
    raise ValueError(f"unknown label options {sorted(unknown)}; expected 'scale', 'flip_dmos'")
  return LabelTransform(
    scale=float(cfg.get("scale", 0.01)), flip_dmos=bool(cfg.get("flip_dmos", False))
  )


class PerDatasetLabels:
  """Chooses a LabelTransform by the record's dataset name."""

  def __init__(
    self,
    per_dataset: Mapping[str, LabelTransform],
    default: LabelTransform | None,
    dataset_key: str = "dataset",
  ):
    self.per_dataset = dict(per_dataset)
    self.default = default
    self.dataset_key = dataset_key

  def transform_for(self, record: Mapping[str, Any]) -> LabelTransform:
    name = record.get(self.dataset_key)
    if name in self.per_dataset:
      return self.per_dataset[name]
    if self.default is None:
      raise KeyError(
        f"no label transform for {self.dataset_key}={name!r} of {record_name(record)}; "
        f"configured: {sorted(self.per_dataset)} and no 'default'"
      )
    return self.default

  def __call__(self, record: Mapping[str, Any]) -> np.float32:
    return self.transform_for(record)(record)


def make_label_transform(cfg: Mapping[str, Any] | None):
  """LabelTransform or PerDatasetLabels from a config mapping (module doc)."""
  cfg = config_dict(cfg, "labels config")
  if "per_dataset" not in cfg:
    return _from_mapping(cfg)
  per = {
    str(k): _from_mapping(v)
    for k, v in config_dict(cfg["per_dataset"], "labels per_dataset config").items()
  }
  default = _from_mapping(cfg["default"]) if cfg.get("default") is not None else None
  unknown = set(cfg) - {"per_dataset", "default", "dataset_key"}
  if unknown:
    raise ValueError(f"unknown label options {sorted(unknown)}")
  return PerDatasetLabels(per, default, str(cfg.get("dataset_key", "dataset")))
