"""FAST-VQA / FasterVQA PyTorch checkpoint <-> Orbax parameters.

Convert a released checkpoint (or a plain state_dict, or safetensors):

  python -m converters.fastvqa FAST_VQA_3D_1_1.pth /ckpt/faster_vqa --variant faster_vqa
  python -m converters.fastvqa FAST_VQA_M_1_4.pth /ckpt/fast_vqa_m          # variant inferred

Export a converted model back to the original key layout (`{'state_dict': ...}`
for .pth/.pt, a flat file for .safetensors), loadable strictly by the original code:

  python -m converters.fastvqa export /ckpt/faster_vqa out.pth

What is checked before anything is written: the key set and every shape against
the variant (all offending keys listed), every `relative_position_index` buffer
against the index recomputed from the window, and the integer dtype of those
buffers. The int64 buffers are not parameters in Flax (they are recomputed);
the export writes them back.

Key mapping (PyTorch -> Flax path, '/'-joined):
  fragments_backbone.layers.{i}.blocks.{j}.attn.qkv.weight (O, I)
      -> fragments_backbone/layers_{i}/blocks_{j}/attn/qkv/kernel (I, O)
  fragments_backbone.patch_embed.proj.weight (O, I, T, H, W) -> .../proj/kernel (T, H, W, I, O)
  vqa_head.fc_hid.weight (64, 768, 1, 1, 1) -> vqa_head/fc_hid/kernel (768, 64)  (1x1x1 conv = Dense)
  *.norm*.weight -> */scale; bias tables are copied unchanged.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from converters import common
from converters.common import CheckpointMismatchError
from internvqa_jax import cli_errors, tree_paths
from internvqa_jax.models import checkpoint, fastvqa, swin3d

WRAPPER_KEYS = ("state_dict", "model")
STRIP_PREFIXES = ("module.",)
INDEX_SUFFIX = ".attn.relative_position_index"
# Order in which variants are tried when none is given. FAST-VQA-B and the
# FasterVQA settings share one architecture, so the first of them is reported.
INFER_ORDER = ("fast_vqa_b", "faster_vqa", "faster_vqa_mt", "faster_vqa_ms", "fast_vqa_m", "tiny")


def _variant_kwargs(variant: str | Mapping[str, Any]) -> dict[str, Any]:
  if isinstance(variant, str):
    return fastvqa.variant_kwargs(variant)
  return fastvqa.model_kwargs(fastvqa.from_kwargs(**dict(variant)))


# ---------------------------------------------------------------------------
# Key layout.
# ---------------------------------------------------------------------------


def expected_torch_shapes(
  variant: str | Mapping[str, Any], with_index: bool = True
) -> dict[str, tuple[int, ...]]:
  """Ordered {torch key: shape} of a variant, as the original model's state_dict."""
  kw = _variant_kwargs(variant)
  c0, depths, heads = kw["embed_dim"], kw["depths"], kw["num_heads"]
  win = tuple(kw["window_size"])
  rows = int(np.prod([2 * w - 1 for w in win]))
  n_tok = int(np.prod(win))
  pt, ph, pw = kw["patch_size"]
  bb = "fragments_backbone."
  out: dict[str, tuple[int, ...]] = {
    bb + "patch_embed.proj.weight": (c0, 3, pt, ph, pw),
    bb + "patch_embed.proj.bias": (c0,),
    bb + "patch_embed.norm.weight": (c0,),
    bb + "patch_embed.norm.bias": (c0,),
  }
  n_layers = len(depths)
  for i in range(n_layers):
    c, nh = c0 * 2**i, heads[i]
    for j in range(depths[i]):
      p = f"{bb}layers.{i}.blocks.{j}."
      out[p + "norm1.weight"] = (c,)
      out[p + "norm1.bias"] = (c,)
      out[p + "attn.relative_position_bias_table"] = (rows, nh)
      if kw["frag_biases"][i]:
        out[p + "attn.fragment_position_bias_table"] = (rows, nh)
      if with_index:
        out[p + "attn.relative_position_index"] = (n_tok, n_tok)
      out[p + "attn.qkv.weight"] = (3 * c, c)
      out[p + "attn.qkv.bias"] = (3 * c,)
      out[p + "attn.proj.weight"] = (c, c)
      out[p + "attn.proj.bias"] = (c,)
      out[p + "norm2.weight"] = (c,)
      out[p + "norm2.bias"] = (c,)
      hid = int(c * kw["mlp_ratio"])
      out[p + "mlp.fc1.weight"] = (hid, c)
      out[p + "mlp.fc1.bias"] = (hid,)
      out[p + "mlp.fc2.weight"] = (c, hid)
      out[p + "mlp.fc2.bias"] = (c,)
    if i < n_layers - 1:
      p = f"{bb}layers.{i}.downsample."
      out[p + "reduction.weight"] = (2 * c, 4 * c)
      out[p + "norm.weight"] = (4 * c,)
      out[p + "norm.bias"] = (4 * c,)
  c_last = c0 * 2 ** (n_layers - 1)
  out[bb + "norm.weight"] = (c_last,)
  out[bb + "norm.bias"] = (c_last,)
  hh = kw["head_hidden"]
  out["vqa_head.fc_hid.weight"] = (hh, c_last, 1, 1, 1)
  out["vqa_head.fc_hid.bias"] = (hh,)
  out["vqa_head.fc_last.weight"] = (1, hh, 1, 1, 1)
  out["vqa_head.fc_last.bias"] = (1,)
  return out


def torch_key_to_path(key: str) -> tuple[str, str]:
  """Torch key -> (Flax '/'-path, transform kind: conv3d | conv1x1 | linear | copy)."""
  parts: list[str] = []
  for p in key.split("."):
    if p.isdigit():
      parts[-1] = f"{parts[-1]}_{p}"
    else:
      parts.append(p)
  leaf, parent = parts[-1], parts[-2]
  kind = "copy"
  if leaf == "weight":
    if parent.startswith("norm"):
      parts[-1] = "scale"
    else:
      parts[-1] = "kernel"
      if parts[0] == "vqa_head":
        kind = "conv1x1"
      elif parent == "proj" and parts[-3] == "patch_embed":
        kind = "conv3d"
      else:
        kind = "linear"
  return "/".join(parts), kind


def _to_flax(w: np.ndarray, kind: str) -> np.ndarray:
  if kind == "conv3d":
    return np.transpose(w, (2, 3, 4, 1, 0))
  if kind == "conv1x1":
    return np.ascontiguousarray(w[:, :, 0, 0, 0].T)
  if kind == "linear":
    return np.ascontiguousarray(w.T)
  return w


def _to_torch(w: np.ndarray, kind: str) -> np.ndarray:
  if kind == "conv3d":
    return np.ascontiguousarray(np.transpose(w, (4, 3, 0, 1, 2)))
  if kind == "conv1x1":
    return np.ascontiguousarray(w.T[:, :, None, None, None])
  if kind == "linear":
    return np.ascontiguousarray(w.T)
  return w


def recomputed_index(variant: str | Mapping[str, Any]) -> np.ndarray:

  kw = _variant_kwargs(variant)
  return swin3d.relative_position_index(tuple(kw["window_size"])).astype(np.int64)


# ---------------------------------------------------------------------------
# Library API.
# ---------------------------------------------------------------------------


def resolve_variant(found: Mapping[str, tuple], variant: str | None, source: str) -> str:
  """Validates `found` {key: shape} against `variant`, or infers the variant."""
  if variant is not None:
    if variant not in fastvqa.VARIANTS:
      raise ValueError(f"unknown FAST-VQA variant {variant!r}; known: {sorted(fastvqa.VARIANTS)}")
    common.check_keys(
      expected_torch_shapes(variant), found, source, f"FAST-VQA variant {variant!r}"
    )
    return variant
  best, best_bad = None, None
  for v in INFER_ORDER:
    exp = expected_torch_shapes(v)
    bad = len(set(exp) ^ set(found)) + sum(
      tuple(exp[k]) != tuple(found[k]) for k in set(exp) & set(found)
    )
    if bad == 0:
      return v
    if best_bad is None or bad < best_bad:
      best, best_bad = v, bad
  common.check_keys(
    expected_torch_shapes(best),
    found,
    f"{source} (no FAST-VQA variant fits; closest is {best!r})",
    f"FAST-VQA variant {best!r}",
  )
  raise AssertionError("unreachable")


def check_index_buffers(
  sd: Mapping[str, np.ndarray], variant: str | Mapping[str, Any], source: str
) -> list[str]:
  """Every relative_position_index in `sd` must equal the recomputed one; returns their keys."""
  ref = recomputed_index(variant)
  keys = sorted(k for k in sd if k.endswith(INDEX_SUFFIX))
  bad = []
  for k in keys:
    v = np.asarray(sd[k])
    if not np.issubdtype(v.dtype, np.integer):
      bad.append(f"  {k}: expected an integer buffer, found dtype {v.dtype}")
    elif v.shape != ref.shape or not np.array_equal(v, ref):
      n = int(np.sum(v != ref)) if v.shape == ref.shape else "shape"
      bad.append(
        f"  {k}: differs from the index recomputed for window "
        f"{tuple(_variant_kwargs(variant)['window_size'])} ({n} entries differ)"
      )
  if bad:
    raise CheckpointMismatchError(
      f"{source}: relative_position_index buffer(s) do not match the model:\n" + "\n".join(bad)
    )
  return keys


def torch_state_dict_to_params(
  sd: Mapping[str, Any], variant: str | Mapping[str, Any], source: str = "<state_dict>"
) -> dict:
  """Torch-keyed arrays (prefixed like the release) -> nested float32 Flax params.

  Validates keys/shapes and index buffers; index buffers may be absent here
  (a file's key set is checked by `convert`).
  """
  sd = {
    k: (v if isinstance(v, np.ndarray) else common.to_numpy_f32({k: v})[0][k])
    for k, v in sd.items()
  }
  expected = expected_torch_shapes(variant, with_index=False)
  check_index_buffers(sd, variant, source)
  weights = {k: v for k, v in sd.items() if not k.endswith(INDEX_SUFFIX)}
  common.check_keys(expected, {k: v.shape for k, v in weights.items()}, source, "FAST-VQA model")
  flat = {}
  for k in expected:
    path, kind = torch_key_to_path(k)
    flat[path] = _to_flax(np.asarray(weights[k], np.float32), kind)
  params = tree_paths.unflatten(flat)
  _check_against_model(params, variant)
  return params


def params_to_torch_state_dict(
  params: Mapping[str, Any], variant: str | Mapping[str, Any]
) -> dict[str, np.ndarray]:
  """Flax params -> ordered {original torch key: array}, index buffers (int64) included."""
  _check_against_model(params, variant)
  flat = tree_paths.flatten(params)
  index = recomputed_index(variant)
  out = {}
  for k in expected_torch_shapes(variant, with_index=True):
    if k.endswith(INDEX_SUFFIX):
      out[k] = index.copy()
      continue
    path, kind = torch_key_to_path(k)
    out[k] = _to_torch(np.asarray(flat[path], np.float32), kind)
  return out


def _check_against_model(params: Mapping[str, Any], variant: str | Mapping[str, Any]) -> None:
  """Params tree must have exactly the Flax model's paths and shapes."""
  model = fastvqa.from_kwargs(**_variant_kwargs(variant))
  expected = {
    k: tuple(v.shape) for k, v in tree_paths.flatten(fastvqa.abstract_params(model)).items()
  }
  found = {k: tuple(np.shape(v)) for k, v in tree_paths.flatten(params).items()}
  common.check_keys(expected, found, "parameter tree", "Flax FastVQA model")


def read_state_dict(src: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Reads a checkpoint file -> (numpy state_dict, info about the wrapper and dtypes)."""
  src = os.fspath(src)
  raw = common.read_raw(src)
  sd, wrapper = common.unwrap(raw, WRAPPER_KEYS, src)
  sd = common.strip_prefixes(sd, STRIP_PREFIXES)
  non_tensor = sorted(k for k, v in sd.items() if not hasattr(v, "shape"))
  if non_tensor:
    raise ValueError(f"{src}: entries that are not tensors: {non_tensor}")
  arrays, dtypes = common.to_numpy_f32(sd)
  info = {"wrapper": wrapper, "source_dtypes": sorted(set(dtypes.values()))}
  if isinstance(raw, Mapping) and wrapper is not None:
    info["other_entries"] = sorted(k for k in raw if k != wrapper)
  return arrays, info


def convert(
  src: str | os.PathLike,
  dst: str | os.PathLike,
  variant: str | None = None,
  overwrite: bool = False,
) -> dict[str, Any]:
  """Converts `src` into a model directory `dst`; returns the written meta."""
  src, dst = os.fspath(src), os.fspath(dst)
  checkpoint.check_destination(dst, overwrite=overwrite)
  arrays, info = read_state_dict(src)
  variant = resolve_variant({k: v.shape for k, v in arrays.items()}, variant, src)
  index_keys = check_index_buffers(arrays, variant, src)
  params = torch_state_dict_to_params(arrays, variant, src)
  model = fastvqa.make(variant)
  meta = {
    "family": fastvqa.NAME,
    "model_kwargs": fastvqa.model_kwargs(model),
    "variant": variant,
    "input_size": list(fastvqa.INPUT_SIZES[variant]),
    "source": os.path.abspath(src),
    "source_sha256": common.file_sha256(src),
    "source_wrapper": info["wrapper"],
    "source_other_entries": info.get("other_entries", []),
    "source_dtypes": info["source_dtypes"],
    "num_params": fastvqa.count_params(model),
    "verified_buffers": len(index_keys),
    "dropped_keys": index_keys,
  }
  checkpoint.save_params(dst, params, meta, overwrite=overwrite)
  return meta


def export(model_dir: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False) -> str:
  """Writes a converted model back as an original-layout checkpoint file."""
  out = os.fspath(out)
  common.check_export_destination(out, overwrite=overwrite)
  params, meta = checkpoint.load_params(model_dir)
  if meta.get("family") != "fastvqa":
    raise ValueError(f"{model_dir}: family is {meta.get('family')!r}, expected 'fastvqa'")
  sd = params_to_torch_state_dict(params, meta["model_kwargs"])
  wrapper = None if out.endswith(common.SAFETENSORS_SUFFIX) else "state_dict"
  return common.write_torch_state_dict(out, sd, wrapper=wrapper)


# ---------------------------------------------------------------------------
# Command line.
# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
  """Command line; errors follow internvqa_jax.cli_errors (one line, exit 2 usage / 1 input)."""
  return cli_errors.run(_main, argv)


def _main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv and argv[0] == "export":
    ap = argparse.ArgumentParser(
      prog="python -m converters.fastvqa export",
      description="Export a converted FAST-VQA model to PyTorch keys.",
    )
    ap.add_argument("model_dir")
    ap.add_argument("out", help=".pth/.pt ({'state_dict': ...}) or .safetensors")
    ap.add_argument("--overwrite", action="store_true")
    cli_errors.add_verbose_argument(ap)
    a = ap.parse_args(argv[1:])
    path = export(a.model_dir, a.out, overwrite=a.overwrite)
    print(f"wrote {path}")
    return 0
  ap = argparse.ArgumentParser(
    prog="python -m converters.fastvqa",
    description="Convert a FAST-VQA/FasterVQA checkpoint to Orbax.",
  )
  ap.add_argument("src", help="checkpoint (.pth/.pt/.bin/.ckpt or .safetensors)")
  ap.add_argument("dst", help="output model directory")
  ap.add_argument(
    "--variant",
    choices=sorted(fastvqa.VARIANTS),
    help="validate against this variant (default: infer from the keys)",
  )
  ap.add_argument(
    "--overwrite", action="store_true", help="replace DST if it is a converted model directory"
  )
  cli_errors.add_verbose_argument(ap)
  a = ap.parse_args(argv)
  meta = convert(a.src, a.dst, variant=a.variant, overwrite=a.overwrite)
  print(
    f"wrote {a.dst}: variant {meta['variant']}, {meta['num_params']:,} parameters, "
    f"{meta['verified_buffers']} relative_position_index buffers verified"
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
