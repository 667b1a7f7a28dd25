"""Optimizer from a config: AdamW, per-step schedules, weight-decay and lr rules, freezing.

One optax chain, applied per parameter leaf:

  [clip by global norm over trainable grads] -> Adam moments
    -> u += weight_decay * p          (only where the no-decay rule does not apply)
    -> u *= -schedule(step) * mult    (mult = layer-decay scale * lr_mults entry)

This is PyTorch AdamW with parameter groups: decoupled decay that scales with
the group's lr, exactly as InternVideo2's DeepSpeed Adam (adam_w_mode) and
FAST-VQA's torch.optim.AdamW apply it.

Frozen parameters never reach the optimizer: the trainer splits the tree at
the jit boundary (model_setup.trainable_mask + tree_paths.split_tree) and
builds the optimizer for the trainable tree only.

Config fields (a ConfigDict or Mapping; unknown fields raise, see
`default_config()` for all of them with their defaults):
  optimizer        'adamw' (only choice)
  lr               peak learning rate (required)
  b1, b2, eps      Adam, default 0.9, 0.999, 1e-8
  schedule         'cosine' (InternVideo2 utils.cosine_scheduler), 'fastvqa'
                   (FAST-VQA LambdaLR), or 'constant'
  total_steps      schedule length in optimizer steps (cosine, fastvqa)
  warmup_steps     warmup length in steps
  warmup_lr        cosine: warmup start value
  min_lr           cosine: final value
  weight_decay     decoupled decay coefficient, default 0.05
  no_decay_standard  True: no decay for params with ndim <= 1, names ending in
                   'bias', pos_embed(*), cls_token (InternVideo2 rule); False:
                   decay everything (FAST-VQA)
  no_decay         extra regexes (fullmatch on the path) excluded from decay
  layer_decay      None/1.0 = off; else layer-wise lr decay by the model family's
                   `layer_id` (passed to make_optimizer), as InternVideo2's
  depth            number of layers, required with layer_decay
  layer_decay_prefix  path prefix of the ViT the decay applies to ('' = root,
                   e.g. 'student/'); leaves outside it get scale 1.0
  lr_mults         [(regex, mult)], first fullmatch wins, unmatched -> 1.0;
                   multiplies the layer-decay scale
  clip_grad_norm   None, or max global norm of the trainable gradients
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from internvqa_jax import tree_paths
from internvqa_jax.config_dicts import config_dict

Schedule = Callable[[Any], jax.Array]

_DEFAULTS = dict(
  optimizer="adamw",
  lr=None,
  b1=0.9,
  b2=0.999,
  eps=1e-8,
  schedule="cosine",
  total_steps=None,
  warmup_steps=0,
  warmup_lr=0.0,
  min_lr=0.0,
  weight_decay=0.05,
  no_decay_standard=True,
  no_decay=(),
  layer_decay=None,
  depth=None,
  layer_decay_prefix="",
  lr_mults=(),
  clip_grad_norm=None,
)

# InternVideo2 `optim_factory` skip list; matched as the last path component.
NO_DECAY_NAMES = (
  "pos_embed",
  "pos_embed_spatial",
  "pos_embed_temporal",
  "pos_embed_cls",
  "cls_token",
)


def default_config() -> ml_collections.ConfigDict:
  """Every optimizer field with its default (lr and total_steps must be set)."""
  cfg = ml_collections.ConfigDict()
  for k, v in _DEFAULTS.items():
    cfg[k] = list(v) if isinstance(v, tuple) else v
  # Typed placeholders: a plain None default would lock these fields to NoneType.
  for k, t in (
    ("lr", float),
    ("total_steps", int),
    ("layer_decay", float),
    ("depth", int),
    ("clip_grad_norm", float),
  ):
    cfg[k] = ml_collections.config_dict.placeholder(t)
  return cfg


def _read_config(cfg: Any) -> dict[str, Any]:
  given = config_dict(cfg, "optimizer config")
  unknown = sorted(set(given) - set(_DEFAULTS))
  if unknown:
    raise ValueError(f"unknown optimizer config field(s) {unknown}; known: {sorted(_DEFAULTS)}")
  c = {**_DEFAULTS, **given}
  if c["optimizer"] != "adamw":
    raise ValueError(f"optimizer {c['optimizer']!r} is not supported (only 'adamw')")
  if c["lr"] is None or not c["lr"] > 0:
    raise ValueError(f"optimizer config field 'lr' must be > 0, got {c['lr']!r}")
  return c


# ----------------------------------------------------------------------------
# Schedules (functions of the optimizer step count; step 0 = first update)
# ----------------------------------------------------------------------------
def cosine_schedule(
  peak_lr: float,
  total_steps: int,
  warmup_steps: int = 0,
  warmup_lr: float = 0.0,
  min_lr: float = 0.0,
) -> Schedule:
  """InternVideo2 `utils.cosine_scheduler`, indexed per step.

  Warmup is np.linspace(warmup_lr, peak_lr, warmup_steps) (endpoint included,
  so step warmup_steps - 1 is already the peak); then for i = step - warmup_steps
  lr = min_lr + 0.5 (peak - min_lr) (1 + cos(pi i / (total - warmup))).
  The reference array ends at step total - 1; later steps hold min_lr.
  """
  if total_steps is None or warmup_steps < 0 or not 0 <= warmup_steps < total_steps:
    raise ValueError(
      f"cosine schedule needs 0 <= warmup_steps ({warmup_steps}) < total_steps ({total_steps})"
    )
  decay_steps = total_steps - warmup_steps
  warm_den = max(warmup_steps - 1, 1)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warm = warmup_lr + (peak_lr - warmup_lr) * step / warm_den
    i = jnp.minimum(step - warmup_steps, decay_steps)
    cos = min_lr + 0.5 * (peak_lr - min_lr) * (1 + jnp.cos(jnp.pi * i / decay_steps))
    return jnp.where(step < warmup_steps, warm, cos)

  return schedule


def fastvqa_schedule(peak_lr: float, total_steps: int, warmup_steps: int) -> Schedule:
  """FAST-VQA's LambdaLR times the base lr.

  factor = step / warmup for step <= warmup, else
  0.5 (1 + cos(pi (step - warmup) / total)). The denominator is the total, not
  total - warmup (so it ends near 0.017, not 0), and step 0 has lr 0.
  """
  if total_steps is None or warmup_steps <= 0 or warmup_steps > total_steps:
    raise ValueError(
      f"fastvqa schedule needs 0 < warmup_steps ({warmup_steps}) <= total_steps ({total_steps})"
    )

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    cos = 0.5 * (1 + jnp.cos(jnp.pi * (step - warmup_steps) / total_steps))
    return peak_lr * jnp.where(step <= warmup_steps, step / warmup_steps, cos)

  return schedule


def _schedule_from(c: dict[str, Any]) -> Schedule:
  kind = c["schedule"]
  if kind == "cosine":
    return cosine_schedule(
      c["lr"], c["total_steps"], c["warmup_steps"], c["warmup_lr"], c["min_lr"]
    )
  if kind == "fastvqa":
    return fastvqa_schedule(c["lr"], c["total_steps"], c["warmup_steps"])
  if kind == "constant":
    lr = c["lr"]
    return lambda step: jnp.full((), lr, jnp.float32)
  raise ValueError(f"schedule {kind!r} unknown; choose 'cosine', 'fastvqa' or 'constant'")


# ----------------------------------------------------------------------------
# Per-parameter rules
# ----------------------------------------------------------------------------
def _ndim(leaf: Any) -> int:
  return len(np.shape(leaf)) if not hasattr(leaf, "shape") else len(leaf.shape)


def decay_mask(
  params: Mapping[str, Any], standard: bool = True, extra: Sequence[str] = ()
) -> dict[str, Any]:
  """Tree of bools: True where weight decay applies.

  standard=True excludes ndim <= 1 leaves, paths ending in 'bias' and the
  InternVideo2 skip list (pos_embed*, cls_token); `extra` regexes are excluded
  too.
  """
  extra_c = tree_paths.compile_rules([(r, None) for r in extra], "no_decay regex")

  def decays(path: str, leaf: Any) -> bool:
    if any(p.fullmatch(path) for p, _ in extra_c):
      return False
    if standard:
      last = path.rsplit("/", 1)[-1]
      if _ndim(leaf) <= 1 or last.endswith("bias") or last in NO_DECAY_NAMES:
        return False
    return True

  return tree_paths.map_with_path(decays, params)


LayerId = Callable[[str, int], int]  # (path, depth) -> 0 stem, 1..depth, depth + 1 head side


def layer_decay_scale(path: str, depth: int, decay: float, layer_id: LayerId) -> float:
  """decay ** (depth + 1 - layer_id(path, depth))."""
  return float(decay) ** (depth + 1 - layer_id(path, depth))


def lr_mult_tree(
  params: Mapping[str, Any],
  *,
  layer_decay: float | None = None,
  depth: int | None = None,
  layer_decay_prefix: str = "",
  lr_mults: Sequence[tuple[str, float]] = (),
  layer_id: LayerId | None = None,
) -> dict[str, Any]:
  """Tree of Python floats: the lr multiplier of every leaf."""
  use_ld = layer_decay is not None and layer_decay != 1.0
  if use_ld and (depth is None or depth < 1):
    raise ValueError(
      f"layer_decay={layer_decay} needs optimizer config field 'depth' >= 1, got {depth}"
    )
  if use_ld and layer_id is None:
    raise ValueError(f"layer_decay={layer_decay} needs the model family's layer_id")
  mults_c = tree_paths.compile_rules(lr_mults, "lr_mults rule")
  for p, m in mults_c:
    if not (isinstance(m, (int, float)) and m > 0):
      raise ValueError(
        f"lr_mults {p.pattern!r}: mult must be > 0 (freeze with 'frozen'), got {m!r}"
      )
  seen_in_scope = False

  def mult(path: str, _leaf: Any) -> float:
    nonlocal seen_in_scope
    m = float(tree_paths.first_match(path, mults_c, default=1.0))
    if use_ld and path.startswith(layer_decay_prefix):
      seen_in_scope = True
      m *= layer_decay_scale(path[len(layer_decay_prefix) :], depth, layer_decay, layer_id)
    return m

  out = tree_paths.map_with_path(mult, params)
  if use_ld and not seen_in_scope:
    raise ValueError(f"layer_decay_prefix {layer_decay_prefix!r} matches no parameter")
  return out


# ----------------------------------------------------------------------------
# The transformation
# ----------------------------------------------------------------------------
class ScaleByGroupLrState(NamedTuple):
  count: jax.Array


def _scale_by_group_lr(
  schedule: Schedule, mults: Mapping[str, float], decays: Mapping[str, bool], weight_decay: float
) -> optax.GradientTransformation:
  """u -> -schedule(count) * mult * (u + wd * p [if decays]).

  Looks leaves up by path name rather than zipping trees, so a tree other than
  the one it was built for is an error naming the unknown paths.
  """

  def check_names(tree):
    names = jax.tree.leaves(tree_paths.tree_names(tree))
    unknown = [n for n in names if n not in mults]
    if unknown:
      raise ValueError(
        f"optimizer was built for a different tree; unknown paths {unknown[:10]} "
        f"(build it with make_optimizer(cfg, <the tree you optimize>))"
      )

  def init_fn(params):
    check_names(params)
    return ScaleByGroupLrState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    if weight_decay and params is None:
      raise ValueError("weight decay needs params: call tx.update(grads, state, params)")
    check_names(updates)
    lr = schedule(state.count)

    def one(keypath, u, p):
      name = tree_paths.keypath_name(keypath)
      if weight_decay and decays[name]:
        u = u + weight_decay * p
      return (-lr * mults[name]).astype(u.dtype) * u

    p_tree = params if params is not None else updates
    new = jax.tree_util.tree_map_with_path(one, updates, p_tree)
    return new, ScaleByGroupLrState(count=optax.safe_increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(
  cfg: Any, params: Mapping[str, Any], *, layer_id: LayerId | None = None
) -> tuple[optax.GradientTransformation, dict[str, Schedule]]:
  """Builds the optax transformation for `params` (arrays or ShapeDtypeStructs).

  Returns (tx, {'lr': base schedule}); the lr of a leaf at step s is
  schedule(s) * mult(leaf) (see `lr_mult_tree`). `layer_id` (the model family's,
  see internvqa_jax.models) is needed with layer_decay. Call tx.update(grads,
  state, params) with params (weight decay needs them).
  """
  c = _read_config(cfg)
  schedule = _schedule_from(c)
  if not tree_paths.flatten(params):
    raise ValueError("make_optimizer: empty parameter tree")
  mults, decays = _leaf_rules(c, params, layer_id)

  inner = []
  if c["clip_grad_norm"] is not None:
    if not c["clip_grad_norm"] > 0:
      raise ValueError(f"clip_grad_norm must be > 0 or None, got {c['clip_grad_norm']}")
    inner.append(optax.clip_by_global_norm(c["clip_grad_norm"]))
  inner.append(optax.scale_by_adam(b1=c["b1"], b2=c["b2"], eps=c["eps"]))
  inner.append(_scale_by_group_lr(schedule, mults, decays, float(c["weight_decay"])))
  return optax.chain(*inner), {"lr": schedule}


def _leaf_rules(c: dict[str, Any], params, layer_id):
  """({path: lr mult}, {path: decays}) of every leaf."""
  mults = tree_paths.flatten(
    lr_mult_tree(
      params,
      layer_decay=c["layer_decay"],
      depth=c["depth"],
      layer_decay_prefix=c["layer_decay_prefix"],
      lr_mults=[tuple(r) for r in c["lr_mults"]],
      layer_id=layer_id,
    )
  )
  decays = tree_paths.flatten(decay_mask(params, c["no_decay_standard"], c["no_decay"]))
  return mults, decays


def parameter_groups(
  cfg: Any, params: Mapping[str, Any], *, layer_id: LayerId | None = None
) -> list[tuple[str, float, bool]]:
  """[(path, lr mult, decays)] of every leaf, for logging the parameter groups."""
  mults, decays = _leaf_rules(_read_config(cfg), params, layer_id)
  return [(p, mults[p], decays[p]) for p in mults]
