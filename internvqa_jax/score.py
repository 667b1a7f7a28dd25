"""Scores video files with one or more exported/converted models.

  python -m internvqa_jax.score --model WORKDIR/export/student clips/ a.mp4 \
      --out scores.csv

Each model directory (internvqa_jax.models.load format: meta.json + params/)
carries everything needed to rebuild its test protocol:

  * InternVideo2: `InternVideo2Recipe` with num_frames / crop = the model's
    num_frames / img_size, S temporal clips x C spatial crops (default 4 x 3,
    the InternVideo2 protocol) after resizing the short side to img_size
    (`resize_short=None` crops at native resolution instead).
  * FAST-VQA: `FragmentSampler` of the sampling variant named in meta.json
    (converted checkpoints store it), else guessed from the model's
    base_x_size (T, H, W): (32, 224, 224) -> fast_vqa_b, (16, 128, 128) ->
    fast_vqa_m, (16, 224, 224) -> faster_vqa_mt, (32, 160, 160) ->
    faster_vqa_ms. FasterVQA shares fast_vqa_b's input size, so pass
    fragments_variant='faster_vqa' for it. Test sampling is 'center'
    (deterministic centred temporal and spatial offsets) by default; the
    reference evaluation draws them at random ('random', seeded per video).

Every view is scored by a jitted `module.apply` in fixed-size batches (the
last one padded, so each model compiles once) and the view scores of a video
are averaged, exactly as in training-time evaluation. Frames are decoded once
per video and shared by all models.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from internvqa_jax import cli_errors

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

# FAST-VQA sampling variants tried, in order, when meta.json names none.
_GUESS_ORDER = ("fast_vqa_b", "fast_vqa_m", "faster_vqa_mt", "faster_vqa_ms")
_USE_MODEL = "model"  # resize_short default: the model's img_size.


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


class _FrameCache:
  """read_frames(indices) for one video; each frame is decoded once."""

  def __init__(self, path: str, geometry: Mapping[str, Any], threads: int):
    from internvqa_jax.data import decode

    self._decode = decode
    self.path = path
    raw = path.lower().endswith(".yuv")
    # The geometry describes raw YUV only; decoder threads apply to compressed files only.
    geometry = {k: v for k, v in geometry.items() if v is not None} if raw else {}
    self.num_frames = decode.probe(path, **geometry).num_frames
    self._read_kw = geometry if raw else {"threads": threads}
    self._frames: dict[int, np.ndarray] = {}

  def __call__(self, indices) -> np.ndarray:
    idx = np.asarray(indices, np.int64).reshape(-1)
    missing = np.unique([i for i in idx.tolist() if i not in self._frames]).astype(np.int64)
    if missing.size:
      frames = self._decode.read_frames(self.path, missing, **self._read_kw)
      for i, f in zip(missing.tolist(), frames):
        self._frames[i] = f
    return np.stack([self._frames[i] for i in idx.tolist()])


# ------------------------------------------------------------------ models ---


@dataclasses.dataclass
class ModelScorer:
  """One loaded model with its test protocol and jitted predict function."""

  name: str
  model_dir: str
  family: str
  protocol: str  # Human-readable description of the test views.
  num_views: int
  batch_size: int
  make_views: Callable[[Callable, int, np.random.Generator], np.ndarray]
  predict: Callable[[np.ndarray], np.ndarray]
  view_shape: tuple[int, ...]

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


def guess_fragments_variant(base_x_size: Sequence[int]) -> str:
  """FAST-VQA sampling variant whose clip (T, S, S) equals base_x_size."""
  from internvqa_jax.data import fragments

  size = tuple(int(x) for x in base_x_size)
  for v in _GUESS_ORDER:
    c = fragments.VARIANT_SAMPLING[v]
    if (c["clip_len"], c["fragments"] * c["fsize"], c["fragments"] * c["fsize"]) == size:
      return v
  known = {
    v: (
      fragments.VARIANT_SAMPLING[v]["clip_len"],
      fragments.VARIANT_SAMPLING[v]["fragments"] * fragments.VARIANT_SAMPLING[v]["fsize"],
    )
    for v in _GUESS_ORDER
  }
  raise ValueError(
    f"no FAST-VQA sampling variant has input size {size} (known (T, S): {known}); "
    "pass --fragments-variant and --fragment KEY=VALUE overrides"
  )


def _make_predict(module, params):
  import jax

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
  test_sampling: str = "center",
  warmup: bool = True,
) -> ModelScorer:
  """Loads `model_dir` and builds its test protocol (see the module docstring).

  clips/crops: InternVideo2 S x C (default 4 x 3); for FAST-VQA `clips` sets
    the number of test clips (crops do not apply).
  resize_short: InternVideo2 short side before cropping; 'model' (default) =
    img_size, None = native-resolution crops.
  batch_size: views per jitted call (default: all views of one video).
  fragments_variant / fragment_overrides / test_sampling: FAST-VQA sampling
    (`fragments.FragmentSampler(variant, **overrides)`).
  """
  from internvqa_jax import models
  from internvqa_jax.models import checkpoint

  model_dir = os.path.normpath(os.fspath(model_dir))
  meta = checkpoint.read_meta(model_dir)
  module, params = models.load(model_dir)
  family = meta["family"]
  # Models exported by the trainer record the eval view they were validated with; it is the
  # default protocol here (explicit arguments still win).
  view = dict(meta.get("eval_view") or {})
  name = name or os.path.basename(model_dir)
  if family == "internvideo2":
    from internvqa_jax.data.recipes import InternVideo2Recipe

    if fragments_variant is not None or fragment_overrides:
      raise ValueError(f"{model_dir}: fragment options apply to FAST-VQA models, not InternVideo2")
    size = int(module.img_size)
    if resize_short == _USE_MODEL:
      rs = view.get("resize_short", size) if view.get("recipe") == "internvideo2" else size
    else:
      rs = resize_short
    recipe = InternVideo2Recipe(
      num_frames=int(module.num_frames),
      crop_size=size,
      resize_short=None if rs is None else int(rs),
      flip=False,
      test_clips=int(clips or view.get("test_clips", 4)),
      test_crops=int(crops or view.get("test_crops", 3)),
    )
    num_views = recipe.num_eval_examples
    view_shape = (recipe.num_frames, size, size, 3)
    make_views = lambda read, n, rng: recipe.eval(read, n)
    protocol = (
      f"InternVideo2 {recipe.test_clips} clips x {recipe.test_crops} crops of "
      f"{recipe.num_frames}x{size}x{size}, resize_short="
      f"{'native' if recipe.resize_short is None else recipe.resize_short}"
    )
  elif family == "fastvqa":
    from internvqa_jax.data import fragments

    if crops is not None:
      raise ValueError(f"{model_dir}: FAST-VQA has no spatial test crops (--crops); use --clips")
    if resize_short != _USE_MODEL:
      raise ValueError(
        f"{model_dir}: --resize-short applies to InternVideo2 models, "
        "FAST-VQA samples fragments at native resolution"
      )
    variant = fragments_variant
    if variant is None and view.get("recipe") == "fastvqa":
      variant = view.get("variant")
      fragment_overrides = {**(view.get("overrides") or {}), **(fragment_overrides or {})}
    if variant is None:
      stored = meta.get("variant")
      variant = (
        stored
        if stored in fragments.VARIANT_SAMPLING
        else guess_fragments_variant(module.base_x_size)
      )
    overrides = dict(fragment_overrides or {})
    overrides.setdefault("test_sampling", test_sampling)
    if clips is not None:
      overrides["num_clips_test"] = int(clips)
    sampler = fragments.FragmentSampler(variant, **overrides)
    num_views = sampler.num_clips(False)
    view_shape = (sampler.clip_len, sampler.size, sampler.size, 3)
    make_views = lambda read, n, rng: sampler(read, n, rng, train=False)
    extra = {k: v for k, v in overrides.items() if k != "test_sampling"}
    protocol = (
      f"FAST-VQA fragments {variant}{' ' + str(extra) if extra else ''}: "
      f"{num_views} clips of {sampler.clip_len}x{sampler.size}x{sampler.size}, "
      f"test_sampling={sampler.config.test_sampling}"
    )
  else:
    raise ValueError(f"{model_dir}: unknown model family {family!r}")
  bs = num_views if batch_size is None else int(batch_size)
  if bs < 1:
    raise ValueError(f"batch_size must be >= 1, got {bs}")
  scorer = ModelScorer(
    name=name,
    model_dir=model_dir,
    family=family,
    protocol=protocol,
    num_views=num_views,
    batch_size=bs,
    make_views=make_views,
    predict=_make_predict(module, params),
    view_shape=view_shape,
  )
  if warmup:  # Compile now, so per-video timings are steady-state.
    scorer.predict(np.zeros((bs,) + view_shape, np.float32))
  return scorer


def _family_of(model_dir: str) -> str:
  from internvqa_jax.models import checkpoint

  return checkpoint.read_meta(model_dir)["family"]


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


def score_with(
  scorers: Sequence[ModelScorer],
  paths: Sequence[str],
  *,
  width: int | None = None,
  height: int | None = None,
  bit_depth: int | None = None,
  fps: float | None = None,
  skip_bad: bool = False,
  seed: int = 0,
  threads: int = 0,
  on_video: Callable[[dict], None] | None = None,
) -> tuple[list[dict], list[tuple[str, str]]]:
  """Scores `paths` with every scorer; returns (rows, skipped).

  rows: {'path', 'scores': {name: mean score}, 'num_views': {name: V},
  'seconds'} per scored video, in input order. skipped: (path, reason) of
  videos that failed to decode (only with skip_bad; otherwise ScoreError).
  Random test sampling (FAST-VQA test_sampling='random') draws from
  np.random.default_rng(seed) per video, so a score does not depend on the
  other videos in the run.
  """
  geometry = dict(width=width, height=height, bit_depth=bit_depth, fps=fps)
  rows, skipped = [], []
  for path in paths:
    t0 = time.perf_counter()
    try:
      reader = _FrameCache(path, geometry, threads)
      views = {
        s.name: np.asarray(
          s.make_views(reader, reader.num_frames, np.random.default_rng(seed)), np.float32
        )
        for s in scorers
      }
    except Exception as e:  # pylint: disable=broad-except
      reason = f"{type(e).__name__}: {e}".replace("\n", " ")
      if not skip_bad:
        raise ScoreError(f"cannot score {path}: {reason}") from e
      skipped.append((path, reason))
      continue
    del reader  # Frees the decoded frames before the model runs.
    row = {"path": path, "scores": {}, "num_views": {}}
    for s in scorers:
      v = views.pop(s.name)
      per_view = s.score_views(v)
      if not np.all(np.isfinite(per_view)):
        raise ScoreError(f"{s.name} gave non-finite scores for {path}: {per_view.tolist()}")
      row["scores"][s.name] = float(np.mean(per_view.astype(np.float64)))
      row["num_views"][s.name] = len(per_view)
    row["seconds"] = time.perf_counter() - t0
    rows.append(row)
    if on_video is not None:
      on_video(row)
  return rows, skipped


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
  **opts: Any,
) -> list[dict]:
  """Scores videos (files or directories) with one model.

  Returns [{'path', 'score', 'num_views', 'seconds'}] in input order
  (directories expanded, sorted). `opts`: the keyword arguments of
  `load_scorer` (clips, crops, resize_short, batch_size, fragments_variant,
  fragment_overrides, test_sampling) and of `score_with` (width, height,
  bit_depth, fps, skip_bad, seed, threads). With skip_bad=True, videos that
  fail to decode are left out and appended as (path, reason) to `skipped`.
  """
  load_opts = {k: opts.pop(k) for k in _LOAD_KEYS if k in opts}
  scorer = load_scorer(model_dir, **load_opts)
  files = expand_paths([paths] if isinstance(paths, (str, os.PathLike)) else paths, recursive)
  rows, bad = score_with([scorer], files, **opts)
  if skipped is not None:
    skipped.extend(bad)
  return [
    {
      "path": r["path"],
      "score": r["scores"][scorer.name],
      "num_views": r["num_views"][scorer.name],
      "seconds": r["seconds"],
    }
    for r in rows
  ]


# --------------------------------------------------------------------- I/O ---


def write_csv(path: str, rows: Sequence[dict], names: Sequence[str]) -> None:
  """Columns: path, score_<model>..., num_views_<model>..., seconds."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(
      ["path"] + [f"score_{n}" for n in names] + [f"num_views_{n}" for n in names] + ["seconds"]
    )
    for r in rows:
      w.writerow(
        [r["path"]]
        + [repr(r["scores"][n]) for n in names]
        + [r["num_views"][n] for n in names]
        + [f"{r['seconds']:.3f}"]
      )


def write_skipped(path: str, skipped: Sequence[tuple[str, str]]) -> None:
  with open(path, "w") as f:
    for p, reason in skipped:
      f.write(f"{p}\t{reason}\n")


def format_row(row: Mapping[str, Any], names: Sequence[str], width: int) -> str:
  scores = "  ".join(f"{row['scores'][n]:>12.5f}" for n in names)
  return f"{row['path']:<{width}}  {scores}  {row['seconds']:>8.2f}"


def _parse_resize(value: str):
  if value.lower() == "none":
    return None
  if value.lower() == _USE_MODEL:
    return _USE_MODEL
  n = int(value)
  if n < 1:
    raise argparse.ArgumentTypeError(f"--resize-short must be positive or 'none', got {value}")
  return n


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
    "--clips",
    type=int,
    help="test clips per video (InternVideo2 default 4; FAST-VQA: the variant's num_clips_test)",
  )
  p.add_argument("--crops", type=int, help="InternVideo2 spatial crops per clip (default 3)")
  p.add_argument(
    "--resize-short",
    type=_parse_resize,
    default=_USE_MODEL,
    metavar="N|none",
    help="InternVideo2 short side before cropping (default: the model's img_size; "
    "'none': native-resolution crops)",
  )
  p.add_argument(
    "--batch-size", type=int, help="views per model call (default: all views of one video)"
  )
  p.add_argument(
    "--fragments-variant",
    help="FAST-VQA sampling variant (default: from meta.json "
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
    default="center",
    choices=("center", "random", "demo"),
    help="FAST-VQA test sampling (default: center, deterministic)",
  )
  p.add_argument("--seed", type=int, default=0, help="seed of random test sampling")
  p.add_argument("--width", type=int, help="raw .yuv frame width (if not in the file name)")
  p.add_argument("--height", type=int, help="raw .yuv frame height")
  p.add_argument("--bit-depth", type=int, help="raw .yuv bit depth (default 8)")
  p.add_argument("--recursive", action="store_true", help="also take videos in subdirectories")
  p.add_argument(
    "--skip-bad",
    action="store_true",
    help="skip videos that fail to decode and "
    "list them in <out>.skipped.txt (default: stop with an error)",
  )
  p.add_argument("--threads", type=int, default=0, help="decoder threads (0 = automatic)")
  return p


def main(argv: Sequence[str] | None = None) -> int:
  """The command line, under the project's error convention (internvqa_jax.cli_errors)."""
  return cli_errors.run(_main, argv)


def _main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    files = expand_paths(args.videos, args.recursive)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  names = _unique_names(args.model)
  try:
    families = [_family_of(d) for d in args.model]
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  # Family-specific flags go to the models they describe (several models of
  # different families can be scored in one run); a flag no model uses is an error.
  iv2_opts = dict(crops=args.crops, resize_short=args.resize_short)
  fvqa_opts = dict(
    fragments_variant=args.fragments_variant,
    fragment_overrides=dict(args.fragment) or None,
    test_sampling=args.test_sampling,
  )
  if "internvideo2" not in families and (args.crops is not None or args.resize_short != _USE_MODEL):
    print("error: --crops/--resize-short apply to InternVideo2 models only", file=sys.stderr)
    return 2
  if "fastvqa" not in families and (
    args.fragments_variant or args.fragment or args.test_sampling != "center"
  ):
    print(
      "error: --fragments-variant/--fragment/--test-sampling apply to FAST-VQA models only",
      file=sys.stderr,
    )
    return 2
  scorers = []
  for name, model_dir, family in zip(names, args.model, families):
    t0 = time.perf_counter()
    try:
      s = load_scorer(
        model_dir,
        name=name,
        clips=args.clips,
        batch_size=args.batch_size,
        **(iv2_opts if family == "internvideo2" else fvqa_opts),
      )
    except (FileNotFoundError, ValueError, TypeError) as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
    print(
      f"model {name}: {s.protocol}; batch {s.batch_size}; loaded and compiled in "
      f"{time.perf_counter() - t0:.1f} s",
      file=sys.stderr,
    )
    scorers.append(s)

  width = max(len("video"), *(len(f) for f in files))
  print(f"{'video':<{width}}  " + "  ".join(f"{n[-12:]:>12}" for n in names) + f"  {'seconds':>8}")
  try:
    rows, skipped = score_with(
      scorers,
      files,
      width=args.width,
      height=args.height,
      bit_depth=args.bit_depth,
      skip_bad=args.skip_bad,
      seed=args.seed,
      threads=args.threads,
      on_video=lambda r: print(format_row(r, names, width), flush=True),
    )
  except ScoreError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  write_csv(args.out, rows, names)
  print(f"wrote {len(rows)} scores to {args.out}", file=sys.stderr)
  if args.skip_bad:  # Always written (empty if none), so no stale list survives.
    bad_path = f"{args.out}.skipped.txt"
    write_skipped(bad_path, skipped)
    print(
      f"skipped {len(skipped)} video(s) that failed to decode; listed with reasons in {bad_path}",
      file=sys.stderr,
    )
  if not rows:
    print("error: no video could be scored", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
