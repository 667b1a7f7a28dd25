"""Scores video files with one or more exported/converted models.

  python -m internvqa_jax.score --model WORKDIR/export/student clips/ a.mp4 \
      --out scores.csv [--segments 2] [--resume] [--skip-bad]

The test protocol of a model is its view config, built by the same function as training-time
evaluation (`data.pipeline.make_recipe`) with the same defaults:

  * trained models: the eval view stored in meta.json (`eval_view`) by the trainer;
  * converted checkpoints (no eval_view): the family's reference protocol (its `default_view`):
    InternVideo2 4 clips x 3 crops of num_frames x img_size, short side resized to img_size;
    FAST-VQA the fragment variant named in meta.json, else the one whose clip equals the model's
    base_x_size.

Command-line options (--clips, --crops, --resize-short, --fragments-variant, --fragment,
--test-sampling) edit that view config. FAST-VQA test sampling is deterministic ('center') by
default, in training-time evaluation too; 'random' (the reference's) draws from
np.random.default_rng(--seed) per video.

Each video gets, per model: `score` (mean over views), `score_std` (sample standard deviation
over views), a 95% bootstrap interval of the mean (`view_stats`), `num_views`, the calibrated
`mos` with its interval when meta.json has a calibration (`calibration`), and the source's bit
depth. Sources deeper than 8 bits are decoded to float (no rounding to 8 bits) unless --decode-8bit.
With --segments, each window is scored with the same protocol (`segments`) and the video's
values are pooled over windows (--pool). The CSV layout, header and resume rules are in
`score_table`.

Decoding runs in a background thread one video ahead of the model, so decoding the next video
overlaps the model on the current one; at most two videos' views are in memory (one window's
with --segments).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

import internvqa_jax
from internvqa_jax import calibration as calibration_lib
from internvqa_jax import cli_errors, html_report, models, quality_maps, score_table, view_stats
from internvqa_jax import segments as segments_lib
from internvqa_jax.data import decode, frames, pipeline
from internvqa_jax.data.video_types import is_raw_yuv
from internvqa_jax.models import checkpoint

# Extensions picked up when a directory is given (explicit files may have any).
VIDEO_EXTENSIONS = frozenset(
  {
    ".mp4",
    ".m4v",
    ".mov",
    ".mkv",
    ".webm",
    ".avi",
    ".flv",
    ".wmv",
    ".mpg",
    ".mpeg",
    ".ts",
    ".mts",
    ".m2ts",
    ".3gp",
    ".ivf",
    ".obu",
    ".y4m",
    ".yuv",
    ".h264",
    ".264",
    ".avc",
    ".h265",
    ".265",
    ".hevc",
    ".bit",
  }
)

_USE_MODEL = "model"  # resize_short default: the model's img_size.
# Scoring options whose load_scorer keyword differs from the option (argparse) name.
_LOAD_KWARG = {"fragment": "fragment_overrides"}


class ScoreError(RuntimeError):
  """A video cannot be scored (names the file and the reason)."""


# ------------------------------------------------------------------ inputs ---


def expand_paths(inputs: Iterable[str | os.PathLike], recursive: bool = False) -> list[str]:
  """Files as given, directories replaced by their video files (sorted).

  Raises FileNotFoundError for a missing path and ValueError for a directory
  without video files. Repeated files (same real path) are kept once.
  """
  out, seen = [], set()
  for item in inputs:
    path = os.path.normpath(os.fspath(item))
    if os.path.isdir(path):
      found = []
      if recursive:
        for root, dirs, files in os.walk(path):
          dirs.sort()
          found += [os.path.join(root, f) for f in files]
      else:
        found = [
          os.path.join(path, f) for f in os.listdir(path) if os.path.isfile(os.path.join(path, f))
        ]
      found = sorted(f for f in found if os.path.splitext(f)[1].lower() in VIDEO_EXTENSIONS)
      if not found:
        raise ValueError(
          f"{path}: directory has no video files (extensions "
          f"{' '.join(sorted(VIDEO_EXTENSIONS))})"
          + ("" if recursive else "; use --recursive for subdirectories")
        )
    elif os.path.isfile(path):
      found = [path]
    else:
      raise FileNotFoundError(f"{path}: no such file or directory")
    for f in found:
      key = os.path.realpath(f)
      if key not in seen:
        seen.add(key)
        out.append(f)
  if not out:
    raise ValueError("no videos to score")
  return out


def _read_options(path: str, geometry: Mapping[str, Any], threads: int, keep_bit_depth: bool):
  """(probe kwargs, read_frames kwargs) of one file."""
  if is_raw_yuv(path):  # Raw frames carry no header: the geometry describes them.
    geo = {k: v for k, v in geometry.items() if v is not None}
    return geo, {**geo, "keep_bit_depth": keep_bit_depth}
  return {}, {"threads": threads, "keep_bit_depth": keep_bit_depth}


# ------------------------------------------------------------------ models ---


@dataclasses.dataclass
class ModelScorer:
  """One loaded model with its test protocol (a view config) and jitted predict function."""

  name: str
  model_dir: str
  family: str
  view: dict  # The view config, defaults filled in (rebuilds `recipe`).
  recipe: Any  # pipeline.make_recipe's recipe: .eval(read, num_frames, rng) -> views.
  num_views: int
  batch_size: int
  predict: Callable[[np.ndarray], np.ndarray]
  view_shape: tuple[int, ...]
  calibration: dict | None = None
  map_maker: Any = None  # quality_maps.MapMaker when maps were asked for (load_scorer(maps=True)).

  @property
  def protocol(self) -> str:
    return json.dumps(self.view, sort_keys=True)

  def make_views(self, read, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    return np.asarray(self.recipe.eval(read, num_frames, rng), np.float32)

  def score_views(self, views: np.ndarray) -> np.ndarray:
    """Per-view scores (V,) float32 of normalized views (V, T, H, W, 3)."""
    views = np.asarray(views, np.float32)
    if views.shape[1:] != self.view_shape:
      raise ValueError(
        f"{self.name}: views of shape {views.shape[1:]}, model expects {self.view_shape}"
      )
    out = []
    b = self.batch_size
    for start in range(0, len(views), b):
      chunk = views[start : start + b]
      n = len(chunk)
      if n < b:  # Pad with zeros: one compiled shape per model.
        chunk = np.concatenate([chunk, np.zeros((b - n,) + chunk.shape[1:], np.float32)])
      out.append(np.asarray(self.predict(chunk))[:n])
    return np.concatenate(out).astype(np.float32)


def default_view(meta: Mapping[str, Any], module, fragments_variant: str | None = None) -> dict:
  """The test protocol of a model directory whose meta.json stores no eval view: its family's
  `default_view` (internvqa_jax.models); an explicit FAST-VQA variant takes the place of the one
  meta.json would name."""
  if fragments_variant is not None:
    meta = {**meta, "variant": fragments_variant}
  return models.get(meta["family"]).default_view(module, meta)


def view_recipe(model_dir: str) -> str:
  """The recipe (a model family name) of a model directory's test views."""
  meta = checkpoint.read_meta(model_dir)
  stored = meta.get("eval_view") or {}
  recipe = stored.get("recipe", "internvideo2") if stored else meta.get("family")
  models.get(recipe)  # an unknown family is an error naming it
  return recipe


def _positive(name: str, value: int | None) -> int | None:
  if value is not None and int(value) < 1:
    raise ValueError(f"{name} must be a positive integer, got {value}")
  return None if value is None else int(value)


def apply_options(
  view: Mapping[str, Any],
  where: str,
  *,
  clips: int | None = None,
  crops: int | None = None,
  resize_short: int | str | None = _USE_MODEL,
  fragments_variant: str | None = None,
  fragment_overrides: Mapping[str, Any] | None = None,
  test_sampling: str | None = None,
) -> dict:
  """The view config with command-line options applied by its family (`apply_test_options`;
  an option the family lacks is an error naming it)."""
  options = set_options(
    clips=_positive("--clips", clips),
    crops=_positive("--crops", crops),
    resize_short=resize_short,
    fragments_variant=fragments_variant,
    fragment=fragment_overrides,
    test_sampling=test_sampling,
  )
  view = json.loads(json.dumps(dict(view)))  # deep copy
  try:
    return models.get(view.get("recipe", "internvideo2")).apply_test_options(view, options)
  except ValueError as e:
    raise ValueError(f"{where}: {e}") from e


def set_options(**options: Any) -> dict[str, Any]:
  """The scoring options a user set. Unset is None or an empty dict, except for resize_short,
  where None asks for native-resolution crops and `_USE_MODEL` means unset."""
  return {k: v for k, v in options.items() if not _is_unset(k, v)}


def _is_unset(option: str, value: Any) -> bool:
  if option == "resize_short":
    return isinstance(value, str) and value == _USE_MODEL
  return value is None or value == {}


def _make_predict(module, params):
  @jax.jit
  def predict(p, x):
    score = module.apply({"params": p}, x, train=False)["score"]
    if score.ndim != 1:
      raise ValueError(
        f"model returns scores of shape {score.shape}; scoring needs one "
        "score per clip (num_outputs == 1)"
      )
    return score

  device_params = jax.device_put(params)
  return lambda x: predict(device_params, x)


def _view_shape(recipe) -> tuple[int, ...]:
  """Shape of one view, from the recipe applied to a blank 64-frame 240x320 video."""
  blank = lambda idx: np.zeros((len(np.asarray(idx).reshape(-1)), 240, 320, 3), np.uint8)
  return tuple(np.shape(recipe.eval(blank, 64, np.random.default_rng(0)))[1:])


def load_scorer(
  model_dir: str,
  *,
  name: str | None = None,
  clips: int | None = None,
  crops: int | None = None,
  resize_short: int | str | None = _USE_MODEL,
  batch_size: int | None = None,
  fragments_variant: str | None = None,
  fragment_overrides: Mapping[str, Any] | None = None,
  test_sampling: str | None = None,
  warmup: bool = True,
  maps: bool = False,
) -> ModelScorer:
  """Loads `model_dir` and builds its test protocol (see the module docstring).

  clips/crops: InternVideo2 S x C; for FAST-VQA `clips` sets the number of test clips.
  resize_short: InternVideo2 short side before cropping; 'model' (default) = the view's, None =
    native-resolution crops.
  batch_size: views per jitted call (default: all views of one video).
  fragments_variant / fragment_overrides / test_sampling: FAST-VQA view overrides.
  maps: also build the model's `quality_maps.MapMaker` (for write_video_maps).
  """
  model_dir = os.path.normpath(os.fspath(model_dir))
  meta = checkpoint.read_meta(model_dir)
  module, params = models.load(model_dir)
  stored = meta.get("eval_view")
  try:
    view = dict(stored) if stored else default_view(meta, module, fragments_variant)
  except ValueError as e:
    raise ValueError(
      f"{model_dir}: {e} (--fragments-variant, with --fragment KEY=VALUE overrides)"
    ) from e
  view = apply_options(
    view,
    model_dir,
    clips=clips,
    crops=crops,
    resize_short=resize_short,
    fragments_variant=fragments_variant,
    fragment_overrides=fragment_overrides,
    test_sampling=test_sampling,
  )
  try:
    recipe = pipeline.make_recipe(view)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{model_dir}: test protocol {view}: {e}") from e
  cal = meta.get("calibration")
  cal = calibration_lib.check(cal, os.path.join(model_dir, "meta.json")) if cal else None
  num_views = int(recipe.num_eval_examples)
  bs = num_views if batch_size is None else int(batch_size)
  if bs < 1:
    raise ValueError(f"batch_size must be >= 1, got {bs}")
  name = name or os.path.basename(model_dir)
  map_maker = None
  if maps:
    map_maker = quality_maps.MapMaker(module, params, recipe, name=name, batch_size=bs)
  scorer = ModelScorer(
    name=name,
    model_dir=model_dir,
    family=meta["family"],
    view=recipe.settings(),
    recipe=recipe,
    num_views=num_views,
    batch_size=bs,
    predict=_make_predict(module, params),
    view_shape=_view_shape(recipe),
    calibration=cal,
    map_maker=map_maker,
  )
  if warmup:  # Compile now, so per-video timings are steady-state.
    scorer.predict(np.zeros((bs,) + scorer.view_shape, np.float32))
  return scorer


def _unique_names(model_dirs: Sequence[str]) -> list[str]:
  """Model column names: the directory name, with parents added until unique."""
  parts = [os.path.normpath(os.path.abspath(os.fspath(d))).split(os.sep) for d in model_dirs]
  depth = 1
  while True:
    names = ["/".join(p[-depth:]) for p in parts]
    if len(set(names)) == len(names) or depth >= max(len(p) for p in parts):
      break
    depth += 1
  if len(set(names)) != len(names):
    names = [f"{n}#{i}" for i, n in enumerate(names)]
  return names


# ----------------------------------------------------------------- scoring ---


@dataclasses.dataclass(frozen=True)
class ScoringOptions:
  """How videos are decoded, windowed and summarised (the same for every model)."""

  width: int | None = None
  height: int | None = None
  bit_depth: int | None = None
  fps: float | None = None
  threads: int = 0
  seed: int = 0
  bootstrap: int = 1000
  segments: float | None = None  # window length in seconds; None = whole video
  segment_stride: float | None = None
  pool: str = "mean"
  keep_bit_depth: bool = True

  def run_settings(self) -> dict[str, Any]:
    """What a resumed run must share with the file it appends to."""
    return {
      "seed": self.seed,
      "bootstrap": self.bootstrap,
      "segments": self.segments,
      "segment_stride": self.segment_stride,
      "pool": self.pool,
      "decode": "keep_bit_depth" if self.keep_bit_depth else "8bit",
    }


_END = object()


def _prepare(paths, scorers, opts: ScoringOptions, out: queue.Queue, stop: threading.Event):
  """Producer (background thread): decodes and builds the views, one window at a time."""
  geometry = dict(width=opts.width, height=opts.height, bit_depth=opts.bit_depth, fps=opts.fps)

  def put(item) -> bool:
    while not stop.is_set():
      try:
        out.put(item, timeout=0.2)
        return True
      except queue.Full:
        continue
    return False

  for path in paths:
    if stop.is_set():
      return
    t0 = time.perf_counter()
    try:
      probe_kw, read_kw = _read_options(path, geometry, opts.threads, opts.keep_bit_depth)
      info = decode.probe(path, **probe_kw)
      if opts.segments is None:
        wins = [None]
      else:
        wins = segments_lib.windows(info.num_frames, info.fps, opts.segments, opts.segment_stride)
      for w in wins:
        # A cache per window: only the window's frames are ever held.
        cache = frames.FrameCache(path, info.num_frames, read_kwargs=read_kw)
        reader = cache if w is None else segments_lib.WindowReader(cache, w)
        views = {
          s.name: s.make_views(reader, reader.num_frames, np.random.default_rng(opts.seed))
          for s in scorers
        }
        del cache, reader
        if not put(("window", path, w, views)):
          return
      item = ("done", path, info, time.perf_counter() - t0)
    except Exception as e:  # pylint: disable=broad-except
      item = ("bad", path, f"{type(e).__name__}: {e}")
    if not put(item):
      return
  put(_END)


def _summaries(
  scorer: ModelScorer, windows: list, per_window: list[np.ndarray], opts: ScoringOptions, path: str
) -> tuple[dict, list[dict]]:
  """(video row values, segment rows) of one model from its per-window view scores."""
  if opts.segments is None:
    summary = view_stats.summarize(per_window[0], bootstrap=opts.bootstrap, seed=opts.seed)
    seg_rows = []
  else:
    seg_scores = np.array([float(np.mean(v.astype(np.float64))) for v in per_window])
    view_stats.check_pool_input(seg_scores, opts.pool, f"{path} ({scorer.name})")
    summary = view_stats.summarize(
      seg_scores, bootstrap=opts.bootstrap, seed=opts.seed, pool=opts.pool
    )
    seg_rows = [
      {
        "path": path,
        "model": scorer.name,
        "start": round(w.start_s, 6),
        "end": round(w.end_s, 6),
        "score": float(seg_scores[k]),
        "score_std": view_stats.summarize(per_window[k], bootstrap=0)["score_std"],
      }
      for k, w in enumerate(windows)
    ]
  row = {
    "path": path,
    "model": scorer.name,
    "score": summary["score"],
    "score_std": summary["score_std"],
    "score_ci_low": summary["score_ci_low"],
    "score_ci_high": summary["score_ci_high"],
    "num_views": int(sum(len(v) for v in per_window)),
  }
  if scorer.calibration is not None:
    row["mos"] = float(calibration_lib.apply(scorer.calibration, summary["score"]))
    row["mos_ci_low"], row["mos_ci_high"] = calibration_lib.apply_interval(
      scorer.calibration, summary["score_ci_low"], summary["score_ci_high"]
    )
  return row, seg_rows


def score_with(
  scorers: Sequence[ModelScorer],
  paths: Sequence[str],
  *,
  options: ScoringOptions | None = None,
  skip_bad: bool = False,
  on_video: Callable[[dict], None] | None = None,
  on_skip: Callable[[str, str], None] | None = None,
  **option_kw: Any,
) -> tuple[list[dict], list[tuple[str, str]]]:
  """Scores `paths` with every scorer; returns (results, skipped).

  One result per scored video, in input order: {'path', 'bit_depth', 'num_frames', 'fps',
  'seconds', 'rows': [one CSV row per model], 'segments': [segment rows], 'scores': {model:
  score}, 'num_views': {model: V}}. skipped: (path, reason) of videos that failed (only with
  skip_bad; otherwise ScoreError). `options` (or its fields as keywords): ScoringOptions.
  `on_video(result)` / `on_skip(path, reason)` run as each video finishes.
  """
  opts = options or ScoringOptions(**option_kw)
  if options is not None and option_kw:
    raise TypeError("pass either options= or option keywords, not both")
  if opts.pool not in view_stats.POOLS:
    raise ValueError(f"unknown pooling {opts.pool!r}; expected one of {sorted(view_stats.POOLS)}")
  results, skipped = [], []
  q: queue.Queue = queue.Queue(maxsize=1)
  stop = threading.Event()
  worker = threading.Thread(
    target=_prepare, args=(list(paths), list(scorers), opts, q, stop), daemon=True
  )
  worker.start()
  pending: dict[str, list] = {}  # path -> [(window, {model: per-view scores})]
  t_model = 0.0
  try:
    while True:
      item = q.get()
      if item is _END:
        break
      kind, path = item[0], item[1]
      if kind == "window":
        t1 = time.perf_counter()
        scores = {}
        for s in scorers:
          per_view = s.score_views(item[3][s.name])
          if not np.all(np.isfinite(per_view)):
            raise ScoreError(f"{s.name} gave non-finite scores for {path}: {per_view.tolist()}")
          scores[s.name] = per_view
        t_model += time.perf_counter() - t1
        pending.setdefault(path, []).append((item[2], scores))
        continue
      parts = pending.pop(path, [])
      if kind == "bad":
        if not skip_bad:
          raise ScoreError(f"cannot score {path}: {item[2]}")
        reason = item[2]
        skipped.append((path, reason))
        if on_skip is not None:
          on_skip(path, reason)
        continue
      info, seconds = item[2], item[3]
      wins = [w for w, _ in parts]
      result = {
        "path": path,
        "bit_depth": info.bit_depth,
        "num_frames": info.num_frames,
        "fps": info.fps,
        "seconds": seconds,
        "rows": [],
        "segments": [],
      }
      for s in scorers:
        try:
          row, seg_rows = _summaries(s, wins, [sc[s.name] for _, sc in parts], opts, path)
        except ValueError as e:
          raise ScoreError(f"cannot score {path}: {e}") from e
        row["bit_depth"] = info.bit_depth
        result["rows"].append(row)
        result["segments"] += seg_rows
      result["scores"] = {r["model"]: r["score"] for r in result["rows"]}
      result["num_views"] = {r["model"]: r["num_views"] for r in result["rows"]}
      results.append(result)
      if on_video is not None:
        on_video(result)
  finally:
    stop.set()
    # No decoding thread may outlive the call: one still inside FFmpeg or XLA at interpreter
    # exit can abort the process (an error exit must stay a clean exit 1).
    worker.join()
  return results, skipped


def write_video_maps(
  maps_dir: str, scorers: Sequence[ModelScorer], result: Mapping[str, Any], opts: ScoringOptions
) -> dict[str, list[str]]:
  """Quality-map overlays of one scored video (a score_with result), per model: {model: PNG
  paths}. Decodes the sampled frames again. The maps are of the model's test views of the
  whole video (same seed): the scored views, except with segments, whose scores come from
  each window's own views."""
  path = result["path"]
  geometry = dict(width=opts.width, height=opts.height, bit_depth=opts.bit_depth, fps=opts.fps)
  _, read_kw = _read_options(path, geometry, opts.threads, opts.keep_bit_depth)
  reader = frames.FrameCache(path, result["num_frames"], read_kwargs=read_kw)
  out = {}
  for s in scorers:
    if s.map_maker is None:
      raise ValueError(f"{s.name}: no map maker; load the scorer with maps=True")
    out[s.name] = quality_maps.write_maps(
      maps_dir,
      s.map_maker,
      path,
      reader,
      result["num_frames"],
      rng=np.random.default_rng(opts.seed),
      fps=result["fps"],
    )
  return out


_LOAD_KEYS = (
  "clips",
  "crops",
  "resize_short",
  "batch_size",
  "fragments_variant",
  "fragment_overrides",
  "test_sampling",
)


def score_videos(
  model_dir: str,
  paths: Sequence[str] | str,
  *,
  skipped: list | None = None,
  recursive: bool = False,
  skip_bad: bool = False,
  **opts: Any,
) -> list[dict]:
  """Scores videos (files or directories) with one model.

  Returns one dict per video in input order (directories expanded, sorted): the CSV row
  (score, score_std, score_ci_low, score_ci_high, num_views, mos..., bit_depth) plus 'seconds'
  and, with segments, 'segments'. `opts`: the keyword arguments of `load_scorer` and the
  fields of `ScoringOptions`. With skip_bad=True, videos that fail are left out and appended as
  (path, reason) to `skipped`.
  """
  load_opts = {k: opts.pop(k) for k in _LOAD_KEYS if k in opts}
  scorer = load_scorer(model_dir, **load_opts)
  files = expand_paths([paths] if isinstance(paths, (str, os.PathLike)) else paths, recursive)
  results, bad = score_with([scorer], files, skip_bad=skip_bad, **opts)
  if skipped is not None:
    skipped.extend(bad)
  out = []
  for r in results:
    row = dict(r["rows"][0])
    row["seconds"] = r["seconds"]
    if r["segments"]:
      row["segments"] = r["segments"]
    out.append(row)
  return out


# --------------------------------------------------------------------- I/O ---


def output_paths(out: str) -> dict[str, str]:
  """Every file a run writes, from --out."""
  stem = os.path.splitext(out)[0]
  return {
    "csv": out,
    "skipped": f"{out}.skipped.jsonl",
    "segments": f"{stem}.segments.csv",
    "curves": f"{stem}.curves",
  }


def check_outputs(out: str, inputs: Sequence[str], model_dirs: Sequence[str]) -> dict[str, str]:
  """Validates --out before any work: writable, not a directory, never one of the inputs.

  Raises cli_errors.InputError (an output that cannot be written: exit 1) or
  cli_errors.UsageError (an output that would replace an input: exit 2), naming the path;
  returns `output_paths(out)`.
  """
  outs = output_paths(out)
  if os.path.isdir(out):
    raise cli_errors.InputError(f"--out {out}: is a directory; expected a CSV file name")
  protected = {os.path.realpath(p): p for p in inputs}
  for d in model_dirs:
    protected[os.path.realpath(d)] = d
  for key, p in outs.items():
    real = os.path.realpath(p)
    if real in protected:
      raise cli_errors.UsageError(
        f"--out {out}: the {key} output {p} would overwrite the input {protected[real]}"
      )
    if key != "curves" and os.path.exists(p) and not os.path.isfile(p):
      raise cli_errors.InputError(f"--out {out}: {p} exists and is not a regular file")
  parent = os.path.dirname(os.path.abspath(out))
  probe_dir = parent
  while not os.path.exists(probe_dir):
    probe_dir = os.path.dirname(probe_dir)
  if not os.path.isdir(probe_dir):
    raise cli_errors.InputError(f"--out {out}: {probe_dir} is not a directory")
  if not os.access(probe_dir, os.W_OK | os.X_OK):
    raise cli_errors.InputError(f"--out {out}: directory {probe_dir} is not writable")
  for p in (out, outs["skipped"]):
    if os.path.exists(p) and not os.access(p, os.W_OK):
      raise cli_errors.InputError(f"--out {out}: {p} exists and is not writable")
  return outs


def _safe(name: str) -> str:
  return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def curve_path(curves_dir: str, video: str) -> str:
  """PNG of one video's curve: its file name plus a hash of the full path (names may repeat)."""
  digest = hashlib.sha1(os.fsencode(video)).hexdigest()[:8]
  return os.path.join(curves_dir, f"{_safe(os.path.basename(video))}.{digest}.png")


def format_row(result: Mapping[str, Any], names: Sequence[str], width: int) -> str:
  cells = []
  for r in result["rows"]:
    lo, hi = r["score_ci_low"], r["score_ci_high"]
    ci = "" if math.isnan(lo) else f" [{lo:.4f}, {hi:.4f}]"
    cells.append(f"{r['score']:>10.5f}{ci:>20}")
  return f"{result['path']:<{width}}  {'  '.join(cells)}  {result['seconds']:>8.2f}"


def _parse_resize(value: str):
  if value.lower() == "none":
    return None
  if value.lower() == _USE_MODEL:
    return _USE_MODEL
  n = int(value)
  if n < 1:
    raise argparse.ArgumentTypeError(f"--resize-short must be positive or 'none', got {value}")
  return n


def _positive_seconds(value: str) -> float:
  try:
    x = float(value)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected seconds > 0, got {value!r}") from None
  if not (x > 0 and math.isfinite(x)):
    raise argparse.ArgumentTypeError(f"expected seconds > 0, got {value}")
  return x


def _parse_override(item: str) -> tuple[str, Any]:
  if "=" not in item:
    raise argparse.ArgumentTypeError(f"--fragment expects KEY=VALUE, got {item!r}")
  key, value = item.split("=", 1)
  if value.lower() == "none":
    return key, None
  try:
    return key, int(value)
  except ValueError:
    return key, value


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    prog="python -m internvqa_jax.score",
    description="Score video files with exported/converted quality models (CPU or accelerator).",
  )
  p.add_argument(
    "videos",
    nargs="+",
    help="video files or directories (expanded to the video files inside, sorted)",
  )
  p.add_argument(
    "--model",
    action="append",
    required=True,
    metavar="MODEL_DIR",
    help="model directory (converted model or WORKDIR/export/<role>); repeatable",
  )
  p.add_argument("--out", default="scores.csv", help="CSV to write (default: scores.csv)")
  p.add_argument(
    "--resume",
    action="store_true",
    help="append to an existing --out written with the same models and settings, "
    "skipping the videos it already has",
  )
  p.add_argument(
    "--clips",
    type=cli_errors.positive_int,
    help="test clips per video (default: the model's protocol)",
  )
  p.add_argument(
    "--crops", type=cli_errors.positive_int, help="InternVideo2 spatial crops per clip"
  )
  p.add_argument(
    "--resize-short",
    type=_parse_resize,
    default=_USE_MODEL,
    metavar="N|none",
    help="InternVideo2 short side before cropping (default: the model's protocol; "
    "'none': native-resolution crops)",
  )
  p.add_argument(
    "--batch-size",
    type=cli_errors.positive_int,
    help="views per model call (default: all views of one video)",
  )
  p.add_argument(
    "--fragments-variant",
    help="FAST-VQA sampling variant (default: the model's protocol, from meta.json "
    "or guessed from the model's input size)",
  )
  p.add_argument(
    "--fragment",
    action="append",
    type=_parse_override,
    default=[],
    metavar="KEY=VALUE",
    help="FAST-VQA FragmentSampler override, e.g. fsize=16; repeatable",
  )
  p.add_argument(
    "--test-sampling",
    choices=("center", "random", "demo"),
    help="FAST-VQA test sampling (default: the model's protocol; 'center' unless it says "
    "otherwise)",
  )
  p.add_argument(
    "--seed", type=int, default=0, help="seed of random test sampling and of the bootstrap"
  )
  p.add_argument(
    "--bootstrap",
    type=cli_errors.non_negative_int,
    default=1000,
    metavar="N",
    help="bootstrap resamples for the 95%% interval of the mean (0: no interval)",
  )
  p.add_argument(
    "--segments",
    type=_positive_seconds,
    metavar="SECONDS",
    help="score windows of this length; writes <out stem>.segments.csv and a PNG curve "
    "per video in <out stem>.curves/",
  )
  p.add_argument(
    "--segment-stride",
    type=_positive_seconds,
    metavar="SECONDS",
    help="start a window every SECONDS (default: --segments, back to back)",
  )
  p.add_argument(
    "--pool",
    choices=sorted(view_stats.POOLS),
    default="mean",
    help="pooling of segment scores into the video score (with --segments; default mean)",
  )
  p.add_argument(
    "--decode-8bit",
    action="store_true",
    help="round sources deeper than 8 bits to 8-bit RGB before the model "
    "(training-time decoding) instead of keeping their precision",
  )
  p.add_argument("--width", type=int, help="raw .yuv frame width (if not in the file name)")
  p.add_argument("--height", type=int, help="raw .yuv frame height")
  p.add_argument("--bit-depth", type=int, help="raw .yuv bit depth (default 8)")
  p.add_argument("--fps", type=float, help="raw .yuv frame rate (needed for --segments)")
  p.add_argument("--recursive", action="store_true", help="also take videos in subdirectories")
  p.add_argument(
    "--skip-bad",
    action="store_true",
    help="skip videos that fail to decode and list them with the reason in "
    "<out>.skipped.jsonl (default: stop with an error)",
  )
  p.add_argument("--threads", type=int, default=0, help="decoder threads (0 = automatic)")
  p.add_argument(
    "--maps",
    metavar="DIR",
    help="write spatial quality maps to DIR: PNG overlays on sampled frames and the raw maps "
    "(.npz) per video and model (docs/quality_maps.md)",
  )
  p.add_argument(
    "--html",
    metavar="DIR",
    help="write DIR/index.html, a self-contained page of this run's videos: scores, intervals, "
    "mos, quality-over-time curves and maps",
  )
  cli_errors.add_verbose_argument(p)
  return p


def _error(msg: str, code: int) -> int:
  print(f"error: {msg}", file=sys.stderr)
  return code


def main(argv: Sequence[str] | None = None) -> int:
  """The command line, under the project's error convention (internvqa_jax.cli_errors)."""
  return cli_errors.run(_main, argv)


def _main(argv: Sequence[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.segment_stride is not None and args.segments is None:
    parser.error("--segment-stride needs --segments")
  if args.pool != "mean" and args.segments is None:
    parser.error("--pool needs --segments (it pools segment scores)")
  try:
    files = expand_paths(args.videos, args.recursive)
  except (FileNotFoundError, ValueError) as e:
    return _error(str(e), 2)
  outs = check_outputs(args.out, files, args.model)  # cli_errors: exit 1 or 2, one line
  for flag, d in (("--maps", args.maps), ("--html", args.html)):
    if d is not None and os.path.exists(d) and not os.path.isdir(d):
      return _error(f"{flag} {d}: exists and is not a directory", 2)
  names = _unique_names(args.model)
  try:
    recipes = [view_recipe(d) for d in args.model]
  except (FileNotFoundError, ValueError) as e:
    return _error(str(e), 2)
  # Recipe-specific flags go to the models whose views they describe (models of both kinds can
  # be scored in one run); a flag no model uses is an error.
  chosen = set_options(
    crops=args.crops,
    resize_short=args.resize_short,
    fragments_variant=args.fragments_variant,
    fragment=dict(args.fragment) or None,
    test_sampling=args.test_sampling,
  )
  takes = {recipe: set(models.get(recipe).TEST_OPTIONS) for recipe in recipes}
  unused = sorted(set(chosen) - set().union(*takes.values()))
  if unused:
    return _error(
      f"{', '.join('--' + k.replace('_', '-') for k in unused)} apply to none of the models given "
      f"(their families: {sorted(takes)})",
      2,
    )
  scorers = []
  for name, model_dir, recipe in zip(names, args.model, recipes):
    t0 = time.perf_counter()
    try:
      s = load_scorer(
        model_dir,
        name=name,
        clips=args.clips,
        batch_size=args.batch_size,
        maps=args.maps is not None,
        **{_LOAD_KWARG.get(k, k): v for k, v in chosen.items() if k in takes[recipe]},
      )
    except (FileNotFoundError, ValueError, TypeError) as e:
      return _error(str(e), 2)
    print(
      f"model {name}: {s.protocol}: {s.num_views} views; batch {s.batch_size}; "
      f"loaded and compiled in {time.perf_counter() - t0:.1f} s",
      file=sys.stderr,
    )
    scorers.append(s)

  opts = ScoringOptions(
    width=args.width,
    height=args.height,
    bit_depth=args.bit_depth,
    fps=args.fps,
    threads=args.threads,
    seed=args.seed,
    bootstrap=args.bootstrap,
    segments=args.segments,
    segment_stride=args.segment_stride,
    pool=args.pool,
    keep_bit_depth=not args.decode_8bit,
  )
  run = {
    "version": internvqa_jax.__version__,
    "models": [
      {
        "name": s.name,
        "dir": os.path.abspath(s.model_dir),
        "protocol": s.view,
        "num_views": s.num_views,
        "calibration": None if s.calibration is None else s.calibration["params"],
      }
      for s in scorers
    ],
    **opts.run_settings(),
  }
  scales = {s.name: calibration_lib.describe_scale(s.calibration) for s in scorers}
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  try:
    table = score_table.Table(args.out, score_table.COLUMNS, run, scales, args.resume)
    seg_table = None
    if args.segments is not None:
      seg_table = score_table.Table(
        outs["segments"], score_table.SEGMENT_COLUMNS, run, scales, args.resume
      )
      seg_table.keep_only(table.done)  # Drops windows of a video a kill cut short.
      os.makedirs(outs["curves"], exist_ok=True)
  except (score_table.ResumeError, OSError) as e:
    return _error(str(e), 2)
  if table.cut_partial:
    print(f"{args.out}: dropped a partial last line (interrupted write)", file=sys.stderr)
  todo = [f for f in files if not table.is_done(f, names)]
  if len(todo) < len(files):
    print(f"resuming: {len(files) - len(todo)} of {len(files)} videos already in {args.out}")
  skip_log = score_table.SkipLog(outs["skipped"], args.resume) if args.skip_bad else None

  report_rows = []  # Rows of this run for --html (report_rows format).

  def on_video(result):
    if seg_table is not None:
      seg_table.write(result["segments"])
      curves = {}
      for r in result["segments"]:
        curves.setdefault(r["model"], []).append((r["start"], r["end"], r["score"], r["score_std"]))
      segments_lib.plot_curve(curve_path(outs["curves"], result["path"]), result["path"], curves)
    maps = write_video_maps(args.maps, scorers, result, opts) if args.maps else {}
    table.write(result["rows"])
    if args.html:
      for row in result["rows"]:
        extra = {"maps": maps.get(row["model"], [])}
        if seg_table is not None:
          extra["curve_png"] = curve_path(outs["curves"], result["path"])
        report_rows.append({**row, **extra})
    print(format_row(result, names, width), flush=True)

  width = max(len("video"), *(len(f) for f in todo)) if todo else len("video")
  print(f"{'video':<{width}}  " + "  ".join(f"{n[-30:]:>30}" for n in names) + f"  {'seconds':>8}")
  t0 = time.perf_counter()
  try:
    results, skipped = score_with(
      scorers,
      todo,
      options=opts,
      skip_bad=args.skip_bad,
      on_video=on_video,
      on_skip=None if skip_log is None else skip_log.write,
    )
  except ScoreError as e:
    return _error(str(e), 1)
  finally:
    table.close()
    if seg_table is not None:
      seg_table.close()
    if skip_log is not None:
      skip_log.close()
  elapsed = time.perf_counter() - t0
  print(
    f"wrote {len(results)} video(s) to {args.out} in {elapsed:.1f} s"
    + (f" ({len(results) / elapsed:.3f} videos/s)" if results and elapsed > 0 else ""),
    file=sys.stderr,
  )
  if skip_log is not None:
    print(
      f"skipped {len(skipped)} video(s) that failed; listed with reasons in {outs['skipped']}",
      file=sys.stderr,
    )
  if args.html and report_rows:
    notes = [f"model {s.name}: {s.protocol}; {scales[s.name]}" for s in scorers]
    notes.append(
      f"scores: {os.path.abspath(args.out)}; seed {opts.seed}, bootstrap {opts.bootstrap}"
    )
    page = html_report.write_html(
      args.html, report_rows, title=f"Video quality: {os.path.basename(args.out)}", notes=notes
    )
    print(f"wrote the report {page}", file=sys.stderr)
  if todo and not results:
    return _error("no video could be scored", 1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
