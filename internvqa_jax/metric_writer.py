"""Where training numbers go: JSONL, TensorBoard event files and a progress line.

Only process 0 writes; every other process gets a writer that does nothing,
so the train loop can call it unconditionally.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from tensorboardX import SummaryWriter


class MetricWriter:
  """Appends {"step": s, name: value, ...} lines to metrics.jsonl and TensorBoard scalars."""

  def __init__(self, workdir: str, *, enabled: bool = True, tensorboard: bool = True):
    self.enabled = enabled
    self._tb = None
    self._f = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    # Held open for the run's lifetime; close() releases it.
    self._f = open(os.path.join(workdir, "metrics.jsonl"), "a")  # noqa: SIM115
    if tensorboard:
      self._tb = SummaryWriter(os.path.join(workdir, "tb"))

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    row = {"step": int(step)}
    for k, v in metrics.items():
      v = np.asarray(v)
      row[k] = v.item() if v.size == 1 else v.tolist()
    self._f.write(json.dumps(row) + "\n")
    self._f.flush()
    if self._tb is not None:
      for k, v in row.items():
        if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
          self._tb.add_scalar(k, v, step)
      self._tb.flush()

  def truncate_after(self, step: int) -> int:
    """Drops metrics.jsonl rows of steps after `step`; returns how many were dropped.

    A run resumed from the checkpoint of `step` logs the later steps again, so
    their rows from the interrupted run (and a line torn by a kill) must go.
    TensorBoard event files are append-only; TensorBoard shows the latest value
    of a repeated step.
    """
    if not self.enabled:
      return 0
    path = self._f.name
    self._f.close()
    with open(path) as f:
      lines = f.readlines()
    keep = []
    for line in lines:
      try:
        row_step = int(json.loads(line)["step"])
      except (ValueError, KeyError, TypeError):
        continue  # A row torn by a kill mid-write.
      if row_step <= step:
        keep.append(line if line.endswith("\n") else line + "\n")
    dropped = len(lines) - len(keep)
    if dropped:
      tmp = path + ".tmp"
      with open(tmp, "w") as f:
        f.writelines(keep)
      os.replace(tmp, path)
    self._f = open(path, "a")  # noqa: SIM115
    return dropped

  def close(self) -> None:
    if self._f is not None:
      self._f.close()
    if self._tb is not None:
      self._tb.close()


class Progress:
  """One-line progress report: step, rate, ETA and the latest scalars."""

  def __init__(self, total_steps: int, first_step: int = 0, *, enabled: bool = True, stream=None):
    self.total = total_steps
    self.first = first_step
    self.enabled = enabled
    self.stream = stream or sys.stdout
    self.t0 = time.monotonic()

  def update(self, step: int, scalars: Mapping[str, float]) -> str:
    done = step - self.first
    elapsed = time.monotonic() - self.t0
    rate = done / elapsed if elapsed > 0 and done > 0 else float("nan")
    eta = (self.total - step) / rate if rate == rate and rate > 0 else float("nan")
    width = 24
    filled = int(width * step / max(self.total, 1))
    bar = "#" * filled + "." * (width - filled)
    parts = " ".join(f"{k}={float(v):.4g}" for k, v in scalars.items())
    line = f"[{bar}] {step}/{self.total} {rate:.2f} step/s ETA {_fmt_seconds(eta)} {parts}"
    if self.enabled:
      print(line, file=self.stream, flush=True)
    return line


def _fmt_seconds(s: float) -> str:
  if s != s or s == float("inf"):
    return "?"
  s = int(s)
  return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"
