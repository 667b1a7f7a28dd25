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
import socket
import tempfile
import time
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
  log=print,
) -> str:
  """Writes `params` and `meta` to `dst` atomically.

  Everything goes to a temporary sibling directory first and is renamed into
  place only once complete, so an interrupted or failed write never leaves a
  half-written `dst`. Temporaries that an interrupted earlier write of the same
  `dst` left behind are removed first (and logged). `overwrite` replaces only a
  directory that is itself a converted model (`check_replaceable`); the result
  gets the permissions the umask gives a new directory.
  """
  dst = os.path.abspath(os.fspath(dst))
  if "family" not in meta or "model_kwargs" not in meta:
    raise ValueError(f"meta for {dst} needs 'family' and 'model_kwargs', got keys {sorted(meta)}")
  check_destination(dst, overwrite=overwrite)
  parent = os.path.dirname(dst)
  os.makedirs(parent, exist_ok=True)
  primary = jax.process_index() == 0
  multi = jax.process_count() > 1
  if primary and not multi:
    remove_stale_temporaries(dst, log=log)
  # Multi-host saves are collective, so every process must agree on the path.
  tmp = (
    f"{dst}.partial"
    if multi
    else tempfile.mkdtemp(
      prefix=_tmp_prefix(dst) + f"{socket.gethostname()}-{os.getpid()}-", dir=parent
    )
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
      _apply_umask(tmp)
      if os.path.exists(dst):
        check_replaceable(dst)  # Again: it may have changed while the params were written.
        shutil.rmtree(dst)
      os.replace(tmp, dst)
    if multi:
      _sync("internvqa_save_params_done")
  except BaseException:
    if primary:
      shutil.rmtree(tmp, ignore_errors=True)
    raise
  return dst


def check_destination(dst: str | os.PathLike, *, overwrite: bool) -> None:
  """Raises unless `dst` can be written: absent, or (with overwrite) a converted model."""
  dst = os.fspath(dst)
  parent = os.path.dirname(os.path.abspath(dst))
  if os.path.lexists(dst):
    if not overwrite:
      if not os.path.isdir(dst):
        raise FileExistsError(f"{dst} exists and is not a directory; choose a new model directory")
      raise FileExistsError(
        f"{dst} already exists; pass --overwrite (overwrite=True) to replace it"
      )
    check_replaceable(dst)
  ancestor = parent
  while not os.path.exists(ancestor):
    ancestor = os.path.dirname(ancestor)
  if not os.path.isdir(ancestor):
    raise NotADirectoryError(f"{dst}: {ancestor} is a file, expected a directory to write into")
  if not os.access(ancestor, os.W_OK | os.X_OK):
    raise PermissionError(f"{dst}: cannot write into {ancestor} (permission denied)")


def check_replaceable(dst: str | os.PathLike) -> None:
  """Raises unless `dst` is a converted model directory, the only thing overwrite replaces.

  That is: a real directory (not a link, not the current directory or one
  holding it) that is empty, or whose meta.json names a `family` and
  `model_kwargs` and which holds nothing but meta.json and params/. Anything
  else (a folder of checkpoints, a file) is refused, so an overwrite can never
  delete what it did not write.
  """
  dst = os.fspath(dst)
  if os.path.islink(dst) or not os.path.isdir(dst):
    raise FileExistsError(
      f"{dst} exists and is not a converted model directory (a "
      f"{'symbolic link' if os.path.islink(dst) else 'file'}); refusing to replace it"
    )
  here = os.path.realpath(os.getcwd())
  real = os.path.realpath(dst)
  if here == real or here.startswith(real.rstrip(os.sep) + os.sep):
    raise FileExistsError(
      f"{dst} is the current directory or holds it; --overwrite never replaces that"
    )
  if not os.listdir(dst):
    return  # An empty directory: nothing to lose.
  why = None
  meta_path = os.path.join(dst, META_FILE)
  try:
    with open(meta_path) as f:
      meta = json.load(f)
    if not isinstance(meta, dict) or "family" not in meta or "model_kwargs" not in meta:
      why = f"its {META_FILE} has no 'family'/'model_kwargs'"
  except FileNotFoundError:
    why = f"it has no {META_FILE}"
  except (OSError, ValueError) as e:
    why = f"its {META_FILE} is unreadable ({e})"
  if why is None:
    other = sorted(set(os.listdir(dst)) - {META_FILE, PARAMS_DIR})
    if other:
      why = f"it also holds {other[:5]}{' ...' if len(other) > 5 else ''}"
  if why:
    raise FileExistsError(
      f"{dst} exists and is not a converted model directory ({why}); --overwrite only "
      "replaces a model directory written by the converters or by training. Choose another "
      "destination or remove it yourself"
    )


def _tmp_prefix(dst: str) -> str:
  return f".{os.path.basename(dst)}.tmp-"


def remove_stale_temporaries(dst: str | os.PathLike, *, log=print) -> list[str]:
  """Removes temporaries of `dst` left by interrupted writes on this host; returns them.

  A temporary is named .<DST>.tmp-<host>-<pid>-<random>; it is stale when its
  process is gone. One of another host (shared file systems) is left alone
  unless older than a day.
  """
  dst = os.path.abspath(os.fspath(dst))
  parent, prefix = os.path.dirname(dst), _tmp_prefix(dst)
  if not os.path.isdir(parent):
    return []
  host = socket.gethostname()
  removed = []
  for name in sorted(os.listdir(parent)):
    if not name.startswith(prefix):
      continue
    path = os.path.join(parent, name)
    owner_host, _, rest = name[len(prefix) :].rpartition("-")[0].rpartition("-")
    pid = int(rest) if rest.isdigit() else None
    if owner_host == host and pid is not None:
      stale = not _pid_alive(pid)
    elif owner_host and pid is not None:  # Another host's: its process cannot be checked.
      try:
        stale = time.time() - os.path.getmtime(path) > 86400
      except OSError:
        continue
    else:  # Named before temporaries carried host and pid.
      stale = True
    if stale:
      shutil.rmtree(path, ignore_errors=True)
      removed.append(path)
  if removed:
    log(
      f"removed {len(removed)} temporary folder(s) left by an interrupted write of {dst}: {removed}"
    )
  return removed


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _current_umask() -> int:
  """The process umask, read without changing it where Linux allows (other threads may be
  creating files; os.umask can only be read by setting it)."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except OSError:
    pass
  mask = os.umask(0o077)
  os.umask(mask)
  return mask


def _apply_umask(root: str) -> None:
  """mkdtemp makes 0700 directories: give the tree the modes the umask gives new ones."""
  mask = _current_umask()
  for d, _, files in os.walk(root):
    os.chmod(d, 0o777 & ~mask)
    for f in files:
      os.chmod(os.path.join(d, f), 0o666 & ~mask)


def _sync(name: str) -> None:
  multihost_utils.sync_global_devices(name)


def read_meta(src: str | os.PathLike) -> dict[str, Any]:
  """The meta.json of a converted model directory, checked for what loading needs."""
  path = os.path.join(os.fspath(src), META_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"{src} is not a converted model directory: {META_FILE} is missing "
      "(expected WORKDIR/export/<role> of a training run, or a PyTorch checkpoint "
      "converted with `python -m converters.internvideo2` or `python -m converters.fastvqa`)"
    )
  try:
    with open(path) as f:
      meta = json.load(f)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"{path}: not valid JSON ({e}); expected the meta.json of a model") from e
  if not isinstance(meta, dict):
    raise ValueError(f"{path}: expected a JSON object, found {type(meta).__name__}")
  if meta.get("format_version") != FORMAT_VERSION:
    raise ValueError(
      f"{path}: format_version {meta.get('format_version')!r}, this code reads {FORMAT_VERSION}"
    )
  if not isinstance(meta.get("family"), str):
    raise ValueError(f"{path}: no 'family' (the model family name, e.g. 'internvideo2')")
  if not isinstance(meta.get("model_kwargs"), dict):
    raise ValueError(f"{path}: no 'model_kwargs' object (the model's constructor arguments)")
  return meta


def load_params(src: str | os.PathLike, target: Any = None) -> tuple[dict, dict]:
  """Returns (params, meta). `target` (an abstract tree) restores with shardings."""
  src = os.path.abspath(os.fspath(src))
  meta = read_meta(src)
  params_dir = os.path.join(src, PARAMS_DIR)
  if not os.path.isdir(params_dir):
    raise FileNotFoundError(f"{params_dir}: missing; a converted model holds its parameters there")
  ckptr = ocp.StandardCheckpointer()
  try:
    params = ckptr.restore(params_dir, target)
  except Exception as e:  # Orbax/TensorStore raise many types for damaged files.
    raise ValueError(
      f"{params_dir}: cannot restore the parameters (damaged or incomplete checkpoint): "
      f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    ) from e
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
