"""Model families behind one interface, and the entry points to build and load models.

  model, params = internvqa_jax.models.load("/path/to/converted")
  out = model.apply({"params": params}, video)   # video: (B, T, H, W, 3)
  out["score"], out["feature"]

A family is one module, models/<family>.py, registered in `FAMILIES` below;
`get(family)` returns it. Code outside models/ never branches on a family: it
calls these names of the module `get` returns.

  NAME                           the family name (meta.json "family", config `family`)
  VARIANTS                       {variant name: constructor kwargs}
  make(variant, **overrides)     a named variant's Flax module (VARIANTS), overrides applied
  from_kwargs(**kwargs)          the module from saved (JSON) constructor kwargs
  model_kwargs(module)           the JSON constructor kwargs to save (meta.json "model_kwargs")
  input_shape(module, batch=1)   (B, T, H, W, 3) that initialises the module
  abstract_params(module)        the parameter tree as jax.ShapeDtypeStructs
  fit_param(path, value, module, saved_kwargs, log)
                                 a converted tensor whose shape differs from the module's,
                                 adapted (e.g. pos_embed resampled) or returned unchanged
  num_layers(module)             L, the number of layers for layer-wise rules (layer decay,
                                 teacher presets); None if the family has no layer numbering
  layer_id(path, num_layers)     0 = stem, 1..L = layer, L + 1 = everything after the layers
  with_frozen_layers(module, n)  the module with the stem and layers [0, n) under stop_gradient
  input_recipe(view)             the recipe (internvqa_jax.data.recipes) a view config makes:
                                 train(...), eval(...) and num_eval_examples
  default_view(module, meta)     the eval view config for a model directory with none

The module class carries `FAMILY: ClassVar[str] = NAME`, outputs a dict with
"score" and "feature", and takes `train=`. A view config is a dict whose
"recipe" is a family NAME; the other fields go to that family's `input_recipe`.
Adding a family is a new models/<family>.py with these names plus one line in
`FAMILIES` (docs/models.md walks through it).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from internvqa_jax.models import checkpoint, fastvqa, internvideo2

FAMILIES: dict[str, ModuleType] = {
  internvideo2.NAME: internvideo2,
  fastvqa.NAME: fastvqa,
}


def families() -> list[str]:
  return sorted(FAMILIES)


def get(family: str) -> ModuleType:
  """The family module registered under `family`."""
  if family not in FAMILIES:
    raise ValueError(f"unknown model family {family!r}; known: {families()}")
  return FAMILIES[family]


def family_of(module) -> ModuleType:
  """The family module of a built Flax module."""
  return get(module.FAMILY)


def build(family: str, **model_kwargs: Any):
  """Builds the Flax module of `family` from stored (JSON) kwargs."""
  return get(family).from_kwargs(**model_kwargs)


def load(path: str, **model_overrides: Any):
  """Loads a converted model directory: returns (flax_module, params).

  `model_overrides` replace stored constructor arguments that do not change
  parameter shapes (dtype, remat, drop_path_rate, gelu_approximate, ...).
  """
  params, meta = checkpoint.load_params(path)
  kwargs = dict(meta["model_kwargs"])
  kwargs.update(model_overrides)
  return build(meta["family"], **kwargs), params


def make(family: str, variant: str, **overrides: Any):
  """Builds a named variant of a family, e.g. make("internvideo2", "small", num_frames=16)."""
  return get(family).make(variant, **overrides)


def model_kwargs(module) -> dict[str, Any]:
  """The JSON-serialisable constructor arguments of a family module (for meta.json)."""
  return family_of(module).model_kwargs(module)
