"""Content-disjoint train/test splits: every version of a source lies on one side only.

The TFDS builders write one split ('full'); this module turns a dataset's per-record `source` list into
(train_indices, test_indices). Split names:

  authors            InternVQA's fixed splits (bvi_hd, waterloo_ivc_4k), from the authors' loaders:
                     Waterloo test = sources 01-04, train = 05-20; BVI-HD test = the 6 sources in
                     BVI_HD_TEST_SOURCES, train = the other 26.
  heldout            A fixed split of synthetic_compressed: test = SYNTHETIC_TEST_SOURCES.
  heldout4           The demo's fixed split of synthetic_compressed: SYNTHETIC_DEMO_TEST_SOURCES.
  proxy              The split of the demo teacher's pretraining set: SYNTHETIC_PROXY_TEST_SOURCES.
  random80_seed<k>   Any dataset: ceil(20%) of the sources drawn at random (seed k) for test, as in
                     repeated content-aware cross-validation (FUNQUE+: ceil(0.2 x #contents)).

A fixed split applied to a partial build (a subset of sources) keeps the intersection; sources the
dataset does not know are an error, as is an empty side.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

BVI_HD_TEST_SOURCES = (
  "BallUnderWater",
  "Bookcase",
  "BricksLeaves",
  "Music",
  "PlasmaSlowRandom",
  "TreeGrassFamily",
)
WATERLOO_TEST_SOURCES = ("01", "02", "03", "04")  # `source` is the 2-digit video number
SYNTHETIC_TEST_SOURCES = ("coffee", "rocket")
# The demo's split: two colour and two greyscale photographs, so that one photograph does not
# decide a ranking. The demo teacher's pretraining set (synthetic_compressed/pretrain) leaves them
# out; its own split `proxy` validates on one of its photographs.
SYNTHETIC_DEMO_TEST_SOURCES = ("camera", "coffee", "grass", "rocket")
SYNTHETIC_PROXY_TEST_SOURCES = ("chelsea",)

# dataset -> {fixed split name: test sources}
FIXED_SPLITS = {
  "bvi_hd": {"authors": BVI_HD_TEST_SOURCES},
  "waterloo_ivc_4k": {"authors": WATERLOO_TEST_SOURCES},
  "synthetic_compressed": {
    "heldout": SYNTHETIC_TEST_SOURCES,
    "heldout4": SYNTHETIC_DEMO_TEST_SOURCES,
    "proxy": SYNTHETIC_PROXY_TEST_SOURCES,
  },
}
_RANDOM = re.compile(r"random80_seed(\d+)")


def _known_sources(dataset: str) -> frozenset[str] | None:
  # Imported lazily: the builder modules pull in TFDS, which split selection does not need.
  if dataset == "bvi_hd":
    from internvqa_jax.data.builders import bvi_hd  # pylint: disable=g-import-not-at-top

    return frozenset(bvi_hd.SOURCES)
  if dataset == "waterloo_ivc_4k":
    return frozenset(f"{i:02d}" for i in range(1, 21))
  if dataset == "synthetic_compressed":
    from internvqa_jax.data import synthetic_video  # pylint: disable=g-import-not-at-top

    return frozenset(synthetic_video.SOURCE_IMAGES)
  return None


def known_splits(dataset: str) -> list[str]:
  return sorted(FIXED_SPLITS.get(dataset, {})) + ["random80_seed<k> (k = 0, 1, 2, ...)"]


def split_by_source(
  sources: Iterable[str], test_fraction: float = 0.2, seed: int = 0
) -> tuple[list[str], list[str]]:
  """(train_sources, test_sources): ceil(test_fraction * #sources) random sources go to test."""
  unique = sorted(set(sources))
  if not 0 < test_fraction < 1:
    raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
  num_test = math.ceil(test_fraction * len(unique) - 1e-9)
  if len(unique) < 2 or num_test >= len(unique):
    raise ValueError(
      f"cannot hold out {test_fraction:.0%} of {len(unique)} source(s) and keep a "
      f"train side: {unique}"
    )
  order = np.random.default_rng(seed).permutation(len(unique))
  test = sorted(unique[i] for i in order[:num_test])
  return sorted(set(unique) - set(test)), test


def _as_sources(records_or_sources: Sequence[Any]) -> list[str]:
  out = []
  for i, item in enumerate(records_or_sources):
    if isinstance(item, str):
      out.append(item)
    elif isinstance(item, dict) and "source" in item:
      out.append(str(item["source"]))
    else:
      raise TypeError(
        f'item {i}: expected a source name or a record dict with "source", got '
        f"{type(item).__name__}"
      )
  return out


def split_sources(
  dataset: str, split_name: str, sources: Iterable[str]
) -> tuple[list[str], list[str]]:
  """(train_sources, test_sources) of a named split over the given sources."""
  present = sorted(set(sources))
  known = _known_sources(dataset)
  if known is not None and not set(present) <= known:
    raise ValueError(
      f"{dataset}: unknown source(s) {sorted(set(present) - known)}; expected some "
      f"of {sorted(known)}"
    )
  fixed = FIXED_SPLITS.get(dataset, {})
  if split_name in fixed:
    test = [s for s in present if s in fixed[split_name]]
    train = [s for s in present if s not in fixed[split_name]]
  elif match := _RANDOM.fullmatch(split_name):
    train, test = split_by_source(present, 0.2, int(match.group(1)))
  else:
    raise KeyError(
      f"Unknown split {split_name!r} for dataset {dataset!r}; known: {known_splits(dataset)}"
    )
  if not train or not test:
    raise ValueError(
      f"{dataset} split {split_name!r} leaves an empty side over sources {present}: "
      f"train={train} test={test}"
    )
  return train, test


def get_split(
  dataset: str, split_name: str, records_or_sources: Sequence[Any]
) -> tuple[np.ndarray, np.ndarray]:
  """(train_indices, test_indices) into records_or_sources (source names or record dicts)."""
  per_record = _as_sources(records_or_sources)
  _, test = split_sources(dataset, split_name, per_record)
  test = set(test)
  is_test = np.array([s in test for s in per_record], dtype=bool)
  return np.flatnonzero(~is_test), np.flatnonzero(is_test)
