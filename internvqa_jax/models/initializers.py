"""Initializers shared by the model families."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def trunc_normal(std: float = 0.02, scale: float = 1.0):
  """timm's trunc_normal_(std): a normal truncated at ABSOLUTE +-2 (not +-2 std).

  At std 0.02 the bounds sit 100 standard deviations out, so the truncation
  never triggers in float32 and a clipped normal is the same distribution.
  jax.random.truncated_normal would give the same numbers at a large cost: its
  inverse-erf sampler takes XLA ~20 s to compile per model on a 2-core CPU.
  """

  def init(key, shape, dtype=jnp.float32):
    x = jax.random.normal(key, shape, jnp.float32) * std
    return (jnp.clip(x, -2.0, 2.0) * scale).astype(dtype)

  return init


# PyTorch's default Conv/Linear kernel init, kaiming_uniform(a=sqrt(5)):
# U(+-1/sqrt(fan_in)) == variance_scaling(1/3, fan_in, uniform).
torch_conv_kernel = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_conv_bias(fan_in: int):
  """PyTorch's default Conv/Linear bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound).astype(dtype)

  return init


# BT.601 colour weights of luma and the two chroma differences, per RGB channel.
_LUMA = np.array([0.299, 0.587, 0.114])
_CHROMA = (np.array([-0.168736, -0.331264, 0.5]), np.array([0.5, -0.418688, -0.081312]))


def dct_basis(size: int) -> list[tuple[int, np.ndarray]]:
  """The size x size orthonormal 2-D DCT-II bases as (u + v, basis), lowest frequency first."""
  n = np.arange(size)
  c = np.sqrt(2.0 / size) * np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * size))
  c[0] /= np.sqrt(2.0)
  bases = [(u + v, np.outer(c[u], c[v])) for u in range(size) for v in range(size)]
  return sorted(bases, key=lambda b: b[0])  # Stable: row-major order within a frequency.


def dct_patch_kernel(frequency_gain: float, input_std=None):
  """Patch-embedding kernel (kT, p, p, 3, C) made of 2-D DCT bases: a hand-made prior for
  compression artefacts, which live in the codecs' block transforms.

  Output channel j < p*p is the j-th luma basis (lowest frequency first), weighted by
  1 + frequency_gain * (u + v): quantisation removes high frequencies, whose coefficients are
  small, and the gain keeps them from drowning in the DC term under the blocks' LayerNorm.
  The next channels hold the low-frequency Cb then Cr bases (as many of each as fit); any
  remaining channels get PyTorch's default conv init. `input_std` (per RGB channel) maps the
  normalized input back to pixel units; the tubelet's frames are averaged.
  """
  std = np.ones(3) if input_std is None else np.asarray(input_std, np.float64)

  def init(key, shape, dtype=jnp.float32):
    kt, p, p2, channels, features = shape
    if p != p2 or channels != 3:
      raise ValueError(f"dct_patch_kernel needs a (kT, p, p, 3, C) kernel, got {shape}")
    bases = dct_basis(p)
    columns = [b[..., None] * _LUMA * std * (1.0 + frequency_gain * f) for f, b in bases]
    per_chroma = max(0, (features - len(columns)) // 2)
    for weights in _CHROMA:
      columns += [b[..., None] * weights * std for _, b in bases[:per_chroma]]
    bases_kernel = np.stack(columns[:features], axis=-1)[None] / kt  # A constant under jit.
    kernel = torch_conv_kernel(key, shape, jnp.float32)
    kernel = kernel.at[..., : bases_kernel.shape[-1]].set(bases_kernel.astype(np.float32))
    return kernel.astype(dtype)

  return init
