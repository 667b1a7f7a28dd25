"""Batch-scoring throughput: `internvqa_jax.score` against the reference FAST-VQA inference path.

  python benchmarks/bench_score.py                     # 2 videos, 1080p, 10 s, FAST-VQA-B
  python benchmarks/bench_score.py --videos 4 --out bench_score.json

Both paths score the same real-size videos (H.264 1080p at 25 fps, encoded here from the numbered
test pattern of tests/videos.py) with the same FAST-VQA-B weights (random, from the PyTorch
reference model in tests/torch_ref, converted), the same sampling (fast_vqa_b fragments, 4 test
clips, deterministic 'center' offsets), the same decoder (internvqa_jax.data.decode) and the same
CPU threads:

  * internvqa_jax.score: `score.score_with`, which decodes the next video in a background thread
    while the jitted Flax model scores the current one;
  * reference path (FAST-VQA's `vqa.py` logic): per video, decode the sampled frames, build the
    fragments, then run the PyTorch model on the clips under no_grad; one video after the other,
    nothing overlapped.

Both run the model on `--batch` clips per call (default 1: a batch of 4 FAST-VQA-B clips needs
several GB per framework, more than a shared machine may have free).

Compilation and model loading are excluded from both. Reports videos/s for each, their ratio,
the decode+sampling time per video on its own, and the largest difference between the two
paths' video scores (a check that they computed the same thing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # For tests.torch_ref and tests/videos.py.
sys.path.insert(0, os.path.join(ROOT, "tests"))


def make_videos(root: str, n: int, seconds: float, fps: int, width: int, height: int) -> list[str]:
  import videos  # tests/videos.py

  paths = []
  for i in range(n):
    p = os.path.join(root, f"bench{i}_{width}x{height}.mp4")
    if not os.path.exists(p):
      videos.make_video(
        p,
        num_frames=int(seconds * fps),
        width=width,
        height=height,
        fps=fps,
        gop=2 * fps,
        crf=23 + 4 * i,
        preset="ultrafast",
      )
    paths.append(p)
  return paths


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--videos", type=int, default=2)
  ap.add_argument("--seconds", type=float, default=10.0)
  ap.add_argument("--fps", type=int, default=25)
  ap.add_argument("--size", type=int, nargs=2, default=(1920, 1080), metavar=("W", "H"))
  ap.add_argument("--batch", type=int, default=1, help="clips per model call (both paths)")
  ap.add_argument("--workdir", help="keep the videos and model here (default: a temp dir)")
  ap.add_argument("--out", help="also write the results as JSON here")
  a = ap.parse_args(argv)
  os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

  import jax
  import torch

  from converters import fastvqa as conv
  from internvqa_jax import score
  from internvqa_jax.data import decode, fragments
  from internvqa_jax.models import checkpoint, fastvqa
  from tests.torch_ref import fastvqa_ref as ref

  threads = len(os.sched_getaffinity(0))
  torch.set_num_threads(threads)
  root = a.workdir or tempfile.mkdtemp(prefix="bench_score_")
  os.makedirs(root, exist_ok=True)
  t = time.perf_counter()
  paths = make_videos(root, a.videos, a.seconds, a.fps, *a.size)
  print(f"{len(paths)} videos ready in {time.perf_counter() - t:.0f} s ({root})", flush=True)

  model = fastvqa.make("fast_vqa_b")
  tm = ref.randomize_(ref.FastVQARef.from_model_kwargs(fastvqa.model_kwargs(model)).eval(), seed=0)
  params = conv.torch_state_dict_to_params(
    {k: v.numpy() for k, v in tm.state_dict().items()}, fastvqa.model_kwargs(model)
  )
  model_dir = os.path.join(root, "fast_vqa_b")
  checkpoint.save_params(
    model_dir,
    params,
    {"family": "fastvqa", "model_kwargs": fastvqa.model_kwargs(model), "variant": "fast_vqa_b"},
    overwrite=True,
  )
  scorer = score.load_scorer(model_dir, batch_size=a.batch)  # compiles (excluded from timing)
  sampler = fragments.FragmentSampler("fast_vqa_b", test_sampling="center")

  def reference(path: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    n = decode.probe(path).num_frames
    views = sampler(lambda idx: decode.read_frames(path, idx), n, None, train=False)
    t1 = time.perf_counter()
    x = torch.from_numpy(np.ascontiguousarray(views.transpose(0, 4, 1, 2, 3)))
    clip_scores = []
    with torch.no_grad():
      for start in range(0, x.shape[0], a.batch):
        qmap = tm(x[start : start + a.batch])[0]
        clip_scores.append(qmap.reshape(qmap.shape[0], -1).mean(1))  # clip score: map mean
    return float(torch.cat(clip_scores).double().mean()), t1 - t0

  # Warm the torch path once (allocator, thread pool) on the first video.
  reference(paths[0])

  t = time.perf_counter()
  results, _ = score.score_with([scorer], paths, bootstrap=0)
  ours_s = time.perf_counter() - t
  ours = [r["scores"][scorer.name] for r in results]

  t = time.perf_counter()
  ref_out = [reference(p) for p in paths]
  ref_s = time.perf_counter() - t
  decode_s = [d for _, d in ref_out]
  diff = float(np.max(np.abs(np.array(ours) - np.array([s for s, _ in ref_out]))))

  load = os.getloadavg()[0]
  print(
    f"\nScoring {len(paths)} videos ({a.size[0]}x{a.size[1]}, {a.seconds:g} s at {a.fps} fps, "
    f"H.264), FAST-VQA-B, 4 clips of 32x224x224 each, {a.batch} per call; {threads} CPU threads "
    f"({platform.processor() or platform.machine()}), load average {load:.1f}; "
    f"jax {jax.__version__}, torch {torch.__version__}\n"
  )
  print("| path | seconds | videos/s |")
  print("|---|---|---|")
  print(
    f"| internvqa_jax.score (Flax, decode overlapped) | {ours_s:.1f} | {len(paths) / ours_s:.4f} |"
  )
  print(f"| reference path (PyTorch, sequential) | {ref_s:.1f} | {len(paths) / ref_s:.4f} |")
  print(
    f"\nspeed-up {ref_s / ours_s:.2f}x; decode + fragment sampling alone "
    f"{np.mean(decode_s):.1f} s/video; max |score difference| {diff:.2e}"
  )
  if a.out:
    with open(a.out, "w") as f:
      json.dump(
        {
          "videos": len(paths),
          "size": list(a.size),
          "seconds": a.seconds,
          "fps": a.fps,
          "threads": threads,
          "batch": a.batch,
          "load_average": load,
          "ours_s": ours_s,
          "reference_s": ref_s,
          "decode_s_per_video": decode_s,
          "max_abs_score_diff": diff,
          "jax": jax.__version__,
          "torch": torch.__version__,
        },
        f,
        indent=2,
      )
  return 0


if __name__ == "__main__":
  sys.exit(main())
