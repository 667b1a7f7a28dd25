"""PyTorch InternVideo2 checkpoints <-> converted Orbax model directories.

Convert (PyTorch .pth/.pt/.bin/.safetensors -> Orbax directory with meta.json):

  python -m converters.internvideo2 SRC DST [--variant small|base|large|1b|6b]
      [--num-frames T] [--img-size S] [--src-img-size S0] [--num-outputs N]
      [--keep-head | --drop-head] [--gelu tanh|erf] [--seed 0] [--overwrite]

Export (converted directory -> PyTorch state_dict with the official key names):

  python -m converters.internvideo2 export SRC_DIR OUT.pth|OUT.safetensors [--wrapper module]

What `convert` does, in order (nothing is written before every check passed):
 1. reads the file, unwraps {'module': ...} / {'model': ...}, strips the
    prefixes module., model., backbone., encoder., vision_encoder., drops the
    extra keys of distillation/pretraining files (EXTRA_KEY_PATTERNS), upcasts
    to float32;
 2. infers width, depth, MLP width and the variant from shapes (heads come
    from the variant table: they cannot be read from shapes), and the source
    frame count from the pos_embed rows and the source image size;
 3. resamples pos_embed to --num-frames / --img-size with PyTorch's exact
    linear-then-bicubic semantics (internvqa_jax.models.posembed);
 4. keeps the head (slicing its first N rows when --num-outputs N is smaller,
    as the K710 -> K400 recipe does) or initialises a fresh one (--drop-head,
    no head in the file, or a wider --num-outputs), and a fresh fc_norm when
    the file has none (distilled pretraining files);
 5. checks every key and shape against jax.eval_shape of the target model and
    reports all offending keys at once, with torch and Flax names;
 6. writes DST atomically (internvqa_jax.models.checkpoint.save_params).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from converters import common
from internvqa_jax import cli_errors, tree_paths
from internvqa_jax.models import checkpoint, posembed
from internvqa_jax.models import internvideo2 as iv2

WRAPPER_KEYS = ("module", "model")
PREFIXES = ("module.", "model.", "backbone.", "encoder.", "vision_encoder.")
# Keys of distillation students / pretraining / multimodal files that the
# classification model does not have (spec section 5.2).
EXTRA_KEY_PATTERNS = (
  r"clip_decoder\..*",
  r"final_clip_decoder\..*",
  r"clip_pos_embed",
  r"mae_.*",
  r"clip_img_pos_embed",
  r"img_pos_embed",
)

# torch key (inside blocks.{i}. / at top level) -> Flax path suffix.
_BLOCK_KEYS = {
  "norm1.weight": "norm1/scale",
  "attn.qkv.weight": "attn/qkv/kernel",
  "attn.q_norm.weight": "attn/q_norm/scale",
  "attn.k_norm.weight": "attn/k_norm/scale",
  "attn.proj.weight": "attn/proj/kernel",
  "attn.proj.bias": "attn/proj/bias",
  "ls1.gamma": "ls1/gamma",
  "norm2.weight": "norm2/scale",
  "mlp.fc1.weight": "mlp/fc1/kernel",
  "mlp.fc1.bias": "mlp/fc1/bias",
  "mlp.fc2.weight": "mlp/fc2/kernel",
  "mlp.fc2.bias": "mlp/fc2/bias",
  "ls2.gamma": "ls2/gamma",
}
_TOP_KEYS = {
  "cls_token": "cls_token",
  "pos_embed": "pos_embed",
  "patch_embed.proj.weight": "patch_embed/proj/kernel",
  "patch_embed.proj.bias": "patch_embed/proj/bias",
  "fc_norm.weight": "fc_norm/scale",
  "fc_norm.bias": "fc_norm/bias",
  "head.weight": "head/kernel",
  "head.bias": "head/bias",
  "clip_projector.cross_attn.proj.weight": "clip_projector/cross_attn/proj/kernel",
  "clip_projector.cross_attn.proj.bias": "clip_projector/cross_attn/proj/bias",
}
for _n in ("q", "k", "v"):
  _TOP_KEYS[f"clip_projector.norm1_{_n}.weight"] = f"clip_projector/norm1_{_n}/scale"
  _TOP_KEYS[f"clip_projector.norm1_{_n}.bias"] = f"clip_projector/norm1_{_n}/bias"
  _TOP_KEYS[f"clip_projector.cross_attn.{_n}.weight"] = f"clip_projector/cross_attn/{_n}/kernel"
  # The separate q/k/v biases become the biases of the Flax Dense layers.
  _TOP_KEYS[f"clip_projector.cross_attn.{_n}_bias"] = f"clip_projector/cross_attn/{_n}/bias"
_TOP_PATHS = {v: k for k, v in _TOP_KEYS.items()}
_BLOCK_PATHS = {v: k for k, v in _BLOCK_KEYS.items()}

PATCH_KERNEL = "patch_embed/proj/kernel"
_FRESHABLE = ("fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias")


# ----------------------------------------------------------------------------
# Key and layout mapping.


def torch_key_to_path(key: str) -> str | None:
  """'blocks.3.attn.qkv.weight' -> 'blocks_3/attn/qkv/kernel'; None if unknown."""
  m = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
  if m:
    suffix = _BLOCK_KEYS.get(m.group(2))
    return f"blocks_{m.group(1)}/{suffix}" if suffix else None
  return _TOP_KEYS.get(key)


def path_to_torch_key(path: str) -> str | None:
  m = re.fullmatch(r"blocks_(\d+)/(.+)", path)
  if m:
    suffix = _BLOCK_PATHS.get(m.group(2))
    return f"blocks.{m.group(1)}.{suffix}" if suffix else None
  return _TOP_PATHS.get(path)


def _to_flax(path: str, x: np.ndarray) -> np.ndarray:
  if path == PATCH_KERNEL:  # Conv3d (O, I, kT, kH, kW) -> (kT, kH, kW, I, O).
    return np.transpose(x, (2, 3, 4, 1, 0)) if x.ndim == 5 else x
  if path.endswith("/kernel"):  # Linear (out, in) -> Dense (in, out).
    return x.T if x.ndim == 2 else x
  return x


def _to_torch(path: str, x: np.ndarray) -> np.ndarray:
  if path == PATCH_KERNEL:
    return np.transpose(x, (4, 3, 0, 1, 2)) if x.ndim == 5 else x
  if path.endswith("/kernel"):
    return x.T if x.ndim == 2 else x
  return x


def _torch_shape(path: str, shape: tuple) -> tuple:
  return _to_torch(path, np.empty(shape, np.uint8)).shape


def _label(torch_key: str) -> str:
  path = torch_key_to_path(torch_key)
  return f"{torch_key} [{path}]" if path else torch_key


def torch_state_dict_to_params(
  sd: Mapping[str, np.ndarray], model_kwargs: Mapping[str, Any]
) -> dict:
  """Maps a (prepared) float32 torch state_dict onto the model's parameter tree.

  Every key and shape is checked against jax.eval_shape of the model built
  from `model_kwargs` first; a CheckpointMismatchError lists every missing,
  unexpected or wrongly shaped key with its torch and Flax names.
  """
  model = iv2.from_kwargs(**model_kwargs)
  abstract = tree_paths.flatten(iv2.abstract_params(model))
  expected = {}
  for path, leaf in abstract.items():
    key = path_to_torch_key(path)
    if key is None:  # A model parameter without a torch name would be a bug here.
      raise AssertionError(f"no torch key for model parameter {path}")
    expected[_label(key)] = _torch_shape(path, leaf.shape)
  found = {_label(k): tuple(np.shape(v)) for k, v in sd.items()}
  common.check_keys(
    expected,
    found,
    source="checkpoint",
    what=f"InternVideo2 model "
    f"(C={model.embed_dim}, depth={model.depth}, T={model.num_frames}, "
    f"img={model.img_size}, outputs={model.num_outputs})",
  )
  flat = {}
  for key, value in sd.items():
    path = torch_key_to_path(key)
    flat[path] = np.ascontiguousarray(_to_flax(path, np.asarray(value, np.float32)))
  return tree_paths.unflatten(flat)


def params_to_torch_state_dict(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Converted parameters -> float32 torch state_dict with the official key names."""
  sd = {}
  for path, value in tree_paths.flatten(params).items():
    key = path_to_torch_key(path)
    if key is None:
      raise ValueError(f"parameter {path} has no InternVideo2 torch key")
    sd[key] = np.ascontiguousarray(_to_torch(path, np.asarray(value, np.float32)))
  return sd


# ----------------------------------------------------------------------------
# Reading and inspecting checkpoints.


def read_state_dict(src: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Reads, unwraps, strips prefixes, drops extra keys, upcasts. Returns (sd, info)."""
  raw = common.read_raw(src)
  sd, wrapper = common.unwrap(raw, WRAPPER_KEYS, path=src)
  sd = common.strip_prefixes(sd, PREFIXES)
  sd, dropped = common.drop_matching(sd, EXTRA_KEY_PATTERNS)
  not_arrays = sorted(k for k, v in sd.items() if not hasattr(v, "shape"))
  if not_arrays:
    raise ValueError(f"{src}: entries that are not tensors: {not_arrays}")
  arrays, dtypes = common.to_numpy_f32(sd)
  info = {
    "wrapper_key": wrapper,
    "dropped_keys": dropped,
    "source_dtypes": dict(collections.Counter(dtypes.values())),
  }
  return arrays, info


def _require(sd: Mapping, key: str, src: str) -> np.ndarray:
  if key not in sd:
    raise common.CheckpointMismatchError(
      f"{src}: key {key!r} is missing; it is needed to infer the model configuration"
    )
  return sd[key]


def infer_architecture(sd: Mapping[str, np.ndarray], src: str = "checkpoint") -> dict[str, Any]:
  """Width, depth, MLP width, patch/tubelet size and matching variant from shapes."""
  c = int(_require(sd, "cls_token", src).shape[-1])
  w = _require(sd, "patch_embed.proj.weight", src)
  if w.ndim != 5:
    raise common.CheckpointMismatchError(
      f"{src}: patch_embed.proj.weight has shape {w.shape}, expected a Conv3d kernel "
      f"(C, 3, kT, kH, kW)"
    )
  blocks = sorted({int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))})
  if not blocks:
    raise common.CheckpointMismatchError(f"{src}: no 'blocks.N.*' keys found")
  depth = blocks[-1] + 1
  hidden = int(_require(sd, "blocks.0.mlp.fc1.weight", src).shape[0])
  arch = {
    "embed_dim": c,
    "depth": depth,
    "mlp_hidden": hidden,
    "patch_size": int(w.shape[3]),
    "tubelet_size": int(w.shape[2]),
  }
  matches = [
    name
    for name, v in iv2.VARIANTS.items()
    if (v["embed_dim"], v["depth"], v["mlp_hidden"]) == (c, depth, hidden)
  ]
  arch["variant"] = matches[0] if matches else None
  return arch


def _describe(arch):
  return f"embed_dim={arch['embed_dim']}, depth={arch['depth']}, mlp_hidden={arch['mlp_hidden']}"


def _source_grid(rows: int, arch: dict, candidates: list[int], src: str) -> tuple[int, int]:
  """(source img size, source frames) from the pos_embed row count."""
  p, kt = arch["patch_size"], arch["tubelet_size"]
  tried = []
  for size in candidates:
    g = size // p
    if size % p == 0 and g > 0 and (rows - 1) % (g * g) == 0 and rows > 1:
      return size, (rows - 1) // (g * g) * kt
    tried.append(size)
  raise common.CheckpointMismatchError(
    f"{src}: pos_embed has {rows} rows, which is not 1 + T*(S/{p})^2 for any tried source "
    f"image size S in {tried}; pass --src-img-size"
  )


# ----------------------------------------------------------------------------
# Conversion.


def convert(
  src: str,
  dst: str,
  *,
  variant: str | None = None,
  num_frames: int | None = None,
  img_size: int | None = None,
  src_img_size: int | None = None,
  num_outputs: int | None = None,
  head: str = "auto",
  gelu: str = "tanh",
  seed: int = 0,
  overwrite: bool = False,
  log=print,
) -> dict[str, Any]:
  """Converts PyTorch checkpoint `src` into the model directory `dst`; returns meta.

  head: 'auto' keeps the checkpoint's head when present (slicing its first
  rows to `num_outputs`), else initialises one; 'keep' requires a usable head;
  'drop' always initialises a fresh one.
  """
  if head not in ("auto", "keep", "drop"):
    raise ValueError(f"head must be 'auto', 'keep' or 'drop', got {head!r}")
  if gelu not in ("tanh", "erf"):
    raise ValueError(f"gelu must be 'tanh' or 'erf', got {gelu!r}")
  for name, value in (
    ("num_frames", num_frames),
    ("img_size", img_size),
    ("src_img_size", src_img_size),
    ("num_outputs", num_outputs),
  ):
    if value is not None and (not isinstance(value, int) or value < 1):
      raise ValueError(
        f"{name} must be a positive integer (or None for the default), got {value!r}"
      )
  checkpoint.check_destination(dst, overwrite=overwrite)

  sd, info = read_state_dict(src)
  arch = infer_architecture(sd, src)
  if variant is not None:
    if variant not in iv2.VARIANTS:
      raise ValueError(f"unknown --variant {variant!r}; known: {sorted(iv2.VARIANTS)}")
    want = iv2.VARIANTS[variant]
    if (want["embed_dim"], want["depth"], want["mlp_hidden"]) != (
      arch["embed_dim"],
      arch["depth"],
      arch["mlp_hidden"],
    ):
      raise common.CheckpointMismatchError(
        f"{src} has {_describe(arch)} (variant {arch['variant'] or 'unknown'}), but --variant "
        f"{variant} expects {_describe(want)}"
      )
  elif arch["variant"] is None:
    raise common.CheckpointMismatchError(
      f"{src} has {_describe(arch)}, which matches no known variant "
      f"({', '.join(f'{k}: {_describe(v)}' for k, v in iv2.VARIANTS.items())})"
    )
  variant = variant or arch["variant"]
  spec = iv2.VARIANTS[variant]

  # Source frames/size from pos_embed; targets default to the source.
  rows = int(_require(sd, "pos_embed", src).shape[1])
  candidates = (
    [src_img_size]
    if src_img_size
    else [spec["img_size"]] + ([img_size] if img_size and img_size != spec["img_size"] else [])
  )
  s0, t0 = _source_grid(rows, arch, candidates, src)
  t1 = t0 if num_frames is None else num_frames
  s1 = s0 if img_size is None else img_size
  p = arch["patch_size"]
  if s1 % p or t1 % arch["tubelet_size"]:
    raise ValueError(
      f"target img size {s1} must be a multiple of {p} and frames {t1} of "
      f"tubelet {arch['tubelet_size']}"
    )
  pos_info = {
    "source_frames": t0,
    "source_img_size": s0,
    "frames": t1,
    "img_size": s1,
    "resampled": (t0, s0) != (t1, s1),
  }
  if pos_info["resampled"]:
    kt = arch["tubelet_size"]
    sd["pos_embed"] = posembed.resample_pos_embed(
      sd["pos_embed"], t0 // kt, s0 // p, t1 // kt, s1 // p
    )
    pos_info["method"] = "temporal linear, then spatial bicubic (A=-0.75), align_corners=False"
    log(f"pos_embed resampled from {t0}x{s0}px to {t1}x{s1}px")

  head_info, fresh = _prepare_head(sd, head, num_outputs, src)
  key = jax.random.key(seed)
  if "head" in fresh:
    h = iv2.head_init_params(key, head_info["num_outputs"])
    sd["head.weight"], sd["head.bias"] = np.asarray(h["kernel"]).T, np.asarray(h["bias"])
  if "fc_norm" in fresh:
    f = iv2.fc_norm_init_params()
    sd["fc_norm.weight"], sd["fc_norm.bias"] = np.asarray(f["scale"]), np.asarray(f["bias"])
  for what in fresh:
    log(f"{what}: freshly initialised (seed {seed}): {head_info['reason']}")

  model = iv2.make(
    variant,
    num_frames=t1,
    img_size=s1,
    patch_size=p,
    tubelet_size=arch["tubelet_size"],
    num_outputs=head_info["num_outputs"],
    gelu_approximate=(gelu == "tanh"),
  )
  kwargs = iv2.model_kwargs(model)
  params = torch_state_dict_to_params(sd, kwargs)  # Validates everything before writing.

  meta = {
    "family": iv2.NAME,
    "model_kwargs": kwargs,
    "variant": variant,
    "num_frames": t1,
    "img_size": s1,
    "gelu": gelu,
    "source": os.path.abspath(src),
    "source_sha256": common.file_sha256(src),
    **info,
    "pos_embed": pos_info,
    "head": head_info,
    "fresh_init": sorted(fresh),
  }
  if info["dropped_keys"]:
    log(
      f"dropped {len(info['dropped_keys'])} keys not used by the classification model: "
      f"{', '.join(info['dropped_keys'])}"
    )
  checkpoint.save_params(dst, params, meta, overwrite=overwrite, log=log)
  log(
    f"wrote {dst}: InternVideo2-{variant} {t1}x{s1}x{s1}, {head_info['num_outputs']} "
    f"output(s), gelu {gelu}"
  )
  return meta


def _prepare_head(sd: dict, mode: str, num_outputs: int | None, src: str):
  """Applies the head policy in place on `sd`; returns (info, parts to initialise)."""
  has_head = "head.weight" in sd and "head.bias" in sd
  rows = int(sd["head.weight"].shape[0]) if has_head else None
  fresh = set()
  if mode == "keep" and not has_head:
    raise common.CheckpointMismatchError(
      f"{src}: --keep-head given but the file has no head.weight/head.bias"
    )
  if mode == "keep" and num_outputs is not None and num_outputs > rows:
    raise common.CheckpointMismatchError(
      f"{src}: --keep-head with --num-outputs {num_outputs}, but head.weight has only {rows} rows"
    )
  if has_head and mode != "drop" and (num_outputs is None or num_outputs <= rows):
    n = rows if num_outputs is None else num_outputs
    if n < rows:  # First rows, as the official K710 -> K400 recipe.
      sd["head.weight"], sd["head.bias"] = sd["head.weight"][:n], sd["head.bias"][:n]
      info = {
        "action": "sliced",
        "source_rows": rows,
        "num_outputs": n,
        "reason": f"kept the first {n} of {rows} head rows",
      }
    else:
      info = {"action": "kept", "source_rows": rows, "num_outputs": n, "reason": "kept"}
  else:
    n = 1 if num_outputs is None else num_outputs
    reason = (
      "--drop-head"
      if mode == "drop"
      else "the checkpoint has no head"
      if not has_head
      else f"--num-outputs {n} exceeds the checkpoint's {rows} head rows"
    )
    sd.pop("head.weight", None)
    sd.pop("head.bias", None)
    fresh.add("head")
    info = {"action": "initialised", "source_rows": rows, "num_outputs": n, "reason": reason}
  if "fc_norm.weight" not in sd and "fc_norm.bias" not in sd:
    fresh.add("fc_norm")  # Distilled pretraining files carry no fc_norm.
    info["reason"] += "; fc_norm absent from the checkpoint"
  return info, fresh


def export(
  src_dir: str,
  out_path: str,
  *,
  wrapper: str | None = None,
  overwrite: bool = False,
  log=print,
) -> str:
  """Writes a converted model directory back as a PyTorch state_dict file."""
  common.check_export_destination(out_path, overwrite=overwrite, log=log)
  params, meta = checkpoint.load_params(src_dir)
  if meta.get("family") != iv2.NAME:
    raise ValueError(f"{src_dir} holds a {meta.get('family')!r} model, not internvideo2")
  return common.write_torch_state_dict(out_path, params_to_torch_state_dict(params), wrapper)


# ----------------------------------------------------------------------------
# CLI.


def _convert_parser():
  ap = argparse.ArgumentParser(
    prog="python -m converters.internvideo2",
    description="Convert a PyTorch InternVideo2 checkpoint into a model directory. "
    "(Reverse: `python -m converters.internvideo2 export SRC_DIR OUT.pth`.)",
  )
  ap.add_argument("src", help=".pth/.pt/.bin/.safetensors checkpoint")
  ap.add_argument("dst", help="output model directory (must not exist unless --overwrite)")
  ap.add_argument(
    "--variant",
    choices=sorted(iv2.VARIANTS),
    help="expected variant; inferred from shapes and checked when given",
  )
  ap.add_argument(
    "--num-frames", type=cli_errors.positive_int, help="target frames (default: the checkpoint's)"
  )
  ap.add_argument(
    "--img-size", type=cli_errors.positive_int, help="target image size (default: the checkpoint's)"
  )
  ap.add_argument(
    "--src-img-size",
    type=cli_errors.positive_int,
    help="image size the checkpoint's pos_embed was trained at (default: the "
    "variant's, then --img-size)",
  )
  ap.add_argument(
    "--num-outputs",
    type=cli_errors.positive_int,
    help="head outputs (default: the checkpoint's head, else 1)",
  )
  g = ap.add_mutually_exclusive_group()
  g.add_argument(
    "--keep-head",
    dest="head",
    action="store_const",
    const="keep",
    help="require and keep the checkpoint head (first N rows with --num-outputs)",
  )
  g.add_argument(
    "--drop-head", dest="head", action="store_const", const="drop", help="initialise a fresh head"
  )
  ap.add_argument(
    "--gelu",
    choices=("tanh", "erf"),
    default="tanh",
    help="GELU form of the model (tanh: the released checkpoints' training)",
  )
  ap.add_argument("--seed", type=int, default=0, help="seed for a freshly initialised head")
  ap.add_argument(
    "--overwrite", action="store_true", help="replace DST if it is a converted model directory"
  )
  cli_errors.add_verbose_argument(ap)
  ap.set_defaults(head="auto")
  return ap


def _export_parser():
  ap = argparse.ArgumentParser(
    prog="python -m converters.internvideo2 export",
    description="Export a converted model directory to PyTorch.",
  )
  ap.add_argument("src_dir")
  ap.add_argument("out", help="output .pth/.pt/.bin or .safetensors")
  ap.add_argument(
    "--wrapper",
    choices=("module", "model"),
    help="store the state_dict under this key (torch formats only)",
  )
  ap.add_argument("--overwrite", action="store_true")
  cli_errors.add_verbose_argument(ap)
  return ap


def main(argv: list[str] | None = None) -> int:
  """Command line; errors follow internvqa_jax.cli_errors (one line, exit 2 usage / 1 input)."""
  return cli_errors.run(_main, argv)


def _main(argv: list[str]) -> int:
  if argv and argv[0] == "export":
    a = _export_parser().parse_args(argv[1:])
    print(f"wrote {export(a.src_dir, a.out, wrapper=a.wrapper, overwrite=a.overwrite)}")
  else:
    a = _convert_parser().parse_args(argv)
    convert(
      a.src,
      a.dst,
      variant=a.variant,
      num_frames=a.num_frames,
      img_size=a.img_size,
      src_img_size=a.src_img_size,
      num_outputs=a.num_outputs,
      head=a.head,
      gelu=a.gelu,
      seed=a.seed,
      overwrite=a.overwrite,
    )
  return 0


if __name__ == "__main__":
  sys.exit(main())
