"""Regenerates the pictures of docs/quality_maps.md (needs chromium for the page screenshot).

  PYTHONPATH=. python docs/images/make_quality_map_images.py

The map comes from the test suite's constructed FAST-VQA model, whose local map is an
affine function of each token's mean brightness: the picture shows where values are
placed, not a trained model's judgement. Videos are still photographs shipped with
scikit-image, filmed as 24 fps clips with a slow pan.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import jax
import numpy as np
import skimage.data

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
jax.config.update("jax_default_matmul_precision", "highest")

from internvqa_jax import html_report, quality_maps  # noqa: E402
from internvqa_jax.data import fragments  # noqa: E402
from tests.test_quality_maps import brightness_model  # noqa: E402

FPS = 24.0
OUT = os.path.dirname(os.path.abspath(__file__))


def panning_video(image: np.ndarray, n: int, width: int) -> np.ndarray:
  """n frames of `width` columns sliding across the photograph."""
  shift = np.linspace(0, image.shape[1] - width, n).astype(int)
  return np.stack([image[:, s : s + width] for s in shift])


def main():
  model, params = brightness_model()
  model = model.clone(base_x_size=(8, 224, 224))
  sampler = fragments.FragmentSampler(
    "fast_vqa_b", clip_len=8, aligned=8, num_clips_test=4, test_sampling="center"
  )
  maker = quality_maps.MapMaker(model, params, sampler, name="fastvqa-brightness")
  videos = {
    "coffee.mp4": panning_video(skimage.data.coffee(), 96, 560),
    "astronaut.mp4": panning_video(skimage.data.astronaut(), 96, 480),
  }
  work = tempfile.mkdtemp()
  rows = []
  for name, video in videos.items():
    read = lambda i, v=video: v[np.asarray(i)]
    paths = quality_maps.write_maps(
      os.path.join(work, "maps"), maker, name, read, len(video), max_frames=2, fps=FPS
    )
    views, placement = maker.views(read, len(video))
    out = maker.local_maps(views)
    # One "segment" per test clip, over the frames it spans (illustration only).
    segs = [
      {"start": float(idx.min()) / FPS, "end": float(idx.max() + 1) / FPS, "score": float(s)}
      for idx, s in zip(placement.frame_indices, out["score"])
    ]
    scores = out["score"].astype(np.float64)
    rows.append(
      {
        "path": name,
        "model": maker.name,
        "score": float(scores.mean()),
        "score_std": float(scores.std(ddof=1)),
        "score_ci_low": float(scores.min()),
        "score_ci_high": float(scores.max()),
        "num_views": len(scores),
        "segments": segs,
        "maps": paths,
      }
    )
  shutil.copy(rows[0]["maps"][0], os.path.join(OUT, "quality_map_fastvqa.png"))
  page = html_report.write_html(
    os.path.join(work, "report"),
    rows,
    title="Quality report (illustration: brightness-affine model)",
    notes=["Interval here: min-max of the view scores (illustration only)."],
  )
  exe = shutil.which("chromium")
  if exe is None:
    print(f"chromium not found; page left at {page}")
    return
  subprocess.run(
    [
      exe,
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      f"--user-data-dir={os.path.join(work, 'profile')}",
      f"--screenshot={os.path.join(OUT, 'html_report.png')}",
      "--window-size=1100,1500",
      "file://" + page,
    ],
    check=True,
    capture_output=True,
    timeout=120,
  )
  print("wrote", os.path.join(OUT, "quality_map_fastvqa.png"), os.path.join(OUT, "html_report.png"))


if __name__ == "__main__":
  main()
