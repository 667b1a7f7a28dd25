"""PyTorch reference of FAST-VQA / FasterVQA (fragment Swin3D + VQA head), inference only.

Written from the project's FAST-VQA specification, with the module tree of the
original so that `FastVQARef().state_dict()` has the released checkpoint keys
(`fragments_backbone.*`, `vqa_head.*`, including the int64
`relative_position_index` buffers). Dropout and stochastic depth are omitted:
they are identities in eval mode, which is all the parity tests use.

Input is channels-first (B, 3, T, H, W) like the original.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn


def _clamp_window(size, window, shift):
  window, shift = list(window), list(shift)
  for i in range(3):
    if size[i] <= window[i]:
      window[i] = size[i]
      shift[i] = 0
  return tuple(window), tuple(shift)


def _to_windows(x, window):
  """(B, D, H, W, C) -> (B * nW, N, C)."""
  b, d, h, w, c = x.shape
  x = x.view(b, d // window[0], window[0], h // window[1], window[1], w // window[2], window[2], c)
  return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, window[0] * window[1] * window[2], c)


def _from_windows(x, window, b, d, h, w):
  x = x.view(b, d // window[0], h // window[1], w // window[2], window[0], window[1], window[2], -1)
  return x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, d, h, w, -1)


@functools.cache
def _shift_mask(dp, hp, wp, window, shift):
  """(nW, N, N): -100 between tokens of different shift regions, else 0."""
  region = torch.zeros((1, dp, hp, wp, 1))
  label = 0
  for sd in (slice(-window[0]), slice(-window[0], -shift[0]), slice(-shift[0], None)):
    for sh in (slice(-window[1]), slice(-window[1], -shift[1]), slice(-shift[1], None)):
      for sw in (slice(-window[2]), slice(-window[2], -shift[2]), slice(-shift[2], None)):
        region[:, sd, sh, sw, :] = label
        label += 1
  region = _to_windows(region, window).squeeze(-1)
  diff = region.unsqueeze(1) - region.unsqueeze(2)
  return torch.where(diff != 0, torch.tensor(-100.0), torch.tensor(0.0))


@functools.cache
def _fragment_offsets(dp, hp, wp, window, shift):
  """(nW, N, N, 3): fragment index differences with a (1, wh, ww) fragment grid."""
  grid = torch.stack(
    torch.meshgrid(torch.arange(1), torch.arange(window[1]), torch.arange(window[2]), indexing="ij")
  ).float()
  coords = F.interpolate(grid[None], size=(dp, hp, wp)).long().permute(0, 2, 3, 4, 1)
  coords = torch.roll(coords, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
  coords = _to_windows(coords, window)
  return coords[:, None, :] - coords[:, :, None]


def relative_index(window):
  axes = [torch.arange(n) for n in window]
  coords = torch.stack(torch.meshgrid(*axes, indexing="ij")).flatten(1)  # 3, N
  rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # N, N, 3
  rel = rel + torch.tensor(window) - 1
  stride = torch.tensor([(2 * window[1] - 1) * (2 * window[2] - 1), 2 * window[2] - 1, 1])
  return (rel * stride).sum(-1)


class Mlp(nn.Module):
  def __init__(self, dim, hidden):
    super().__init__()
    self.fc1 = nn.Linear(dim, hidden)
    self.act = nn.GELU()
    self.fc2 = nn.Linear(hidden, dim)

  def forward(self, x):
    return self.fc2(self.act(self.fc1(x)))


class WindowAttention3D(nn.Module):
  def __init__(self, dim, window, num_heads, frag_bias):
    super().__init__()
    self.window = tuple(window)
    self.num_heads = num_heads
    self.scale = (dim // num_heads) ** -0.5
    rows = (2 * window[0] - 1) * (2 * window[1] - 1) * (2 * window[2] - 1)
    self.relative_position_bias_table = nn.Parameter(torch.zeros(rows, num_heads))
    if frag_bias:
      self.fragment_position_bias_table = nn.Parameter(torch.zeros(rows, num_heads))
    self.register_buffer("relative_position_index", relative_index(self.window))
    self.qkv = nn.Linear(dim, 3 * dim)
    self.proj = nn.Linear(dim, dim)

  def _index(self, window, adaptive):
    n = window[0] * window[1] * window[2]
    if adaptive:
      full = self.relative_position_index.view(*self.window, *self.window)
      return full[
        : window[0], : window[1], : window[2], : window[0], : window[1], : window[2]
      ].reshape(n, n)
    return self.relative_position_index[:n, :n]

  def forward(self, x, window, adaptive, mask, frag_offsets):
    b_, n, c = x.shape
    qkv = self.qkv(x).reshape(b_, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = (q * self.scale) @ k.transpose(-2, -1)
    idx = self._index(window, adaptive).reshape(-1)
    bias = self.relative_position_bias_table[idx].reshape(n, n, -1).permute(2, 0, 1)[None]
    gate = frag_offsets.abs().sum(-1)[:, None]  # nW, 1, N, N (integer L1 distance)
    nw = gate.shape[0]
    if hasattr(self, "fragment_position_bias_table"):
      fbias = self.fragment_position_bias_table[idx].reshape(n, n, -1).permute(2, 0, 1)
      bias = bias * gate + fbias * (1 - gate)
    attn = (attn.view(b_ // nw, nw, self.num_heads, n, n) + bias[None]).view(
      -1, self.num_heads, n, n
    )
    if mask is not None:
      attn = attn.view(b_ // nw, nw, self.num_heads, n, n) + mask[None, :, None]
      attn = attn.view(-1, self.num_heads, n, n)
    attn = attn.softmax(dim=-1)
    out = (attn @ v).transpose(1, 2).reshape(b_, n, c)
    return self.proj(out)


class SwinTransformerBlock3D(nn.Module):
  def __init__(self, dim, num_heads, window, shift, frag_bias, mlp_ratio=4.0):
    super().__init__()
    self.window = tuple(window)
    self.shift = tuple(shift)
    self.norm1 = nn.LayerNorm(dim)
    self.attn = WindowAttention3D(dim, window, num_heads, frag_bias)
    self.norm2 = nn.LayerNorm(dim)
    self.mlp = Mlp(dim, int(dim * mlp_ratio))

  def forward(self, x, stage_window, adaptive, mask):
    b, d, h, w, c = x.shape
    window, shift = _clamp_window((d, h, w), stage_window, self.shift)
    shortcut = x
    x = self.norm1(x)
    pd, ph, pw = [(window[i] - n % window[i]) % window[i] for i, n in enumerate((d, h, w))]
    x = F.pad(x, (0, 0, 0, pw, 0, ph, 0, pd))
    _, dp, hp, wp, _ = x.shape
    shifted = any(s > 0 for s in shift)
    if shifted:
      x = torch.roll(x, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
    frag = _fragment_offsets(dp, hp, wp, window, shift)
    y = self.attn(_to_windows(x, window), window, adaptive, mask if shifted else None, frag)
    y = _from_windows(y.view(-1, *window, c), window, b, dp, hp, wp)
    if shifted:
      y = torch.roll(y, shifts=shift, dims=(1, 2, 3))
    x = shortcut + y[:, :d, :h, :w].contiguous()
    return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
  def __init__(self, dim):
    super().__init__()
    self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
    self.norm = nn.LayerNorm(4 * dim)

  def forward(self, x):
    h, w = x.shape[2], x.shape[3]
    if h % 2 or w % 2:
      x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
    x = torch.cat(
      [x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]], -1
    )
    return self.reduction(self.norm(x))


class BasicLayer(nn.Module):
  def __init__(self, dim, depth, num_heads, window, frag_bias, downsample):
    super().__init__()
    self.window = tuple(window)
    self.shift = tuple(n // 2 for n in window)
    self.blocks = nn.ModuleList(
      [
        SwinTransformerBlock3D(
          dim, num_heads, window, (0, 0, 0) if j % 2 == 0 else self.shift, frag_bias
        )
        for j in range(depth)
      ]
    )
    self.downsample = PatchMerging(dim) if downsample else None

  def forward(self, x, stage_window, adaptive):
    x = x.permute(0, 2, 3, 4, 1)  # B D H W C
    _, d, h, w, _ = x.shape
    window, shift = _clamp_window((d, h, w), stage_window, self.shift)
    dp, hp, wp = [-(-n // window[i]) * window[i] for i, n in enumerate((d, h, w))]
    mask = _shift_mask(dp, hp, wp, window, shift)
    for blk in self.blocks:
      x = blk(x, stage_window, adaptive, mask)
    if self.downsample is not None:
      x = self.downsample(x)
    return x.permute(0, 4, 1, 2, 3)


class PatchEmbed3D(nn.Module):
  def __init__(self, patch_size=(2, 4, 4), embed_dim=96):
    super().__init__()
    self.patch_size = tuple(patch_size)
    self.embed_dim = embed_dim
    self.proj = nn.Conv3d(3, embed_dim, kernel_size=patch_size, stride=patch_size)
    self.norm = nn.LayerNorm(embed_dim)

  def forward(self, x):
    d, h, w = x.shape[2:]
    p = self.patch_size
    x = F.pad(x, (0, (-w) % p[2], 0, (-h) % p[1], 0, (-d) % p[0]))
    x = self.proj(x)
    b, c, d, h, w = x.shape
    x = self.norm(x.flatten(2).transpose(1, 2))
    return x.transpose(1, 2).reshape(b, c, d, h, w)


class SwinTransformer3D(nn.Module):
  def __init__(
    self,
    embed_dim=96,
    depths=(2, 2, 6, 2),
    num_heads=(3, 6, 12, 24),
    window_size=(8, 7, 7),
    frag_biases=(True, True, True, False),
    base_x_size=(32, 224, 224),
    patch_size=(2, 4, 4),
  ):
    super().__init__()
    self.window_size = tuple(window_size)
    self.base_x_size = tuple(base_x_size)
    self.patch_embed = PatchEmbed3D(patch_size, embed_dim)
    n = len(depths)
    self.layers = nn.ModuleList(
      [
        BasicLayer(
          embed_dim * 2**i,
          depths[i],
          num_heads[i],
          window_size,
          frag_biases[i],
          downsample=i < n - 1,
        )
        for i in range(n)
      ]
    )
    self.norm = nn.LayerNorm(embed_dim * 2 ** (n - 1))

  def forward(self, x, adaptive_window_size=True):
    if adaptive_window_size:
      stage_window = tuple(
        w * s // b for w, s, b in zip(self.window_size, x.shape[2:], self.base_x_size)
      )
    else:
      stage_window = self.window_size
    x = self.patch_embed(x)
    for layer in self.layers:
      x = layer(x, stage_window, adaptive_window_size)
    x = x.permute(0, 2, 3, 4, 1)
    return self.norm(x).permute(0, 4, 1, 2, 3)  # B C D H W


class VQAHead(nn.Module):
  def __init__(self, in_channels=768, hidden=64):
    super().__init__()
    self.fc_hid = nn.Conv3d(in_channels, hidden, (1, 1, 1))
    self.fc_last = nn.Conv3d(hidden, 1, (1, 1, 1))
    self.gelu = nn.GELU()

  def forward(self, x):
    return self.fc_last(self.gelu(self.fc_hid(x)))


class FastVQARef(nn.Module):
  """forward(x (B,3,T,H,W)) -> (quality map (B,1,T',H',W'), features (B,C,T',H',W'))."""

  def __init__(
    self,
    embed_dim=96,
    depths=(2, 2, 6, 2),
    num_heads=(3, 6, 12, 24),
    window_size=(8, 7, 7),
    frag_biases=(True, True, True, False),
    adaptive_window=True,
    base_x_size=(32, 224, 224),
    patch_size=(2, 4, 4),
    head_hidden=64,
  ):
    super().__init__()
    self.adaptive_window = adaptive_window
    self.fragments_backbone = SwinTransformer3D(
      embed_dim, depths, num_heads, window_size, frag_biases, base_x_size, patch_size
    )
    self.vqa_head = VQAHead(embed_dim * 2 ** (len(depths) - 1), head_hidden)

  @classmethod
  def from_model_kwargs(cls, kw):
    """Builds the reference from FastVQA model_kwargs (unused training-only keys ignored)."""
    keys = (
      "embed_dim",
      "depths",
      "num_heads",
      "window_size",
      "frag_biases",
      "adaptive_window",
      "base_x_size",
      "patch_size",
      "head_hidden",
    )
    return cls(**{k: (tuple(kw[k]) if isinstance(kw[k], list) else kw[k]) for k in keys if k in kw})

  def forward(self, x):
    feats = self.fragments_backbone(x, adaptive_window_size=self.adaptive_window)
    return self.vqa_head(feats), feats


def randomize_(model: nn.Module, seed: int = 0, std: float = 0.05) -> nn.Module:
  """Fills every float parameter with noise (bias tables and norms included)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=g)
      if name.endswith(("norm.weight", "norm1.weight", "norm2.weight")):
        p.copy_(1.0 + 0.2 * noise)
      elif name.endswith("position_bias_table"):
        p.copy_(0.5 * noise)
      else:
        p.copy_(std * noise)
  return model
