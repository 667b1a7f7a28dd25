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
  TEST_OPTIONS                   the scoring options (score's flags) its views take besides clips
  apply_test_options(view, options)
                                 the view with those options applied; others are an error
  map_layout(module)             {'stride': (t, h, w) input pixels per local-map value,
                                 'pooling': 'mean' | 'sum' (how the values make up the score)}
  local_quality_map(module, params, video)
                                 {'map': (B, T', H', W'), 'score': (B,), 'rest': (B,)}, score =
                                 pool(map) + rest; traceable under jit (internvqa_jax.quality_maps)

The module class carries `FAMILY: ClassVar[str] = NAME`, outputs a dict with
"score" and "feature", and takes `train=`. A view config is a dict whose
"recipe" is a family NAME; the other fields go to that family's `input_recipe`.
Adding a family is a new models/<family>.py with these names plus one line in
`FAMILIES` (docs/models.md walks through it).
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import jax

from internvqa_jax import tree_paths
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
  meta_path = os.path.join(path, checkpoint.META_FILE)
  kwargs = dict(meta["model_kwargs"])
  kwargs.update(model_overrides)
  try:
    module = build(meta["family"], **kwargs)
  except (TypeError, ValueError, KeyError) as e:
    raise ValueError(f"{meta_path}: model_kwargs do not build a {meta['family']} model: {e}") from e
  check_params_fit(module, params, f"{path}/params (model_kwargs from {meta_path})")
  return module, params


def check_params_fit(module, params, where: str) -> None:
  """Raises ValueError listing every parameter whose path or shape the module does not expect."""
  abstract = family_of(module).abstract_params(module)
  want = {k: tuple(v.shape) for k, v in tree_paths.flatten(abstract).items()}
  have = {k: tuple(jax.numpy.shape(v)) for k, v in tree_paths.flatten(params).items()}
  problems = [f"missing {k} {want[k]}" for k in sorted(set(want) - set(have))]
  problems += [f"unexpected {k} {have[k]}" for k in sorted(set(have) - set(want))]
  problems += [
    f"{k}: model expects {want[k]}, stored {have[k]}"
    for k in sorted(set(want) & set(have))
    if want[k] != have[k]
  ]
  if problems:
    raise ValueError(
      f"{where}: the parameters do not fit the model the kwargs describe "
      f"({len(problems)} problem(s)): "
      + "; ".join(problems[:6])
      + (" ..." if len(problems) > 6 else "")
    )


def make(family: str, variant: str, **overrides: Any):
  """Builds a named variant of a family, e.g. make("internvideo2", "small", num_frames=16)."""
  return get(family).make(variant, **overrides)


def model_kwargs(module) -> dict[str, Any]:
  """The JSON-serialisable constructor arguments of a family module (for meta.json)."""
  return family_of(module).model_kwargs(module)


def map_layout(module) -> dict[str, Any]:
  """Geometry of the family's local quality map (see the module docstring)."""
  return family_of(module).map_layout(module)


def local_quality_map(module, params, video) -> dict[str, Any]:
  """The family's local quality map of each clip (see the module docstring)."""
  return family_of(module).local_quality_map(module, params, video)
