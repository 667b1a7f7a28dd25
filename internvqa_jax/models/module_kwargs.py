"""A Flax module's constructor arguments as JSON (meta.json `model_kwargs`) and back.

Shared by every family: JSON has no tuples, so tuples are stored as lists and
rebuilt as tuples; dtypes are stored by name.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import jax.numpy as jnp

M = TypeVar("M")

_DTYPE_FIELDS = ("dtype", "param_dtype")


def _fields(cls) -> list[str]:
  return [f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name")]


def construct(cls: type[M], kwargs: dict[str, Any]) -> M:
  """`cls(**kwargs)` from JSON-decoded kwargs: lists become tuples, unknown keys are errors."""
  names = _fields(cls)
  unknown = sorted(set(kwargs) - set(names))
  if unknown:
    raise TypeError(f"{cls.__name__} got unknown model_kwargs {unknown}; known: {sorted(names)}")
  kw = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
  for k in _DTYPE_FIELDS:
    if k in kw:
      kw[k] = jnp.dtype(kw[k]).name
  return cls(**kw)


def saved(module) -> dict[str, Any]:
  """The JSON-serialisable constructor arguments of `module` (tuples as lists, dtype names)."""
  out = {}
  for name in _fields(type(module)):
    v = getattr(module, name)
    out[name] = list(v) if isinstance(v, tuple) else v
  for k in _DTYPE_FIELDS:
    if k in out:
      out[k] = jnp.dtype(out[k]).name
  return out
