"""Initializers shared by the model families."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


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
