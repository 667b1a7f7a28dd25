"""Metrics against scipy.stats, hand-computed values and a known logistic curve."""

import logging

import numpy as np
import pytest
import scipy.stats

from internvqa_jax import metrics


def _data(n=40, seed=0):
  rng = np.random.default_rng(seed)
  y = rng.uniform(0, 100, n)
  x = 0.02 * y + rng.normal(0, 0.3, n)
  return x, y


def test_matches_scipy():
  x, y = _data()
  out = metrics.evaluate(x, y)
  assert out["srcc"] == pytest.approx(scipy.stats.spearmanr(x, y).statistic, abs=1e-12)
  assert out["krcc"] == pytest.approx(scipy.stats.kendalltau(x, y).statistic, abs=1e-12)
  assert out["plcc"] == pytest.approx(scipy.stats.pearsonr(x, y).statistic, abs=1e-12)
  assert out["num_items"] == 40 and out["logistic_fit_ok"] == 1.0
  assert out["constant_prediction"] == 0.0
  # The standalone functions agree with evaluate().
  assert metrics.srcc(x, y) == out["srcc"]
  assert metrics.krcc(x, y) == out["krcc"]
  assert metrics.plcc(x, y) == out["plcc"]


def test_hand_values():
  # FAST-VQA loss check example: r = -0.6.
  x, y = [0.3, 0.1, 0.4, 0.2], [1.0, 3.0, 2.0, 4.0]
  # ranks x: 3,1,4,2; y: 1,3,2,4; d = 2,-2,2,-2 -> 1 - 6*16/(4*15) = -0.6
  assert metrics.srcc(x, y) == pytest.approx(-0.6)
  # pairs: (12)d (13)c (14)d (23)d (24)c (34)d -> (2 - 4) / 6
  assert metrics.krcc(x, y) == pytest.approx(-1 / 3)
  assert metrics.plcc(x, y) == pytest.approx(-0.6)


def test_ties_use_average_ranks_and_tau_b():
  x, y = [1, 1, 2, 3, 3], [1, 2, 3, 4, 5]
  assert metrics.srcc(x, y) == pytest.approx(scipy.stats.spearmanr(x, y).statistic)
  assert metrics.krcc(x, y) == pytest.approx(scipy.stats.kendalltau(x, y).statistic)
  # tau-b by hand: P=8, Q=0, ties only in x = 2, none only in y: 8 / sqrt(8 * 10).
  assert metrics.krcc(x, y) == pytest.approx(8 / np.sqrt(80))


def test_logistic_fit_recovers_known_curve():
  beta = (90.0, 10.0, 0.5, 0.15)
  x = np.linspace(-0.5, 1.5, 60)
  y = metrics.logistic4(x, *beta)
  fitted = metrics.fit_logistic4(x, y)
  b1, b2, b3, b4 = fitted
  np.testing.assert_allclose([b1, b2, b3, abs(b4)], beta, rtol=1e-4, atol=1e-4)
  out = metrics.evaluate(x, y)
  assert out["plcc_logistic"] == pytest.approx(1.0, abs=1e-9)
  assert out["rmse"] == pytest.approx(0.0, abs=1e-4)
  assert out["plcc"] < 0.99  # the raw relation is clearly non-linear
  assert out["srcc"] == pytest.approx(1.0)


def test_logistic_fit_decreasing_curve():
  # Negatively related predictions (e.g. DMOS labels): the fit is a decreasing curve.
  beta = (10.0, 90.0, 0.0, 0.3)
  x = np.linspace(-1.5, 1.5, 50)
  y = metrics.logistic4(x, *beta)
  out = metrics.evaluate(x, y)
  assert out["logistic_fit_ok"] == 1.0
  assert out["plcc_logistic"] == pytest.approx(1.0, abs=1e-9)
  assert out["plcc"] < 0 and out["srcc"] == pytest.approx(-1.0)


def test_rmse_conventions():
  x, y = _data(seed=1)
  out = metrics.evaluate(x, y)
  lin = y.mean() + y.std() * (x - x.mean()) / x.std()
  assert out["rmse_linear"] == pytest.approx(np.sqrt(np.mean((lin - y) ** 2)))
  beta = metrics.fit_logistic4(x, y)
  assert out["rmse"] == pytest.approx(np.sqrt(np.mean((metrics.logistic4(x, *beta) - y) ** 2)))
  assert out["plcc_logistic"] == pytest.approx(
    scipy.stats.pearsonr(metrics.logistic4(x, *beta), y).statistic
  )
  # Least squares over a family containing (nearly) linear maps: no worse than linear.
  assert out["rmse"] <= out["rmse_linear"] + 1e-6


def test_constant_predictions(caplog):
  y = np.arange(10.0)
  with caplog.at_level(logging.WARNING):
    out = metrics.evaluate(np.full(10, 0.5), y)
  assert "predictions equal" in caplog.text
  assert out["constant_prediction"] == 1.0 and out["logistic_fit_ok"] == 0.0
  for k in ("srcc", "krcc", "plcc", "plcc_logistic"):
    assert out[k] == 0.0
  assert out["rmse"] == pytest.approx(np.std(y)) and out["rmse_linear"] == pytest.approx(np.std(y))
  assert metrics.srcc(np.ones(4), [1, 2, 3, 4]) == 0.0
  with pytest.raises(metrics.LogisticFitError, match="constant"):
    metrics.fit_logistic4(np.ones(6), np.arange(6.0))


def test_fit_failure_falls_back_or_raises(caplog):
  x, y = _data(n=4)  # too few points for a 4-parameter fit
  with caplog.at_level(logging.WARNING):
    out = metrics.evaluate(x, y)
  assert "logistic fit failed" in caplog.text
  assert out["logistic_fit_ok"] == 0.0
  assert out["plcc_logistic"] == out["plcc"] and out["rmse"] == out["rmse_linear"]
  with pytest.raises(metrics.LogisticFitError):
    metrics.evaluate(x, y, on_fit_failure="raise")
  x, y = _data(n=30)
  with pytest.raises(metrics.LogisticFitError, match="maxfev"):
    metrics.fit_logistic4(x, y, maxfev=2)  # cannot converge in 2 evaluations


@pytest.mark.parametrize(
  "pred, target, match",
  [
    ([1, 2, 3], [1, 2], "3 items but target has 2"),
    ([1, 2], [1, 2], "at least 3"),
    ([1, np.nan, 3], [1, 2, 3], "pred has 1 non-finite"),
    ([1, 2, 3], [1, 2, np.inf], "target has 1 non-finite"),
    ([1, 2, 3], [2, 2, 2], "target is constant"),
    (np.ones((3, 2)), [1, 2, 3], "must be 1-D"),
  ],
)
def test_input_validation(pred, target, match):
  with pytest.raises(ValueError, match=match):
    metrics.evaluate(pred, target)


def test_column_vectors_accepted():
  x, y = _data(n=10)
  assert metrics.evaluate(x[:, None], y)["plcc"] == pytest.approx(metrics.plcc(x, y))


def test_aggregate_by_video():
  ids = np.array(["b", "a", "b", "c", "a", "pad"])
  scores = np.array([1.0, 2.0, 3.0, 5.0, 4.0, 99.0])
  mask = np.array([True, True, True, True, True, False])
  out_ids, means = metrics.aggregate_by_video(ids, scores, mask)
  assert out_ids.tolist() == ["b", "a", "c"]  # order of first appearance
  np.testing.assert_allclose(means, [2.0, 3.0, 5.0])
  # Multi-output scores average per column; integer ids work too.
  ids2, m2 = metrics.aggregate_by_video([7, 7, 3], np.array([[1.0, 2.0], [3.0, 4.0], [0.0, 1.0]]))
  assert ids2.tolist() == [7, 3]
  np.testing.assert_allclose(m2, [[2.0, 3.0], [0.0, 1.0]])


def test_aggregate_by_video_errors():
  with pytest.raises(ValueError, match="expected 2 examples"):
    metrics.aggregate_by_video(["a", "a", "b"], [1.0, 2.0, 3.0], expected_examples=2)
  with pytest.raises(ValueError, match="non-finite"):
    metrics.aggregate_by_video(["a", "b"], [1.0, np.nan])
  with pytest.raises(ValueError, match="does not match"):
    metrics.aggregate_by_video(["a", "b"], [1.0, 2.0, 3.0])
  with pytest.raises(ValueError, match="bool"):
    metrics.aggregate_by_video(["a", "b"], [1.0, 2.0], mask=[1, 0])
  with pytest.raises(ValueError, match="no \\(unmasked\\) examples"):
    metrics.aggregate_by_video(["a"], [1.0], mask=np.array([False]))
  # NaN in a masked-out padding row is fine: it is dropped first.
  ids, m = metrics.aggregate_by_video(
    ["a", "a", "x"], [1.0, 3.0, np.nan], mask=np.array([True, True, False]), expected_examples=2
  )
  assert ids.tolist() == ["a"] and m.tolist() == [2.0]
