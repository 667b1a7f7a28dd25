"""Parameter-only Orbax checkpoints with a JSON sidecar, written atomically.

Layout of a converted model directory DST:

  DST/params/       Orbax (StandardCheckpointer) tree of float32 parameters
  DST/meta.json     {"family", "model_kwargs", "format_version", ...provenance}

`family` and `model_kwargs` are enough to rebuild the Flax module
(`internvqa_jax.models.build`); everything else (source file, sha256, dropped
keys) is provenance for humans.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

FORMAT_VERSION = 1
META_FILE = "meta.json"
PARAMS_DIR = "params"


def save_params(
  dst: str | os.PathLike,
  params: Mapping[str, Any],
  meta: Mapping[str, Any],
  *,
  overwrite: bool = False,
) -> str:
  """Writes `params` and `meta` to `dst` atomically.

  Everything goes to a temporary sibling directory first and is renamed into
  place only once complete, so an interrupted or failed write never leaves a
  half-written `dst`.
  """
  dst = os.path.abspath(os.fspath(dst))
  if "family" not in meta or "model_kwargs" not in meta:
    raise ValueError(f"meta for {dst} needs 'family' and 'model_kwargs', got keys {sorted(meta)}")
  if os.path.exists(dst) and not overwrite:
    raise FileExistsError(f"{dst} already exists; pass overwrite=True (--overwrite) to replace it")
  parent = os.path.dirname(dst)
  os.makedirs(parent, exist_ok=True)
  primary = jax.process_index() == 0
  multi = jax.process_count() > 1
  # Multi-host saves are collective, so every process must agree on the path.
  tmp = (
    f"{dst}.partial"
    if multi
    else tempfile.mkdtemp(prefix=f".{os.path.basename(dst)}.tmp-", dir=parent)
  )
  if multi:
    if primary:
      shutil.rmtree(tmp, ignore_errors=True)
      os.makedirs(tmp)
    _sync("internvqa_save_params_start")
  try:
    host = jax.tree.map(lambda x: np.asarray(x), dict(params))
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(os.path.join(tmp, PARAMS_DIR), host)
    ckptr.wait_until_finished()
    ckptr.close()
    if primary:
      full_meta = {"format_version": FORMAT_VERSION, **meta}
      with open(os.path.join(tmp, META_FILE), "w") as f:
        json.dump(full_meta, f, indent=2, sort_keys=True, default=_json_default)
      if os.path.exists(dst):
        shutil.rmtree(dst)
      os.replace(tmp, dst)
    if multi:
      _sync("internvqa_save_params_done")
  except BaseException:
    if primary:
      shutil.rmtree(tmp, ignore_errors=True)
    raise
  return dst


def _sync(name: str) -> None:
  multihost_utils.sync_global_devices(name)


def read_meta(src: str | os.PathLike) -> dict[str, Any]:
  path = os.path.join(os.fspath(src), META_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"{src} is not a converted model directory: {META_FILE} is missing "
      "(expected WORKDIR/export/<role> of a training run, or a PyTorch checkpoint "
      "converted with `python -m converters.internvideo2` or `python -m converters.fastvqa`)"
    )
  with open(path) as f:
    meta = json.load(f)
  if meta.get("format_version") != FORMAT_VERSION:
    raise ValueError(
      f"{path}: format_version {meta.get('format_version')!r}, this code reads {FORMAT_VERSION}"
    )
  return meta


def load_params(src: str | os.PathLike, target: Any = None) -> tuple[dict, dict]:
  """Returns (params, meta). `target` (an abstract tree) restores with shardings."""
  src = os.path.abspath(os.fspath(src))
  meta = read_meta(src)
  ckptr = ocp.StandardCheckpointer()
  try:
    params = ckptr.restore(os.path.join(src, PARAMS_DIR), target)
  finally:
    ckptr.close()
  return params, meta


def _json_default(obj):
  if isinstance(obj, (np.integer,)):
    return int(obj)
  if isinstance(obj, (np.floating,)):
    return float(obj)
  if isinstance(obj, (tuple, set)):
    return list(obj)
  raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
