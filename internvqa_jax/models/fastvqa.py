"""FAST-VQA / FasterVQA: fragment Swin3D backbone + per-token quality head.

  model = fastvqa.make("faster_vqa")
  params = model.init(jax.random.key(0), video)["params"]
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

A video scored with several clips gets the plain mean of its clip scores (equal
to the original mean over all head-map values, since all clips have the same
shape). Input fragments, normalised, come from `internvqa_jax.data.fragments`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from internvqa_jax.data import fragments, recipes
from internvqa_jax.models import initializers, module_kwargs, swin3d

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
      kernel_init=initializers.torch_conv_kernel,
      bias_init=initializers.torch_conv_bias(fan_in),
      name="fc_hid",
    )(x)
    x = swin3d.gelu(x)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = nn.Dense(
      1,
      dtype=self.dtype,
      param_dtype=jnp.float32,
      kernel_init=initializers.torch_conv_kernel,
      bias_init=initializers.torch_conv_bias(self.hidden),
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


# ----------------------------------------------------------------------------
# The family interface (see internvqa_jax.models).

NAME = "fastvqa"

# Sampling variants tried, in order, by `default_view` when meta.json names none.
_GUESS_ORDER = ("fast_vqa_b", "fast_vqa_m", "faster_vqa_mt", "faster_vqa_ms")


def make(variant: str, **overrides: Any) -> FastVQA:
  """FastVQA for a named variant; `overrides` replace any attribute (dtype, remat, ...)."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown FAST-VQA variant {variant!r}; known: {sorted(VARIANTS)}")
  return from_kwargs(**{**VARIANTS[variant], **overrides})


def from_kwargs(**kwargs: Any) -> FastVQA:
  """Builds from saved (JSON) kwargs: lists become tuples, unknown keys are errors."""
  return module_kwargs.construct(FastVQA, kwargs)


def model_kwargs(module: FastVQA) -> dict[str, Any]:
  """JSON-serialisable constructor arguments (stored in converted checkpoints)."""
  return module_kwargs.saved(module)


def variant_kwargs(variant: str) -> dict[str, Any]:
  """JSON model_kwargs of a named variant."""
  return model_kwargs(make(variant))


def input_shape(module: FastVQA, batch: int = 1) -> tuple[int, ...]:
  """The nominal clip (B, T, H, W, 3): base_x_size."""
  t, h, w = module.base_x_size
  return (batch, t, h, w, 3)


def fit_param(path: str, value: np.ndarray, module: FastVQA, saved: dict, log=print):
  """FAST-VQA parameters do not depend on the input size: nothing to adapt."""
  del path, module, saved, log
  return value


def num_layers(module: FastVQA) -> None:
  """None: no layer numbering (layer decay and teacher presets do not apply)."""
  del module


def layer_id(path: str, num_layers: int) -> int:
  raise ValueError(f"{path!r}: FAST-VQA has no layer numbering (layer decay, teacher presets)")


def with_frozen_layers(module: FastVQA, n: int) -> FastVQA:
  raise ValueError(f"FAST-VQA has no layer numbering; cannot freeze {n} layers")


def input_recipe(view: Mapping[str, Any]) -> recipes.FragmentRecipe:
  """View config fields: variant (a fragments.VARIANT_SAMPLING name) and optional
  overrides (FragmentSampler keyword arguments)."""
  unknown = set(view) - {"variant", "overrides"}
  if unknown or "variant" not in view:
    raise ValueError(f"fastvqa needs 'variant' and optional 'overrides', got {sorted(view)}")
  return recipes.FragmentRecipe(view["variant"], view.get("overrides"))


# Scoring options (internvqa_jax.score's flags, by argparse name) this family's views take
# besides `clips`, the number of test clips every family has.
TEST_OPTIONS = ("fragments_variant", "fragment", "test_sampling")


def apply_test_options(view: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
  """`view` with scoring options applied: fragments_variant -> variant; fragment (a dict of
  FragmentSampler overrides), test_sampling and clips (num_clips_test) -> overrides. FAST-VQA
  samples fragments at native resolution and has no spatial test crops."""
  unknown = sorted(set(options) - {"clips", *TEST_OPTIONS})
  if unknown:
    raise ValueError(
      f"{', '.join('--' + k.replace('_', '-') for k in unknown)} do not apply to FAST-VQA "
      "fragment views (they take --clips, --fragments-variant, --fragment, --test-sampling)"
    )
  view = dict(view)
  if "fragments_variant" in options:
    view["variant"] = options["fragments_variant"]
  overrides = {**(view.get("overrides") or {}), **(options.get("fragment") or {})}
  if "test_sampling" in options:
    overrides["test_sampling"] = options["test_sampling"]
  if "clips" in options:
    overrides["num_clips_test"] = options["clips"]
  view["overrides"] = overrides
  return view


def default_view(module: FastVQA, meta: Mapping[str, Any]) -> dict[str, Any]:
  """The sampling variant named in meta.json (converters store it), else the one whose
  clip (T, S, S) equals the model's base_x_size. FasterVQA shares FAST-VQA-B's input
  size, so a FasterVQA directory without a stored variant needs an explicit view."""
  stored = meta.get("variant")
  if stored in fragments.VARIANT_SAMPLING:
    return {"recipe": NAME, "variant": stored}
  size = tuple(int(x) for x in module.base_x_size)
  known = {}
  for v in _GUESS_ORDER:
    c = fragments.VARIANT_SAMPLING[v]
    known[v] = (c["clip_len"], c["fragments"] * c["fsize"], c["fragments"] * c["fsize"])
    if known[v] == size:
      return {"recipe": NAME, "variant": v}
  raise ValueError(
    f"no FAST-VQA sampling variant has input size {size} (known (T, H, W): {known}); "
    "give the fragment sampling variant explicitly"
  )


def map_layout(module: FastVQA) -> dict[str, Any]:
  """How the head map relates to the input clip.

  Value (t, i, j) of `map` is computed from input frames [t * st, (t + 1) * st)
  and pixels [i * sh, (i + 1) * sh) x [j * sw, (j + 1) * sw), (st, sh, sw) =
  `stride` (patch embedding, then spatial 2x2 merges between stages); the
  clip score is the mean of the map ("mean" pooling). With blocks that mix
  tokens this is where a value sits, not all it depends on.
  """
  t, h, w = module.patch_size
  k = 2 ** (len(module.depths) - 1)
  return {"stride": (int(t), int(h) * k, int(w) * k), "pooling": "mean"}


def local_quality_map(module: FastVQA, params: dict, video: jax.Array) -> dict[str, jax.Array]:
  """The head's local quality map before its spatial-temporal mean.

  Returns {'map': (B, T', H', W'), 'score': (B,), 'rest': (B,)}: score =
  mean(map) + rest, and rest is 0 (the score is that mean).
  """
  out = module.apply({"params": params}, video, train=False)
  return {"map": out["map"], "score": out["score"], "rest": jnp.zeros_like(out["score"])}


def _init_input(model: FastVQA) -> jax.ShapeDtypeStruct:
  # Parameter shapes depend only on the architecture; a one-token input in fixed
  # window mode traces every module without an expensive forward pass.
  return jax.ShapeDtypeStruct((1, *model.patch_size, 3), jnp.float32)


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
