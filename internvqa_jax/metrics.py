"""Quality-assessment metrics on the host: SRCC, KRCC, PLCC (raw and logistic), RMSE.

Conventions (datasets_and_metrics spec, section 7):
  * SRCC / KRCC (tau-b) are computed on raw predictions (monotonic maps do not
    change them), with scipy's tie handling.
  * 'plcc' is raw Pearson, which equals the "PLCC after a linear rescale" used
    by FAST-VQA and the InternVQA code, i.e. the number to compare with the paper.
  * 'plcc_logistic' / 'rmse' follow VQEG practice: fit the monotonic 4-parameter
    logistic f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2 to the labels
    by least squares on the evaluated set itself, then PLCC(f(x), y) and
    RMSE(f(x), y) in label units.
  * 'rmse_linear' is FAST-VQA's RMSE: predictions z-scored and rescaled to the
    labels' mean and (population) standard deviation.

Per-video aggregation (mean over clips/crops) must happen before `evaluate`;
see `aggregate_by_video`.

Failure policy (nothing silently replaced):
  * invalid input (length mismatch, fewer than MIN_ITEMS, NaN/inf, constant
    labels) raises ValueError;
  * constant predictions carry no ranking or linear information: every
    correlation is reported as 0.0, 'rmse' / 'rmse_linear' as the error of the
    best constant (the population std of the labels), 'constant_prediction'
    is 1.0, and a warning is logged. This keeps evaluation of a collapsed model
    alive during training instead of crashing or propagating NaN;
  * if the logistic fit fails (no convergence within maxfev, non-finite or
    constant fitted values, or fewer than MIN_FIT_ITEMS points), 'plcc_logistic'
    falls back to raw PLCC and 'rmse' to 'rmse_linear', 'logistic_fit_ok' is 0.0
    and a warning is logged (spec 7.4); pass `on_fit_failure='raise'` to get a
    LogisticFitError instead.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.optimize
import scipy.stats

MIN_ITEMS = 3  # Fewer points make every correlation degenerate.
MIN_FIT_ITEMS = 5  # 4 free parameters: with 4 points the fit interpolates (PLCC = 1).
DEFAULT_MAXFEV = 10_000

log = logging.getLogger(__name__)


class LogisticFitError(RuntimeError):
  """The 4-parameter logistic could not be fitted to (pred, target)."""


def _as_1d(name: str, x: Any) -> np.ndarray:
  a = np.asarray(x, dtype=np.float64)
  if a.ndim == 2 and 1 in a.shape:
    a = a.reshape(-1)
  if a.ndim != 1:
    raise ValueError(f"{name} must be 1-D (one score per video), got shape {a.shape}")
  if not np.all(np.isfinite(a)):
    bad = np.flatnonzero(~np.isfinite(a))
    raise ValueError(f"{name} has {bad.size} non-finite value(s) at indices {bad[:10].tolist()}")
  return a


def _validate(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
  p, t = _as_1d("pred", pred), _as_1d("target", target)
  if p.shape != t.shape:
    raise ValueError(f"pred has {p.size} items but target has {t.size}")
  if p.size < MIN_ITEMS:
    raise ValueError(f"need at least {MIN_ITEMS} items to compute correlations, got {p.size}")
  if np.ptp(t) == 0:
    raise ValueError(f"target is constant ({t[0]}); correlations are undefined for this set")
  return p, t


def srcc(pred: Any, target: Any) -> float:
  """Spearman rank-order correlation (ties get average ranks)."""
  p, t = _validate(pred, target)
  if np.ptp(p) == 0:
    return 0.0
  return float(scipy.stats.spearmanr(p, t).statistic)


def krcc(pred: Any, target: Any) -> float:
  """Kendall tau-b."""
  p, t = _validate(pred, target)
  if np.ptp(p) == 0:
    return 0.0
  return float(scipy.stats.kendalltau(p, t).statistic)


def plcc(pred: Any, target: Any) -> float:
  """Raw Pearson correlation (= PLCC after any increasing linear rescale)."""
  p, t = _validate(pred, target)
  if np.ptp(p) == 0:
    return 0.0
  return float(scipy.stats.pearsonr(p, t).statistic)


def logistic4(x: Any, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
  """VQEG 4-parameter logistic; |b4| keeps the curve's orientation in b1 - b2."""
  x = np.asarray(x, dtype=np.float64)
  # exp of a large positive argument overflows to inf -> value b2, which is the
  # correct limit; silence the harmless overflow warning.
  with np.errstate(over="ignore"):
    return (b1 - b2) / (1.0 + np.exp(-(x - b3) / np.abs(b4))) + b2


def logistic4_initial_guess(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
  """b1 = max(y), b2 = min(y), b3 = mean(x), b4 = std(x) / 4 (pyiqa's choice).

  For negatively correlated predictions b1 and b2 are swapped so the starting
  curve already decreases; least squares then converges to the same optimum
  far more reliably.
  """
  b1, b2 = float(np.max(target)), float(np.min(target))
  if np.corrcoef(pred, target)[0, 1] < 0:
    b1, b2 = b2, b1
  return np.array([b1, b2, float(np.mean(pred)), float(np.std(pred)) / 4.0])


def fit_logistic4(pred: Any, target: Any, maxfev: int = DEFAULT_MAXFEV) -> np.ndarray:
  """Least-squares fit of `logistic4` (scipy curve_fit); returns (b1, b2, b3, b4).

  Raises LogisticFitError when the fit does not converge or gives a useless
  (non-finite or constant) mapping.
  """
  p, t = _validate(pred, target)
  if p.size < MIN_FIT_ITEMS:
    raise LogisticFitError(
      f"need at least {MIN_FIT_ITEMS} items for a 4-parameter fit, got {p.size}"
    )
  if np.ptp(p) == 0:
    raise LogisticFitError("predictions are constant")
  p0 = logistic4_initial_guess(p, t)
  try:
    with warnings.catch_warnings():
      # OptimizeWarning (covariance not estimable) does not affect the fitted
      # parameters, which are all we use.
      warnings.simplefilter("ignore", scipy.optimize.OptimizeWarning)
      beta, _ = scipy.optimize.curve_fit(logistic4, p, t, p0=p0, maxfev=maxfev)
  except (RuntimeError, ValueError) as e:
    raise LogisticFitError(f"curve_fit failed (maxfev={maxfev}, p0={p0.tolist()}): {e}") from e
  fitted = logistic4(p, *beta)
  if not (np.all(np.isfinite(beta)) and np.all(np.isfinite(fitted))):
    raise LogisticFitError(f"fit gave non-finite parameters/values: beta={beta.tolist()}")
  if np.ptp(fitted) == 0:
    raise LogisticFitError(f"fitted mapping is constant on the data: beta={beta.tolist()}")
  return beta


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.sqrt(np.mean((a - b) ** 2)))


def evaluate(
  pred: Any, target: Any, *, maxfev: int = DEFAULT_MAXFEV, on_fit_failure: str = "fallback"
) -> dict[str, float]:
  """All metrics for one evaluated set (one score per video).

  Returns floats: srcc, krcc, plcc, plcc_logistic, rmse (after the logistic
  fit, label units), rmse_linear (after FAST-VQA's linear rescale),
  logistic_fit_ok (1.0 / 0.0), constant_prediction (1.0 / 0.0), num_items.
  See the module docstring for the failure policy; `on_fit_failure` is
  'fallback' (default) or 'raise'.
  """
  if on_fit_failure not in ("fallback", "raise"):
    raise ValueError(f"on_fit_failure must be 'fallback' or 'raise', got {on_fit_failure!r}")
  p, t = _validate(pred, target)
  n = float(p.size)
  if np.ptp(p) == 0:
    log.warning("evaluate: all %d predictions equal %r; correlations reported as 0.0", p.size, p[0])
    rmse_const = float(np.std(t))
    return dict(
      srcc=0.0,
      krcc=0.0,
      plcc=0.0,
      plcc_logistic=0.0,
      rmse=rmse_const,
      rmse_linear=rmse_const,
      logistic_fit_ok=0.0,
      constant_prediction=1.0,
      num_items=n,
    )
  raw_plcc = float(scipy.stats.pearsonr(p, t).statistic)
  linear = t.mean() + t.std() * (p - p.mean()) / p.std()
  out = dict(
    srcc=float(scipy.stats.spearmanr(p, t).statistic),
    krcc=float(scipy.stats.kendalltau(p, t).statistic),
    plcc=raw_plcc,
    rmse_linear=_rmse(linear, t),
    constant_prediction=0.0,
    num_items=n,
  )
  try:
    beta = fit_logistic4(p, t, maxfev=maxfev)
  except LogisticFitError as e:
    if on_fit_failure == "raise":
      raise
    log.warning(
      "evaluate: logistic fit failed (%s); plcc_logistic := raw plcc, rmse := rmse_linear", e
    )
    out.update(plcc_logistic=raw_plcc, rmse=out["rmse_linear"], logistic_fit_ok=0.0)
    return out
  fitted = logistic4(p, *beta)
  out.update(
    plcc_logistic=float(scipy.stats.pearsonr(fitted, t).statistic),
    rmse=_rmse(fitted, t),
    logistic_fit_ok=1.0,
  )
  return out


def aggregate_by_video(
  video_ids: Sequence[Any], scores: Any, mask: Any = None, *, expected_examples: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """Mean score per video over its eval examples (clips x crops), before `evaluate`.

  Args:
    video_ids: (N,) ids (str, bytes or int), one per evaluated example.
    scores: (N,) or (N, ...) predictions per example.
    mask: optional (N,) bool; False marks padding rows (e.g. the last,
      padded eval batch), which are dropped.
    expected_examples: if given, every video must have exactly this many examples
      (catches duplicated or lost examples in sharded evaluation).

  Returns:
    (ids, means): ids in order of first appearance, means (V,) or (V, ...).
  """
  ids = np.asarray(video_ids)
  s = np.asarray(scores, dtype=np.float64)
  if ids.ndim != 1:
    raise ValueError(f"video_ids must be 1-D, got shape {ids.shape}")
  if s.ndim == 0 or s.shape[0] != ids.shape[0]:
    raise ValueError(f"scores shape {s.shape} does not match {ids.shape[0]} video ids")
  if mask is not None:
    m = np.asarray(mask)
    if m.shape != ids.shape or m.dtype != np.bool_:
      raise ValueError(f"mask must be a bool array of shape {ids.shape}, got {m.dtype} {m.shape}")
    ids, s = ids[m], s[m]
  if ids.size == 0:
    raise ValueError("no (unmasked) examples to aggregate")
  if not np.all(np.isfinite(s)):
    bad = np.flatnonzero(~np.all(np.isfinite(s.reshape(s.shape[0], -1)), axis=1))
    raise ValueError(f"scores have non-finite values for video(s) {ids[bad[:10]].tolist()}")
  uniq, first, inverse, counts = np.unique(
    ids, return_index=True, return_inverse=True, return_counts=True
  )
  if expected_examples is not None and np.any(counts != expected_examples):
    wrong = {str(u): int(c) for u, c in zip(uniq, counts) if c != expected_examples}
    raise ValueError(
      f"expected {expected_examples} examples per video, got {dict(list(wrong.items())[:10])}"
    )
  sums = np.zeros((uniq.size,) + s.shape[1:], np.float64)
  np.add.at(sums, inverse.reshape(-1), s)
  means = sums / counts.reshape((-1,) + (1,) * (s.ndim - 1))
  order = np.argsort(first, kind="stable")
  return uniq[order], means[order]
