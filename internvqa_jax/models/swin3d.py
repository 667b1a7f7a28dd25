"""Video Swin Transformer (Swin3D) with the gated fragment position bias of FAST-VQA.

Flax port of the `fragments_backbone` of FAST-VQA / FasterVQA
(VQAssessment/FAST-VQA-and-FasterVQA, `fastvqa/models/swin_backbone.py`). The
forward pass follows the original code literally, including its quirks, because
released checkpoints were trained with them:

* the fragment gate is the integer L1 distance between fragment indices of a
  query and a key (not a 0/1 gate): bias = rpb * g + fpb * (1 - g);
* the shift mask adds -100 (not -inf), after the bias;
* padded tokens are zeros after norm1 and are not masked as keys;
* relative position indices keep the strides of the base window; in fixed
  (non-adaptive) mode a clamped window reads the top-left [:N, :N] block of the
  base index, exactly like the original;
* LayerNorm eps 1e-5 with two-pass variance; exact (erf) GELU.

Everything that depends only on shapes (window sizes, shifts, relative indices,
shift-mask regions, fragment coordinates) is computed with NumPy at trace time.
Only small per-window arrays become constants; the (nW, N, N) gate and mask are
expanded inside the graph so no large constant is embedded in the HLO.

Layout: input (B, T, H, W, C) channels-last; parameters mirror the PyTorch
module tree (`patch_embed/proj`, `layers_{i}/blocks_{j}/attn/qkv`, ...).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from internvqa_jax.models import initializers

Shape3 = tuple[int, int, int]

LN_EPS = 1e-5  # torch.nn.LayerNorm default; Flax defaults to 1e-6.
MASK_VALUE = -100.0  # Added to logits of pairs from different shift regions.


def layer_norm(name: str, dtype: Any) -> nn.LayerNorm:
  return nn.LayerNorm(
    epsilon=LN_EPS, use_fast_variance=False, dtype=dtype, param_dtype=jnp.float32, name=name
  )


def gelu(x: jax.Array) -> jax.Array:
  return nn.gelu(x, approximate=False)


# PyTorch defaults, so that models trained from scratch here start like the
# original: Linear weights trunc_normal(0.02) and zero bias (Swin's init_weights),
# Conv3d weights/biases Kaiming-uniform with bound 1/sqrt(fan_in).
dense_init = initializers.trunc_normal(0.02)  # timm trunc_normal_(std=.02), as the original.


# ---------------------------------------------------------------------------
# Static geometry (NumPy, evaluated at trace time from shapes only).
# ---------------------------------------------------------------------------


def adaptive_window(input_size: Shape3, base_window: Shape3, base_x_size: Shape3) -> Shape3:
  """Window resized with the input ("AMI"): base * input // base_x_size, per axis."""
  return tuple(int(w * s // b) for w, s, b in zip(base_window, input_size, base_x_size))


def clamp_window(size: Shape3, window: Shape3, shift: Shape3) -> tuple[Shape3, Shape3]:
  """`get_window_size`: an axis with size <= window gets window = size, shift = 0."""
  w, s = list(window), list(shift)
  for i in range(3):
    if size[i] <= window[i]:
      w[i] = size[i]
      s[i] = 0
  return tuple(w), tuple(s)


def padded_size(size: Shape3, window: Shape3) -> Shape3:
  return tuple(-(-n // w) * w for n, w in zip(size, window))


@functools.cache
def relative_position_index(window: Shape3) -> np.ndarray:
  """(N, N) index into the ((2Wd-1)(2Wh-1)(2Ww-1), nH) bias table of `window`."""
  coords = np.stack(np.meshgrid(*[np.arange(w) for w in window], indexing="ij"))
  coords = coords.reshape(3, -1)
  rel = coords[:, :, None] - coords[:, None, :]  # (3, N, N): query minus key.
  rel = rel + np.array(window)[:, None, None] - 1
  strides = ((2 * window[1] - 1) * (2 * window[2] - 1), 2 * window[2] - 1, 1)
  return np.tensordot(np.array(strides), rel, axes=1).astype(np.int64)


@functools.cache
def bias_index(base_window: Shape3, window: Shape3, adaptive: bool) -> np.ndarray:
  """The (N, N) table index a block with `window` uses (see module docstring)."""
  full = relative_position_index(tuple(base_window))
  n = int(np.prod(window))
  if adaptive:
    if any(w > b for w, b in zip(window, base_window)):
      raise ValueError(
        f"adaptive window {window} exceeds the base window {base_window}: the input is "
        "larger than the model's base input size (the original code fails here too); "
        "use adaptive_window=False for such inputs"
      )
    d, h, w = window
    sub = full.reshape(tuple(base_window) * 2)[:d, :h, :w, :d, :h, :w]
    return np.ascontiguousarray(sub.reshape(n, n)).astype(np.int32)
  # Fixed mode: the original slices the top-left block whatever the window.
  return np.ascontiguousarray(full[:n, :n]).astype(np.int32)


def partition_windows(x, window: Shape3):
  """(B, D, H, W, C) -> (B, nW, N, C); windows ordered d, h, w; tokens d, h, w."""
  b, d, h, w, c = x.shape
  wd, wh, ww = window
  x = x.reshape(b, d // wd, wd, h // wh, wh, w // ww, ww, c)
  x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
  return x.reshape(b, -1, wd * wh * ww, c)


def reverse_windows(x, window: Shape3, size: Shape3):
  """(B, nW, N, C) -> (B, D, H, W, C); inverse of `partition_windows`."""
  b, _, _, c = x.shape
  d, h, w = size
  wd, wh, ww = window
  x = x.reshape(b, d // wd, h // wh, w // ww, wd, wh, ww, c)
  x = x.transpose(0, 1, 4, 2, 5, 3, 6, 7)
  return x.reshape(b, d, h, w, c)


@functools.cache
def shift_region_ids(padded: Shape3, window: Shape3, shift: Shape3) -> np.ndarray:
  """(nW, N) region id per token of the un-rolled padded volume (`compute_mask`).

  Reproduces the original slice assignments literally: with a zero shift on an
  axis, the last slice `[-0:]` covers the whole axis, so that axis has one region.
  """
  ids = np.zeros((1,) + tuple(padded) + (1,), np.int32)
  cnt = 0
  slices = [(slice(-w), slice(-w, -s), slice(-s, None)) for w, s in zip(window, shift)]
  for sd in slices[0]:
    for sh in slices[1]:
      for sw in slices[2]:
        ids[:, sd, sh, sw, :] = cnt
        cnt += 1
  return partition_windows(ids, window)[0, :, :, 0]


def _nearest_source_index(out_size: int, in_size: int) -> np.ndarray:
  """PyTorch 'nearest' interpolation source index (float32 scale, floor, clamp)."""
  o = np.arange(out_size)
  if out_size == in_size:
    return o
  if out_size == 2 * in_size:
    return o >> 1
  scale = np.float32(in_size) / np.float32(out_size)
  src = np.floor(o.astype(np.float32) * scale).astype(np.int64)
  return np.minimum(src, in_size - 1)


@functools.cache
def fragment_coords(padded: Shape3, window: Shape3, shift: Shape3) -> np.ndarray:
  """(nW, N, 3) fragment index (d, h, w) of each token (`global_position_index`).

  The fragment grid is (1, window_h, window_w), resized with nearest
  interpolation to the padded volume and rolled like the features.
  """
  dp, hp, wp = padded
  grid_h = _nearest_source_index(hp, window[1])
  grid_w = _nearest_source_index(wp, window[2])
  coords = np.zeros((1, dp, hp, wp, 3), np.int32)
  coords[..., 1] = grid_h[None, :, None]
  coords[..., 2] = grid_w[None, None, :]
  coords = np.roll(coords, shift=tuple(-s for s in shift), axis=(1, 2, 3))
  return partition_windows(coords, window)[0]


# ---------------------------------------------------------------------------
# Modules.
# ---------------------------------------------------------------------------


def drop_path(module: nn.Module, x: jax.Array, rate: float, train: bool) -> jax.Array:
  """Per-sample stochastic depth (timm DropPath): mask (B, 1, ...), scaled by 1/keep."""
  if not train or rate == 0.0:
    return x
  keep = 1.0 - rate
  mask = jax.random.bernoulli(
    module.make_rng("drop_path"), keep, (x.shape[0],) + (1,) * (x.ndim - 1)
  )
  return x * (mask.astype(x.dtype) / keep)


class PatchEmbed3D(nn.Module):
  """Zero-pad to the patch grid, Conv3d with stride = kernel, LayerNorm."""

  patch_size: Shape3
  embed_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    pads = [(0, 0)] + [(0, (-n) % p) for n, p in zip(x.shape[1:4], self.patch_size)] + [(0, 0)]
    if any(p[1] for p in pads):
      x = jnp.pad(x, pads)
    fan_in = int(np.prod(self.patch_size)) * x.shape[-1]
    x = nn.Conv(
      self.embed_dim,
      self.patch_size,
      strides=self.patch_size,
      padding="VALID",
      dtype=self.dtype,
      param_dtype=jnp.float32,
      kernel_init=initializers.torch_conv_kernel,
      bias_init=initializers.torch_conv_bias(fan_in),
      name="proj",
    )(x)
    return layer_norm("norm", self.dtype)(x)


class Mlp(nn.Module):
  hidden: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    dim = x.shape[-1]
    x = nn.Dense(
      self.hidden, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=dense_init, name="fc1"
    )(x)
    x = gelu(x)
    return nn.Dense(
      dim, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=dense_init, name="fc2"
    )(x)


class WindowAttention3D(nn.Module):
  """Window attention with relative (and optionally fragment) position bias.

  Called on windows (B, nW, N, C) with the static geometry of its block.
  """

  num_heads: int
  base_window: Shape3
  frag_bias: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, index: np.ndarray, frag: np.ndarray | None, regions: np.ndarray | None):
    b, nw, n, c = x.shape
    nh = self.num_heads
    hd = c // nh
    rows = int(np.prod([2 * w - 1 for w in self.base_window]))
    rpb_table = self.param("relative_position_bias_table", dense_init, (rows, nh), jnp.float32)
    if self.frag_bias:
      fpb_table = self.param(
        "fragment_position_bias_table", nn.initializers.zeros, (rows, nh), jnp.float32
      )

    qkv = nn.Dense(
      3 * c, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=dense_init, name="qkv"
    )(x)
    qkv = qkv.reshape(b, nw, n, 3, nh, hd)
    q, k, v = qkv[:, :, :, 0], qkv[:, :, :, 1], qkv[:, :, :, 2]
    q = q * jnp.asarray(hd**-0.5, q.dtype)  # Scaled before q.k, like the original.
    logits = jnp.einsum("bwqhd,bwkhd->bwhqk", q, k).astype(jnp.float32)

    flat = jnp.asarray(index.reshape(-1))

    def gather(table):
      return jnp.take(table, flat, axis=0).reshape(n, n, nh).transpose(2, 0, 1)

    bias = gather(rpb_table)[None]  # (1, nH, N, N)
    if self.frag_bias:
      # Integer L1 distance between fragment indices of query i and key j.
      fc = jnp.asarray(frag)  # (nW, N, 3)
      gate = jnp.abs(fc[:, None, :, :] - fc[:, :, None, :]).sum(-1).astype(jnp.float32)
      gate = gate[:, None]  # (nW, 1, N, N)
      bias = bias * gate + gather(fpb_table)[None] * (1.0 - gate)
    logits = logits + bias[None]
    if regions is not None:
      r = jnp.asarray(regions)  # (nW, N)
      mask = jnp.where(r[:, None, :] != r[:, :, None], MASK_VALUE, 0.0).astype(jnp.float32)
      logits = logits + mask[None, :, None]
    attn = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    out = jnp.einsum("bwhqk,bwkhd->bwqhd", attn, v.astype(self.dtype)).reshape(b, nw, n, c)
    return nn.Dense(
      c, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=dense_init, name="proj"
    )(out)


class SwinBlock3D(nn.Module):
  """Pre-norm (shifted-)window attention block + MLP, both with stochastic depth.

  `window` is the stage's window before clamping (the resized window in adaptive
  mode, the base window otherwise) and `shift` this block's nominal shift.
  """

  num_heads: int
  base_window: Shape3
  window: Shape3
  shift: Shape3
  adaptive: bool
  frag_bias: bool
  drop_path: float = 0.0
  mlp_ratio: float = 4.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    _b, d, h, w, c = x.shape
    window, shift = clamp_window((d, h, w), self.window, self.shift)
    if min(window) < 1:
      raise ValueError(
        f"window {window} for features {(d, h, w)} has an empty axis; the input "
        "is too small for adaptive windows (window = base * input // base size)"
      )
    padded = padded_size((d, h, w), window)
    shifted = any(s > 0 for s in shift)

    shortcut = x
    y = layer_norm("norm1", self.dtype)(x)
    pads = [(0, 0)] + [(0, p - n) for p, n in zip(padded, (d, h, w))] + [(0, 0)]
    if any(p[1] for p in pads):
      y = jnp.pad(y, pads)  # After norm1: padded tokens are exact zeros.
    if shifted:
      y = jnp.roll(y, tuple(-s for s in shift), axis=(1, 2, 3))
    y = WindowAttention3D(
      self.num_heads, self.base_window, self.frag_bias, dtype=self.dtype, name="attn"
    )(
      partition_windows(y, window),
      index=bias_index(tuple(self.base_window), window, self.adaptive),
      frag=fragment_coords(padded, window, shift) if self.frag_bias else None,
      regions=shift_region_ids(padded, window, shift) if shifted else None,
    )
    y = reverse_windows(y, window, padded)
    if shifted:
      y = jnp.roll(y, shift, axis=(1, 2, 3))
    y = y[:, :d, :h, :w]
    x = shortcut + drop_path(self, y, self.drop_path, train)

    y = layer_norm("norm2", self.dtype)(x)
    y = Mlp(int(c * self.mlp_ratio), dtype=self.dtype, name="mlp")(y)
    return x + drop_path(self, y, self.drop_path, train)


class PatchMerging(nn.Module):
  """2x2 spatial merge: concat (h,w) offsets (0,0),(1,0),(0,1),(1,1); LayerNorm; Linear."""

  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    h, w = x.shape[2], x.shape[3]
    if h % 2 or w % 2:
      x = jnp.pad(x, [(0, 0), (0, 0), (0, h % 2), (0, w % 2), (0, 0)])
    x = jnp.concatenate(
      [x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]], axis=-1
    )
    x = layer_norm("norm", self.dtype)(x)
    return nn.Dense(
      2 * c,
      use_bias=False,
      dtype=self.dtype,
      param_dtype=jnp.float32,
      kernel_init=dense_init,
      name="reduction",
    )(x)


class BasicLayer(nn.Module):
  """One stage: `depth` blocks (odd ones shifted by base_window // 2), then merging."""

  depth: int
  num_heads: int
  base_window: Shape3
  window: Shape3
  adaptive: bool
  frag_bias: bool
  drop_paths: Sequence[float]
  downsample: bool
  mlp_ratio: float = 4.0
  dtype: Any = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    # The shift comes from the base window and is never resized (original behaviour).
    layer_shift = tuple(w // 2 for w in self.base_window)
    block_cls = nn.remat(SwinBlock3D, static_argnums=(2,)) if self.remat else SwinBlock3D
    for j in range(self.depth):
      x = block_cls(
        num_heads=self.num_heads,
        base_window=self.base_window,
        window=self.window,
        shift=(0, 0, 0) if j % 2 == 0 else layer_shift,
        adaptive=self.adaptive,
        frag_bias=self.frag_bias,
        drop_path=float(self.drop_paths[j]),
        mlp_ratio=self.mlp_ratio,
        dtype=self.dtype,
        name=f"blocks_{j}",
      )(x, train)
    if self.downsample:
      x = PatchMerging(dtype=self.dtype, name="downsample")(x)
    return x


class SwinTransformer3D(nn.Module):
  """FAST-VQA fragment backbone: (B, T, H, W, 3) -> (B, T', H', W', C_last) after LayerNorm."""

  embed_dim: int = 96
  depths: Sequence[int] = (2, 2, 6, 2)
  num_heads: Sequence[int] = (3, 6, 12, 24)
  window_size: Shape3 = (8, 7, 7)
  frag_biases: Sequence[bool] = (True, True, True, False)
  adaptive_window: bool = True
  base_x_size: Shape3 = (32, 224, 224)
  patch_size: Shape3 = (2, 4, 4)
  mlp_ratio: float = 4.0
  drop_path_rate: float = 0.1
  dtype: Any = jnp.float32
  remat: bool = False

  @property
  def num_features(self) -> int:
    return self.embed_dim * 2 ** (len(self.depths) - 1)

  def stage_window(self, input_size: Shape3) -> Shape3:
    """The window every stage starts from (before per-stage clamping)."""
    if self.adaptive_window:
      return adaptive_window(input_size, tuple(self.window_size), tuple(self.base_x_size))
    return tuple(self.window_size)

  @nn.compact
  def __call__(self, x, train: bool = False):
    if x.ndim != 5:
      raise ValueError(f"expected a video (B, T, H, W, C), got shape {x.shape}")
    base_window = tuple(int(w) for w in self.window_size)
    window = self.stage_window(tuple(x.shape[1:4]))
    x = PatchEmbed3D(tuple(self.patch_size), self.embed_dim, dtype=self.dtype, name="patch_embed")(
      x.astype(self.dtype)
    )
    # Stochastic depth rates: linspace(0, rate, total blocks), in float32 like torch.
    dpr = np.linspace(0.0, self.drop_path_rate, sum(self.depths), dtype=np.float32).tolist()
    n_layers = len(self.depths)
    for i in range(n_layers):
      start = sum(self.depths[:i])
      x = BasicLayer(
        depth=self.depths[i],
        num_heads=self.num_heads[i],
        base_window=base_window,
        window=window,
        adaptive=self.adaptive_window,
        frag_bias=bool(self.frag_biases[i]),
        drop_paths=tuple(dpr[start : start + self.depths[i]]),
        downsample=i < n_layers - 1,
        mlp_ratio=self.mlp_ratio,
        dtype=self.dtype,
        remat=self.remat,
        name=f"layers_{i}",
      )(x, train)
    return layer_norm("norm", self.dtype)(x)
