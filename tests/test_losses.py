"""Losses against torch.nn.functional and the FAST-VQA / InternVQA formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from internvqa_jax import losses


def _rand(*shape, seed=0, scale=3.0):
  return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def test_mse_matches_torch():
  a, b = _rand(8, 5, seed=0), _rand(8, 5, seed=1)
  want = F.mse_loss(torch.from_numpy(a), torch.from_numpy(b)).item()
  np.testing.assert_allclose(losses.mse(a, b), want, rtol=1e-6)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 2.0])
def test_smooth_l1_matches_torch(beta):
  a, b = _rand(16, 32, seed=2), _rand(16, 32, seed=3)  # differences span both branches
  want = F.smooth_l1_loss(torch.from_numpy(a), torch.from_numpy(b), beta=beta).item()
  np.testing.assert_allclose(losses.smooth_l1(a, b, beta), want, rtol=1e-6)
  # And the gradient (torch: x / beta inside, sign(x) outside).
  ta = torch.from_numpy(a).requires_grad_()
  F.smooth_l1_loss(ta, torch.from_numpy(b), beta=beta).backward()
  g = jax.grad(lambda x: losses.smooth_l1(x, b, beta))(jnp.asarray(a))
  np.testing.assert_allclose(g, ta.grad.numpy(), rtol=1e-5, atol=1e-8)


def test_smooth_l1_hand_values():
  # |x| = 0.5 < 2 -> 0.5 * 0.25 / 2 = 0.0625; |x| = 3 >= 2 -> 3 - 1 = 2.
  np.testing.assert_allclose(
    losses.smooth_l1(jnp.array([0.5, -3.0]), jnp.zeros(2), 2.0), (0.0625 + 2.0) / 2
  )


def test_layer_norm_matches_torch():
  x = _rand(4, 768, seed=4) + 5.0
  want = F.layer_norm(torch.from_numpy(x), (768,), eps=1e-5).numpy()
  np.testing.assert_allclose(losses.layer_norm(x), want, atol=2e-6)


def test_feature_distill_loss_matches_torch():
  s, t = _rand(4, 768, seed=5), _rand(4, 768, seed=6, scale=10.0)
  ln = lambda x: F.layer_norm(torch.from_numpy(x), (768,), eps=1e-5)
  want = F.smooth_l1_loss(ln(s), ln(t), beta=2.0).item()
  np.testing.assert_allclose(losses.feature_distill_loss(s, t), want, rtol=1e-6)
  np.testing.assert_allclose(losses.feature_distill_loss(s, t, teacher_grad=False), want, rtol=1e-6)


def test_teacher_grad_switch():
  s, t = jnp.asarray(_rand(4, 16, seed=7)), jnp.asarray(_rand(4, 16, seed=8))
  g_on = jax.grad(lambda tt: losses.feature_distill_loss(s, tt, teacher_grad=True))(t)
  g_off = jax.grad(lambda tt: losses.feature_distill_loss(s, tt, teacher_grad=False))(t)
  assert float(jnp.abs(g_on).max()) > 1e-4
  assert float(jnp.abs(g_off).max()) == 0.0
  # The student side gets gradient in both modes.
  g_s = jax.grad(lambda ss: losses.feature_distill_loss(ss, t, teacher_grad=False))(s)
  assert float(jnp.abs(g_s).max()) > 1e-4


def _torch_plcc_loss(y_pred, y):
  """FAST-VQA new_train.py plcc_loss, transcribed from the spec's formula."""
  sigma_hat, m_hat = torch.std_mean(y_pred, unbiased=False)
  y_pred = (y_pred - m_hat) / (sigma_hat + 1e-8)
  sigma, m = torch.std_mean(y, unbiased=False)
  y = (y - m) / (sigma + 1e-8)
  loss0 = F.mse_loss(y_pred, y) / 4
  rho = torch.mean(y_pred * y)
  loss1 = F.mse_loss(rho * y_pred, y) / 4
  return (loss0 + loss1) / 2


def _torch_rank_loss(y_pred, y):
  r = F.relu((y_pred - y_pred.t()) * torch.sign(y.t() - y))
  return torch.sum(r) / y_pred.shape[0] / (y_pred.shape[0] - 1) / (1 + torch.max(r))


def test_fastvqa_hand_values():
  p, y = jnp.array([0.3, 0.1, 0.4, 0.2]), jnp.array([1.0, 3.0, 2.0, 4.0])
  np.testing.assert_allclose(losses.plcc_loss(p, y), 0.48, rtol=1e-6)
  # Closed form ((2 - 2r) + (1 - r^2)) / 8 with r = -0.6.
  np.testing.assert_allclose(losses.plcc_loss(p, y), ((2 + 1.2) + (1 - 0.36)) / 8, rtol=1e-6)
  np.testing.assert_allclose(losses.rank_loss(p, y), 0.10256, atol=1e-5)
  # Discordant pairs (0,1) .2, (0,3) .1, (1,2) .3, (2,3) .2, each counted twice
  # in R (i,j and j,i): sum 1.6, max 0.3.
  np.testing.assert_allclose(losses.rank_loss(p, y), 1.6 / 4 / 3 / 1.3, rtol=1e-6)
  np.testing.assert_allclose(losses.fastvqa_loss(p, y), 0.51077, atol=1e-5)
  # (B, 1) inputs, as in FAST-VQA, give the same values.
  np.testing.assert_allclose(losses.fastvqa_loss(p[:, None], y[:, None]), losses.fastvqa_loss(p, y))


def test_fastvqa_losses_match_torch_with_grads():
  p, y = _rand(16, 1, seed=9), _rand(16, 1, seed=10)
  tp = torch.from_numpy(p).requires_grad_()
  want = _torch_plcc_loss(tp, torch.from_numpy(y)) + 0.3 * _torch_rank_loss(tp, torch.from_numpy(y))
  want.backward()
  val, g = jax.value_and_grad(lambda q: losses.fastvqa_loss(q, y))(jnp.asarray(p))
  np.testing.assert_allclose(val, want.item(), rtol=1e-5)
  np.testing.assert_allclose(g, tp.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_distill_loss_total():
  rng = np.random.default_rng(11)
  s_score, t_score, y = (rng.uniform(size=4).astype(np.float32) for _ in range(3))
  s_feat, t_feat = _rand(4, 8, seed=12), _rand(4, 8, seed=13)
  total, parts = losses.distill_loss(
    s_score[:, None], t_score, s_feat, t_feat, y, teacher_weight=0.5, feature_weight=2.0
  )
  np.testing.assert_allclose(parts["student"], np.mean((s_score - y) ** 2), rtol=1e-6)
  np.testing.assert_allclose(parts["teacher"], np.mean((t_score - y) ** 2), rtol=1e-6)
  np.testing.assert_allclose(
    parts["feature"], losses.feature_distill_loss(s_feat, t_feat), rtol=1e-6
  )
  np.testing.assert_allclose(
    total, parts["student"] + 0.5 * parts["teacher"] + 2 * parts["feature"], rtol=1e-6
  )
  # With FAST-VQA's score loss for both models.
  _, parts = losses.distill_loss(s_score, t_score, s_feat, t_feat, y, kind="fastvqa")
  np.testing.assert_allclose(parts["student"], losses.fastvqa_loss(s_score, y), rtol=1e-6)
  with pytest.raises(ValueError, match="loss.kind"):
    losses.distill_loss(s_score, t_score, s_feat, t_feat, y, kind="l1")


def test_shape_errors():
  with pytest.raises(ValueError, match="no broadcasting"):
    losses.mse(jnp.zeros(4), jnp.zeros((4, 1)))
  with pytest.raises(ValueError, match="projector"):
    losses.feature_distill_loss(jnp.zeros((2, 384)), jnp.zeros((2, 768)))
  with pytest.raises(ValueError, match="at least 2"):
    losses.rank_loss(jnp.zeros(1), jnp.zeros(1))
  with pytest.raises(ValueError, match=r"\(B,\) or \(B, 1\)"):
    losses.plcc_loss(jnp.zeros((4, 2)), jnp.zeros(4))
  with pytest.raises(ValueError, match="beta"):
    losses.smooth_l1(jnp.zeros(2), jnp.zeros(2), -1.0)
