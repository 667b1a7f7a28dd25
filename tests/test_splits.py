"""Content-disjoint splits: fixed author splits, seeded 80/20 splits, the synthetic held-out split."""

import math

import numpy as np
import pytest

from internvqa_jax.data import splits, synthetic_video
from internvqa_jax.data.builders import bvi_hd

WATERLOO_SOURCES = [f"{i:02d}" for i in range(1, 21)]
ALL_SOURCES = {
  "bvi_hd": list(bvi_hd.SOURCES),
  "waterloo_ivc_4k": WATERLOO_SOURCES,
  "synthetic_compressed": list(synthetic_video.SOURCE_IMAGES),
}
VERSIONS_PER_SOURCE = {"bvi_hd": 12, "waterloo_ivc_4k": 60, "synthetic_compressed": 60}


def _records(dataset):
  """One record per distorted version, sources interleaved as a real table would be."""
  rng = np.random.default_rng(7)
  per_record = [s for s in ALL_SOURCES[dataset] for _ in range(VERSIONS_PER_SOURCE[dataset])]
  return [{"source": s, "video_id": f"{s}_{k}"} for k, s in enumerate(rng.permutation(per_record))]


def _check_disjoint(records, train, test):
  train_sources = {records[i]["source"] for i in train}
  test_sources = {records[i]["source"] for i in test}
  assert not train_sources & test_sources
  assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(records)))
  return train_sources, test_sources


def test_authors_splits_are_exactly_the_published_ones():
  records = _records("waterloo_ivc_4k")
  train, test = splits.get_split("waterloo_ivc_4k", "authors", records)
  train_s, test_s = _check_disjoint(records, train, test)
  assert test_s == {"01", "02", "03", "04"}
  assert train_s == {f"{i:02d}" for i in range(5, 21)}
  assert len(test) == 4 * 60 and len(train) == 16 * 60

  records = _records("bvi_hd")
  train, test = splits.get_split("bvi_hd", "authors", records)
  train_s, test_s = _check_disjoint(records, train, test)
  assert test_s == {
    "BallUnderWater",
    "Bookcase",
    "BricksLeaves",
    "Music",
    "PlasmaSlowRandom",
    "TreeGrassFamily",
  }
  assert len(train_s) == 26 and train_s == set(bvi_hd.SOURCES) - test_s
  assert len(test) == 6 * 12


@pytest.mark.parametrize("dataset", sorted(ALL_SOURCES))
def test_every_named_split_is_content_disjoint(dataset):
  records = _records(dataset)
  names = list(splits.FIXED_SPLITS[dataset]) + [f"random80_seed{k}" for k in range(6)]
  test_sets = []
  for name in names:
    train, test = splits.get_split(dataset, name, records)
    _, test_s = _check_disjoint(records, train, test)
    test_sets.append(frozenset(test_s))
    if name.startswith("random80"):
      assert len(test_s) == math.ceil(0.2 * len(ALL_SOURCES[dataset]))
  assert len(set(test_sets[-6:])) > 1  # seeds give different partitions


def test_random_split_is_reproducible_and_order_independent():
  sources = list(bvi_hd.SOURCES)
  a = splits.split_by_source(sources, 0.2, seed=3)
  b = splits.split_by_source(list(reversed(sources)) * 2, 0.2, seed=3)
  assert a == b
  assert len(a[1]) == 7 and len(a[0]) == 25  # ceil(0.2 * 32) held out, as in FUNQUE+
  assert splits.split_by_source(sources, 0.2, seed=4) != a


def test_synthetic_heldout_split_and_source_names():
  train, test = splits.split_sources(
    "synthetic_compressed", "heldout", list(synthetic_video.SOURCE_IMAGES)
  )
  assert test == sorted(splits.SYNTHETIC_TEST_SOURCES) == ["coffee", "rocket"]
  assert len(train) == 14 and set(train) >= synthetic_video.GREYSCALE_SOURCES
  # A partial build keeps the intersection.
  assert splits.split_sources("synthetic_compressed", "heldout", ["astronaut", "coffee"]) == (
    ["astronaut"],
    ["coffee"],
  )


def test_errors_name_what_is_wrong():
  with pytest.raises(KeyError, match=r"Unknown split 'official'.*known: \['authors', 'random80"):
    splits.get_split("bvi_hd", "official", ["Boxing", "Music"])
  with pytest.raises(KeyError, match=r"known: \['heldout', 'heldout4', 'proxy', 'random80_seed<k>"):
    splits.get_split("synthetic_compressed", "authors", ["coffee"])
  with pytest.raises(ValueError, match=r"unknown source\(s\) \['Boxnig'\]"):
    splits.get_split("bvi_hd", "authors", ["Boxnig", "Music"])
  with pytest.raises(ValueError, match="empty side"):
    splits.get_split("waterloo_ivc_4k", "authors", ["05", "06"])
  with pytest.raises(ValueError, match="keep a train side"):
    splits.split_by_source(["a"], 0.2, seed=0)
  with pytest.raises(TypeError, match="item 1"):
    splits.get_split("bvi_hd", "authors", ["Music", 3])
