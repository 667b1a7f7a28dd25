"""TFDS builders (ArrayRecord, no TensorFlow) for compressed-video quality datasets.

Builders: `bvi_hd` (bvi_hd.py), `waterloo_ivc_4k` (waterloo_ivc_4k.py) and the embedded
`synthetic_compressed` (synthetic_compressed.py). Each writes ONE split, `full`; train/test
selection is content-disjoint and lives in internvqa_jax/data/splits.py, so one build serves every
split protocol.

Records hold metadata and the label, never decoded frames. The real sets reference files on disk by
absolute `path`; the synthetic set stores the encoded clip in `video_bytes`.

This module holds what the builders share: the common feature spec, the build error that lists
every bad file at once, and the first-frame decode check. It imports no builder, so that the builder
modules can import it without a cycle (internvqa_jax/data/sources.py imports and registers them).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import av
import numpy as np
import tensorflow_datasets as tfds

from internvqa_jax.data import decode

FULL_SPLIT = "full"


class DatasetBuildError(ValueError):
  """Raised once per build with every problem found (missing, undecodable or unexpected files)."""

  def __init__(self, dataset: str, problems: list[str]):
    self.dataset = dataset
    self.problems = list(problems)
    listing = "\n".join(f"  - {p}" for p in self.problems)
    super().__init__(
      f"{dataset}: {len(self.problems)} problem(s) found while preparing the "
      f"dataset; nothing was written:\n{listing}"
    )


def common_features(**extra: tfds.features.FeatureConnector) -> tfds.features.FeaturesDict:
  """Fields every builder writes, plus dataset-specific ones. Only TF-free feature types."""
  features = {
    "dataset": tfds.features.Text(),  # builder name, e.g. 'bvi_hd': lets mixed sources tell apart
    "video_id": tfds.features.Text(),
    "source": tfds.features.Text(),  # pristine content name: the unit of content-disjoint splits
    "path": tfds.features.Text(),  # absolute path of the video file ('' when bytes are embedded)
    "score": tfds.features.Scalar(np.float32),  # as in the score file: MOS or DMOS, unscaled
    "score_kind": tfds.features.Text(),  # 'mos' (higher is better) or 'dmos' (higher is worse)
    "num_frames": tfds.features.Scalar(np.int32),
    "fps": tfds.features.Scalar(np.float32),
    "width": tfds.features.Scalar(np.int32),
    "height": tfds.features.Scalar(np.int32),
    "bit_depth": tfds.features.Scalar(np.int32),
    "codec": tfds.features.Text(),  # codec of the stored file ('rawvideo' for .yuv)
    # The compression that made the distortion and its level (QP / CRF / level index), both as
    # the dataset names and numbers them.
    "encoder": tfds.features.Text(),
    "level": tfds.features.Scalar(np.int32),
  }
  features.update(extra)
  return tfds.features.FeaturesDict(features)


def path_inside(root: str, *parts: str) -> str | None:
  """os.path.join(root, *parts) as an absolute path, or None when it leaves `root`.

  Names in a score table are relative to the dataset root; an absolute name or
  one with `..` could make a build read (and store) any file. Checked on the
  names themselves, so a root that is itself a symbolic link still works.
  """
  base = os.path.normpath(os.path.abspath(root))
  path = os.path.normpath(os.path.join(base, *parts))
  if any(os.path.isabs(p) for p in parts) or not path.startswith(base + os.sep):
    return None
  return path


def manual_dir_or_raise(dl_manager, dataset: str, instructions: str):
  """Returns dl_manager.manual_dir, turning TFDS's bare AssertionError into a clear error."""
  try:
    return dl_manager.manual_dir
  except AssertionError as e:
    raise FileNotFoundError(
      f"{dataset} is a manual-download dataset and its manual directory is missing or empty "
      f"({e.__class__.__name__}: {str(e).splitlines()[0]}).\n{instructions}"
    ) from None


@dataclasses.dataclass(frozen=True)
class VideoMeta:
  num_frames: int
  fps: float
  width: int
  height: int
  bit_depth: int
  codec: str


def inspect_container_video(path: str) -> VideoMeta:
  """Probes a container file and decodes its first frame; raises with the decoder's reason."""
  info = decode.probe(path)
  frames = decode.read_frames(path, [0])
  if frames.shape[0] != 1:
    raise ValueError(f"first frame: decoder returned {frames.shape[0]} frames")
  return VideoMeta(
    num_frames=int(info.num_frames),
    fps=float(info.fps),
    width=int(info.width),
    height=int(info.height),
    bit_depth=int(info.bit_depth),
    codec=canonical_codec(str(info.codec)),
  )


def canonical_codec(decoder_name: str) -> str:
  """The bitstream's codec name for a decoder name: 'libdav1d' -> 'av1', 'h264' -> 'h264'."""
  try:
    return av.codec.Codec(decoder_name, "r").canonical_name
  except Exception:  # pylint: disable=broad-except  # not a decoder name: keep it as given
    return decoder_name


def inspect_raw_yuv(path: str, width: int, height: int, fps: float, bit_depth: int) -> VideoMeta:
  """Counts the frames of a planar 4:2:0 file from its size and decodes frame 0."""
  geometry = dict(width=width, height=height, bit_depth=bit_depth, fps=fps)
  info = decode.probe(path, **geometry)
  frames = decode.read_frames(path, [0], **geometry)
  if frames.shape[0] != 1:
    raise ValueError(f"first frame: decoder returned {frames.shape[0]} frames")
  return VideoMeta(
    num_frames=int(info.num_frames),
    fps=float(fps),
    width=width,
    height=height,
    bit_depth=bit_depth,
    codec="rawvideo",
  )


def check_files(entries: list[dict[str, Any]], inspect) -> tuple[list[dict[str, Any]], list[str]]:
  """Runs `inspect(entry) -> VideoMeta` on every entry; returns (records, problems).

  Never stops early.

  Every problem names the file and the reason, so one failed build lists everything to fix.
  """
  records, problems = [], []
  for entry in entries:
    path = entry["path"]
    if not os.path.isfile(path):
      problems.append(f"{path}: missing (listed for {entry['video_id']})")
      continue
    try:
      meta = inspect(entry)
    except Exception as e:  # pylint: disable=broad-except  # report every failure, skip none
      problems.append(f"{path}: cannot decode first frame: {e.__class__.__name__}: {e}")
      continue
    records.append({**entry, **dataclasses.asdict(meta)})
  return records, problems


def checked_manual_records(
  dl_manager, name: str, instructions: str, config, list_entries, inspect
) -> list[dict]:
  """The records of a manually downloaded dataset, or one error listing every problem.

  `list_entries(manual_dir, config) -> (entries, problems)` reads the score file and expected
  layout; `check_files` then opens every listed file (`inspect`) so that nothing unreadable is
  indexed.
  """
  manual_dir = os.fspath(manual_dir_or_raise(dl_manager, name, instructions))
  entries, problems = list_entries(manual_dir, config)
  records, file_problems = check_files(entries, inspect)
  problems = list(problems) + list(file_problems)
  if problems:
    raise DatasetBuildError(name, problems)
  return records


class ManualRecordsBuilder:
  """The splits of a manually downloaded dataset, for a tfds GeneratorBasedBuilder
  subclass that also derives from this: its LIST_ENTRIES and INSPECT (staticmethods,
  see `checked_manual_records`) index MANUAL_DOWNLOAD_INSTRUCTIONS' files into one
  full split, records in video_id order."""

  def _split_generators(self, dl_manager):
    records = checked_manual_records(
      dl_manager,
      self.name,
      self.MANUAL_DOWNLOAD_INSTRUCTIONS,
      self.builder_config,
      self.LIST_ENTRIES,
      self.INSPECT,
    )
    return {FULL_SPLIT: self._generate_examples(records)}

  def _generate_examples(self, records):
    for record in sorted(records, key=lambda r: r["video_id"]):
      # Fields named "_..." are for building only (e.g. BVI-HD's "_geometry").
      yield record["video_id"], {k: v for k, v in record.items() if not k.startswith("_")}
