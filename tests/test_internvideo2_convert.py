"""InternVideo2 converter: parity through real files, pos_embed resampling, errors, export."""

import functools
import json
import os

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch_ref.internvideo2_ref import InternVideo2Ref, randomize_, state_dict_numpy

import internvqa_jax.models
from converters import common
from converters import internvideo2 as conv
from internvqa_jax import tree_paths
from internvqa_jax.models import internvideo2 as iv2
from internvqa_jax.models import posembed

ARCH_KEYS = ("embed_dim", "depth", "num_heads", "mlp_hidden", "num_frames", "img_size")
QUIET = dict(log=lambda *a: None)


@functools.partial(jax.jit, static_argnums=(0,))
def _forward(model, params, video):
  return model.apply({"params": params}, video)


def _ref(variant, gelu="tanh", seed=0, use_sdpa=True, **overrides):
  arch = {**iv2.VARIANTS[variant], **overrides}
  ref = InternVideo2Ref(
    **{k: arch[k] for k in ARCH_KEYS},
    num_outputs=arch.get("num_outputs", 1),
    gelu=gelu,
    use_sdpa=use_sdpa,
  ).eval()
  return randomize_(ref, seed)


def _write(path, sd, fmt):
  """Writes a numpy state_dict in one of the released checkpoint formats."""
  tensors = {k: torch.from_numpy(v) for k, v in sd.items()}
  if fmt == "module_bf16_pth":
    torch.save({"module": {k: v.to(torch.bfloat16) for k, v in tensors.items()}}, path)
  elif fmt == "plain_fp32_pth":
    torch.save(tensors, path)
  elif fmt == "safetensors":
    from safetensors.torch import save_file

    save_file(tensors, path)
  else:
    raise ValueError(fmt)
  return str(path)


def _as_stored(sd, fmt):
  """The float32 weights the converter sees after upcasting the stored file."""
  if fmt != "module_bf16_pth":
    return sd
  return {k: torch.from_numpy(v).to(torch.bfloat16).float().numpy() for k, v in sd.items()}


def _run_both(ref, model, params, video):
  with torch.no_grad():
    theirs = ref(torch.from_numpy(video).permute(0, 4, 1, 2, 3))
  ours = _forward(model, params, video)
  return ours, {k: v.numpy() for k, v in theirs.items()}


def _assert_parity(ours, theirs, what):
  for k in ("score", "feature"):
    tol = 1e-5 * max(1.0, float(np.abs(theirs[k]).max()))
    err = float(np.abs(np.asarray(ours[k]) - theirs[k]).max())
    print(f"{what} {k}: max abs diff {err:.3g} (|out|max {np.abs(theirs[k]).max():.3g})")
    assert err <= tol, f"{what} {k}: max abs diff {err} > {tol}"


def _video(model, batch=2, seed=0):
  return np.random.default_rng(seed).standard_normal(model.input_shape(batch)).astype(np.float32)


# ----------------------------------------------------------------------------
# Parity through files in the released formats.


@pytest.mark.parametrize(
  "fmt,gelu,use_sdpa",
  [
    ("module_bf16_pth", "tanh", True),
    ("plain_fp32_pth", "erf", False),
    ("safetensors", "tanh", False),
  ],
)
def test_small_width_parity_through_files(tmp_path, fmt, gelu, use_sdpa):
  ref = _ref("small", gelu, seed=11, use_sdpa=use_sdpa, num_frames=2, img_size=56)
  sd = state_dict_numpy(ref)
  src = _write(tmp_path / f"ckpt.{'safetensors' if fmt == 'safetensors' else 'pth'}", sd, fmt)
  ref.load_state_dict({k: torch.from_numpy(v) for k, v in _as_stored(sd, fmt).items()})
  meta = conv.convert(src, str(tmp_path / "out"), src_img_size=56, gelu=gelu, **QUIET)
  assert meta["variant"] == "small" and meta["head"]["action"] == "kept"
  assert meta["wrapper_key"] == ("module" if fmt == "module_bf16_pth" else None)
  assert meta["source_dtypes"] == {"bfloat16" if fmt == "module_bf16_pth" else "float32": 178}
  model, params = internvqa_jax.models.load(str(tmp_path / "out"))
  assert model.gelu_approximate == (gelu == "tanh") and model.num_frames == 2
  ours, theirs = _run_both(ref, model, params, _video(model))
  _assert_parity(ours, theirs, f"small-width 2x56 {fmt} {gelu}")


@pytest.fixture(scope="module")
def wide_checkpoint(tmp_path_factory):
  """1B width (1408, 16 heads of 88, hidden 6144), 2 blocks, converted once."""
  d = tmp_path_factory.mktemp("wide")
  ref = _ref("tiny_1b_width", seed=12)
  sd = state_dict_numpy(ref)
  src = _write(d / "wide.pth", sd, "plain_fp32_pth")
  conv.convert(src, str(d / "out"), **QUIET)
  return sd, str(d / "out")


@pytest.mark.parametrize("gelu", ["tanh", "erf"])
def test_1b_width_parity(wide_checkpoint, gelu):
  sd, out = wide_checkpoint
  ref = _ref("tiny_1b_width", gelu)
  ref.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
  model, params = internvqa_jax.models.load(out, gelu_approximate=(gelu == "tanh"))
  assert (model.embed_dim, model.num_heads, model.mlp_hidden) == (1408, 16, 6144)
  ours, theirs = _run_both(ref, model, params, _video(model))
  _assert_parity(ours, theirs, f"1B-width {gelu}")


@pytest.mark.slow
@pytest.mark.parametrize("gelu", ["tanh", "erf"])
def test_full_small_parity_8x224(tmp_path, gelu):
  ref = _ref("small", gelu, seed=13)
  sd = state_dict_numpy(ref)
  src = _write(tmp_path / "small.pth", sd, "module_bf16_pth")
  stored = _as_stored(sd, "module_bf16_pth")
  ref.load_state_dict({k: torch.from_numpy(v) for k, v in stored.items()})
  conv.convert(src, str(tmp_path / "out"), variant="small", gelu=gelu, **QUIET)
  model, params = internvqa_jax.models.load(str(tmp_path / "out"))
  assert model.num_frames == 8 and model.img_size == 224
  ours, theirs = _run_both(ref, model, params, _video(model, batch=1))
  _assert_parity(ours, theirs, f"small 8x224 {gelu}")


# ----------------------------------------------------------------------------
# Positional-embedding resampling (spec section 4).


def _torch_resample(pe, t0, t1, s0, s1, dtype=np.float64):
  """The original finetuning code's procedure, with torch's F.interpolate.

  Run in float64: torch's own float32 bicubic rounds its weights and sums to
  about 5e-6 on unit-variance data, which would hide a semantic error.
  """
  pe = torch.from_numpy(np.asarray(pe, dtype))
  c = pe.shape[-1]
  extra, tokens = pe[:, :1], pe[:, 1:]
  if t0 != t1:
    tokens = tokens.view(1, t0, -1, c).permute(0, 2, 3, 1).reshape(-1, c, t0)
    tokens = F.interpolate(tokens, size=t1, mode="linear", align_corners=False)
    tokens = tokens.view(1, -1, c, t1).permute(0, 3, 1, 2).reshape(1, -1, c)
  if s0 != s1:
    tokens = tokens.reshape(-1, s0, s0, c).permute(0, 3, 1, 2)
    tokens = F.interpolate(tokens, size=(s1, s1), mode="bicubic", align_corners=False)
    tokens = tokens.permute(0, 2, 3, 1).reshape(1, -1, c)
  return torch.cat([extra, tokens], dim=1).numpy()


@pytest.mark.parametrize("t1,s1", [(4, 16), (16, 16), (8, 12), (4, 12)])
def test_resample_pos_embed_matches_torch(t1, s1):
  pe = np.random.default_rng(0).standard_normal((1, 1 + 8 * 16 * 16, 32)).astype(np.float32)
  ours = posembed.resample_pos_embed(pe, 8, 16, t1, s1)
  theirs = _torch_resample(pe, 8, t1, 16, s1)
  assert ours.shape == theirs.shape == (1, 1 + t1 * s1 * s1, 32)
  np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
  np.testing.assert_array_equal(ours[:, 0], pe[:, 0])
  # Torch's float32 path agrees to its own float32 rounding.
  f32 = _torch_resample(pe, 8, t1, 16, s1, dtype=np.float32)
  np.testing.assert_allclose(ours, f32, rtol=0, atol=2e-5)


def test_converter_resamples_pos_embed(tmp_path):
  ref = _ref("tiny", num_frames=4, img_size=56)  # 4 frames, 4x4 grid.
  sd = state_dict_numpy(ref)
  src = _write(tmp_path / "t.pth", sd, "plain_fp32_pth")
  meta = conv.convert(
    src, str(tmp_path / "out"), src_img_size=56, num_frames=2, img_size=42, **QUIET
  )
  assert meta["pos_embed"] == {
    **meta["pos_embed"],
    "source_frames": 4,
    "source_img_size": 56,
    "frames": 2,
    "img_size": 42,
    "resampled": True,
  }
  model, params = internvqa_jax.models.load(str(tmp_path / "out"))
  np.testing.assert_allclose(
    params["pos_embed"], _torch_resample(sd["pos_embed"], 4, 2, 4, 3), rtol=0, atol=1e-6
  )
  assert _forward(model, params, _video(model))["score"].shape == (2,)


# ----------------------------------------------------------------------------
# Wrappers, prefixes, extra keys, heads.


def test_wrapper_prefix_extra_keys_and_head_slicing(tmp_path):
  ref = _ref("tiny", num_outputs=5)
  sd = state_dict_numpy(ref)
  extra = {
    "clip_pos_embed": sd["pos_embed"],
    "clip_decoder.0.head.0.weight": np.ones((64, 64)),
    "final_clip_decoder.norm.weight": np.ones(768),
    "mae_pos_embed": np.ones((1, 8, 64)),
  }
  wrapped = {
    "model": {
      f"backbone.{k}": torch.from_numpy(np.asarray(v, np.float32))
      for k, v in {**sd, **extra}.items()
    },
    "epoch": torch.tensor(3),
  }
  torch.save(wrapped, tmp_path / "w.pth")
  meta = conv.convert(str(tmp_path / "w.pth"), str(tmp_path / "out"), num_outputs=3, **QUIET)
  assert meta["wrapper_key"] == "model"
  assert meta["dropped_keys"] == sorted(extra)
  assert meta["head"]["action"] == "sliced" and meta["head"]["source_rows"] == 5
  model, params = internvqa_jax.models.load(str(tmp_path / "out"))
  assert model.num_outputs == 3
  np.testing.assert_array_equal(params["head"]["kernel"], sd["head.weight"][:3].T)
  video = _video(model)
  with torch.no_grad():
    full = ref(torch.from_numpy(video).permute(0, 4, 1, 2, 3))["score"].numpy()
  np.testing.assert_allclose(_forward(model, params, video)["score"], full[:, :3], atol=1e-5)
  stored = json.load(open(tmp_path / "out" / "meta.json"))
  assert stored["source_sha256"] == common.file_sha256(tmp_path / "w.pth")


def test_distilled_file_without_head_gets_fresh_head(tmp_path):
  sd = state_dict_numpy(_ref("tiny"))
  for k in ("head.weight", "head.bias", "fc_norm.weight", "fc_norm.bias"):
    del sd[k]
  src = _write(tmp_path / "dist.pth", sd, "plain_fp32_pth")
  with pytest.raises(common.CheckpointMismatchError, match="--keep-head given but"):
    conv.convert(src, str(tmp_path / "bad"), head="keep", **QUIET)
  assert not os.path.exists(tmp_path / "bad")
  meta = conv.convert(src, str(tmp_path / "out"), **QUIET)
  assert meta["head"]["action"] == "initialised" and meta["fresh_init"] == ["fc_norm", "head"]
  _, params = internvqa_jax.models.load(str(tmp_path / "out"))
  assert params["head"]["kernel"].shape == (768, 1)
  assert 0 < np.abs(params["head"]["kernel"]).max() < 1e-3  # init_scale 0.001.
  np.testing.assert_array_equal(params["fc_norm"]["scale"], 1.0)


# ----------------------------------------------------------------------------
# Errors: every offending key named, nothing written.


def _bad_checkpoint(tmp_path, edit):
  sd = state_dict_numpy(_ref("tiny"))
  edit(sd)
  return _write(tmp_path / "bad.pth", sd, "plain_fp32_pth")


@pytest.mark.parametrize(
  "edit,pattern",
  [
    (
      lambda sd: sd.pop("blocks.1.mlp.fc2.bias"),
      r"1 missing key\(s\):\n    blocks\.1\.mlp\.fc2\.bias \[blocks_1/mlp/fc2/bias\]: "
      r"expected shape \(64,\)",
    ),
    (
      lambda sd: sd.update({"blocks.0.attn.rel_bias": np.zeros((3, 4), np.float32)}),
      r"1 unexpected key\(s\):\n    blocks\.0\.attn\.rel_bias: found shape \(3, 4\)",
    ),
    (
      lambda sd: sd.update({"blocks.1.attn.proj.weight": np.zeros((64, 65), np.float32)}),
      r"wrong shape:\n    blocks\.1\.attn\.proj\.weight \[blocks_1/attn/proj/kernel\]: "
      r"expected \(64, 64\), found \(64, 65\)",
    ),
  ],
)
def test_mismatch_errors_name_keys_and_write_nothing(tmp_path, edit, pattern):
  src = _bad_checkpoint(tmp_path, edit)
  dst = tmp_path / "out"
  with pytest.raises(common.CheckpointMismatchError, match=pattern):
    conv.convert(src, str(dst), **QUIET)
  assert not dst.exists()
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".out")]  # No temp leftovers.


def test_wrong_variant_is_a_clear_error(tmp_path):
  src = _bad_checkpoint(tmp_path, lambda sd: None)
  with pytest.raises(
    common.CheckpointMismatchError,
    match=r"has embed_dim=64, depth=2, mlp_hidden=256 \(variant tiny\), but "
    r"--variant small expects embed_dim=384, depth=12, mlp_hidden=1536",
  ):
    conv.convert(src, str(tmp_path / "out"), variant="small", **QUIET)
  assert not (tmp_path / "out").exists()
  # The CLI reports the same error and exits non-zero.
  assert conv.main([src, str(tmp_path / "out"), "--variant", "base"]) == 1
  assert not (tmp_path / "out").exists()


def test_existing_destination_needs_overwrite(tmp_path):
  src = _bad_checkpoint(tmp_path, lambda sd: None)
  (tmp_path / "out").mkdir()
  with pytest.raises(FileExistsError, match="--overwrite"):
    conv.convert(src, str(tmp_path / "out"), **QUIET)
  conv.convert(src, str(tmp_path / "out"), overwrite=True, **QUIET)
  assert (tmp_path / "out" / "meta.json").exists()


# ----------------------------------------------------------------------------
# Export: Flax -> torch -> Flax.


@pytest.mark.parametrize("suffix", ["pth", "safetensors"])
def test_export_round_trip(tmp_path, suffix):
  ref = _ref("tiny", seed=21)
  src = _write(tmp_path / "a.pth", state_dict_numpy(ref), "plain_fp32_pth")
  assert conv.main([src, str(tmp_path / "a"), "--variant", "tiny"]) == 0
  out = tmp_path / f"b.{suffix}"
  assert (
    conv.main(
      ["export", str(tmp_path / "a"), str(out), "--wrapper", "module"]
      if suffix == "pth"
      else ["export", str(tmp_path / "a"), str(out)]
    )
    == 0
  )
  model, params = internvqa_jax.models.load(str(tmp_path / "a"))
  # Strict load into the reference, same outputs.
  raw = common.unwrap(common.read_raw(str(out)), ("module",))[0]
  fresh = InternVideo2Ref(**{k: getattr(model, k) for k in ARCH_KEYS}).eval()
  fresh.load_state_dict(raw, strict=True)
  ours, theirs = _run_both(fresh, model, params, _video(model))
  _assert_parity(ours, theirs, f"exported {suffix}")
  # convert(export(x)) == x, bit for bit.
  conv.convert(str(out), str(tmp_path / "c"), **QUIET)
  _, params2 = internvqa_jax.models.load(str(tmp_path / "c"))
  flat1, flat2 = tree_paths.flatten(params), tree_paths.flatten(params2)
  assert flat1.keys() == flat2.keys()
  for k in flat1:
    np.testing.assert_array_equal(flat1[k], flat2[k], err_msg=k)
