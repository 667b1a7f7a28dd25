"""Positional-embedding tables for InternVideo2: sin-cos init and exact resampling.

Two jobs, both in NumPy so they run in converters without a device:

* `sincos_3d`: the fixed 3-D sin-cos table that initialises the learnable
  `pos_embed` when training from scratch (spec section 3.13).
* `resample_pos_embed`: adapts a checkpoint's `pos_embed` to another frame
  count or image size, reproducing PyTorch's
  `F.interpolate(mode='linear' | 'bicubic', align_corners=False)` exactly,
  temporal (linear) first, spatial (bicubic) second (spec section 4).

`jax.image.resize` is deliberately not used: its bicubic kernel uses A=-0.5
and it antialiases when downsampling, so it disagrees with PyTorch by O(1)
on unit-variance data (spec section 8, item 11).
"""

from __future__ import annotations

import numpy as np

# Keys' cubic convolution parameter used by PyTorch's bicubic interpolation.
_TORCH_CUBIC_A = -0.75


def sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
  """[sin(p*w) | cos(p*w)] with w_k = 1/10000^(k/(dim/2)), float32 like the original."""
  if dim % 2:
    raise ValueError(f"1-D sin-cos embedding needs an even dimension, got {dim}")
  omega = np.arange(dim // 2, dtype=np.float32) / np.float32(dim / 2.0)
  omega = (np.float32(1.0) / np.float32(10000.0) ** omega).astype(np.float32)
  out = np.einsum("m,d->md", np.asarray(pos, np.float32).reshape(-1), omega)
  return np.concatenate([np.sin(out), np.cos(out)], axis=1).astype(np.float32)


def sincos_3d(dim: int, grid_size: int, num_frames: int, cls_row: bool = True) -> np.ndarray:
  """3-D sin-cos table of shape ([1 +] T*G*G, dim), rows t-major, then h, then w.

  The first dim/4 channels encode t; the last 3*dim/4 encode space as
  [1-D code of the column (w) | 1-D code of the row (h)]. The original builds
  its meshgrid w-first, so the half it calls "h" actually encodes w; this
  order is reproduced on purpose.
  """
  if dim % 4 or (dim // 4 * 3) % 4:
    raise ValueError(
      f"3-D sin-cos embedding needs dim divisible by 4 with 3*dim/4 divisible by 4, got {dim}"
    )
  dim_t, dim_s = dim // 4, dim // 4 * 3
  hh, ww = np.meshgrid(
    np.arange(grid_size, dtype=np.float32), np.arange(grid_size, dtype=np.float32), indexing="ij"
  )
  spatial = np.concatenate([sincos_1d(dim_s // 2, ww), sincos_1d(dim_s // 2, hh)], axis=1)
  temporal = sincos_1d(dim_t, np.arange(num_frames, dtype=np.float32))
  table = np.concatenate(
    [
      np.repeat(temporal[:, None, :], grid_size * grid_size, axis=1),
      np.repeat(spatial[None, :, :], num_frames, axis=0),
    ],
    axis=-1,
  ).reshape(num_frames * grid_size * grid_size, dim)
  if cls_row:
    table = np.concatenate([np.zeros((1, dim), np.float32), table], axis=0)
  return table.astype(np.float32)


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """PyTorch linear, align_corners=False: (i0, i1, lambda) per output index."""
  scale = n_in / n_out
  src = np.maximum((np.arange(n_out) + 0.5) * scale - 0.5, 0.0)  # Clamped below at 0.
  i0 = np.floor(src).astype(np.int64)
  i0 = np.minimum(i0, n_in - 1)
  i1 = np.minimum(i0 + 1, n_in - 1)
  return i0, i1, src - i0


def interp_linear(x: np.ndarray, n_out: int, axis: int) -> np.ndarray:
  """PyTorch `F.interpolate(mode='linear', align_corners=False)` along `axis` (float64)."""
  x = np.asarray(x, np.float64)
  i0, i1, lam = _linear_taps(x.shape[axis], n_out)
  shape = [1] * x.ndim
  shape[axis] = n_out
  lam = lam.reshape(shape)
  return (1.0 - lam) * np.take(x, i0, axis=axis) + lam * np.take(x, i1, axis=axis)


def _cubic_weights(t: np.ndarray, a: float = _TORCH_CUBIC_A) -> np.ndarray:
  """Keys' cubic weights for taps at offsets -1, 0, 1, 2 from floor(s); (n, 4)."""

  def near(d):  # |d| <= 1
    return ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0

  def far(d):  # 1 < |d| < 2
    return ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a

  return np.stack([far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)], axis=-1)


def interp_bicubic_1d(x: np.ndarray, n_out: int, axis: int) -> np.ndarray:
  """One axis of PyTorch bicubic, align_corners=False (float64).

  The source coordinate is not clamped (unlike linear); each of the four taps
  is clamped into [0, n_in - 1] instead.
  """
  x = np.asarray(x, np.float64)
  n_in = x.shape[axis]
  src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
  f = np.floor(src)
  w = _cubic_weights(src - f)  # (n_out, 4)
  out = 0.0
  shape = [1] * x.ndim
  shape[axis] = n_out
  for j, off in enumerate((-1, 0, 1, 2)):
    idx = np.clip(f.astype(np.int64) + off, 0, n_in - 1)
    out = out + w[:, j].reshape(shape) * np.take(x, idx, axis=axis)
  return out


def interp_bicubic_2d(x: np.ndarray, size: tuple[int, int], axes: tuple[int, int]) -> np.ndarray:
  """PyTorch `F.interpolate(mode='bicubic', align_corners=False)` over two axes.

  The 2-D kernel is the outer product of the 1-D ones, so filtering H then W
  is the same function (summation order differs only in float64 rounding).
  """
  x = interp_bicubic_1d(x, size[0], axes[0])
  return interp_bicubic_1d(x, size[1], axes[1])


def resample_pos_embed(
  pos_embed: np.ndarray,
  src_frames: int,
  src_grid: int,
  dst_frames: int,
  dst_grid: int,
  num_extra_tokens: int = 1,
) -> np.ndarray:
  """Resamples a joint (1, extra + T*G*G, C) table to another T and grid size.

  The extra (cls) rows are kept unchanged. Time is resampled first with linear
  interpolation, then each frame's G x G grid with bicubic, exactly as the
  original finetuning code does. Computed in float64, returned as float32.
  """
  pos_embed = np.asarray(pos_embed)
  if pos_embed.ndim != 3 or pos_embed.shape[0] != 1:
    raise ValueError(f"pos_embed must have shape (1, L, C), found {pos_embed.shape}")
  _, rows, dim = pos_embed.shape
  if rows != num_extra_tokens + src_frames * src_grid * src_grid:
    raise ValueError(
      f"pos_embed has {rows} rows, expected {num_extra_tokens} + {src_frames}*{src_grid}^2 = "
      f"{num_extra_tokens + src_frames * src_grid * src_grid} for {src_frames} frames on a "
      f"{src_grid}x{src_grid} grid"
    )
  extra = pos_embed[:, :num_extra_tokens].astype(np.float32)
  grid = (
    pos_embed[0, num_extra_tokens:].astype(np.float64).reshape(src_frames, src_grid, src_grid, dim)
  )
  if dst_frames != src_frames:
    grid = interp_linear(grid, dst_frames, axis=0)
  if dst_grid != src_grid:
    grid = interp_bicubic_2d(grid, (dst_grid, dst_grid), axes=(1, 2))
  patches = grid.reshape(1, dst_frames * dst_grid * dst_grid, dim).astype(np.float32)
  return np.concatenate([extra, patches], axis=1)
