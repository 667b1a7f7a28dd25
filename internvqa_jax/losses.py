"""Training losses (jax): score regression, feature distillation, FAST-VQA's loss.

All losses compute in float32 and return a scalar. Shapes are checked at
trace time: a (B,) prediction against a (B, 1) label would otherwise broadcast
to (B, B) and silently train on the wrong objective.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LN_EPS = 1e-5  # PyTorch nn.LayerNorm default, used by the authors' `ln_tgt`.
FASTVQA_RANK_WEIGHT = 0.3  # new_train.py; older FAST-VQA scripts used 0.1.


def _same_shape(name: str, a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
  if a.shape != b.shape:
    raise ValueError(f"{name}: shapes differ, {a.shape} vs {b.shape} (no broadcasting)")
  return a.astype(jnp.float32), b.astype(jnp.float32)


def _scores(name: str, pred: jax.Array, target: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(B,) or (B, 1) predictions and labels -> two float32 (B,) vectors."""
  p, t = jnp.asarray(pred), jnp.asarray(target)
  for n, x in (("pred", p), ("target", t)):
    if not (x.ndim == 1 or (x.ndim == 2 and x.shape[1] == 1)):
      raise ValueError(f"{name}: {n} must be (B,) or (B, 1), got {x.shape}")
  p, t = p.reshape(-1), t.reshape(-1)
  if p.shape != t.shape:
    raise ValueError(f"{name}: pred has {p.shape[0]} items, target {t.shape[0]}")
  return p.astype(jnp.float32), t.astype(jnp.float32)


def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Mean squared error (torch.nn.functional.mse_loss, reduction 'mean')."""
  p, t = _same_shape("mse", pred, target)
  return jnp.mean(jnp.square(p - t))


def smooth_l1(pred: jax.Array, target: jax.Array, beta: float = 1.0) -> jax.Array:
  """torch.nn.functional.smooth_l1_loss(pred, target, beta=beta), mean reduction.

  Per element: 0.5 x^2 / beta if |x| < beta else |x| - 0.5 beta; beta == 0 is L1.
  """
  if beta < 0:
    raise ValueError(f"smooth_l1: beta must be >= 0, got {beta}")
  p, t = _same_shape("smooth_l1", pred, target)
  d = jnp.abs(p - t)
  if beta == 0:
    return jnp.mean(d)
  # The quadratic branch is evaluated on the clipped difference so the unused
  # branch never produces large values (harmless here, but keeps grads clean).
  quad = 0.5 * jnp.square(jnp.minimum(d, beta)) / beta
  return jnp.mean(jnp.where(d < beta, quad, d - 0.5 * beta))


def layer_norm(x: jax.Array, eps: float = LN_EPS) -> jax.Array:
  """Parameter-free LayerNorm over the last axis (biased variance, like PyTorch)."""
  x = jnp.asarray(x).astype(jnp.float32)
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps)


def feature_distill_loss(
  student_feat: jax.Array,
  teacher_feat: jax.Array,
  beta: float = 2.0,
  teacher_grad: bool = True,
  eps: float = LN_EPS,
) -> jax.Array:
  """SmoothL1(LN(student), LN(teacher)) with beta 2.0, as in the InternVQA code.

  With teacher_grad=True (the authors' code) the loss also trains the
  teacher's trainable part; False puts stop_gradient on the teacher feature.
  """
  if student_feat.shape != teacher_feat.shape:
    raise ValueError(
      f"feature_distill_loss: student feature {student_feat.shape} vs teacher "
      f"{teacher_feat.shape}; add a projector if the widths differ"
    )
  if not teacher_grad:
    teacher_feat = jax.lax.stop_gradient(teacher_feat)
  return smooth_l1(layer_norm(student_feat, eps), layer_norm(teacher_feat, eps), beta)


def plcc_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
  """FAST-VQA plcc_loss: ((2 - 2r) + (1 - r^2)) / 8 in closed form.

  Standardise both with population std + 1e-8, loss0 = MSE(p, t) / 4,
  rho = mean(p * t), loss1 = MSE(rho * p, t) / 4, return (loss0 + loss1) / 2.
  """
  p, t = _scores("plcc_loss", pred, target)
  p = (p - p.mean()) / (p.std() + 1e-8)
  t = (t - t.mean()) / (t.std() + 1e-8)
  loss0 = jnp.mean(jnp.square(p - t)) / 4
  rho = jnp.mean(p * t)
  loss1 = jnp.mean(jnp.square(rho * p - t)) / 4
  return (loss0 + loss1) / 2


def rank_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
  """FAST-VQA rank_loss: pairwise hinge normalised by (1 + max), B >= 2.

  R[i, j] = relu((p_i - p_j) * sign(y_j - y_i)); sum(R) / B / (B - 1) / (1 + max R).
  The max is not detached, as in the reference.
  """
  p, t = _scores("rank_loss", pred, target)
  b = p.shape[0]
  if b < 2:
    raise ValueError(f"rank_loss needs a batch of at least 2, got {b}")
  r = jax.nn.relu((p[:, None] - p[None, :]) * jnp.sign(t[None, :] - t[:, None]))
  return jnp.sum(r) / b / (b - 1) / (1 + jnp.max(r))


def fastvqa_loss(
  pred: jax.Array, target: jax.Array, rank_weight: float = FASTVQA_RANK_WEIGHT
) -> jax.Array:
  """plcc_loss + 0.3 * rank_loss (FAST-VQA new_train.py)."""
  return plcc_loss(pred, target) + rank_weight * rank_loss(pred, target)


SCORE_LOSSES = ("l2", "fastvqa")


def score_loss(kind: str, pred: jax.Array, target: jax.Array) -> jax.Array:
  """The score loss named by `kind`: 'l2' (mse) or 'fastvqa' (plcc + 0.3 rank)."""
  if kind == "l2":
    return mse(pred, target)
  if kind == "fastvqa":
    return fastvqa_loss(pred, target)
  raise ValueError(f"loss.kind must be one of {SCORE_LOSSES}, got {kind!r}")


def distill_loss(
  student_score: jax.Array,
  teacher_score: jax.Array,
  student_feat: jax.Array,
  teacher_feat: jax.Array,
  target: jax.Array,
  *,
  kind: str = "l2",
  student_weight: float = 1.0,
  teacher_weight: float = 1.0,
  feature_weight: float = 1.0,
  beta: float = 2.0,
  teacher_grad: bool = True,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """InternVQA total: w_t S(teacher) + w_s S(student) + w_f SmoothL1(features),
  S the score loss `kind` (L2 in the paper).

  Scores are (B,) or (B, 1); returns (total, {'student', 'teacher', 'feature'}).
  """
  s, t = _scores("distill_loss(student)", student_score, target)
  tc, _ = _scores("distill_loss(teacher)", teacher_score, target)
  parts = {
    "student": score_loss(kind, s, t),
    "teacher": score_loss(kind, tc, t),
    "feature": feature_distill_loss(student_feat, teacher_feat, beta, teacher_grad),
  }
  total = (
    teacher_weight * parts["teacher"]
    + student_weight * parts["student"]
    + feature_weight * parts["feature"]
  )
  return total, parts
