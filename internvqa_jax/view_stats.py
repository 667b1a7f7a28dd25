"""Confidence of a multi-view score: spread over views and a bootstrap interval of the mean.

A video's score is the mean of its view scores (clips x crops, or FAST-VQA clips). How much that
mean depends on which views were drawn is estimated by the percentile bootstrap: resample the V
view scores with replacement `n` times, take the statistic of each resample, and report the
2.5th and 97.5th percentiles (numpy's linear interpolation) of those n values. The resampling
indices come from `np.random.default_rng(seed)` with one `(n, V)` draw, so the interval is a pure
function of (view scores, n, seed): the same run gives the same interval, and one video's
interval does not depend on the other videos of the run.

The same machinery pools segment scores into a video score (`POOLS`, VMAF's choices).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

CONFIDENCE = 0.95


def _harmonic(x: np.ndarray, axis: int = -1) -> np.ndarray:
  """VMAF's harmonic-mean pooling: 1 / mean(1 / (x + 1)) - 1 (defined for x > -1)."""
  return 1.0 / np.mean(1.0 / (x + 1.0), axis=axis) - 1.0


POOLS: dict[str, Callable[..., np.ndarray]] = {
  "mean": lambda x, axis=-1: np.mean(x, axis=axis),
  "harmonic": _harmonic,
  "min": lambda x, axis=-1: np.min(x, axis=axis),
  "p10": lambda x, axis=-1: np.percentile(x, 10, axis=axis),
}


def check_pool_input(values: np.ndarray, pool: str, what: str) -> None:
  """Raises ValueError when `pool` is undefined for `values` (harmonic needs x > -1)."""
  if pool not in POOLS:
    raise ValueError(f"unknown pooling {pool!r}; expected one of {sorted(POOLS)}")
  if pool == "harmonic" and np.min(values) <= -1.0:
    raise ValueError(
      f"{what}: harmonic pooling needs scores > -1 (VMAF's 1/(x+1) form), got min "
      f"{float(np.min(values))}; use --pool mean|min|p10 or a calibrated model"
    )


def bootstrap_interval(values, n: int, seed: int, statistic: str = "mean") -> tuple[float, float]:
  """Percentile bootstrap (CONFIDENCE level) of `statistic` over `values`; (nan, nan) if n == 0."""
  x = np.asarray(values, np.float64).reshape(-1)
  if x.size == 0:
    raise ValueError("bootstrap_interval: no values")
  if n < 0:
    raise ValueError(f"bootstrap resamples must be >= 0, got {n}")
  if n == 0:
    return float("nan"), float("nan")
  idx = np.random.default_rng(seed).integers(0, x.size, size=(n, x.size))
  stats = POOLS[statistic](x[idx], axis=1)
  alpha = (1.0 - CONFIDENCE) / 2.0
  lo, hi = np.percentile(stats, [100 * alpha, 100 * (1 - alpha)])
  return float(lo), float(hi)


def summarize(values, *, bootstrap: int = 1000, seed: int = 0, pool: str = "mean") -> dict:
  """{score, score_std, score_ci_low, score_ci_high, num}: `pool` of the values, their sample
  standard deviation (ddof=1; 0.0 for one value) and its bootstrap interval."""
  x = np.asarray(values, np.float64).reshape(-1)
  if x.size == 0:
    raise ValueError("summarize: no values")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"summarize: non-finite values {x.tolist()[:10]}")
  lo, hi = bootstrap_interval(x, bootstrap, seed, pool)
  return {
    "score": float(POOLS[pool](x, axis=0)),
    "score_std": float(np.std(x, ddof=1)) if x.size > 1 else 0.0,
    "score_ci_low": lo,
    "score_ci_high": hi,
    "num": int(x.size),
  }
