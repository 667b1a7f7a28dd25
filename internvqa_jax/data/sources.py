"""Build the TFDS datasets and open them as random-access record sources (no TensorFlow).

  from internvqa_jax.data import sources
  sources.build('synthetic_compressed', '/data/tfds')                 # embedded, ~1 min on 2 cores
  sources.build('bvi_hd', '/data/tfds', manual_dir='/data/raw/bvi_hd')
  full = sources.open_source('synthetic_compressed', 'full', '/data/tfds')
  train, test = sources.open_split('synthetic_compressed', 'heldout', '/data/tfds')
  record = train[0]   # plain dict: str for text fields, bytes for video_bytes, Python numbers

Names are `<dataset>` or `<dataset>/<config>` (e.g. 'synthetic_compressed/tiny'). Each build writes a
single split, 'full'; train/test selection by source is done by internvqa_jax.data.splits. The sources
are picklable and support len() and integer indexing, as Grain's MapDataset.source expects.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from internvqa_jax.data import splits
from internvqa_jax.data.builders import FULL_SPLIT, bvi_hd, synthetic_compressed, waterloo_ivc_4k

DATASETS = {
  "synthetic_compressed": synthetic_compressed.SyntheticCompressed,
  "bvi_hd": bvi_hd.BviHd,
  "waterloo_ivc_4k": waterloo_ivc_4k.WaterlooIvc4k,
}
BYTES_FIELDS = frozenset({"video_bytes"})  # kept as bytes; every other bytes value is Text


def _parse_name(name: str) -> tuple[type, str | None]:
  dataset, _, config = name.partition("/")
  if dataset not in DATASETS:
    raise KeyError(f"Unknown dataset {dataset!r}; known: {sorted(DATASETS)}")
  return DATASETS[dataset], config or None


def build(
  name: str, data_dir: str, manual_dir: str | None = None, **builder_kwargs: Any
) -> tfds.core.DatasetBuilder:
  """Prepares `name` in ArrayRecord format under data_dir (nothing is downloaded). Returns the builder.

  builder_kwargs go to the builder's constructor, e.g. `config=BviHdConfig(name=..., sources=...)`.
  Already-built datasets are reused (TFDS semantics); delete the version directory to rebuild.
  """
  cls, config = _parse_name(name)
  if config is not None and "config" not in builder_kwargs:
    builder_kwargs["config"] = config
  instructions = getattr(cls, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
  if instructions and (
    manual_dir is None or not os.path.isdir(manual_dir) or not os.listdir(manual_dir)
  ):
    raise FileNotFoundError(
      f"{cls.name} needs manual_dir= pointing at the downloaded files; got {manual_dir!r} "
      f"(missing or empty).\n{instructions}"
    )
  builder = cls(data_dir=data_dir, file_format="array_record", **builder_kwargs)
  download_config = tfds.download.DownloadConfig(
    manual_dir=os.path.abspath(manual_dir) if manual_dir else None
  )
  builder.download_and_prepare(download_config=download_config)
  return builder


def dataset_dir(name: str, data_dir: str) -> str:
  """`<data_dir>/<dataset>/<config>/<version>`: the builder's version if built, else the newest."""
  cls, config = _parse_name(name)
  config = config or cls.DEFAULT_CONFIG_NAME
  config_dir = os.path.join(data_dir, cls.name, config)
  built = sorted(
    (
      v
      for v in (os.listdir(config_dir) if os.path.isdir(config_dir) else ())
      if os.path.isfile(os.path.join(config_dir, v, "dataset_info.json"))
    ),
    key=lambda v: tuple(int(x) for x in v.split(".")),
  )
  if not built:
    raise FileNotFoundError(
      f"{name!r} is not built under {data_dir} (no {config_dir}/<version>/dataset_info.json); "
      f"run internvqa_jax.data.sources.build({cls.name + ('/' + config if config else '')!r}, ...)"
    )
  wanted = str(cls.VERSION)
  return os.path.join(config_dir, wanted if wanted in built else built[-1])


def _first_line(e: BaseException) -> str:
  text = str(e).strip()
  return text.splitlines()[0] if text else "no message"


class RecordSource:
  """Random-access view of a built split; records are plain dicts. Optionally a subset of indices."""

  def __init__(self, directory: str, split: str = FULL_SPLIT, indices: Sequence[int] | None = None):
    self.directory = directory
    self.split = split
    try:
      builder = tfds.builder_from_directory(directory)
      self._source = builder.as_data_source(split)
    except Exception as e:  # TFDS / array_record raise many types for damaged files.
      raise ValueError(
        f"{directory}: cannot open split {split!r} of the built dataset ({type(e).__name__}: "
        f"{_first_line(e)}); rebuild it (internvqa_jax.data.sources.build)"
      ) from e
    self._text_fields = frozenset(
      k for k, f in builder.info.features.items() if isinstance(f, tfds.features.Text)
    )
    self._indices = None if indices is None else np.asarray(indices, np.int64)
    if (
      self._indices is not None
      and self._indices.size
      and (self._indices.min() < 0 or self._indices.max() >= len(self._source))
    ):
      raise IndexError(
        f"indices out of range for {directory} split {split!r} ({len(self._source)} records)"
      )

  def __len__(self) -> int:
    return len(self._source) if self._indices is None else int(self._indices.size)

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    if not -len(self) <= index < len(self):
      raise IndexError(f"record {index} out of range ({len(self)} records)")
    index %= len(self)
    record = index if self._indices is None else int(self._indices[index])
    try:
      raw = self._source[record]
    except Exception as e:  # A damaged ArrayRecord shard fails here, without naming itself.
      files = sorted(glob.glob(os.path.join(self.directory, "*.array_record*")))
      raise ValueError(
        f"{self.directory}: record {record} of split {self.split!r} cannot be read "
        f"({type(e).__name__}: {_first_line(e)}); the ArrayRecord file(s) "
        f"{[os.path.basename(f) for f in files]} are damaged or truncated: rebuild the dataset"
      ) from e
    return {k: self._plain(k, v) for k, v in raw.items()}

  def _plain(self, key: str, value: Any) -> Any:
    if key in self._text_fields:
      return value.decode("utf-8") if isinstance(value, bytes) else str(value)
    if key in BYTES_FIELDS:
      return bytes(value)
    if (isinstance(value, np.ndarray) and value.ndim == 0) or isinstance(value, np.generic):
      return value.item()
    return value

  def subset(self, indices: Sequence[int]) -> RecordSource:
    base = np.arange(len(self)) if self._indices is None else self._indices
    return RecordSource(self.directory, self.split, base[np.asarray(indices, np.int64)])

  def sources(self) -> list[str]:
    """The `source` of every record, in order (reads each record once)."""
    return [self[i]["source"] for i in range(len(self))]

  def __repr__(self) -> str:
    return f"RecordSource({self.directory!r}, split={self.split!r}, len={len(self)})"


def open_source(name: str, split: str = FULL_SPLIT, data_dir: str | None = None) -> RecordSource:
  """Opens a built dataset split (TFDS split syntax allowed, e.g. 'full[:10]')."""
  if data_dir is None:
    raise ValueError("open_source needs data_dir (the directory given to build)")
  return RecordSource(dataset_dir(name, data_dir), split)


def open_split(name: str, split_name: str, data_dir: str) -> tuple[RecordSource, RecordSource]:
  """(train, test) sources of a named content-disjoint split (see internvqa_jax.data.splits)."""
  full = open_source(name, FULL_SPLIT, data_dir)
  train_idx, test_idx = splits.get_split(name.partition("/")[0], split_name, full.sources())
  return full.subset(train_idx), full.subset(test_idx)
