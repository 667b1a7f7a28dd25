"""The data side of a training run: dataset, content-disjoint split, train and eval pipelines.

Config (config.data):
  dataset        'synthetic_compressed[/CONFIG]' | 'bvi_hd' | 'waterloo_ivc_4k'
  data_dir       TFDS data directory ('' = ~/tensorflow_datasets)
  manual_dir     where the real dataset's files are (bvi_hd, waterloo_ivc_4k)
  build          True: build the dataset under data_dir when it is not built yet
                 (the synthetic set is made locally; the real sets index manual_dir)
  split          a named content-disjoint split (internvqa_jax.data.splits), e.g. 'authors',
                 'random80_seed0', 'heldout'
  pipeline       the grain pipeline config (internvqa_jax.data.pipeline): views, labels, workers
  eval_batch_size  global eval batch (views, not videos)

Each model reads the batch entry named by its `view`; evaluation runs one
pipeline per view, so models with different inputs (InternVideo2 clips and
FAST-VQA fragments) are each scored with their own test protocol.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils

from internvqa_jax import sharding
from internvqa_jax.config_dicts import config_dict
from internvqa_jax.data import pipeline, sources


def default_data_dir() -> str:
  return os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))


def _is_built(name: str, data_dir: str) -> bool:
  try:
    sources.dataset_dir(name, data_dir)
    return True
  except FileNotFoundError:
    return False


def prepare(dcfg, log: Callable[..., None] = print) -> str:
  """Builds the dataset if asked and needed (process 0 only, others wait); returns data_dir."""
  data_dir = dcfg.get("data_dir") or default_data_dir()
  if not _is_built(dcfg.dataset, data_dir):
    if not dcfg.get("build", False):
      raise FileNotFoundError(
        f"dataset {dcfg.dataset!r} is not built under {data_dir}; set --config.data.build=True "
        f"(with --config.data.manual_dir for the real datasets) or build it with "
        f"internvqa_jax.data.sources.build"
      )
    if jax.process_index() == 0:
      log(f"building {dcfg.dataset} under {data_dir} ...")
      sources.build(dcfg.dataset, data_dir, manual_dir=dcfg.get("manual_dir") or None)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("internvqa_dataset_built")
  return data_dir


class Data:
  """Train iterator, per-view eval batches and global-batch assembly for one run."""

  def __init__(self, config, log: Callable[..., None] = print):
    dcfg = config.data
    self.config = config
    data_dir = prepare(dcfg, log)
    self.train_records, self.eval_records = sources.open_split(dcfg.dataset, dcfg.split, data_dir)
    log(
      f"data: {dcfg.dataset} split {dcfg.split!r}: {len(self.train_records)} train / "
      f"{len(self.eval_records)} eval videos ({data_dir})"
    )
    self.pipeline_cfg = config_dict(dcfg.pipeline, "config.data.pipeline")
    self.views = dict(self.pipeline_cfg.get("views") or pipeline.DEFAULT_VIEWS)
    self.model_views = sorted({config[r].get("view", "video") for r in _roles(config)})
    missing = [v for v in self.model_views if v not in self.views]
    if missing:
      raise ValueError(
        f"model view(s) {missing} are not in config.data.pipeline.views {sorted(self.views)}"
      )
    eval_bs = dcfg.get("eval_batch_size", config.batch_size)
    if eval_bs % jax.process_count():
      raise ValueError(
        f"config.data.eval_batch_size={eval_bs} must be divisible by the "
        f"{jax.process_count()} processes"
      )
    self.eval_batch_size = eval_bs // jax.process_count()
    self.seed = int(config.seed)

  def train_iterator(self):
    cfg = dict(self.pipeline_cfg)
    cfg["views"] = {v: self.views[v] for v in self.model_views}
    return pipeline.make_train_iterator(
      self.train_records, cfg, global_batch_size=self.config.batch_size, seed=self.seed
    )

  def eval_batches(self, view_name: str):
    cfg = copy.deepcopy(self.pipeline_cfg)
    cfg["views"] = {view_name: self.views[view_name]}
    cfg.pop("skip_bad_videos", None)
    cfg.pop("bad_videos_log", None)
    return pipeline.make_eval_batches(
      self.eval_records, cfg, batch_size=self.eval_batch_size, seed=self.seed
    )

  def global_batch(self, batch: dict[str, np.ndarray], mesh, keys: list[str] | None = None):
    keys = keys or [*self.model_views, "label"]
    return sharding.make_global_batch({k: batch[k] for k in keys}, mesh)


def _roles(config) -> list[str]:
  return ["model"] if config.mode == "finetune" else ["teacher", "student"]


def make_data(config, log: Callable[..., None] = print) -> Data:
  return Data(config, log)
