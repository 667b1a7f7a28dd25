"""Optimizer rules on an InternVideo2-shaped tree (depth 4) with the real path names."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from internvqa_jax import model_setup, optim, tree_paths
from internvqa_jax.models import internvideo2

DEPTH = 4
C = 8


def fake_internvideo2(depth=DEPTH, c=C, seed=0):
  rng = np.random.default_rng(seed)
  r = lambda *s: rng.standard_normal(s).astype(np.float32)
  flat = {
    "cls_token": r(1, 1, c),
    "pos_embed": r(1, 5, c),
    "patch_embed/proj/kernel": r(1, 2, 2, 3, c),
    "patch_embed/proj/bias": r(c),
  }
  for i in range(depth):
    b = f"blocks_{i}"
    flat.update(
      {
        f"{b}/norm1/scale": r(c),
        f"{b}/attn/qkv/kernel": r(c, 3 * c),
        f"{b}/attn/proj/kernel": r(c, c),
        f"{b}/attn/proj/bias": r(c),
        f"{b}/attn/q_norm/scale": r(c),
        f"{b}/attn/k_norm/scale": r(c),
        f"{b}/ls1/gamma": r(c),
        f"{b}/norm2/scale": r(c),
        f"{b}/mlp/fc1/kernel": r(c, 2 * c),
        f"{b}/mlp/fc1/bias": r(2 * c),
        f"{b}/mlp/fc2/kernel": r(2 * c, c),
        f"{b}/mlp/fc2/bias": r(c),
        f"{b}/ls2/gamma": r(c),
      }
    )
  for n in ("q", "k", "v"):
    flat[f"clip_projector/norm1_{n}/scale"] = r(c)
    flat[f"clip_projector/norm1_{n}/bias"] = r(c)
    flat[f"clip_projector/cross_attn/{n}/kernel"] = r(c, c)
    flat[f"clip_projector/cross_attn/{n}/bias"] = r(c)
  flat.update(
    {
      "clip_projector/cross_attn/proj/kernel": r(c, 6),
      "clip_projector/cross_attn/proj/bias": r(6),
      "fc_norm/scale": r(6),
      "fc_norm/bias": r(6),
      "head/kernel": r(6, 1),
      "head/bias": r(1),
    }
  )
  return tree_paths.unflatten(flat)


def _cfg(**kw):
  base = dict(lr=1e-3, total_steps=100, warmup_steps=10, schedule="cosine")
  base.update(kw)
  return base


LAYER_ID = internvideo2.layer_id


def _paths_where(mask):
  return {p for p, v in tree_paths.flatten(mask).items() if v}


# ---------------------------------------------------------------- presets
def test_teacher_presets_select_exact_paths():
  params = fake_internvideo2()
  flat = tree_paths.flatten(params)
  last = {p for p in flat if p.startswith(f"blocks_{DEPTH - 1}/")}
  head = {p for p in flat if p.split("/")[0] in ("clip_projector", "fc_norm", "head")}
  stem = {"cls_token", "pos_embed", "patch_embed/proj/kernel", "patch_embed/proj/bias"}
  paper = _paths_where(model_setup.preset_mask(params, "paper", LAYER_ID, DEPTH))
  assert paper == last | head
  authors = _paths_where(model_setup.preset_mask(params, "authors_code", LAYER_ID, DEPTH))
  assert authors == last | head | stem
  # The authors' rule: everything except blocks 0..depth-2.
  assert authors == {
    p for p in flat if not (p.startswith("blocks_") and int(p.split("/")[0][7:]) < DEPTH - 1)
  }
  assert model_setup.preset_frozen_layers("paper", 40) == 39
  assert model_setup.preset_frozen_layers("authors_code", 40) == 0
  with pytest.raises(ValueError, match="unknown"):
    model_setup.preset_mask(params, "whatever", LAYER_ID, DEPTH)


# ---------------------------------------------------------------- rules
def test_weight_decay_mask():
  params = fake_internvideo2()
  decays = _paths_where(optim.decay_mask(params))
  want = {
    p
    for p, x in tree_paths.flatten(params).items()
    if x.ndim >= 2 and p not in ("cls_token", "pos_embed")
  }
  assert decays == want
  assert "blocks_0/attn/qkv/kernel" in decays and "patch_embed/proj/kernel" in decays
  assert "head/bias" not in decays and "blocks_0/ls1/gamma" not in decays
  # FAST-VQA: decay everything; extra regexes still exclude.
  assert _paths_where(optim.decay_mask(params, standard=False)) == set(tree_paths.flatten(params))
  extra = _paths_where(optim.decay_mask(params, extra=["head/.*"]))
  assert extra == want - {"head/kernel"}


def test_layer_decay_scales():
  params = fake_internvideo2()
  d = 0.75
  mults = tree_paths.flatten(
    optim.lr_mult_tree(params, layer_decay=d, depth=DEPTH, layer_id=LAYER_ID)
  )
  expect_layer = {
    "cls_token": 0,
    "pos_embed": 0,
    "patch_embed/proj/kernel": 0,
    "blocks_0/attn/qkv/kernel": 1,
    "blocks_3/mlp/fc2/bias": 4,
    "clip_projector/cross_attn/q/bias": 5,
    "fc_norm/scale": 5,
    "head/kernel": 5,
  }
  for path, layer in expect_layer.items():
    assert mults[path] == pytest.approx(d ** (DEPTH + 1 - layer)), path
  assert mults["head/kernel"] == 1.0
  # lr_mults multiply on top, first match wins; a prefix scopes the layer decay.
  m2 = tree_paths.flatten(
    optim.lr_mult_tree(
      params,
      layer_decay=d,
      depth=DEPTH,
      lr_mults=[("head/.*", 10.0), (".*", 0.5)],
      layer_id=LAYER_ID,
    )
  )
  assert m2["head/kernel"] == 10.0 and m2["cls_token"] == pytest.approx(0.5 * d**5)
  nested = {"student": params, "other": {"w": np.zeros((2, 2), np.float32)}}
  m3 = tree_paths.flatten(
    optim.lr_mult_tree(
      nested, layer_decay=d, depth=DEPTH, layer_decay_prefix="student/", layer_id=LAYER_ID
    )
  )
  assert m3["student/blocks_1/attn/qkv/kernel"] == pytest.approx(d**3) and m3["other/w"] == 1.0
  with pytest.raises(ValueError, match="depth"):
    optim.lr_mult_tree(params, layer_decay=d, layer_id=LAYER_ID)
  with pytest.raises(ValueError, match="layer_id"):
    optim.lr_mult_tree(params, layer_decay=d, depth=DEPTH)
  with pytest.raises(ValueError, match="outside"):
    optim.lr_mult_tree(params, layer_decay=d, depth=2, layer_id=LAYER_ID)
  with pytest.raises(ValueError, match="> 0"):
    optim.lr_mult_tree(params, lr_mults=[("head/.*", 0.0)])


# ---------------------------------------------------------------- schedules
def _reference_cosine(base, final, total, warmup, start):
  """InternVideo2 utils.cosine_scheduler as described in the spec (numpy array)."""
  warm = np.linspace(start, base, warmup) if warmup > 0 else np.array([])
  iters = np.arange(total - warmup)
  cos = final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))
  return np.concatenate([warm, cos])


@pytest.mark.parametrize("warmup", [0, 1, 10])
def test_cosine_schedule_matches_reference(warmup):
  sched = optim.cosine_schedule(4e-4, 100, warmup, warmup_lr=1e-6, min_lr=2e-6)
  steps = np.arange(100)
  got = np.asarray(jax.vmap(sched)(steps))
  np.testing.assert_allclose(got, _reference_cosine(4e-4, 2e-6, 100, warmup, 1e-6), rtol=1e-5)
  if warmup == 10:
    assert float(sched(0)) == pytest.approx(1e-6)  # warmup start
    assert float(sched(9)) == pytest.approx(4e-4)  # linspace includes the peak
    assert float(sched(10)) == pytest.approx(4e-4)  # cosine starts at the peak
  assert float(sched(99)) == pytest.approx(
    2e-6 + 0.5 * (4e-4 - 2e-6) * (1 + math.cos(math.pi * (99 - warmup) / (100 - warmup))), rel=1e-5
  )
  assert float(sched(500)) == pytest.approx(2e-6)  # holds min_lr past the end


def test_fastvqa_schedule():
  sched = optim.fastvqa_schedule(1e-3, total_steps=300, warmup_steps=25)
  assert float(sched(0)) == 0.0
  assert float(sched(5)) == pytest.approx(1e-3 * 5 / 25)
  assert float(sched(25)) == pytest.approx(1e-3)
  assert float(sched(299)) == pytest.approx(
    1e-3 * 0.5 * (1 + math.cos(math.pi * 274 / 300)), rel=1e-5
  )
  assert float(sched(300)) > 0.01 * 1e-3  # denominator is max_iter: ends near 0.017, not 0


def test_config_validation():
  params = fake_internvideo2()
  with pytest.raises(ValueError, match="unknown optimizer config field"):
    optim.make_optimizer(_cfg(weight_decy=0.1), params)
  with pytest.raises(ValueError, match="'lr'"):
    optim.make_optimizer({"total_steps": 10}, params)
  with pytest.raises(ValueError, match="only 'adamw'"):
    optim.make_optimizer(_cfg(optimizer="sgd"), params)
  with pytest.raises(ValueError, match="warmup_steps"):
    optim.make_optimizer(_cfg(warmup_steps=100), params)
  tx, _ = optim.make_optimizer(_cfg(), {"head": params["head"]})
  with pytest.raises(ValueError, match="different tree"):
    tx.init(params)
  # The documented ConfigDict works, with typed placeholders.
  cfg = optim.default_config()
  cfg.lr, cfg.total_steps, cfg.layer_decay, cfg.depth = 1e-3, 10, 0.75, DEPTH
  optim.make_optimizer(cfg, params, layer_id=LAYER_ID)
  assert isinstance(cfg, ml_collections.ConfigDict)


# ---------------------------------------------------------------- updates
def _grads_like(params, seed):
  rng = np.random.default_rng(seed)
  return jax.tree.map(
    lambda x: jnp.asarray(rng.standard_normal(x.shape).astype(np.float32)), params
  )


def test_update_equals_adamw_formula():
  """One step by hand: lr * mult * (adam + wd * p) with the no-decay rule."""
  params = jax.tree.map(jnp.asarray, fake_internvideo2())
  cfg = _cfg(lr=2e-3, warmup_steps=0, layer_decay=0.5, depth=DEPTH, weight_decay=0.05)
  tx, scheds = optim.make_optimizer(cfg, params, layer_id=LAYER_ID)
  g = _grads_like(params, 1)
  upd, _ = jax.jit(tx.update)(g, tx.init(params), params)
  lr0 = float(scheds["lr"](0))
  assert lr0 == pytest.approx(2e-3)
  mults = tree_paths.flatten(
    optim.lr_mult_tree(params, layer_decay=0.5, depth=DEPTH, layer_id=LAYER_ID)
  )
  decays = tree_paths.flatten(optim.decay_mask(params))
  fp, fg, fu = tree_paths.flatten(params), tree_paths.flatten(g), tree_paths.flatten(upd)
  for path in fp:
    gg = np.asarray(fg[path], np.float64)
    adam = (0.1 * gg / 0.1) / (np.sqrt(0.001 * gg**2 / 0.001) + 1e-8)  # bias-corrected step 1
    want = -lr0 * mults[path] * (adam + (0.05 * np.asarray(fp[path]) if decays[path] else 0.0))
    np.testing.assert_allclose(fu[path], want, rtol=1e-5, atol=1e-12, err_msg=path)


def test_fastvqa_groups_and_torch_adamw():
  """Backbone lr 1e-4 / head 1e-3 via lr_mults, decay on all: equals torch AdamW groups."""
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(3)
  params = {
    "fragments_backbone": {
      "w": rng.standard_normal((4, 3)).astype(np.float32),
      "b": rng.standard_normal(3).astype(np.float32),
    },
    "vqa_head": {"w": rng.standard_normal((3, 1)).astype(np.float32)},
  }
  cfg = _cfg(
    lr=1e-3, schedule="constant", no_decay_standard=False, lr_mults=[("fragments_backbone/.*", 0.1)]
  )
  tx, _ = optim.make_optimizer(cfg, params)
  tparams = {p: torch.tensor(x, requires_grad=True) for p, x in tree_paths.flatten(params).items()}
  topt = torch.optim.AdamW(
    [
      {"params": [v for p, v in tparams.items() if p.startswith("fragments")], "lr": 1e-4},
      {"params": [v for p, v in tparams.items() if p.startswith("vqa_head")], "lr": 1e-3},
    ],
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=0.05,
  )
  p, state = jax.tree.map(jnp.asarray, params), tx.init(params)
  update = jax.jit(tx.update)
  for step in range(4):
    g = _grads_like(params, 10 + step)
    for path, t in tparams.items():
      t.grad = torch.tensor(np.asarray(tree_paths.flatten(g)[path]))
    topt.step()
    upd, state = update(g, state, p)
    p = optax.apply_updates(p, upd)
  for path, t in tparams.items():
    np.testing.assert_allclose(
      tree_paths.flatten(p)[path], t.detach().numpy(), rtol=1e-5, atol=1e-7
    )


def test_clipping_by_global_norm():
  params = {"train": {"w": jnp.ones((4,))}}
  cfg = _cfg(schedule="constant", lr=1.0, clip_grad_norm=1.0, weight_decay=0.0)
  tx, _ = optim.make_optimizer(cfg, params)
  # Norm 0.5 < 1: unclipped; read it back out of Adam's first moment, mu = (1 - b1) * g.
  _, state = tx.update({"train": {"w": jnp.full((4,), 0.25)}}, tx.init(params), params)
  mus = [x for x in jax.tree.leaves(state) if np.ndim(x) == 1]
  np.testing.assert_allclose(mus[0], 0.1 * 0.25, rtol=1e-6)
  # Norm 2.0 > 1: scaled by 1/2.
  _, state2 = tx.update({"train": {"w": jnp.full((4,), 1.0)}}, tx.init(params), params)
  mus2 = [x for x in jax.tree.leaves(state2) if np.ndim(x) == 1]
  np.testing.assert_allclose(mus2[0], 0.1 * 0.5, rtol=1e-6)


def test_parameter_groups():
  params = fake_internvideo2()
  rows = optim.parameter_groups(_cfg(layer_decay=0.5, depth=DEPTH), params, layer_id=LAYER_ID)
  by = {r[0]: r[1:] for r in rows}
  assert by["cls_token"] == (0.5**5, False)
  assert by["head/kernel"] == (1.0, True)


# ---------------------------------------------------------------- tree_paths
def test_tree_paths_round_trip_and_labels():
  params = fake_internvideo2()
  flat = tree_paths.flatten(params)
  assert "blocks_3/attn/qkv/kernel" in flat and "clip_projector/cross_attn/q/bias" in flat
  back = tree_paths.unflatten(flat)
  jax.tree.map(np.testing.assert_array_equal, back, params)
  labels = tree_paths.match_labels(
    params, [("blocks_.*", "trunk"), ("head/.*", "head"), (".*", "rest")]
  )
  fl = tree_paths.flatten(labels)
  assert (
    fl["blocks_0/ls1/gamma"] == "trunk" and fl["head/bias"] == "head" and fl["cls_token"] == "rest"
  )
  with pytest.raises(ValueError, match=r"match no rule.*'cls_token'"):
    tree_paths.match_labels(
      params,
      [("blocks_.*", 1), ("(clip_projector|fc_norm|head|patch_embed)/.*", 2), ("pos_embed", 3)],
    )
  with pytest.raises(ValueError, match="not a valid regex"):
    tree_paths.match_labels(params, [("blocks_(", 1)])
  with pytest.raises(ValueError, match="already a leaf"):
    tree_paths.unflatten({"a": 1, "a/b": 2})
  with pytest.raises(ValueError, match="separator"):
    tree_paths.flatten({"a/b": 1})


def test_split_and_merge():
  params = fake_internvideo2()
  mask = model_setup.regex_mask(params, ["head/.*", "cls_token"])
  sel, rest = tree_paths.split_tree(params, mask)
  assert set(tree_paths.flatten(sel)) == {"head/kernel", "head/bias", "cls_token"}
  assert len(tree_paths.flatten(rest)) == len(tree_paths.flatten(params)) - 3
  merged = tree_paths.merge_trees(sel, rest)
  jax.tree.map(np.testing.assert_array_equal, merged, params)
  with pytest.raises(ValueError, match="overlap"):
    tree_paths.merge_trees(sel, sel)
  with pytest.raises(ValueError, match="does not fit"):
    tree_paths.split_tree(params, {"head": {"kernel": True}})


def test_optimizer_builds_from_abstract_params():
  """The optimizer builds from ShapeDtypeStructs (for sharded init via eval_shape)."""
  params = fake_internvideo2()
  head = jax.eval_shape(lambda: {"head": params["head"]})
  tx, _ = optim.make_optimizer(_cfg(), head)
  state = jax.eval_shape(tx.init, head)
  names = list(jax.tree.leaves(tree_paths.tree_names(state)))
  assert any(n.endswith("mu/head/kernel") for n in names)
