"""InternVideo2 single-modality video transformer (classification form), in Flax Linen.

A faithful port of the official PyTorch `InternVideo2` classification model:
Conv3d patch embedding, cls token, a joint learnable positional embedding,
pre-norm blocks (RMSNorm, bias-free qkv with qk-RMSNorm over the full width,
LayerScale on both branches), no final norm, a 16-head attention-pooling
`clip_projector` to 768-d, `fc_norm` and a linear head.

Parameter paths mirror the PyTorch state_dict (`blocks.3.attn.qkv.weight` ->
`blocks_3/attn/qkv/kernel`), so converters, optimizer masks and sharding rules
select parameters by '/'-joined path regex. See the project's InternVideo2
specification for every numerical choice made here.

  model = internvideo2.make("small", num_outputs=1)
  params = model.init(jax.random.key(0), video)["params"]   # video (B, T, H, W, 3)
  out = model.apply({"params": params}, video)               # {"score", "feature"}
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.pallas.ops.tpu import flash_attention as pallas_flash
from jax.sharding import PartitionSpec as P

from internvqa_jax.data import recipes, transforms
from internvqa_jax.models import initializers, module_kwargs, posembed

PATCH_INITS = ("torch", "dct")
FEATURE_DIM = 768  # Output width of the attention pool (`clip_embed_dim`).
FC_NORM_EPS = 1e-5


def _arch(c, depth, heads, hidden, frames=8, img=224):
  return dict(
    embed_dim=c, depth=depth, num_heads=heads, mlp_hidden=hidden, num_frames=frames, img_size=img
  )


VARIANTS: dict[str, dict[str, int]] = {
  "small": _arch(384, 12, 6, 1536),
  "base": _arch(768, 12, 12, 3072),
  "large": _arch(1024, 24, 16, 4096),
  "1b": _arch(1408, 40, 16, 6144),  # mlp_ratio 48/11, i.e. exactly 6144 hidden units.
  "6b": _arch(3200, 48, 25, 12800),
  # Test-sized models: the same code paths on tiny inputs.
  "tiny": _arch(64, 2, 2, 256, frames=2, img=28),
  "tiny_1b_width": _arch(1408, 2, 16, 6144, frames=2, img=56),  # 16 heads of 88.
}


# ----------------------------------------------------------------------------
# Initialisers (spec section 2.3).


trunc_normal = initializers.trunc_normal  # timm's trunc_normal_ (absolute +-2 bounds).


def head_init_params(key: jax.Array, num_outputs: int, init_scale: float = 0.001) -> dict:
  """A freshly initialised `head` (for converters replacing a checkpoint's head)."""
  return {
    "kernel": trunc_normal(0.02, init_scale)(key, (FEATURE_DIM, num_outputs)),
    "bias": jnp.zeros((num_outputs,), jnp.float32),
  }


def fc_norm_init_params() -> dict:
  return {
    "scale": jnp.ones((FEATURE_DIM,), jnp.float32),
    "bias": jnp.zeros((FEATURE_DIM,), jnp.float32),
  }


# ----------------------------------------------------------------------------
# Layers.


class RMSNorm(nn.Module):
  """RMSNorm (weight only). Normalises in float32, casts back to the input
  dtype, then multiplies by the weight, like the original non-fused module."""

  eps: float = 1e-6
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), self.param_dtype)
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    return (normed.astype(x.dtype) * scale).astype(self.dtype)


class LayerScale(nn.Module):
  """y = x * gamma, multiplied in float32 and cast back (`force_fp32`)."""

  init_values: float = 1e-5
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    gamma = self.param(
      "gamma", nn.initializers.constant(self.init_values), (x.shape[-1],), self.param_dtype
    )
    return (x.astype(jnp.float32) * gamma.astype(jnp.float32)).astype(x.dtype)


def drop_path(x: jax.Array, rate: float, rng: jax.Array) -> jax.Array:
  """Per-sample stochastic depth: zero whole samples, rescale the kept ones by 1/keep."""
  keep = 1.0 - rate
  mask = jax.random.bernoulli(rng, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros((), x.dtype))


ATTENTION_IMPLS = (None, "xla", "cudnn", "chunked", "pallas")
# attention_impl=None uses the long-sequence kernel of the target platform (chunked_attention
# on CPU, Pallas flash attention on TPU) from 256 x 256 scores per head up.
CHUNKED_MIN_SCORES = 256 * 256
FLASH_BLOCK = 128  # The Pallas TPU kernel's sequence tile: lengths are padded to a multiple.


def chunked_attention(q, k, v, scale: float, chunk: int = 1536):
  """Exact softmax attention of (B, T, N, H) queries over (B, S, N, H) keys, head by head.

  Same function as jax.nn.dot_product_attention's XLA path, laid out for CPUs:
  a `lax.map` over (head, query chunk) keeps one (B, chunk, S) score block
  live (8.4 MB for Small at 8x224x224) instead of all B*N*T*S scores, and each
  step is two large single-head matmuls, which XLA's CPU dot runs near matmul
  peak. The batch stays a dot batch dimension, so a batch-sharded input is
  not gathered. Softmax normalisation is applied after the weighted sum (T*H
  divisions instead of T*S), and the scale is folded into the exponent,
  max(scale*s) = scale*max(s) for scale > 0, so it costs no extra pass over
  the scores. Scores, max and sum stay in float32.

  Queries are split evenly into ceil(T / chunk) chunks. For Small (2049
  tokens, 2 cores) two chunks of 1025 rows took 40-42 ms per layer, whole
  heads 40-46 ms, and 128-row chunks 49-57 ms; 128-row chunks of all heads
  at once, the earlier layout, 57 ms.
  """
  b, t, n, h = q.shape
  chunks = -(-t // chunk)
  size = -(-t // chunks)  # Even chunks: pad at most chunks - 1 query rows.
  q = jnp.pad(q, ((0, 0), (0, chunks * size - t), (0, 0), (0, 0)))
  q = q.reshape(b, chunks, size, n, h).transpose(3, 1, 0, 2, 4)  # (N, chunks, B, size, H)
  k, v = (x.transpose(2, 0, 1, 3) for x in (k, v))  # (N, B, S, H)

  def attend(i):
    head, c = i // chunks, i % chunks
    s = jnp.einsum("bqh,bkh->bqk", q[head, c], k[head], preferred_element_type=jnp.float32)
    e = jnp.exp((s - s.max(axis=-1, keepdims=True)) * scale)
    o = jnp.einsum("bqk,bkh->bqh", e.astype(v.dtype), v[head], preferred_element_type=jnp.float32)
    return (o / e.sum(axis=-1, keepdims=True)).astype(v.dtype)

  o = jax.lax.map(attend, jnp.arange(n * chunks))  # (N * chunks, B, size, H)
  o = o.reshape(n, chunks, b, size, h).transpose(2, 1, 3, 0, 4)
  return o.reshape(b, chunks * size, n, h)[:, :t]


def padded_attention(q, k, v, scale: float, kernel, block: int = FLASH_BLOCK):
  """(B, T, N, H) attention through a kernel that needs lengths divisible by `block`.

  Queries and keys are zero-padded to the next multiple of `block`; real tokens
  get segment id 1 and padding 0, so a segment-masking kernel lets no real
  query see a padded key (padded queries see only padded keys and are dropped).
  `kernel(q, k, v, segment_ids, sm_scale)` takes (B, N, L, H) and segment ids
  (B, L) for queries and keys, or None when nothing is padded.
  """
  b, t = q.shape[:2]
  s = k.shape[1]
  tp, sp = -(-t // block) * block, -(-s // block) * block
  pad = lambda x, length: jnp.pad(x, ((0, 0), (0, length - x.shape[1]), (0, 0), (0, 0)))
  q, k, v = pad(q, tp), pad(k, sp), pad(v, sp)
  segment_ids = None
  if (tp, sp) != (t, s):
    ids = lambda real, length: jnp.broadcast_to(
      (jnp.arange(length) < real).astype(jnp.int32), (b, length)
    )
    segment_ids = pallas_flash.SegmentIds(q=ids(t, tp), kv=ids(s, sp))
  heads_first = lambda x: x.transpose(0, 2, 1, 3)
  o = kernel(heads_first(q), heads_first(k), heads_first(v), segment_ids, scale)
  return heads_first(o)[:, :t]


def _pallas_tpu_flash(q, k, v, segment_ids, sm_scale):
  return pallas_flash.flash_attention(q, k, v, segment_ids=segment_ids, sm_scale=sm_scale)


def flash_attention(q, k, v, scale: float):
  """Pallas TPU flash attention: scores stay in on-chip memory, never in HBM.

  Mosaic kernels are not partitioned by XLA, so the kernel runs per device
  under shard_map, the batch split over every axis of the mesh the step is
  traced under (steps.make_train_step(mesh=...)); the 1B teacher's 2,049
  tokens are padded to 2,176 (`padded_attention`).
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    raise ValueError(
      "attention_impl 'pallas' runs under shard_map and needs the device mesh at trace time: "
      "trace under jax.sharding.use_abstract_mesh(mesh.abstract_mesh) "
      "(steps.make_train_step(..., mesh=mesh) does)"
    )
  if q.shape[0] % mesh.size:
    raise ValueError(
      f"attention_impl 'pallas' splits the batch over all {mesh.size} devices of the mesh "
      f"{dict(mesh.shape)}; batch {q.shape[0]} is not divisible"
    )
  spec = P(tuple(mesh.axis_names))
  local = functools.partial(padded_attention, scale=scale, kernel=_pallas_tpu_flash)
  return jax.shard_map(
    local, mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec, check_vma=False
  )(q, k, v)


def target_platform() -> str:
  """The platform the code is being traced for: the mesh's when tracing under one (an
  ahead-of-time compile for TPU from a CPU host), else the default backend."""
  mesh = jax.sharding.get_abstract_mesh()
  return jax.default_backend() if mesh.empty else mesh.abstract_device.platform


def attention(q, k, v, scale: float, impl: str | None):
  """Softmax attention on (B, T, N, H).

  impl None picks, for sequences of at least CHUNKED_MIN_SCORES scores per
  head, the target platform's long-sequence kernel: 'chunked' on CPU (2x
  faster than XLA's generic path there), 'pallas' (flash attention) on TPU (the generic path
  writes every score to HBM: 0.65 GB per 1B layer); otherwise, and on GPU,
  jax.nn.dot_product_attention's own choice. Tiny test-size models and the
  one-query attention pool stay on the generic path, and so does a TPU trace
  without a mesh (flash needs one). 'xla' and 'cudnn' force
  jax.nn.dot_product_attention with that implementation; 'chunked' and
  'pallas' force those kernels.
  """
  if impl not in ATTENTION_IMPLS:
    raise ValueError(f"attention_impl must be one of {ATTENTION_IMPLS}, got {impl!r}")
  if impl is None and q.shape[1] * k.shape[1] >= CHUNKED_MIN_SCORES:
    # Flash needs the mesh (shard_map); a TPU trace without one keeps XLA's path.
    on_mesh = not jax.sharding.get_abstract_mesh().empty
    impl = {"cpu": "chunked", "tpu": "pallas" if on_mesh else None}.get(target_platform())
  if impl == "chunked":
    return chunked_attention(q, k, v, scale)
  if impl == "pallas":
    return flash_attention(q, k, v, scale)
  return jax.nn.dot_product_attention(q, k, v, scale=scale, implementation=impl)


class PatchEmbed(nn.Module):
  """Conv3d with stride == kernel == (tubelet, p, p), as a patchify + matmul.

  The kernel keeps Flax Conv's (kT, kH, kW, 3, C) layout; since patches do not
  overlap, one matmul over (kT*kH*kW*3)-long patch vectors is the same
  function and avoids XLA's generic 3-D convolution on CPU. Tokens come out
  t-major, then h, then w, matching the `pos_embed` rows.
  """

  embed_dim: int
  patch_size: int
  tubelet_size: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Callable = initializers.torch_conv_kernel

  @nn.compact
  def __call__(self, x):
    kt, p = self.tubelet_size, self.patch_size
    fan_in = kt * p * p * x.shape[-1]
    proj = _PatchProj(
      self.embed_dim,
      (kt, p, p, x.shape[-1]),
      fan_in,
      self.dtype,
      self.param_dtype,
      self.kernel_init,
      name="proj",
    )
    b, t, h, w, c = x.shape
    x = x.reshape(b, t // kt, kt, h // p, p, w // p, p, c)
    x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, (t // kt) * (h // p) * (w // p), fan_in)
    return proj(x)


class _PatchProj(nn.Module):
  features: int
  window: tuple[int, int, int, int]
  fan_in: int
  dtype: Any
  param_dtype: Any
  kernel_init: Callable

  @nn.compact
  def __call__(self, patches):
    kernel = self.param(
      "kernel", self.kernel_init, self.window + (self.features,), self.param_dtype
    )
    bias = self.param(
      "bias", initializers.torch_conv_bias(self.fan_in), (self.features,), self.param_dtype
    )
    kernel = kernel.reshape(self.fan_in, self.features).astype(self.dtype)
    return jnp.dot(patches, kernel) + bias.astype(self.dtype)


class Attention(nn.Module):
  """Self-attention with bias-free [q|k|v] projection and qk-RMSNorm over all heads."""

  num_heads: int
  proj_init_div: float = 1.0  # fix_init_weight: sqrt(2 * layer_id).
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention_impl: str | None = None

  @nn.compact
  def __call__(self, x):
    b, n, c = x.shape
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
    norm = functools.partial(RMSNorm, eps=1e-6, dtype=self.dtype, param_dtype=self.param_dtype)
    qkv = dense(3 * c, use_bias=False, kernel_init=trunc_normal(0.02), name="qkv")(x)
    q, k, v = jnp.split(qkv, 3, axis=-1)
    # The norm spans the full width C (all heads jointly), before the head split.
    q = norm(name="q_norm")(q)
    k = norm(name="k_norm")(k)
    d = c // self.num_heads
    q, k, v = (y.reshape(b, n, self.num_heads, d) for y in (q, k, v))
    o = attention(q, k, v, d**-0.5, self.attention_impl)
    o = o.reshape(b, n, c)
    return dense(
      c,
      kernel_init=trunc_normal(0.02, 1.0 / self.proj_init_div),
      bias_init=nn.initializers.zeros,
      name="proj",
    )(o)


class Mlp(nn.Module):
  hidden: int
  fc2_init_div: float = 1.0
  gelu_approximate: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    dense = functools.partial(
      nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype, bias_init=nn.initializers.zeros
    )
    h = dense(self.hidden, kernel_init=trunc_normal(0.02), name="fc1")(x)
    h = jax.nn.gelu(h, approximate=self.gelu_approximate)
    return dense(x.shape[-1], kernel_init=trunc_normal(0.02, 1.0 / self.fc2_init_div), name="fc2")(
      h
    )


class Block(nn.Module):
  """Pre-norm block: r += DropPath(ls1(attn(norm1(r)))); r += DropPath(ls2(mlp(norm2(r))))."""

  num_heads: int
  mlp_hidden: int
  layer_id: int  # 1-based, for fix_init_weight.
  drop_path_rate: float = 0.0
  layerscale_init: float = 1e-5
  gelu_approximate: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention_impl: str | None = None

  @nn.compact
  def __call__(self, x, train: bool = False, drop_path_rate=None):
    """drop_path_rate, when given, overrides the attribute (a traced per-block rate
    when the blocks run under a scan)."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    rate = self.drop_path_rate if drop_path_rate is None else drop_path_rate
    div = math.sqrt(2.0 * self.layer_id)
    h = RMSNorm(eps=1e-6, name="norm1", **kw)(x)
    h = Attention(
      self.num_heads, proj_init_div=div, attention_impl=self.attention_impl, name="attn", **kw
    )(h)
    h = LayerScale(self.layerscale_init, self.param_dtype, name="ls1")(h)
    x = x + self._drop_path(h, train, rate)
    h = RMSNorm(eps=1e-6, name="norm2", **kw)(x)
    h = Mlp(
      self.mlp_hidden, fc2_init_div=div, gelu_approximate=self.gelu_approximate, name="mlp", **kw
    )(h)
    h = LayerScale(self.layerscale_init, self.param_dtype, name="ls2")(h)
    return x + self._drop_path(h, train, rate)

  def _drop_path(self, h, train, rate):
    if not train or (isinstance(rate, float) and rate == 0.0):
      return h
    return drop_path(h, rate, self.make_rng("drop_path"))


class CrossAttention(nn.Module):
  """Pool cross-attention; the separate q/k/v biases live in the Dense biases."""

  num_heads: int
  out_dim: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention_impl: str | None = None

  @nn.compact
  def __call__(self, x_q, x_k, x_v, return_terms: bool = False):
    """Output (B, Q, out_dim); with return_terms (one query only) also (B, K, out_dim)
    per-key terms that add up to the output over the K keys."""
    c = x_q.shape[-1]
    dense = functools.partial(
      nn.Dense,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      kernel_init=trunc_normal(0.02),
      bias_init=nn.initializers.zeros,
    )
    d = c // self.num_heads
    heads = lambda y: y.reshape(y.shape[0], y.shape[1], self.num_heads, d)
    q = heads(dense(c, name="q")(x_q))
    k = heads(dense(c, name="k")(x_k))
    v = heads(dense(c, name="v")(x_v))
    o = attention(q, k, v, d**-0.5, self.attention_impl)
    o = o.reshape(o.shape[0], o.shape[1], c)
    proj = dense(self.out_dim, name="proj")
    out = proj(o)
    if not return_terms:
      return out
    if q.shape[1] != 1:
      raise ValueError(f"per-key terms need a single query, got {q.shape[1]}")
    # Key j adds sum_h a_hj * v_hj through proj; the proj bias is shared out by the
    # head-mean weight, which sums to 1 over keys. All in float32.
    f32 = jnp.float32
    logits = jnp.einsum("bnh,bknh->bnk", q[:, 0].astype(f32), k.astype(f32)) * d**-0.5
    a = jax.nn.softmax(logits, axis=-1)  # (B, heads, K)
    weighted = a.transpose(0, 2, 1)[..., None] * v.astype(f32)  # (B, K, heads, d)
    wp = proj.variables["params"]
    terms = jnp.einsum("bkc,co->bko", weighted.reshape(weighted.shape[:2] + (c,)), wp["kernel"])
    terms = terms + a.mean(axis=1)[..., None] * wp["bias"].astype(f32)
    return out, terms


class AttentionPooling(nn.Module):
  """`clip_projector`: one cross-attention whose query is the mean of all tokens
  (cls included). No residual and no MLP."""

  num_heads: int = 16
  out_dim: int = FEATURE_DIM
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention_impl: str | None = None

  @nn.compact
  def __call__(self, x, return_terms: bool = False):
    """Pooled (B, out_dim); with return_terms also per-token terms (B, 1 + N, out_dim)
    whose sum over tokens is the pooled vector (see CrossAttention)."""
    ln = functools.partial(
      nn.LayerNorm,
      epsilon=1e-5,
      use_fast_variance=False,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
    )
    x_q = jnp.mean(x.astype(jnp.float32), axis=1, keepdims=True).astype(x.dtype)
    out = CrossAttention(
      self.num_heads,
      self.out_dim,
      self.dtype,
      self.param_dtype,
      self.attention_impl,
      name="cross_attn",
    )(ln(name="norm1_q")(x_q), ln(name="norm1_k")(x), ln(name="norm1_v")(x), return_terms)
    if return_terms:
      return out[0][:, 0], out[1]
    return out[:, 0]


# ----------------------------------------------------------------------------
# The model.


class InternVideo2(nn.Module):
  """InternVideo2 classification/regression model.

  Input: normalized float video (B, num_frames, img_size, img_size, 3).
  Output dict: 'score' (B,) float32 when num_outputs == 1 else (B, N);
  'feature' (B, 768) float32, the fc_norm output (pre-dropout); 'tokens'
  (B, 1 + N, C), the residual stream after block `return_tokens_after`, when
  requested; with return_contributions, 'contributions' (B, 1 + N) and
  'contribution_offset' (B,), see `head_contributions`.
  """

  FAMILY: ClassVar[str] = "internvideo2"

  embed_dim: int
  depth: int
  num_heads: int
  mlp_hidden: int
  num_frames: int
  img_size: int
  patch_size: int = 14
  tubelet_size: int = 1
  num_outputs: int = 1
  pool_heads: int = 16
  pool_dim: int = FEATURE_DIM
  gelu_approximate: bool = True  # tanh GELU (flash-attn FusedMLP); False = exact erf.
  drop_path_rate: float = 0.0
  fc_drop_rate: float = 0.0
  frozen_blocks: int = 0  # patch_embed/cls/pos and blocks [0, k) under stop_gradient.
  remat: bool = False
  # Identical blocks run under jax.lax.scan (one compiled block); False unrolls them.
  scan_blocks: bool = True
  dtype: str = "float32"
  param_dtype: str = "float32"
  # None: 'chunked' on CPU for long sequences, else jax.nn.dot_product_attention's choice;
  # 'xla'/'cudnn': jax.nn.dot_product_attention(implementation=...); 'chunked': chunked_attention.
  attention_impl: str | None = None
  init_scale: float = 0.001
  layerscale_init: float = 1e-5
  # Patch-embedding init: "torch" (PyTorch's conv default, as the released models) or "dct"
  # (2-D DCT bases weighted 1 + dct_gain * frequency: initializers.dct_patch_kernel).
  patch_init: str = "torch"
  dct_gain: float = 4.0

  @property
  def grid_size(self) -> int:
    return self.img_size // self.patch_size

  @property
  def num_patches(self) -> int:
    return (self.num_frames // self.tubelet_size) * self.grid_size**2

  def input_shape(self, batch: int = 1) -> tuple[int, ...]:
    return (batch, self.num_frames, self.img_size, self.img_size, 3)

  def _check_config(self):
    problems = []
    if self.embed_dim % self.num_heads:
      problems.append(f"embed_dim {self.embed_dim} not divisible by num_heads {self.num_heads}")
    if self.embed_dim % self.pool_heads:
      problems.append(f"embed_dim {self.embed_dim} not divisible by pool_heads {self.pool_heads}")
    if self.img_size % self.patch_size:
      problems.append(f"img_size {self.img_size} not divisible by patch_size {self.patch_size}")
    if self.num_frames % self.tubelet_size:
      problems.append(
        f"num_frames {self.num_frames} not divisible by tubelet_size {self.tubelet_size}"
      )
    if not 0 <= self.frozen_blocks <= self.depth:
      problems.append(f"frozen_blocks {self.frozen_blocks} outside [0, depth={self.depth}]")
    if self.patch_init not in PATCH_INITS:
      problems.append(f"patch_init {self.patch_init!r} is not one of {PATCH_INITS}")
    if problems:
      raise ValueError("invalid InternVideo2 configuration: " + "; ".join(problems))

  @nn.compact
  def __call__(
    self,
    video,
    *,
    train: bool = False,
    return_tokens_after: int | None = None,
    return_contributions: bool = False,
  ):
    self._check_config()
    if return_contributions and (train or self.num_outputs != 1):
      raise ValueError(
        "return_contributions needs train=False and num_outputs == 1, got "
        f"train={train}, num_outputs={self.num_outputs}"
      )
    expected = (self.num_frames, self.img_size, self.img_size, 3)
    if video.ndim != 5 or tuple(video.shape[1:]) != expected:
      raise ValueError(
        f"InternVideo2 expects video of shape (B, {', '.join(map(str, expected))})"
        f" = (B, T, H, W, 3), found {tuple(video.shape)}"
      )
    if return_tokens_after is not None and not 0 <= return_tokens_after < self.depth:
      raise ValueError(
        f"return_tokens_after={return_tokens_after} is not a block index in [0, {self.depth - 1}]"
      )
    dtype, pdtype = jnp.dtype(self.dtype), jnp.dtype(self.param_dtype)
    kw = dict(dtype=dtype, param_dtype=pdtype)
    c = self.embed_dim

    kernel_init = initializers.torch_conv_kernel
    if self.patch_init == "dct":
      kernel_init = initializers.dct_patch_kernel(self.dct_gain, transforms.IMAGENET_STD)
    x = PatchEmbed(
      c, self.patch_size, self.tubelet_size, kernel_init=kernel_init, name="patch_embed", **kw
    )(video.astype(dtype))
    cls_token = self.param("cls_token", trunc_normal(0.02), (1, 1, c), pdtype)
    pos_embed = self.param("pos_embed", self._pos_embed_init, (1, 1 + self.num_patches, c), pdtype)
    cls_tokens = jnp.broadcast_to(cls_token.astype(dtype), (x.shape[0], 1, c))
    x = jnp.concatenate([cls_tokens, x], axis=1) + pos_embed.astype(dtype)

    if self.is_initializing():
      x, tokens = self._init_blocks(x, return_tokens_after)
    else:
      x, tokens = self._apply_blocks(x, train, return_tokens_after)

    pooled = AttentionPooling(
      self.pool_heads,
      self.pool_dim,
      attention_impl=self.attention_impl,
      name="clip_projector",
      **kw,
    )(x, return_contributions)
    if return_contributions:
      pooled, terms = pooled
    fc_norm = nn.LayerNorm(epsilon=FC_NORM_EPS, use_fast_variance=False, name="fc_norm", **kw)
    feature = fc_norm(pooled)
    h = nn.Dropout(self.fc_drop_rate)(feature, deterministic=not train)
    head = nn.Dense(
      self.num_outputs,
      kernel_init=trunc_normal(0.02, self.init_scale),
      bias_init=nn.initializers.zeros,
      name="head",
      **kw,
    )
    score = head(h).astype(jnp.float32)
    out = {
      "score": score[:, 0] if self.num_outputs == 1 else score,
      "feature": feature.astype(jnp.float32),
    }
    if tokens is not None:
      out["tokens"] = tokens
    if return_contributions:
      c, offset = head_contributions(
        pooled, terms, fc_norm.variables["params"], head.variables["params"]
      )
      out["contributions"], out["contribution_offset"] = c, offset
    return out

  def _block(self, layer_id: int, parent=None) -> Block:
    return Block(
      self.num_heads,
      self.mlp_hidden,
      layer_id=layer_id,
      layerscale_init=self.layerscale_init,
      gelu_approximate=self.gelu_approximate,
      attention_impl=self.attention_impl,
      dtype=jnp.dtype(self.dtype),
      param_dtype=jnp.dtype(self.param_dtype),
      parent=parent,
      name=f"blocks_{layer_id - 1}" if parent is not None else None,
    )

  def _init_blocks(self, x, return_tokens_after):
    """Creates `blocks_<i>` one by one (each with its own layer_id-scaled init)."""
    tokens = None
    for i in range(self.depth):
      x = self._block(i + 1, parent=self)(x, False)
      if i == return_tokens_after:
        tokens = x
    return x, tokens

  def _block_runs(self, params, return_tokens_after) -> list[tuple[int, int]]:
    """[lo, hi) ranges of blocks run as one loop: split where the frozen trunk ends
    (stop_gradient), after the block whose tokens are returned, and where the
    parameter dtypes change (a bfloat16-stored frozen trunk next to float32
    trainable blocks: stacking them together would upcast the trunk)."""
    cuts = {0, self.depth, self.frozen_blocks}
    if return_tokens_after is not None:
      cuts.add(return_tokens_after + 1)
    dtypes = [
      tuple(x.dtype for x in jax.tree.leaves(params[f"blocks_{i}"])) for i in range(self.depth)
    ]
    cuts.update(i for i in range(1, self.depth) if dtypes[i] != dtypes[i - 1])
    cuts = sorted(cuts)
    return [(lo, hi) for lo, hi in itertools.pairwise(cuts) if hi > lo]

  def _apply_blocks(self, x, train, return_tokens_after):
    """Runs the blocks as one function of (block params, rate, index), under
    jax.lax.scan over stacked parameters (scan_blocks) or unrolled.

    The parameters stay `blocks_<i>` in the tree (checkpoints, optimizer and
    sharding rules see one path per block); a run of blocks is stacked here,
    inside the step. The compiler then sees one block instead of `depth`
    (compile time), and FSDP gathers one block's parameters per iteration.
    Both forms draw block i's drop-path randomness from fold_in(rng, i), so
    they compute the same function.
    """
    template = self._block(1)  # Unbound: applied to each block's parameters.
    params = self.variables["params"]
    use_drop = train and self.drop_path_rate > 0.0
    rates = np.linspace(0.0, self.drop_path_rate, self.depth).astype(np.float32)
    base_rng = self.make_rng("drop_path") if use_drop else None

    def body(x, p, rate, i):
      if not use_drop:
        return template.apply({"params": p}, x, train, 0.0)
      rngs = {"drop_path": jax.random.fold_in(base_rng, i)}
      return template.apply({"params": p}, x, train, rate, rngs=rngs)

    if self.remat:
      body = jax.checkpoint(body, prevent_cse=not self.scan_blocks)
    tokens = None
    for lo, hi in self._block_runs(params, return_tokens_after):
      if self.scan_blocks and hi - lo > 1:
        stacked = jax.tree.map(
          lambda *a: jnp.stack(a), *[params[f"blocks_{i}"] for i in range(lo, hi)]
        )
        xs = (stacked, jnp.asarray(rates[lo:hi]), jnp.arange(lo, hi))
        x, _ = jax.lax.scan(lambda c, xs: (body(c, *xs), None), x, xs)
      else:
        for i in range(lo, hi):
          x = body(x, params[f"blocks_{i}"], rates[i], i)
      if hi == self.frozen_blocks:
        # Frozen-trunk boundary: nothing upstream receives gradient, and XLA can
        # drop the backward pass through it.
        x = jax.lax.stop_gradient(x)
      if return_tokens_after is not None and hi == return_tokens_after + 1:
        tokens = x
    return x, tokens

  def _pos_embed_init(self, key, shape, dtype=jnp.float32):
    del key  # Deterministic table.
    table = posembed.sincos_3d(
      self.embed_dim, self.grid_size, self.num_frames // self.tubelet_size, cls_row=True
    )
    return jnp.asarray(table, dtype).reshape(shape)


def head_contributions(pooled, terms, fc_norm: dict, head: dict) -> tuple[jax.Array, jax.Array]:
  """Per-token contributions to the score through the head linearised at `pooled`.

  score = head(LN(pooled)) with pooled = sum_j terms_j (the attention-pooling
  weights times each token's value, through the pool's output projection).
  Holding LN's 1/std at its value s at `pooled` makes the head affine, exact at
  `pooled`: score = sum_j c_j + offset with c_j = (w * gamma) . (terms_j -
  mean(terms_j)) / s and offset = w . beta + b (w, b: head; gamma, beta: fc_norm).

  Returns (contributions (B, K) float32, offset (B,) float32).
  """
  f32 = jnp.float32
  p = pooled.astype(f32)
  s = jnp.sqrt(jnp.mean(jnp.square(p - p.mean(-1, keepdims=True)), -1) + FC_NORM_EPS)
  w = head["kernel"][:, 0].astype(f32)
  centred = terms - terms.mean(-1, keepdims=True)
  c = jnp.einsum("bkd,d->bk", centred, w * fc_norm["scale"].astype(f32)) / s[:, None]
  offset = jnp.dot(fc_norm["bias"].astype(f32), w) + head["bias"][0].astype(f32)
  return c, jnp.broadcast_to(offset, p.shape[:1])


def map_layout(module: InternVideo2) -> dict[str, Any]:
  """Contribution map geometry: value (t, i, j) belongs to the patch of input frames
  [t * tubelet, (t + 1) * tubelet) and pixels [i * p, (i + 1) * p) x [j * p, (j + 1) * p);
  the values add up ("sum" pooling) to the score less `rest` (see local_quality_map)."""
  p = int(module.patch_size)
  return {"stride": (int(module.tubelet_size), p, p), "pooling": "sum"}


def local_quality_map(module: InternVideo2, params: dict, video: jax.Array) -> dict[str, jax.Array]:
  """Per-patch contributions (B, T', g, g) with score = sum(map) + rest, where rest
  is the cls token's contribution plus the head's offset (head_contributions)."""
  out = module.apply({"params": params}, video, train=False, return_contributions=True)
  c = out["contributions"]
  g = module.grid_size
  grid = c[:, 1:].reshape(c.shape[0], module.num_frames // module.tubelet_size, g, g)
  return {"map": grid, "score": out["score"], "rest": c[:, 0] + out["contribution_offset"]}


# ----------------------------------------------------------------------------
# The family interface (see internvqa_jax.models).

NAME = "internvideo2"


def make(variant: str, **overrides: Any) -> InternVideo2:
  """A named variant (VARIANTS) with constructor overrides, e.g. num_outputs=1."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown InternVideo2 variant {variant!r}; known: {sorted(VARIANTS)}")
  return from_kwargs(**{**VARIANTS[variant], **overrides})


def from_kwargs(**kwargs: Any) -> InternVideo2:
  """Builds from saved (JSON-decoded) kwargs; unknown keys are errors."""
  return module_kwargs.construct(InternVideo2, kwargs)


def model_kwargs(module: InternVideo2) -> dict[str, Any]:
  """The JSON-serialisable constructor arguments of `module` (meta.json)."""
  return module_kwargs.saved(module)


def input_shape(module: InternVideo2, batch: int = 1) -> tuple[int, ...]:
  return module.input_shape(batch)


def abstract_params(module: InternVideo2) -> dict:
  """Parameter shapes/dtypes via jax.eval_shape: nothing is allocated."""
  video = jax.ShapeDtypeStruct(module.input_shape(1), jnp.float32)
  return jax.eval_shape(lambda v: module.init(jax.random.key(0), v), video)["params"]


def count_params(module: InternVideo2) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(abstract_params(module))))


def fit_param(path: str, value: np.ndarray, module: InternVideo2, saved: dict, log=print):
  """A converted tensor whose shape differs from `module`'s: pos_embed is resampled
  (PyTorch semantics) to the module's frame count and grid; anything else is returned
  as it is (the caller reports the mismatch)."""
  if path != "pos_embed":
    return value
  new = posembed.resample_pos_embed(
    value,
    src_frames=saved["num_frames"] // saved.get("tubelet_size", 1),
    src_grid=saved["img_size"] // saved.get("patch_size", 14),
    dst_frames=module.num_frames // module.tubelet_size,
    dst_grid=module.img_size // module.patch_size,
  )
  log(f"pos_embed resampled {value.shape} -> {new.shape}")
  return new


def num_layers(module: InternVideo2) -> int:
  return module.depth


def layer_id(path: str, num_layers: int) -> int:
  """`get_num_layer_for_vit`: stem -> 0, blocks_j -> j + 1, everything else num_layers + 1.

  Stem = cls_token, mask_token, pos_embed and patch_embed/*, exactly the
  reference's name list (so e.g. a separate pos_embed_spatial is top layer).
  """
  first = path.split("/", 1)[0]
  if first in ("cls_token", "mask_token", "pos_embed", "patch_embed"):
    return 0
  if first.startswith("blocks_"):
    j = int(first[len("blocks_") :])
    if not 0 <= j < num_layers:
      raise ValueError(
        f"{path!r}: block index {j} outside 0..{num_layers - 1} (depth={num_layers})"
      )
    return j + 1
  return num_layers + 1


def with_frozen_layers(module: InternVideo2, n: int) -> InternVideo2:
  """The stem and blocks [0, n) run under stop_gradient (no backward pass through them)."""
  return module.clone(frozen_blocks=n)


def input_recipe(view: Mapping[str, Any]) -> recipes.InternVideo2Recipe:
  """View config fields: num_frames, crop_size, resize_short, flip, test_clips, test_crops."""
  try:
    return recipes.InternVideo2Recipe(**view)
  except TypeError as e:
    raise ValueError(f"bad internvideo2 view options {sorted(view)} ({e})") from e


# Scoring options (internvqa_jax.score's flags, by argparse name) this family's views take
# besides `clips`, the number of test clips every family has.
TEST_OPTIONS = ("crops", "resize_short")


def apply_test_options(view: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
  """`view` with scoring options applied: clips -> test_clips, crops -> test_crops,
  resize_short (None: native-resolution crops). An option the family lacks is an error."""
  unknown = sorted(set(options) - {"clips", *TEST_OPTIONS})
  if unknown:
    raise ValueError(
      f"{', '.join('--' + k.replace('_', '-') for k in unknown)} do not apply to InternVideo2 "
      "views (they take --clips, --crops, --resize-short)"
    )
  view = dict(view)
  for option, field in (("clips", "test_clips"), ("crops", "test_crops")):
    if option in options:
      view[field] = options[option]
  if "resize_short" in options:
    view["resize_short"] = options["resize_short"]
  return view


def default_view(module: InternVideo2, meta: Mapping[str, Any]) -> dict[str, Any]:
  """The InternVideo2 test protocol for a model directory without an `eval_view`:
  4 clips x 3 crops of the model's frames and image size after resizing the short
  side to the image size."""
  del meta
  return {
    "recipe": NAME,
    "num_frames": int(module.num_frames),
    "crop_size": int(module.img_size),
    "resize_short": int(module.img_size),
    "flip": False,
    "test_clips": 4,
    "test_crops": 3,
  }
