"""The jitted train and predict steps for `finetune` and `distill` modes.

A *part* is one model being trained: its Flax module, the batch entry it
reads, and its parameters split at the jit boundary into a trainable tree
(differentiated, optimised, donated) and a frozen tree (a plain input, never
differentiated, no optimizer state). Merging the two inside the loss gives the
module its full tree. For the `paper` teacher preset the module also runs its
frozen trunk under `stop_gradient` (`frozen_blocks`), so no backward pass goes
through blocks 0..38 at all.

State layout (a pytree, donated to the step):
  {"step": int32[], "<part>": {"params": trainable, "opt": optax state}, ...}
Frozen layout (not donated): {"<part>": frozen params}, stored in each
module's compute dtype (`frozen_storage`): they are never updated, so float32
copies would only double what every step reads.

Steps given the mesh are traced under it (jax.sharding.use_abstract_mesh), so
models see the platform they are compiled for and can run per-device kernels
(the Pallas TPU attention) under shard_map.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from internvqa_jax import losses, tree_paths


@dataclasses.dataclass(frozen=True)
class Part:
  name: str  # "model" (finetune), "student" or "teacher" (distill)
  module: Any  # Flax module
  batch_key: str  # the batch entry it reads: the name of its view (config.data.pipeline.views)
  tx: optax.GradientTransformation


@dataclasses.dataclass(frozen=True)
class LossConfig:
  mode: str = "finetune"  # "finetune" | "distill"
  kind: str = "l2"  # "l2" | "fastvqa" (plcc + 0.3 rank), score loss per model
  teacher_weight: float = 1.0
  student_weight: float = 1.0
  feature_weight: float = 1.0
  smooth_l1_beta: float = 2.0
  teacher_feature_grad: bool = True


def _apply(part: Part, params, batch, rng, train: bool):
  rngs = None
  if train:
    k1, k2 = jax.random.split(rng)
    rngs = {"dropout": k1, "drop_path": k2}
  return part.module.apply({"params": params}, batch[part.batch_key], train=train, rngs=rngs)


def frozen_storage(parts: Mapping[str, Part], frozen: Mapping[str, Any]) -> dict[str, Any]:
  """The frozen trees as the step takes them: floating leaves in their module's compute dtype.

  Every frozen leaf is cast to the compute dtype inside the model anyway
  (Dense kernels, norms' scales, embeddings; LayerScale gammas are rounded
  the same way), and the released checkpoints are bfloat16, so storing them
  so loses nothing while halving the frozen bytes each step reads. Works on
  arrays (keeps their sharding) and on jax.ShapeDtypeStructs (planning).
  Parts whose module has no `dtype` keep their tree unchanged.
  """

  def cast(dtype):
    def one(x):
      if not jnp.issubdtype(x.dtype, jnp.floating) or x.dtype == dtype:
        return x
      if isinstance(x, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(x.shape, dtype, sharding=x.sharding)
      return x.astype(dtype)

    return one

  out = {}
  for name, tree in frozen.items():
    dtype = getattr(parts[name].module, "dtype", None) if name in parts else None
    out[name] = tree if dtype is None else jax.tree.map(cast(jnp.dtype(dtype)), tree)
  return out


def _on_mesh(mesh):
  """Trace context: the mesh's abstract form, or nothing when no mesh is given."""
  if mesh is None:
    return contextlib.nullcontext()
  return jax.sharding.use_abstract_mesh(mesh.abstract_mesh)


def make_loss_fn(parts: Mapping[str, Part], cfg: LossConfig) -> Callable:
  """loss_fn(trainable, frozen, batch, rng) -> (loss, aux metrics)."""

  def loss_fn(trainable, frozen, batch, rng):
    label = batch["label"].astype(jnp.float32)
    outs, metrics = {}, {}
    rngs = dict(zip(parts, jax.random.split(rng, len(parts))))
    for name, part in parts.items():
      params = tree_paths.merge_trees(trainable[name], frozen.get(name, {}))
      outs[name] = _apply(part, params, batch, rngs[name], train=True)
    if cfg.mode == "finetune":
      loss = losses.score_loss(cfg.kind, outs["model"]["score"], label)
      metrics["loss/score"] = loss
    elif cfg.mode == "distill":
      loss, terms = losses.distill_loss(
        outs["student"]["score"],
        outs["teacher"]["score"],
        outs["student"]["feature"],
        outs["teacher"]["feature"],
        label,
        kind=cfg.kind,
        student_weight=cfg.student_weight,
        teacher_weight=cfg.teacher_weight,
        feature_weight=cfg.feature_weight,
        beta=cfg.smooth_l1_beta,
        teacher_grad=cfg.teacher_feature_grad,
      )
      metrics.update(
        {
          "loss/teacher_score": terms["teacher"],
          "loss/student_score": terms["student"],
          "loss/feature": terms["feature"],
        }
      )
    else:
      raise ValueError(f"mode must be 'finetune' or 'distill', got {cfg.mode!r}")
    metrics["loss"] = loss
    return loss, metrics

  return loss_fn


def make_train_step(
  parts: Mapping[str, Part],
  cfg: LossConfig,
  schedules: Mapping[str, Callable[[jax.Array], jax.Array]] | None = None,
  mesh: jax.sharding.Mesh | None = None,
):
  """Returns step(state, frozen, batch, rng) -> (state, metrics).

  With `mesh`, the step is traced under it (see the module docstring); jit it
  with shardings on the same mesh.
  """
  loss_fn = make_loss_fn(parts, cfg)

  def step(state, frozen, batch, rng):
    with _on_mesh(mesh):
      return _step(state, frozen, batch, rng)

  def _step(state, frozen, batch, rng):
    trainable = {name: state[name]["params"] for name in parts}
    rng = jax.random.fold_in(rng, state["step"])
    (_loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      trainable, frozen, batch, rng
    )
    new_state = {"step": state["step"] + 1}
    for name, part in parts.items():
      # Only trainable gradients exist, so this norm never revives a frozen backward pass.
      metrics[f"grad_norm/{name}"] = optax.global_norm(grads[name])
      updates, opt = part.tx.update(grads[name], state[name]["opt"], state[name]["params"])
      new_state[name] = {"params": optax.apply_updates(state[name]["params"], updates), "opt": opt}
      if schedules and name in schedules:
        metrics[f"lr/{name}"] = schedules[name](state["step"])
    return new_state, metrics

  return step


def make_predict_fn(part: Part, mesh: jax.sharding.Mesh | None = None):
  """predict(trainable, frozen, batch) -> score (B,) of one model in eval mode."""

  def predict(trainable, frozen, batch):
    params = tree_paths.merge_trees(trainable, frozen)
    with _on_mesh(mesh):
      score = _apply(part, params, batch, None, train=False)["score"]
    return score.reshape(score.shape[0], -1)[:, 0].astype(jnp.float32)

  return predict
