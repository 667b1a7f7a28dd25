"""Builds the models of a run from config: module, trainable/frozen split, initial parameters.

Config of one model (config.model, config.student or config.teacher):
  family         "internvideo2" | "fastvqa"
  variant        a named variant of the family (e.g. "small", "1b", "fast_vqa_b", "tiny")
  kwargs         constructor overrides (num_frames, img_size, drop_path_rate, remat, ...)
  init           "" (train from scratch) or a converted model directory (converters/*)
  dont_load      regexes of parameter paths kept at their fresh initialisation (e.g. heads)
  trainable      regexes of trainable parameter paths (default: everything), or a teacher
                 preset name: "paper" | "authors_code"
  view           which batch entry the model reads ("video" or "fragments")
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from internvqa_jax import models as models_lib
from internvqa_jax import optim, tree_paths
from internvqa_jax.models import checkpoint as ckpt_lib

TEACHER_PRESETS = ("paper", "authors_code")


def trainable_regexes(model_cfg, depth: int | None) -> list[str]:
  spec = model_cfg.get("trainable", ".*")
  if isinstance(spec, str) and spec in TEACHER_PRESETS:
    if depth is None:
      raise ValueError(f"trainable preset {spec!r} needs an InternVideo2 model (blocks_<i>)")
    return list(optim.teacher_trainable_regexes(spec, depth))
  if isinstance(spec, str):
    return [spec]
  return list(spec)


def build_module(model_cfg, compute_dtype: str):
  kwargs = model_cfg.get("kwargs", None) or {}
  kwargs = dict(kwargs.to_dict() if hasattr(kwargs, "to_dict") else kwargs)
  kwargs.setdefault("dtype", compute_dtype)
  module = models_lib.make(model_cfg.family, model_cfg.variant, **kwargs)
  spec = model_cfg.get("trainable", ".*")
  if (
    isinstance(spec, str)
    and spec in TEACHER_PRESETS
    and model_depth(module) is not None
    and "frozen_blocks" not in kwargs
  ):
    # The frozen trunk runs under stop_gradient: no backward pass through it.
    module = module.clone(frozen_blocks=optim.frozen_blocks_for_preset(spec, module.depth))
  return module


def model_depth(module) -> int | None:
  return getattr(module, "depth", None) if getattr(module, "FAMILY", "") == "internvideo2" else None


def input_shape(module, batch: int = 1) -> tuple[int, ...]:
  """(B, T, H, W, 3) used to initialise a module (parameter shapes do not depend on it
  beyond what the module's own attributes fix)."""
  if getattr(module, "FAMILY", "") == "fastvqa":
    t, h, w = module.base_x_size
    return (batch, t, h, w, 3)
  s = module.img_size
  return (batch, module.num_frames, s, s, 3)


def feature_dim(module) -> int:
  """Width of the module's 'feature' output (shape inference only, nothing is computed)."""
  x = jax.ShapeDtypeStruct(input_shape(module), jnp.float32)
  out = jax.eval_shape(lambda v: module.init_with_output(jax.random.key(0), v, train=False)[0], x)
  return int(out["feature"].shape[-1])


def abstract_params(module) -> Any:
  x = jax.ShapeDtypeStruct(input_shape(module), jnp.float32)
  variables = jax.eval_shape(lambda r, v: module.init(r, v, train=False), jax.random.key(0), x)
  return variables["params"]


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
    if old.shape != tuple(v.shape) and k == "pos_embed" and model_cfg.family == "internvideo2":
      old = _resample_pos_embed(old, module, meta, log)
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
  from internvqa_jax import sharding

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


def optimizer_config(ocfg, *, depth: int | None, total_steps: int) -> dict[str, Any]:
  """The optimizer config with run-derived fields filled in (model depth, schedule length)."""
  c = ocfg.to_dict() if hasattr(ocfg, "to_dict") else dict(ocfg)
  if c.get("total_steps") is None:
    c["total_steps"] = total_steps
  if c.get("layer_decay") not in (None, 1.0):
    if depth is None:
      raise ValueError("optim.layer_decay applies to InternVideo2 models only (blocks_<i>)")
    if c.get("depth") is None:
      c["depth"] = depth
  return c


def _resample_pos_embed(old, module, meta, log):
  from internvqa_jax.models import posembed

  kw = meta["model_kwargs"]
  new = posembed.resample_pos_embed(
    old,
    src_frames=kw["num_frames"] // kw.get("tubelet_size", 1),
    src_grid=kw["img_size"] // kw.get("patch_size", 14),
    dst_frames=module.num_frames // module.tubelet_size,
    dst_grid=module.img_size // module.patch_size,
  )
  log(f"pos_embed resampled {old.shape} -> {new.shape}")
  return new


def regex_mask(params: Any, regexes: list[str]) -> Any:
  """Tree of Python bools: True where the path fullmatches one of `regexes`."""
  rules = [(r, True) for r in regexes] + [(".*", False)]
  return tree_paths.match_labels(params, rules, what="trainable pattern")


def count(tree: Any) -> int:
  return int(sum(np.prod(np.shape(x)) for x in jax.tree.leaves(tree)))
