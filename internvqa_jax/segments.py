"""Quality over time: fixed-length windows of a video and their score curve.

A window of `length` seconds starts every `stride` seconds (default: `length`, back to back);
frame f belongs to [f / fps, (f + 1) / fps). Window k covers frames
[round(k * stride * fps), round((k * stride + length) * fps)), cut at the end of the video, and
the windows stop once one reaches the last frame, so the last window may be shorter (a 7.3 s
video at 2 s windows gives [0, 2), [2, 4), [4, 6), [6, 7.3)). A window at least as long as the
video is the whole video. Each window is scored with the model's own test protocol applied to the
window's frames only, so only those frames are decoded (memory stays bounded on long videos).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Window:
  first: int  # first frame
  stop: int  # one past the last frame
  start_s: float
  end_s: float


def windows(
  num_frames: int, fps: float, length: float, stride: float | None = None
) -> list[Window]:
  """The windows of a video of num_frames frames at fps (see the module docstring)."""
  stride = length if stride is None else stride
  if not (length > 0 and stride > 0):
    raise ValueError(f"segment length and stride must be > 0 seconds, got {length}, {stride}")
  if not fps or fps <= 0:
    raise ValueError("segments need the video's frame rate, and it has none (raw .yuv: pass --fps)")
  if num_frames < 1:
    raise ValueError(f"segments: the video has {num_frames} frames")
  out = []
  k = 0
  while True:
    first = round(k * stride * fps)
    if first >= num_frames:
      break
    stop = min(num_frames, max(first + 1, round((k * stride + length) * fps)))
    out.append(Window(first, stop, first / fps, stop / fps))
    if stop >= num_frames:
      break
    k += 1
  return out


class WindowReader:
  """read_frames(indices) of a window, on top of a whole-video reader."""

  def __init__(self, read, window: Window):
    self._read = read
    self._first = window.first
    self.num_frames = window.stop - window.first

  def __call__(self, indices) -> np.ndarray:
    idx = np.asarray(indices, np.int64)
    return self._read(idx + self._first)


def plot_curve(
  path: str,
  video: str,
  curves: Mapping[str, Sequence[tuple[float, float, float, float]]],
  ylabel: str = "score",
) -> None:
  """PNG of score over time: per model, each window's score as a step over [start, end), with
  a band of +- one standard deviation over its views."""
  import matplotlib  # Lazy: plotting is optional and matplotlib is slow to import.

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(7, 3), dpi=110)
  for i, (name, segs) in enumerate(curves.items()):
    arr = np.asarray(segs, np.float64).reshape(-1, 4)
    xs = np.concatenate([arr[:, 0], arr[-1:, 1]])
    ys = np.concatenate([arr[:, 2], arr[-1:, 2]])
    sd = np.concatenate([arr[:, 3], arr[-1:, 3]])
    ax.step(xs, ys, where="post", color=f"C{i}", label=name, lw=1.5)
    ax.fill_between(xs, ys - sd, ys + sd, step="post", color=f"C{i}", alpha=0.2, lw=0)
  ax.set_xlabel("time (s)")
  ax.set_ylabel(ylabel)
  ax.set_title(os.path.basename(video), fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="best")
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
