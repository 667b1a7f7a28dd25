"""Builds the models of a run from config: module, trainable/frozen split, initial parameters.

Config of one model (config.model, config.student or config.teacher):
  family         "internvideo2" | "fastvqa"
  variant        a named variant of the family (e.g. "small", "1b", "fast_vqa_b", "tiny")
  kwargs         constructor overrides (num_frames, img_size, drop_path_rate, remat, ...)
  init           "" (train from scratch) or a converted model directory (converters/*)
  dont_load      regexes of parameter paths kept at their fresh initialisation (e.g. heads)
  trainable      regexes of trainable parameter paths (default: everything), or a teacher
                 preset name: "paper" | "authors_code" (by the family's layer ids)
  view           the name of the view (config.data.pipeline.views) the model reads; the
                 batch holds that view's clips under this name
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from internvqa_jax import models as models_lib
from internvqa_jax import optim, sharding, tree_paths
from internvqa_jax.config_dicts import config_dict
from internvqa_jax.models import checkpoint as ckpt_lib

TEACHER_PRESETS = ("paper", "authors_code")


def preset_trainable(preset: str, num_layers: int) -> set[int]:
  """Layer ids (family `layer_id`) a teacher preset trains (distillation spec section 3).

  'paper': the last layer and everything after it (InternVideo2: last block, attention
  pool, fc_norm, head). 'authors_code': the same plus the stem (patch_embed, cls_token,
  pos_embed), i.e. everything outside layers 0..L-2, the rule in the authors' code.
  """
  if num_layers < 1:
    raise ValueError(f"num_layers must be >= 1, got {num_layers}")
  if preset == "paper":
    return {num_layers, num_layers + 1}
  if preset == "authors_code":
    return {0, num_layers, num_layers + 1}
  raise ValueError(f"teacher preset {preset!r} unknown; choose one of {TEACHER_PRESETS}")


def preset_frozen_layers(preset: str, num_layers: int) -> int:
  """How many leading layers may run under stop_gradient for this preset.

  'paper': L - 1 (nothing before the last layer trains). 'authors_code': 0, because
  the stem trains and needs gradient through all layers.
  """
  preset_trainable(preset, num_layers)  # Validates preset and num_layers.
  return num_layers - 1 if preset == "paper" else 0


def _family(module):
  return models_lib.family_of(module)


def num_layers(module) -> int | None:
  """The module's layer count for layer-wise rules, None if its family has none."""
  return _family(module).num_layers(module)


def _is_preset(spec) -> bool:
  return isinstance(spec, str) and spec in TEACHER_PRESETS


def trainable_mask(params: Any, model_cfg, module) -> Any:
  """Tree of Python bools, True = trainable, from `model_cfg.trainable`: regexes
  (fullmatch on the path) or a teacher preset name (by the family's layer ids)."""
  spec = model_cfg.get("trainable", ".*")
  if not _is_preset(spec):
    return regex_mask(params, [spec] if isinstance(spec, str) else list(spec))
  n = num_layers(module)
  if n is None:
    raise ValueError(
      f"trainable preset {spec!r} needs a model family with layers, not {module.FAMILY!r}"
    )
  return preset_mask(params, spec, _family(module).layer_id, n)


def preset_mask(params: Any, preset: str, layer_id, num_layers: int) -> Any:
  """Tree of Python bools: True where `layer_id(path, num_layers)` is a layer the teacher
  preset trains."""
  layers = preset_trainable(preset, num_layers)
  return tree_paths.map_with_path(lambda path, _: layer_id(path, num_layers) in layers, params)


def build_module(model_cfg, compute_dtype: str):
  kwargs = dict(config_dict(model_cfg.get("kwargs", None)))
  kwargs.setdefault("dtype", compute_dtype)
  module = models_lib.make(model_cfg.family, model_cfg.variant, **kwargs)
  spec = model_cfg.get("trainable", ".*")
  n = num_layers(module)
  if _is_preset(spec) and n is not None:
    # The frozen trunk runs under stop_gradient: no backward pass through it.
    module = _family(module).with_frozen_layers(module, preset_frozen_layers(spec, n))
  return module


def input_shape(module, batch: int = 1) -> tuple[int, ...]:
  """(B, T, H, W, 3) used to initialise a module."""
  return _family(module).input_shape(module, batch)


def feature_dim(module) -> int:
  """Width of the module's 'feature' output (shape inference only, nothing is computed)."""
  x = jax.ShapeDtypeStruct(input_shape(module), jnp.float32)
  out = jax.eval_shape(lambda v: module.init_with_output(jax.random.key(0), v, train=False)[0], x)
  return int(out["feature"].shape[-1])


def abstract_params(module) -> Any:
  return _family(module).abstract_params(module)


def init_params(module, rng) -> Any:
  x = jnp.zeros(input_shape(module), jnp.float32)
  return module.init(rng, x, train=False)["params"]


def load_init(module, abstract: Any, model_cfg, *, log=print) -> dict[str, np.ndarray]:
  """Reads `model_cfg.init` (a converted model directory) for `module`.

  Returns {path: float32 numpy array} for every parameter to take from the
  checkpoint; parameters matching `dont_load` are left out (they keep their
  fresh initialisation). pos_embed is resampled (PyTorch semantics) when the
  frame count or image size differ. Any other shape mismatch, a missing
  parameter, or a checkpoint key the model does not have is an error listing
  every offending path.
  """
  path = model_cfg.get("init", "")
  if not path:
    return {}
  meta = ckpt_lib.read_meta(path)
  if meta["family"] != model_cfg.family:
    raise ValueError(
      f"{path} holds a {meta['family']!r} model, config asks for {model_cfg.family!r}"
    )
  loaded, _ = ckpt_lib.load_params(path)
  family = _family(module)
  dont = [re.compile(p) for p in model_cfg.get("dont_load", [])]
  skip = lambda k: any(p.fullmatch(k) for p in dont)
  want = tree_paths.flatten(abstract)
  have = tree_paths.flatten(loaded)
  problems = [
    f"  unexpected: {k} {tuple(np.shape(have[k]))}"
    for k in sorted(have)
    if k not in want and not skip(k)
  ]
  problems += [
    f"  missing: {k} expected {tuple(want[k].shape)}"
    for k in sorted(want)
    if k not in have and not skip(k)
  ]
  out = {}
  for k, v in want.items():
    if skip(k) or k not in have:
      continue
    old = np.asarray(have[k], np.float32)
    if old.shape != tuple(v.shape):
      old = np.asarray(family.fit_param(k, old, module, meta["model_kwargs"], log), np.float32)
    if old.shape != tuple(v.shape):
      problems.append(f"  shape: {k} expected {tuple(v.shape)}, checkpoint {old.shape}")
      continue
    out[k] = old
  if problems:
    raise ValueError(
      f"{path} does not fit config model {model_cfg.family}/{model_cfg.variant} "
      f"(dont_load={list(model_cfg.get('dont_load', []))}):\n" + "\n".join(problems)
    )
  fresh = sorted(set(want) - set(out))
  log(f"loaded {len(out)} tensors from {path}; freshly initialised: {fresh or 'none'}")
  return out


def init_sharded(module, rng, mesh, rules, *, model_cfg, log=print) -> Any:
  """Fresh parameters born sharded (jit out_shardings), then checkpoint tensors placed shard-wise."""
  abstract = abstract_params(module)
  shardings = sharding.infer_param_shardings(abstract, mesh, rules)
  params = jax.jit(lambda r: init_params(module, r), out_shardings=shardings)(rng)
  loaded = load_init(module, abstract, model_cfg, log=log)
  if not loaded:
    return params
  flat_p, flat_s = tree_paths.flatten(params), tree_paths.flatten(shardings)
  for k, v in loaded.items():
    flat_p[k] = sharding.place_host_tree(v.astype(flat_p[k].dtype), flat_s[k])
  return tree_paths.unflatten(flat_p)


def abstract_sharded(module, mesh, rules) -> Any:
  """The parameters `init_sharded` would make, as ShapeDtypeStructs with their shardings."""
  from internvqa_jax import sharding

  abstract = abstract_params(module)
  shardings = sharding.infer_param_shardings(abstract, mesh, rules)
  return jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings
  )


def optimizer_config(ocfg, *, module, total_steps: int) -> dict[str, Any]:
  """The optimizer config with run-derived fields filled in (layer count, schedule length)."""
  c = config_dict(ocfg)
  if c.get("total_steps") is None:
    c["total_steps"] = total_steps
  if c.get("layer_decay") not in (None, 1.0):
    n = num_layers(module)
    if n is None:
      raise ValueError(f"optim.layer_decay needs a model family with layers, not {module.FAMILY!r}")
    if c.get("depth") is None:
      c["depth"] = n
  return c


def make_optimizer(ocfg, module, params: Any, *, total_steps: int):
  """optim.make_optimizer for `module`'s trainable `params`, layer decay by its family's
  layer ids."""
  return optim.make_optimizer(
    optimizer_config(ocfg, module=module, total_steps=total_steps),
    params,
    layer_id=_family(module).layer_id,
  )


def regex_mask(params: Any, regexes: list[str]) -> Any:
  """Tree of Python bools: True where the path fullmatches one of `regexes`."""
  rules = [(r, True) for r in regexes] + [(".*", False)]
  return tree_paths.match_labels(params, rules, what="trainable pattern")


def count(tree: Any) -> int:
  return int(sum(np.prod(np.shape(x)) for x in jax.tree.leaves(tree)))
