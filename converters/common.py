"""What every PyTorch -> Orbax converter shares: reading, unwrapping, key checks.

The torch import is local to the functions that need it, so this module (and
the error types) import without the `convert` extra installed.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
SAFETENSORS_SUFFIX = ".safetensors"


class CheckpointMismatchError(ValueError):
  """A checkpoint does not fit the model: lists every offending key."""


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while True:
      b = f.read(chunk)
      if not b:
        break
      h.update(b)
  return h.hexdigest()


def read_raw(path: str | os.PathLike) -> Any:
  """Loads a checkpoint file on CPU: a torch pickle (weights_only) or safetensors."""
  path = os.fspath(path)
  if os.path.isdir(path):
    raise IsADirectoryError(
      f"checkpoint {path} is a directory; expected a .pth/.pt/.bin/.ckpt or .safetensors file"
    )
  if not os.path.isfile(path):
    raise FileNotFoundError(f"checkpoint {path} does not exist")
  if os.path.getsize(path) == 0:
    raise ValueError(f"checkpoint {path} is empty (0 bytes); expected a PyTorch checkpoint")
  if path.endswith(SAFETENSORS_SUFFIX):
    from safetensors.torch import load_file

    try:
      return load_file(path, device="cpu")
    except Exception as e:  # safetensors raises its own error types.
      raise ValueError(f"{path}: not a readable safetensors file ({_reason(e)})") from e
  if not path.endswith(TORCH_SUFFIXES):
    raise ValueError(
      f"{path}: unsupported checkpoint suffix; expected one of "
      f"{TORCH_SUFFIXES + (SAFETENSORS_SUFFIX,)}"
    )
  import torch

  try:
    return torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:
    raise ValueError(f"{path}: torch.load(weights_only=True) failed: {_reason(e)}") from e


def _reason(e: BaseException) -> str:
  """An exception's message, or its type when the message is empty."""
  text = str(e).strip()
  return f"{type(e).__name__}: {text}" if text else type(e).__name__


def unwrap(
  obj: Any, wrapper_keys: Iterable[str], path: str = "<checkpoint>"
) -> tuple[Mapping, str | None]:
  """Returns (state_dict, wrapper key used or None)."""
  if not isinstance(obj, Mapping):
    raise ValueError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
  for k in wrapper_keys:
    if k in obj and isinstance(obj[k], Mapping):
      return obj[k], k
  return obj, None


def strip_prefixes(sd: Mapping[str, Any], prefixes: Iterable[str]) -> dict[str, Any]:
  """Strips any of `prefixes` (repeatedly, e.g. 'module.backbone.') from every key."""
  prefixes = tuple(prefixes)
  out = {}
  for k, v in sd.items():
    changed = True
    while changed:
      changed = False
      for p in prefixes:
        if k.startswith(p):
          k = k[len(p) :]
          changed = True
    if k in out:
      raise ValueError(f"two checkpoint keys map to {k!r} after stripping prefixes {prefixes}")
    out[k] = v
  return out


def to_numpy_f32(sd: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """Tensors -> float32 numpy (bf16/fp16 upcast exactly). Returns (arrays, source dtypes)."""
  arrays, dtypes = {}, {}
  for k, v in sd.items():
    if hasattr(v, "detach"):  # torch.Tensor
      dtypes[k] = str(v.dtype).replace("torch.", "")
      v = v.detach().to("cpu")
      if v.is_floating_point():
        v = v.float()
      v = v.numpy()
    else:
      v = np.asarray(v)
      dtypes[k] = str(v.dtype)
    if np.issubdtype(v.dtype, np.floating):
      v = v.astype(np.float32)
    arrays[k] = v
  return arrays, dtypes


def drop_matching(sd: Mapping[str, Any], patterns: Iterable[str]) -> tuple[dict, list[str]]:
  """Removes keys that fullmatch any regex in `patterns`; returns (kept, dropped names)."""
  pats = [re.compile(p) for p in patterns]
  kept, dropped = {}, []
  for k, v in sd.items():
    if any(p.fullmatch(k) for p in pats):
      dropped.append(k)
    else:
      kept[k] = v
  return kept, sorted(dropped)


def check_keys(
  expected: Mapping[str, tuple], found: Mapping[str, tuple], source: str, what: str = "model"
) -> None:
  """Raises CheckpointMismatchError naming every missing, unexpected or mis-shaped key."""
  missing = sorted(set(expected) - set(found))
  unexpected = sorted(set(found) - set(expected))
  wrong = sorted(k for k in set(expected) & set(found) if tuple(expected[k]) != tuple(found[k]))
  if not (missing or unexpected or wrong):
    return
  lines = [f"{source} does not fit the {what}:"]
  if missing:
    lines.append(f"  {len(missing)} missing key(s):")
    lines += [f"    {k}: expected shape {tuple(expected[k])}" for k in missing]
  if unexpected:
    lines.append(f"  {len(unexpected)} unexpected key(s):")
    lines += [f"    {k}: found shape {tuple(found[k])}" for k in unexpected]
  if wrong:
    lines.append(f"  {len(wrong)} key(s) with a wrong shape:")
    lines += [f"    {k}: expected {tuple(expected[k])}, found {tuple(found[k])}" for k in wrong]
  raise CheckpointMismatchError("\n".join(lines))


def write_torch_state_dict(
  path: str | os.PathLike, sd: Mapping[str, np.ndarray], wrapper: str | None = None
) -> str:
  """Writes numpy arrays as a PyTorch state_dict (.pth/.pt/.bin) or .safetensors file."""
  import torch

  path = os.fspath(path)
  tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}
  tmp = path + ".tmp"
  try:
    if path.endswith(SAFETENSORS_SUFFIX):
      from safetensors.torch import save_file

      save_file(tensors, tmp)
    else:
      torch.save({wrapper: tensors} if wrapper else tensors, tmp)
    os.replace(tmp, path)
  except BaseException:
    if os.path.isfile(tmp):
      os.remove(tmp)
    raise
  return path


def check_export_destination(out: str | os.PathLike, *, overwrite: bool, log=print) -> str:
  """Raises unless the export file `out` can be written; removes a stale OUT.tmp (says so)."""
  out = os.fspath(out)
  if not out.endswith(TORCH_SUFFIXES + (SAFETENSORS_SUFFIX,)):
    raise ValueError(
      f"{out}: unsupported export suffix; expected one of {TORCH_SUFFIXES + (SAFETENSORS_SUFFIX,)}"
    )
  if os.path.isdir(out):
    raise IsADirectoryError(f"{out} is a directory; expected the path of the file to write")
  if os.path.lexists(out) and not overwrite:
    raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
  parent = os.path.dirname(os.path.abspath(out))
  if not os.path.isdir(parent):
    raise FileNotFoundError(f"{out}: the folder {parent} does not exist")
  if not os.access(parent, os.W_OK | os.X_OK):
    raise PermissionError(f"{out}: cannot write into {parent} (permission denied)")
  tmp = out + ".tmp"
  if os.path.isfile(tmp):
    os.remove(tmp)
    log(f"removed {tmp}, left by an interrupted export")
  return out
