"""PyTorch reference of the InternVideo2 classification model (tests and benchmarks only).

Written from the project's InternVideo2 specification in the plain, non-fused
pre-norm form, with the official state_dict key names so that checkpoints
written from it look like the released ones. GELU is switchable: 'tanh'
(what flash-attn's FusedMLP, and so every released checkpoint, used) or
'erf' (torch's default nn.GELU, the non-fused CPU path).

Input layout is PyTorch's (B, 3, T, H, W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
  def __init__(self, dim: int, eps: float = 1e-6):
    super().__init__()
    self.weight = nn.Parameter(torch.ones(dim))
    self.eps = eps

  def forward(self, x):
    dtype = x.dtype
    x = x.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
    return self.weight * x.to(dtype)


class LayerScale(nn.Module):
  def __init__(self, dim: int, init_values: float = 1e-5):
    super().__init__()
    self.gamma = nn.Parameter(init_values * torch.ones(dim))

  def forward(self, x):
    return (x.float() * self.gamma.float()).to(x.dtype)


def _attend(q, k, v, scale, use_sdpa):
  """q, k, v: (B, h, N, d)."""
  if use_sdpa:
    return F.scaled_dot_product_attention(q, k, v, scale=scale)
  attn = (q * scale) @ k.transpose(-2, -1)
  return attn.softmax(dim=-1) @ v


class Attention(nn.Module):
  def __init__(self, dim: int, num_heads: int, use_sdpa: bool = True):
    super().__init__()
    self.num_heads = num_heads
    self.scale = (dim // num_heads) ** -0.5
    self.use_sdpa = use_sdpa
    self.qkv = nn.Linear(dim, 3 * dim, bias=False)
    self.q_norm = RMSNorm(dim)
    self.k_norm = RMSNorm(dim)
    self.proj = nn.Linear(dim, dim)

  def forward(self, x):
    b, n, c = x.shape
    h = self.num_heads
    q, k, v = self.qkv(x).chunk(3, dim=-1)  # [q | k | v] layout.
    q, k = self.q_norm(q), self.k_norm(k)  # Over the full width, before the head split.
    q, k, v = (t.reshape(b, n, h, c // h).transpose(1, 2) for t in (q, k, v))
    o = _attend(q, k, v, self.scale, self.use_sdpa)
    return self.proj(o.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
  def __init__(self, dim: int, hidden: int, gelu: str = "tanh"):
    super().__init__()
    self.fc1 = nn.Linear(dim, hidden)
    self.act = nn.GELU(approximate="tanh" if gelu == "tanh" else "none")
    self.fc2 = nn.Linear(hidden, dim)

  def forward(self, x):
    return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
  def __init__(self, dim, num_heads, hidden, gelu="tanh", use_sdpa=True):
    super().__init__()
    self.norm1 = RMSNorm(dim)
    self.attn = Attention(dim, num_heads, use_sdpa)
    self.ls1 = LayerScale(dim)
    self.norm2 = RMSNorm(dim)
    self.mlp = Mlp(dim, hidden, gelu)
    self.ls2 = LayerScale(dim)

  def forward(self, x):
    x = x + self.ls1(self.attn(self.norm1(x)))
    return x + self.ls2(self.mlp(self.norm2(x)))


class CrossAttention(nn.Module):
  def __init__(self, dim, num_heads, out_dim, use_sdpa=True):
    super().__init__()
    self.num_heads = num_heads
    self.scale = (dim // num_heads) ** -0.5
    self.use_sdpa = use_sdpa
    self.q = nn.Linear(dim, dim, bias=False)
    self.k = nn.Linear(dim, dim, bias=False)
    self.v = nn.Linear(dim, dim, bias=False)
    self.q_bias = nn.Parameter(torch.zeros(dim))
    self.k_bias = nn.Parameter(torch.zeros(dim))
    self.v_bias = nn.Parameter(torch.zeros(dim))
    self.proj = nn.Linear(dim, out_dim)

  def forward(self, x_q, x_k, x_v):
    b, nq, c = x_q.shape
    nk, h = x_k.shape[1], self.num_heads
    q = F.linear(x_q, self.q.weight, self.q_bias).reshape(b, nq, h, c // h).transpose(1, 2)
    k = F.linear(x_k, self.k.weight, self.k_bias).reshape(b, nk, h, c // h).transpose(1, 2)
    v = F.linear(x_v, self.v.weight, self.v_bias).reshape(b, nk, h, c // h).transpose(1, 2)
    o = _attend(q, k, v, self.scale, self.use_sdpa)
    return self.proj(o.transpose(1, 2).reshape(b, nq, c))


class AttentionPoolingBlock(nn.Module):
  def __init__(self, dim, num_heads=16, out_dim=768, use_sdpa=True):
    super().__init__()
    self.norm1_q = nn.LayerNorm(dim, eps=1e-5)
    self.norm1_k = nn.LayerNorm(dim, eps=1e-5)
    self.norm1_v = nn.LayerNorm(dim, eps=1e-5)
    self.cross_attn = CrossAttention(dim, num_heads, out_dim, use_sdpa)

  def forward(self, x):
    x_q = x.mean(1, keepdim=True)  # All tokens, cls included.
    out = self.cross_attn(self.norm1_q(x_q), self.norm1_k(x), self.norm1_v(x))
    return out.squeeze(1)


class PatchEmbed(nn.Module):
  def __init__(self, dim, patch_size=14, tubelet_size=1):
    super().__init__()
    k = (tubelet_size, patch_size, patch_size)
    self.proj = nn.Conv3d(3, dim, kernel_size=k, stride=k)

  def forward(self, x):
    x = self.proj(x)  # (B, C, T, H', W')
    return x.flatten(3).permute(0, 2, 3, 1)  # (B, T, H'W', C)


class InternVideo2Ref(nn.Module):
  def __init__(
    self,
    embed_dim,
    depth,
    num_heads,
    mlp_hidden,
    num_frames,
    img_size,
    patch_size=14,
    tubelet_size=1,
    num_outputs=1,
    pool_heads=16,
    pool_dim=768,
    gelu="tanh",
    use_sdpa=True,
  ):
    super().__init__()
    if gelu not in ("tanh", "erf"):
      raise ValueError(f"gelu must be 'tanh' or 'erf', got {gelu!r}")
    n = (num_frames // tubelet_size) * (img_size // patch_size) ** 2
    self.patch_embed = PatchEmbed(embed_dim, patch_size, tubelet_size)
    self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
    self.pos_embed = nn.Parameter(torch.zeros(1, 1 + n, embed_dim))
    self.blocks = nn.ModuleList(
      [Block(embed_dim, num_heads, mlp_hidden, gelu, use_sdpa) for _ in range(depth)]
    )
    self.clip_projector = AttentionPoolingBlock(embed_dim, pool_heads, pool_dim, use_sdpa)
    self.fc_norm = nn.LayerNorm(pool_dim, eps=1e-5)
    self.head = nn.Linear(pool_dim, num_outputs)

  def forward(self, x, return_tokens_after=None):
    """x: (B, 3, T, H, W). Returns dict(score, feature[, tokens])."""
    x = self.patch_embed(x)
    b, t, l, c = x.shape
    x = x.reshape(b, t * l, c)
    x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1) + self.pos_embed
    out = {}
    for i, blk in enumerate(self.blocks):
      x = blk(x)
      if i == return_tokens_after:
        out["tokens"] = x
    feature = self.fc_norm(self.clip_projector(x))
    score = self.head(feature)
    out["feature"] = feature
    out["score"] = score[:, 0] if score.shape[1] == 1 else score
    return out


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
  """Fills every parameter with well-scaled random values, in place.

  Not only the matrices: norm weights, LayerScale gammas, biases, cls_token
  and pos_embed are random too, so a converter that drops or misplaces any
  of them changes the output. Matrices get std 1/sqrt(fan_in) so activations
  stay O(1) through the depth.
  """
  g = torch.Generator().manual_seed(seed)

  def randn(shape):
    return torch.randn(shape, generator=g, dtype=torch.float32)

  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("gamma"):
        p.copy_(0.05 + 0.25 * torch.rand(p.shape, generator=g))
      elif name in ("cls_token", "pos_embed"):
        p.copy_(0.5 * randn(p.shape))
      elif p.ndim >= 2:
        p.copy_(randn(p.shape) / p[0].numel() ** 0.5)
      elif "norm" in name and name.endswith("weight"):
        p.copy_(1.0 + 0.2 * randn(p.shape))
      else:  # Biases, including the pool's separate q/k/v biases.
        p.copy_(0.1 * randn(p.shape))
  return model


def state_dict_numpy(model: nn.Module) -> dict:
  return {k: v.detach().float().numpy().copy() for k, v in model.state_dict().items()}
