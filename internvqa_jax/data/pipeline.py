"""Grain input pipelines: shuffled, host-sharded training and padded evaluation.

Entry points:

  it = make_train_iterator(records, cfg, global_batch_size=64, seed=0)
  batch = next(it)   # per-host batch: global_batch_size // process_count
  for batch in make_eval_batches(records, cfg, batch_size=16): ...

`records` is any random-access source of record dicts (len() and [i]), e.g.
`sources.open_source(...)` or a plain list. Fields used: video_id, path
(str, '' for in-memory), video_bytes (in-memory videos), num_frames, score,
score_kind, and width/height/bit_depth for raw YUV files.

Config `cfg` (a mapping or ml_collections.ConfigDict; every field optional):
  views: {name: view config}, default {'video': {'recipe': 'internvideo2'}}.
    Each sample decodes its video once and builds every named view from it,
    e.g. {'video': internvideo2, 'fragments': fastvqa} for distillation.
    A view config's `recipe` names a model family; its other fields go to
    that family's `input_recipe` (internvqa_jax.models):
    recipe 'internvideo2': num_frames (8), crop_size (224), resize_short
      (224; None = native-resolution crops, keeps compression artefacts
      sharp), flip (True), test_clips (4), test_crops (3).
    recipe 'fastvqa': variant ('fast_vqa_b', 'faster_vqa', ...), overrides
      ({}), passed to `fragments.FragmentSampler(variant, **overrides)`; one
      clip per training sample, the variant's num_clips_test clips in eval.
      Test sampling defaults to recipes.DEFAULT_TEST_SAMPLING ('center':
      centred temporal and spatial offsets, the same examples on every run);
      the reference's random test draws are overrides={'test_sampling':
      'random'} (seeded per video and view, see Determinism).
  labels: label transform config, see `labels.make_label_transform`.
  shuffle (True), num_epochs (None = repeat forever).
  worker_count (0 = decode in the main process), worker_buffer_size (2).
  num_threads (2) and prefetch_buffer_size (2): Grain read threads/buffer
    (in every worker). Buffer elements are whole per-host batches in training
    and whole videos (all eval examples) in evaluation.
  string_fields (()): record fields copied into batches as numpy str arrays
    (e.g. ('video_id', 'source')); off by default so batches hold only numeric
    arrays that can be handed to JAX as they are.
  skip_bad_videos (False), bad_videos_log (None): see below.
  decoded_cache_mb (0): > 0 keeps whole decoded clips in memory (per process,
    least recently used dropped beyond this size), so a small dataset read for
    many epochs, or by several runs in one process, is decoded once. Best with
    worker_count=0: each worker process would hold its own copy.

Batches are dicts of numpy arrays:
  <view name>  float32 (B, T, H, W, 3), normalized, channels last.
  label        float32 (B,)  transformed score (labels.py).
  score        float32 (B,)  raw MOS/DMOS.
  index        int32 (B,)    position of the record in `records`; turn it into
                             a video id with `records[i]['video_id']` (ints,
                             unlike strings, can go to JAX).
  example      int32 (B,)    eval only: the example's number within its video
                             (InternVideo2: clip * C + crop; FAST-VQA: clip).
  mask         bool (B,)     eval only: False for padding.

Determinism: the global sample stream is a function of (records, cfg, seed)
only. Sample p of the stream (p counts over all epochs) uses
np.random.default_rng([seed, p]) for its frame sampling and augmentation, and
host h of P takes samples h, h + P, h + 2P, ... of that stream, so the union of
the hosts' step-k batches is the same set of samples for any worker count and
any process count. Each epoch is reshuffled (Grain's per-epoch shuffle seed).

Bad videos raise `BadVideoError` naming the video id and file. With
skip_bad_videos=True they are dropped instead and listed (video_id, path,
reason; tab-separated) in bad_videos_log; batching then happens after the
drop, so batch composition also depends on worker_count (still
deterministic for a fixed one).

Iterator state: the returned iterator is a `grain.DatasetIterator`; save it
with `grain.checkpoint.CheckpointSave(it)` inside an Orbax
`ocp.args.Composite` (restore with `CheckpointRestore(it)`), or use
`it.get_state()` / `it.set_state(state)`.
"""

from __future__ import annotations

import collections
import logging
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import grain
import jax
import numpy as np
from absl import flags

from internvqa_jax import models
from internvqa_jax.config_dicts import config_dict
from internvqa_jax.data import decode, frames
from internvqa_jax.data import labels as labels_lib
from internvqa_jax.data.video_types import record_name

Record = Mapping[str, Any]
DEFAULT_VIEWS = {"video": {"recipe": "internvideo2"}}
# Batch entries besides the views' clips (which are keyed by view name).
BATCH_FIELDS = frozenset({"label", "score", "index", "example", "mask"})


class BadVideoError(RuntimeError):
  """A video could not be decoded or processed."""


# ------------------------------------------------------------------ config ---


_TOP_LEVEL_KEYS = {
  "views",
  "labels",
  "shuffle",
  "num_epochs",
  "worker_count",
  "worker_buffer_size",
  "num_threads",
  "prefetch_buffer_size",
  "string_fields",
  "skip_bad_videos",
  "bad_videos_log",
  "decoded_cache_mb",
}


def _parse_config(cfg: Any) -> dict[str, Any]:
  cfg = config_dict(cfg, "data pipeline config")
  unknown = set(cfg) - _TOP_LEVEL_KEYS
  if unknown:
    raise ValueError(
      f"unknown data config fields {sorted(unknown)}; known: {sorted(_TOP_LEVEL_KEYS)}"
    )
  return cfg


def make_recipe(view: Mapping[str, Any]):
  """The recipe (internvqa_jax.data.recipes) of one view config: the family its
  `recipe` names (default internvideo2) builds it from the other fields."""
  view = config_dict(view, "view config")
  family = view.pop("recipe", "internvideo2")
  if family not in models.FAMILIES:
    raise ValueError(f"unknown recipe {family!r}; expected one of {models.families()}")
  return models.get(family).input_recipe(view)


def make_recipes(views_cfg: Mapping[str, Any] | None) -> dict[str, Any]:
  """View name -> recipe (`make_recipe`) for every view config."""
  views_cfg = config_dict(views_cfg, "views config") or dict(DEFAULT_VIEWS)
  recipes = {}
  for name, view in views_cfg.items():
    if name in BATCH_FIELDS:
      raise ValueError(f"view name {name!r} clashes with a batch field {sorted(BATCH_FIELDS)}")
    try:
      recipes[name] = make_recipe(view)
    except (TypeError, ValueError) as e:
      raise ValueError(f"view {name!r}: {e}") from e
  return recipes


class DecodedClipCache:
  """Whole decoded clips by content key, least recently used dropped beyond `max_bytes`.

  The key is the record's video id and path plus, for in-memory videos, the length and CRC-32
  of the encoded bytes, so two datasets that reuse an id never share an entry.
  """

  def __init__(self, max_bytes: int):
    self.max_bytes = int(max_bytes)
    self._clips: collections.OrderedDict[tuple, np.ndarray] = collections.OrderedDict()
    self._bytes = 0

  @staticmethod
  def key(record: Record) -> tuple:
    data = record.get("video_bytes") or b""
    return (record.get("video_id", ""), record.get("path") or "", len(data), zlib.crc32(data))

  def get(self, key: tuple, decode_clip: Callable[[], np.ndarray]) -> np.ndarray:
    clip = self._clips.get(key)
    if clip is not None:
      self._clips.move_to_end(key)
      return clip
    clip = decode_clip()
    clip.setflags(write=False)  # Shared by every later reader.
    self._clips[key] = clip
    self._bytes += clip.nbytes
    while self._bytes > self.max_bytes and len(self._clips) > 1:
      _, old = self._clips.popitem(last=False)
      self._bytes -= old.nbytes
    return clip


_DECODED_CACHES: dict[int, DecodedClipCache] = {}


def decoded_clip_cache(max_mb: int) -> DecodedClipCache:
  """The process-wide cache of that size (one per size, shared by every pipeline asking it)."""
  if max_mb not in _DECODED_CACHES:
    _DECODED_CACHES[max_mb] = DecodedClipCache(max_mb * 2**20)
  return _DECODED_CACHES[max_mb]


class _CachedClipReader:
  """A record's frames read from its whole decoded clip in a DecodedClipCache."""

  def __init__(self, reader, cache: DecodedClipCache, key: tuple):
    self._reader, self._cache, self._key = reader, cache, key
    self.num_frames = reader.num_frames
    self.name = reader.name

  def __call__(self, indices) -> np.ndarray:
    idx = np.asarray(indices, np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= self.num_frames):
      raise IndexError(
        f"frame indices {idx.tolist()} outside [0, {self.num_frames}) for {self.name}"
      )
    return self._cache.get(self._key, lambda: self._reader(np.arange(self.num_frames)))[idx]


class VideoProcessor:
  """Record index -> example dict(s). Picklable, so Grain workers can run it."""

  def __init__(
    self,
    records: Sequence[Record],
    cfg: Any,
    *,
    seed: int,
    read_frames: Callable[..., np.ndarray] | None = None,
  ):
    cfg = _parse_config(cfg)
    self.records = records
    self.seed = int(seed)
    self.recipes = make_recipes(cfg.get("views"))
    self.label_fn = labels_lib.make_label_transform(cfg.get("labels"))
    self.read_frames = read_frames
    self.string_fields = tuple(cfg.get("string_fields") or ())
    clash = set(self.string_fields) & (set(self.recipes) | BATCH_FIELDS)
    if clash:
      raise ValueError(f"string_fields {sorted(clash)} clash with view names or batch fields")
    self.skip_bad_videos = bool(cfg.get("skip_bad_videos", False))
    cache_mb = int(cfg.get("decoded_cache_mb", 0))
    if cache_mb < 0:
      raise ValueError(f"decoded_cache_mb must be >= 0, got {cache_mb}")
    self.decoded_cache_mb = cache_mb
    self.bad_videos_log = cfg.get("bad_videos_log")

  def _rng(self, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([self.seed, *map(int, key)]))

  def _common(self, record: Record) -> dict[str, Any]:
    out = {"label": self.label_fn(record), "score": np.float32(record["score"])}
    for f in self.string_fields:
      out[f] = np.str_(record.get(f, ""))
    return out

  def _bad(self, record: Record, err: Exception):
    if not self.skip_bad_videos:
      raise BadVideoError(
        f"cannot load {record_name(record)}: {type(err).__name__}: {err}"
      ) from err
    reason = f"{type(err).__name__}: {err}".replace("\t", " ").replace("\n", " ")
    logging.warning("skipping bad video %s: %s", record_name(record), reason)
    if self.bad_videos_log:
      with open(self.bad_videos_log, "a") as f:
        f.write(f"{record.get('video_id', '')}\t{record.get('path', '')}\t{reason}\n")
    return None

  def _frames(self, record: Record):
    # A single recipe reads without caching: memory stays at what it asks for in one call.
    reader = frames.for_record(
      record, read_fn=self.read_frames or decode.read_frames, cache=len(self.recipes) > 1
    )
    if not self.decoded_cache_mb:
      return reader
    cache = decoded_clip_cache(self.decoded_cache_mb)
    return _CachedClipReader(reader, cache, DecodedClipCache.key(record))

  def train_example(self, position: int, record_index: int) -> dict[str, Any] | None:
    """Sample number `position` of the global stream, for records[record_index]."""
    record = self.records[int(record_index)]
    label = self._common(record)  # Label errors are config/data errors: never skipped.
    rng = self._rng(position)
    try:
      reader = self._frames(record)
      out = {name: r.train(reader, reader.num_frames, rng) for name, r in self.recipes.items()}
    except Exception as e:  # pylint: disable=broad-except
      return self._bad(record, e)
    out.update(label)
    out["index"] = np.int32(record_index)
    return out

  def eval_video(self, slot: tuple[int, bool]) -> dict[str, Any] | None:
    """All eval examples of one video, stacked on a leading example axis."""
    record_index, real = int(slot[0]), bool(slot[1])
    record = self.records[record_index]
    common = self._common(record)
    try:
      reader = self._frames(record)
      # One stream per (record, view name): independent of host and worker.
      examples = {
        name: r.eval(reader, reader.num_frames, self._rng(record_index, i))
        for i, (name, r) in enumerate(self.recipes.items())
      }
    except Exception as e:  # pylint: disable=broad-except
      return self._bad(record, e)
    counts = {name: x.shape[0] for name, x in examples.items()}
    if len(set(counts.values())) != 1:
      raise ValueError(
        f"eval views give different numbers of examples per video {counts}; "
        "evaluate them in separate pipelines"
      )
    n = next(iter(counts.values()))
    out = dict(examples)
    for k, v in common.items():
      out[k] = np.repeat(np.asarray(v)[None], n)
    out["index"] = np.full((n,), record_index, np.int32)
    out["example"] = np.arange(n, dtype=np.int32)
    out["mask"] = np.full((n,), real, bool)
    return out


def _read_options(cfg: Mapping[str, Any]) -> grain.ReadOptions:
  return grain.ReadOptions(
    num_threads=int(cfg.get("num_threads", 2)),
    prefetch_buffer_size=int(cfg.get("prefetch_buffer_size", 2)),
  )


def _maybe_workers(ds: grain.IterDataset, cfg: Mapping[str, Any]) -> grain.IterDataset:
  workers = int(cfg.get("worker_count", 0))
  if workers < 0:
    raise ValueError(f"worker_count must be >= 0, got {workers}")
  if workers == 0:
    return ds
  if not flags.FLAGS.is_parsed():
    # Grain's worker processes read absl flags; outside an absl app (pytest,
    # notebooks, argparse scripts) they would fail with UnparsedFlagAccessError.
    flags.FLAGS.mark_as_parsed()
  return ds.mp_prefetch(
    grain.multiprocessing.MultiprocessingOptions(
      num_workers=workers, per_worker_buffer_size=int(cfg.get("worker_buffer_size", 2))
    )
  )


def _process_info(process_index, process_count) -> tuple[int, int]:
  if process_index is None or process_count is None:
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} outside [0, {process_count})")
  return int(process_index), int(process_count)


# ------------------------------------------------------------------- train ---


def make_train_dataset(
  records: Sequence[Record],
  cfg: Any,
  *,
  global_batch_size: int,
  seed: int,
  process_index: int | None = None,
  process_count: int | None = None,
  read_frames: Callable[..., np.ndarray] | None = None,
) -> grain.IterDataset:
  """The per-host training IterDataset behind `make_train_iterator`."""
  pcfg = _parse_config(cfg)
  process_index, process_count = _process_info(process_index, process_count)
  if global_batch_size < 1 or global_batch_size % process_count:
    raise ValueError(
      f"global_batch_size={global_batch_size} must be a positive multiple of "
      f"process_count={process_count}"
    )
  if not 0 <= seed < 2**32:
    raise ValueError(f"seed must be in [0, 2**32), got {seed}")
  n = len(records)
  if n == 0:
    raise ValueError("no training records")
  local_batch = global_batch_size // process_count
  processor = VideoProcessor(records, pcfg, seed=seed, read_frames=read_frames)

  ds = grain.MapDataset.range(n)
  if pcfg.get("shuffle", True):
    ds = ds.shuffle(seed=seed)  # Reshuffled every epoch (seed + epoch).
  num_epochs = pcfg.get("num_epochs")
  ds = ds.repeat(None if num_epochs is None else int(num_epochs))
  if num_epochs is not None:
    # Whole global batches only, so every host runs the same number of steps.
    ds = ds[: len(ds) // global_batch_size * global_batch_size]
    if len(ds) == 0:
      raise ValueError(
        f"{n} records x {num_epochs} epochs < one global batch of {global_batch_size}"
      )
  # Index = position in the global stream; slicing afterwards keeps it.
  ds = ds.map_with_index(processor.train_example)
  ds = ds[process_index::process_count]
  if processor.skip_bad_videos:
    it_ds = ds.to_iter_dataset(_read_options(pcfg)).batch(local_batch, drop_remainder=True)
  else:
    it_ds = ds.batch(local_batch, drop_remainder=True).to_iter_dataset(_read_options(pcfg))
  return _maybe_workers(it_ds, pcfg)


def make_train_iterator(
  records: Sequence[Record],
  cfg: Any,
  *,
  global_batch_size: int,
  seed: int,
  process_index: int | None = None,
  process_count: int | None = None,
  read_frames: Callable[..., np.ndarray] | None = None,
) -> grain.DatasetIterator:
  """Iterator over this host's training batches (global_batch_size // hosts).

  process_index/process_count default to jax.process_index()/process_count();
  pass them explicitly to simulate several hosts. read_frames defaults to
  `internvqa_jax.data.decode.read_frames`.
  """
  return iter(
    make_train_dataset(
      records,
      cfg,
      global_batch_size=global_batch_size,
      seed=seed,
      process_index=process_index,
      process_count=process_count,
      read_frames=read_frames,
    )
  )


# -------------------------------------------------------------------- eval ---


def host_video_slots(
  num_records: int, process_index: int, process_count: int
) -> list[tuple[int, bool]]:
  """(record index, is_real) slots of one host; all hosts get the same count.

  Host h takes the contiguous block [h * k, (h + 1) * k) with
  k = ceil(num_records / process_count); missing slots repeat a real video
  with is_real=False (masked out), so per-host work has the same shapes.
  """
  k = -(-num_records // process_count)
  real = list(range(process_index * k, min((process_index + 1) * k, num_records)))
  filler = real[0] if real else 0
  return [(i, True) for i in real] + [(filler, False)] * (k - len(real))


class EvalBatches:
  """Re-iterable padded eval batches of one host (see make_eval_batches)."""

  def __init__(
    self, dataset: grain.IterDataset, num_slots: int, batch_size: int, examples_per_video: int
  ):
    self._dataset = dataset
    self.num_slots = num_slots
    self.batch_size = batch_size
    self.examples_per_video = examples_per_video

  @property
  def num_batches(self) -> int:
    """Batches per host, the same on every host."""
    return -(-self.num_slots * self.examples_per_video // self.batch_size)

  def __len__(self) -> int:
    return self.num_batches

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    it = iter(self._dataset)
    try:
      yield from self._batches(it)
    finally:
      if hasattr(it, "close"):  # Stops worker processes (mp_prefetch) promptly.
        it.close()

  def _batches(self, videos) -> Iterator[dict[str, np.ndarray]]:
    pending: list[dict[str, np.ndarray]] = []
    size = 0
    template = None
    for video in videos:
      n = len(video["mask"])
      if n != self.examples_per_video:
        raise ValueError(f"expected {self.examples_per_video} eval examples per video, got {n}")
      template = video
      pending.append(video)
      size += n
      while size >= self.batch_size:
        batch, pending, size = _take(pending, self.batch_size)
        yield batch
    if size:
      batch, _, _ = _take(pending, size)
      pad = self.batch_size - size
      if pad:
        fill = {k: np.zeros((pad,) + v.shape[1:], v.dtype) for k, v in template.items()}
        fill["index"][:] = -1
        batch = {k: np.concatenate([v, fill[k]]) for k, v in batch.items()}
      yield batch


def _take(pending, n):
  """First n examples of a list of stacked video dicts -> (batch, rest, rest size)."""
  parts, rest, got = [], [], 0
  for video in pending:
    m = len(video["mask"])
    if got >= n:
      rest.append(video)
    elif got + m <= n:
      parts.append(video)
      got += m
    else:
      cut = n - got
      parts.append({k: v[:cut] for k, v in video.items()})
      rest.append({k: v[cut:] for k, v in video.items()})
      got = n
  batch = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  return batch, rest, sum(len(v["mask"]) for v in rest)


def make_eval_batches(
  records: Sequence[Record],
  cfg: Any,
  *,
  batch_size: int,
  process_index: int | None = None,
  process_count: int | None = None,
  seed: int = 0,
  read_frames: Callable[..., np.ndarray] | None = None,
) -> EvalBatches:
  """This host's eval batches: every video once, in order, all its eval examples.

  Every eval example of a video is its own batch row, tagged with `index` (record)
  and `example`; average the model's scores per `index` over rows with `mask`.
  The last batch is padded (mask False, index -1), and hosts with fewer
  videos repeat a masked video, so all hosts run `len(batches)` steps.
  """
  pcfg = _parse_config(cfg)
  process_index, process_count = _process_info(process_index, process_count)
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if len(records) == 0:
    raise ValueError("no eval records")
  processor = VideoProcessor(records, pcfg, seed=seed, read_frames=read_frames)
  if processor.skip_bad_videos:
    raise ValueError("skip_bad_videos is not supported in evaluation: every video must be scored")
  slots = host_video_slots(len(records), process_index, process_count)
  counts = {name: int(r.num_eval_examples) for name, r in processor.recipes.items()}
  if len(set(counts.values())) > 1:
    raise ValueError(
      f"eval views give different numbers of examples per video {counts}; "
      "evaluate them in separate pipelines"
    )
  ds = grain.MapDataset.source(slots).map(processor.eval_video)
  ds = _maybe_workers(ds.to_iter_dataset(_read_options(pcfg)), pcfg)
  return EvalBatches(ds, len(slots), batch_size, next(iter(counts.values())))
