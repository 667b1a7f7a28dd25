"""FAST-VQA / FasterVQA: fragment Swin3D backbone + per-token quality head.

  model = fastvqa.make("faster_vqa")
  params = fastvqa.init_params(model, jax.random.key(0))
  out = model.apply({"params": params}, video)        # video (B, T, H, W, 3), normalised
  out["score"]    # (B,)   clip score = mean of the quality map
  out["map"]      # (B, T', H', W') local quality map (T' = T/2, H' = H/32, W' = W/32)
  out["feature"]  # (B, 768) mean of the final LayerNorm'ed backbone features

Parameter tree (mirrors the released PyTorch keys `fragments_backbone.*` and
`vqa_head.*`, so optimiser groups select by regex, e.g. backbone lr 1e-4 on
`^fragments_backbone/`, head lr 1e-3 on `^vqa_head/`):

  {'fragments_backbone': {'patch_embed': ..., 'layers_0': {'blocks_0': ..., 'downsample': ...},
                          ..., 'norm': ...},
   'vqa_head': {'fc_hid': {'kernel', 'bias'}, 'fc_last': {'kernel', 'bias'}}}

A video scored with several clips (stacked along the batch axis, clip-major)
gets `video_score(out["score"])`, the plain mean of its clip scores (equal to the
original mean over all head-map values, since all clips have the same shape).

Input normalisation: RGB on the 0-255 scale, (x - mean) / std with
mean = (123.675, 116.28, 103.53) and std = (58.395, 57.12, 57.375) (`normalize`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from internvqa_jax.models import swin3d

MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)

# Architecture and nominal input (T, H, W) of each released setting. FasterVQA,
# -MT and -MS share one checkpoint; they differ in the clip they are fed (the
# adaptive window follows the input size). FAST-VQA-B and FasterVQA share the
# architecture too (different weights). FAST-VQA-M runs with fixed (4,4,4)
# windows: its released weights predate adaptive windows, and with them the
# current upstream default would shrink its windows to (2,2,2).
_B = dict(
  embed_dim=96,
  depths=(2, 2, 6, 2),
  num_heads=(3, 6, 12, 24),
  window_size=(8, 7, 7),
  frag_biases=(True, True, True, False),
  adaptive_window=True,
)
VARIANTS: dict[str, dict[str, Any]] = {
  "fast_vqa_b": dict(_B),
  "faster_vqa": dict(_B),
  "faster_vqa_mt": dict(_B),
  "faster_vqa_ms": dict(_B),
  "fast_vqa_m": dict(_B, window_size=(4, 4, 4), frag_biases=(False,) * 4, adaptive_window=False),
  # Small model for tests: shifted windows, padding and fragment bias, in milliseconds.
  "tiny": dict(
    embed_dim=16,
    depths=(2, 2, 2, 2),
    num_heads=(1, 2, 2, 4),
    window_size=(2, 3, 3),
    frag_biases=(True, True, True, False),
    adaptive_window=True,
    base_x_size=(8, 48, 48),
    head_hidden=8,
  ),
}

# Nominal clip (T, H, W) per variant (how the clip is sampled is data-side).
INPUT_SIZES: dict[str, tuple[int, int, int]] = {
  "fast_vqa_b": (32, 224, 224),  # 4 clips per video at test time.
  "faster_vqa": (32, 224, 224),  # 1 clip of 8 temporal fragments x 4 frames.
  "faster_vqa_mt": (16, 224, 224),
  "faster_vqa_ms": (32, 160, 160),
  "fast_vqa_m": (16, 128, 128),  # 4 clips per video at test time.
  "tiny": (8, 48, 48),
}

_TUPLE_FIELDS = ("depths", "num_heads", "window_size", "frag_biases", "base_x_size", "patch_size")


class VQAHead(nn.Module):
  """Per-token head: dropout, 768 -> hidden, exact GELU, dropout, hidden -> 1.

  The original uses 1x1x1 Conv3d layers; here they are Dense layers on tokens.
  """

  hidden: int = 64
  dropout: float = 0.5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    fan_in = x.shape[-1]
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = nn.Dense(
      self.hidden,
      dtype=self.dtype,
      param_dtype=jnp.float32,
      kernel_init=swin3d.torch_conv_init,
      bias_init=swin3d.torch_conv_bias_init(fan_in),
      name="fc_hid",
    )(x)
    x = swin3d.gelu(x)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = nn.Dense(
      1,
      dtype=self.dtype,
      param_dtype=jnp.float32,
      kernel_init=swin3d.torch_conv_init,
      bias_init=swin3d.torch_conv_bias_init(self.hidden),
      name="fc_last",
    )(x)
    return x[..., 0]


class FastVQA(nn.Module):
  """FAST-VQA / FasterVQA quality model. Attributes are JSON-serialisable."""

  FAMILY: ClassVar[str] = "fastvqa"

  embed_dim: int = 96
  depths: Sequence[int] = (2, 2, 6, 2)
  num_heads: Sequence[int] = (3, 6, 12, 24)
  window_size: Sequence[int] = (8, 7, 7)
  frag_biases: Sequence[bool] = (True, True, True, False)
  adaptive_window: bool = True
  base_x_size: Sequence[int] = (32, 224, 224)
  patch_size: Sequence[int] = (2, 4, 4)
  mlp_ratio: float = 4.0
  head_hidden: int = 64
  head_dropout: float = 0.5
  drop_path_rate: float = 0.1
  dtype: str = "float32"
  remat: bool = False

  @classmethod
  def from_kwargs(cls, **kw) -> FastVQA:
    """Builds from stored (JSON) kwargs: lists become tuples, unknown keys are errors."""
    names = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
    unknown = sorted(set(kw) - names)
    if unknown:
      raise TypeError(f"FastVQA got unknown model_kwargs {unknown}; known: {sorted(names)}")
    for k in _TUPLE_FIELDS:
      if k in kw:
        kw[k] = tuple(kw[k])
    if "dtype" in kw:
      kw["dtype"] = jnp.dtype(kw["dtype"]).name
    return cls(**kw)

  def model_kwargs(self) -> dict[str, Any]:
    """JSON-serialisable constructor arguments (stored in converted checkpoints)."""
    out = {}
    for f in dataclasses.fields(self):
      if f.name in ("parent", "name"):
        continue
      v = getattr(self, f.name)
      out[f.name] = list(v) if isinstance(v, tuple) else v
    out["dtype"] = jnp.dtype(self.dtype).name
    return out

  @nn.compact
  def __call__(self, video, *, train: bool = False):
    dtype = jnp.dtype(self.dtype)
    feats = swin3d.SwinTransformer3D(
      embed_dim=self.embed_dim,
      depths=tuple(self.depths),
      num_heads=tuple(self.num_heads),
      window_size=tuple(self.window_size),
      frag_biases=tuple(self.frag_biases),
      adaptive_window=self.adaptive_window,
      base_x_size=tuple(self.base_x_size),
      patch_size=tuple(self.patch_size),
      mlp_ratio=self.mlp_ratio,
      drop_path_rate=self.drop_path_rate,
      dtype=dtype,
      remat=self.remat,
      name="fragments_backbone",
    )(video, train)
    qmap = VQAHead(self.head_hidden, self.head_dropout, dtype=dtype, name="vqa_head")(feats, train)
    qmap = qmap.astype(jnp.float32)
    return {
      "score": qmap.mean(axis=(1, 2, 3)),
      "map": qmap,
      "feature": feats.astype(jnp.float32).mean(axis=(1, 2, 3)),
    }


def make(variant: str, **overrides: Any) -> FastVQA:
  """FastVQA for a named variant; `overrides` replace any attribute (dtype, remat, ...)."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown FAST-VQA variant {variant!r}; known: {sorted(VARIANTS)}")
  return FastVQA.from_kwargs(**{**VARIANTS[variant], **overrides})


def variant_kwargs(variant: str) -> dict[str, Any]:
  """JSON model_kwargs of a named variant."""
  return make(variant).model_kwargs()


def video_score(clip_scores: jax.Array) -> jax.Array:
  """Video score from the (num_clips,) scores of its clips: their plain mean."""
  return jnp.mean(jnp.asarray(clip_scores, jnp.float32), axis=-1)


def normalize(frames_uint8: jax.Array) -> jax.Array:
  """RGB 0-255 frames (..., 3) -> the model's normalised float32 input."""
  x = jnp.asarray(frames_uint8, jnp.float32)
  return (x - jnp.asarray(MEAN, jnp.float32)) / jnp.asarray(STD, jnp.float32)


def _init_input(model: FastVQA) -> jax.ShapeDtypeStruct:
  # Parameter shapes depend only on the architecture; a one-token input in fixed
  # window mode traces every module without an expensive forward pass.
  return jax.ShapeDtypeStruct((1, *model.patch_size, 3), jnp.float32)


def init_params(model: FastVQA, rng: jax.Array) -> dict:
  """Random float32 parameters (PyTorch-style initialisation), built cheaply."""
  small = model.clone(adaptive_window=False)
  x = jnp.zeros(_init_input(model).shape, jnp.float32)
  return jax.jit(lambda r: small.init({"params": r}, x)["params"])(rng)


def abstract_params(model: FastVQA) -> dict:
  """Parameter ShapeDtypeStructs, without computing anything."""
  small = model.clone(adaptive_window=False)
  return jax.eval_shape(
    lambda r: small.init({"params": r}, jnp.zeros(_init_input(model).shape, jnp.float32))["params"],
    jax.random.key(0),
  )


def count_params(module: FastVQA, input_shape: Sequence[int] | None = None) -> int:
  """Learnable parameters (relative_position_index is a constant, never a parameter)."""
  if input_shape is None:
    tree = abstract_params(module)
  else:
    tree = jax.eval_shape(
      lambda r: module.init({"params": r}, jnp.zeros(tuple(input_shape), jnp.float32))["params"],
      jax.random.key(0),
    )
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
