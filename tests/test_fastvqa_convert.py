"""FAST-VQA converter: released-format and safetensors round trips, key errors, export."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import internvqa_jax.models
from converters import common
from converters import fastvqa as conv
from converters.common import CheckpointMismatchError
from internvqa_jax import tree_paths
from internvqa_jax.models import checkpoint, fastvqa

try:
  from tests.torch_ref import fastvqa_ref as ref
except ImportError:  # tests/ itself on sys.path
  from torch_ref import fastvqa_ref as ref

SHAPE = (6, 40, 44)  # Needs patch, window and merge padding in the tiny variant.
BB = "fragments_backbone.layers.0.blocks.1.attn."


@pytest.fixture(scope="module")
def tiny_torch():
  model = fastvqa.make("tiny")
  return ref.randomize_(
    ref.FastVQARef.from_model_kwargs(fastvqa.model_kwargs(model)).eval(), seed=3
  )


@pytest.fixture(scope="module")
def video():
  return np.random.default_rng(0).standard_normal((1, 3) + SHAPE).astype(np.float32)


def _sd(tm):
  return {k: v.numpy().copy() for k, v in tm.state_dict().items()}


def _save_released(path, sd):
  """Writes the released layout: {'state_dict': ..., 'validation_results': ...}."""
  torch.save(
    {
      "state_dict": {k: torch.from_numpy(v) for k, v in sd.items()},
      "validation_results": {"srcc": 0.88, "plcc": 0.89},
    },
    path,
  )
  return path


def _flax_map(model_dir, video):
  model, params = internvqa_jax.models.load(model_dir)
  out = jax.jit(model.apply)({"params": params}, jnp.asarray(video.transpose(0, 2, 3, 4, 1)))
  return np.asarray(out["map"])


def _torch_map(tm, video):
  with torch.no_grad():
    return tm(torch.from_numpy(video))[0].numpy()[:, 0]


def _assert_trees_equal(a, b):
  fa, fb = tree_paths.flatten(a), tree_paths.flatten(b)
  assert set(fa) == set(fb)
  for k in fa:
    np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg=k)


def test_released_key_sets():
  b = conv.expected_torch_shapes("fast_vqa_b")
  m = conv.expected_torch_shapes("fast_vqa_m")
  assert len(b) == 197 and len(m) == 187
  assert sum(k.endswith("relative_position_index") for k in b) == 12
  assert b["vqa_head.fc_hid.weight"] == (64, 768, 1, 1, 1)
  assert m["fragments_backbone.layers.0.blocks.0.attn.relative_position_index"] == (64, 64)
  # The reference's state_dict has exactly these keys, shapes and order.
  tm = ref.FastVQARef()
  assert [(k, tuple(v.shape)) for k, v in tm.state_dict().items()] == list(b.items())
  assert sum(p.numel() for p in tm.parameters()) == 28_127_901


def test_convert_released_format(tmp_path, tiny_torch, video):
  src = _save_released(tmp_path / "FAST_VQA_TINY.pth", _sd(tiny_torch))
  dst = tmp_path / "converted"
  meta = conv.convert(src, dst)
  assert meta["variant"] == "tiny" and meta["source_wrapper"] == "state_dict"
  assert meta["source_other_entries"] == ["validation_results"]
  assert meta["source_sha256"] == common.file_sha256(src)
  assert meta["verified_buffers"] == 8
  stored = checkpoint.read_meta(dst)
  assert stored["family"] == "fastvqa" and stored["model_kwargs"] == fastvqa.variant_kwargs("tiny")
  model, params = internvqa_jax.models.load(dst)
  assert model == fastvqa.make("tiny")
  _assert_trees_equal(params, conv.torch_state_dict_to_params(_sd(tiny_torch), "tiny"))
  err = np.abs(_flax_map(dst, video) - _torch_map(tiny_torch, video)).max()
  assert err < 1e-5, err


def test_convert_safetensors_and_cli(tmp_path, tiny_torch):
  src = common.write_torch_state_dict(tmp_path / "plain.safetensors", _sd(tiny_torch))
  assert conv.main([src, str(tmp_path / "a"), "--variant", "tiny"]) == 0
  _, params = internvqa_jax.models.load(tmp_path / "a")
  _assert_trees_equal(params, conv.torch_state_dict_to_params(_sd(tiny_torch), "tiny"))
  assert conv.main([src, str(tmp_path / "a")]) == 1  # exists, no --overwrite
  assert conv.main([src, str(tmp_path / "a"), "--overwrite"]) == 0


def test_index_buffer_mismatch_names_key(tmp_path, tiny_torch):
  sd = _sd(tiny_torch)
  sd[BB + "relative_position_index"][3, 5] += 1
  src = _save_released(tmp_path / "bad_index.pth", sd)
  with pytest.raises(CheckpointMismatchError) as e:
    conv.convert(src, tmp_path / "out")
  assert BB + "relative_position_index" in str(e.value)
  assert "1 entries differ" in str(e.value)
  assert not os.path.exists(tmp_path / "out")


def test_key_errors_list_every_offender(tmp_path, tiny_torch):
  sd = _sd(tiny_torch)
  del sd[BB + "fragment_position_bias_table"]
  sd["vqa_head.extra.weight"] = np.zeros((2, 2), np.float32)
  sd["fragments_backbone.norm.weight"] = np.ones((64,), np.float32)
  src = _save_released(tmp_path / "bad_keys.pth", sd)
  with pytest.raises(CheckpointMismatchError) as e:
    conv.convert(src, tmp_path / "out", variant="tiny")
  msg = str(e.value)
  assert f"{BB}fragment_position_bias_table: expected shape (75, 1)" in msg
  assert "vqa_head.extra.weight: found shape (2, 2)" in msg
  assert "fragments_backbone.norm.weight: expected (128,), found (64,)" in msg
  assert not os.path.exists(tmp_path / "out")
  # Without --variant: the closest variant is named and the same keys are listed.
  with pytest.raises(CheckpointMismatchError, match="closest is 'tiny'") as e:
    conv.convert(src, tmp_path / "out")
  assert "vqa_head.extra.weight" in str(e.value)
  assert not os.path.exists(tmp_path / "out")


def test_wrong_variant_lists_shapes(tmp_path, tiny_torch, capsys):
  src = _save_released(tmp_path / "tiny.pth", _sd(tiny_torch))
  assert conv.main([str(src), str(tmp_path / "out"), "--variant", "fast_vqa_b"]) == 1
  assert "fragments_backbone.norm.weight: expected (768,), found (128,)" in capsys.readouterr().err
  with pytest.raises(CheckpointMismatchError) as e:
    conv.convert(src, tmp_path / "out", variant="fast_vqa_m")
  msg = str(e.value)
  assert (
    "fragments_backbone.patch_embed.proj.weight: expected (96, 3, 2, 4, 4), found (16, 3, 2, 4, 4)"
    in msg
  )
  assert "fragment_position_bias_table: found shape (75, 1)" in msg  # M has none
  assert not os.path.exists(tmp_path / "out")


def test_export_round_trip(tmp_path, tiny_torch, video):
  src = _save_released(tmp_path / "orig.pth", _sd(tiny_torch))
  conv.convert(src, tmp_path / "m1")
  assert conv.main(["export", str(tmp_path / "m1"), str(tmp_path / "exported.pth")]) == 0
  raw = torch.load(tmp_path / "exported.pth", weights_only=True)
  assert list(raw) == ["state_dict"]
  assert list(raw["state_dict"]) == list(tiny_torch.state_dict())
  assert raw["state_dict"][BB + "relative_position_index"].dtype == torch.int64
  fresh = ref.FastVQARef.from_model_kwargs(fastvqa.variant_kwargs("tiny")).eval()
  fresh.load_state_dict(raw["state_dict"], strict=True)
  np.testing.assert_array_equal(_torch_map(fresh, video), _torch_map(tiny_torch, video))
  # convert(export(x)) == x, also through safetensors.
  conv.export(tmp_path / "m1", tmp_path / "exported.safetensors")
  for name in ("exported.pth", "exported.safetensors"):
    conv.convert(tmp_path / name, tmp_path / f"m_{name}")
    _assert_trees_equal(
      internvqa_jax.models.load(tmp_path / f"m_{name}")[1],
      internvqa_jax.models.load(tmp_path / "m1")[1],
    )
  with pytest.raises(FileExistsError):
    conv.export(tmp_path / "m1", tmp_path / "exported.pth")


def test_params_to_torch_rejects_wrong_tree():
  params = jax.tree.map(
    lambda s: np.zeros(s.shape, s.dtype), fastvqa.abstract_params(fastvqa.make("tiny"))
  )
  del params["vqa_head"]["fc_last"]["bias"]
  with pytest.raises(CheckpointMismatchError, match="vqa_head/fc_last/bias: expected shape"):
    conv.params_to_torch_state_dict(params, "tiny")


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["faster_vqa", "fast_vqa_m"])
def test_full_size_round_trip(tmp_path, variant):
  model = fastvqa.make(variant)
  tm = ref.randomize_(ref.FastVQARef.from_model_kwargs(fastvqa.model_kwargs(model)), seed=1)
  sd = _sd(tm)
  src = _save_released(tmp_path / "full.pth", sd)
  meta = conv.convert(src, tmp_path / "m", variant=variant)
  assert meta["num_params"] == fastvqa.count_params(model)
  assert meta["verified_buffers"] == 12
  conv.export(tmp_path / "m", tmp_path / "back.pth")
  back = torch.load(tmp_path / "back.pth", weights_only=True)["state_dict"]
  assert list(back) == list(sd)
  for k, v in sd.items():
    np.testing.assert_array_equal(back[k].numpy(), v, err_msg=k)
