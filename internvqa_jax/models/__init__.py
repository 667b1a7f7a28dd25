"""Model families and the one entry point to load a converted model.

Every family module exposes a Flax Linen module class whose constructor
arguments are JSON-serialisable (the `model_kwargs` stored in a converted
checkpoint's meta.json), and a `FAMILY` name.

  model, params = internvqa_jax.models.load("/path/to/converted")
  out = model.apply({"params": params}, video)   # video: (B, T, H, W, 3)
  out["score"], out["feature"]
"""

from __future__ import annotations

import importlib
from typing import Any

# family name -> (module path, class name)
_FAMILIES = {
  "internvideo2": ("internvqa_jax.models.internvideo2", "InternVideo2"),
  "fastvqa": ("internvqa_jax.models.fastvqa", "FastVQA"),
}


def families() -> list[str]:
  return sorted(_FAMILIES)


def model_class(family: str):
  if family not in _FAMILIES:
    raise ValueError(f"unknown model family {family!r}; known: {families()}")
  mod_name, cls_name = _FAMILIES[family]
  return getattr(importlib.import_module(mod_name), cls_name)


def build(family: str, **model_kwargs: Any):
  """Builds the Flax module of `family` from stored (JSON) kwargs."""
  cls = model_class(family)
  if hasattr(cls, "from_kwargs"):
    return cls.from_kwargs(**model_kwargs)
  return cls(**model_kwargs)


def load(path: str, **model_overrides: Any):
  """Loads a converted model directory: returns (flax_module, params).

  `model_overrides` replace stored constructor arguments that do not change
  parameter shapes (dtype, remat, drop_path_rate, gelu_approximate, ...).
  """
  from internvqa_jax.models import checkpoint

  params, meta = checkpoint.load_params(path)
  kwargs = dict(meta["model_kwargs"])
  kwargs.update(model_overrides)
  return build(meta["family"], **kwargs), params


def make(family: str, variant: str, **overrides: Any):
  """Builds a named variant of a family, e.g. make("internvideo2", "small", num_frames=16)."""
  if family not in _FAMILIES:
    raise ValueError(f"unknown model family {family!r}; known: {families()}")
  mod = importlib.import_module(_FAMILIES[family][0])
  return mod.make(variant, **overrides)


def model_kwargs(module) -> dict[str, Any]:
  """The JSON-serialisable constructor arguments of a family module (for meta.json).

  Each family owns the definition: FastVQA has a `model_kwargs()` method, InternVideo2 a
  module-level `model_kwargs(module)`.
  """
  if hasattr(module, "model_kwargs"):
    return module.model_kwargs()
  return importlib.import_module(_FAMILIES[module.FAMILY][0]).model_kwargs(module)
