"""Clip-reading throughput and frame accuracy: our PyAV reader vs decord.

Workload (InternVideo2-style training sampling): a clip is T frames, one
random frame in each of T equal segments of the video, then one random
224x224 crop shared by the clip. Clips are read by `--workers` processes.
The decord reader is what InternVQA's training used:
`decord.VideoReader(path, num_threads=1).get_batch(indices)`, a fresh reader
per clip. Ours is `internvqa_jax.data.read_frames` (its per-process index
cache is warm after the first clip of a file; `ours-cold` clears it for
every clip).

Test videos are generated in a temporary directory with PyAV: a natural
image (scikit-image samples) panning 2 px/frame at 1080p with every frame's
number drawn in as a binary code, so every returned frame is checked for
exactness (`frames exact` = fraction of requested frames that are the right
frame; wrong = a different frame was returned silently).

  python benchmarks/bench_decode.py --out /tmp/bench_decode.json
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import multiprocessing as mp
import os
import re
import sys
import tempfile
import time

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, "..", "tests"))

import videos  # noqa: E402  tests/videos.py: encoder + frame-number codes

# --- test videos -------------------------------------------------------------


def _texture(height: int, width: int) -> np.ndarray:
  """A large natural-image canvas (tiled scikit-image samples)."""
  from skimage import data, transform

  tiles = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
  tile_h = height // 2 + 64
  row = []
  for img in tiles:
    scale = tile_h / img.shape[0]
    img = transform.resize(
      img, (tile_h, int(img.shape[1] * scale)), preserve_range=True, anti_aliasing=True
    )
    row.append(img.astype(np.uint8))
  strip = np.concatenate(row, axis=1)
  canvas = np.concatenate([strip, strip[::-1, ::-1]], axis=0)
  reps = -(-(width + 1200) // canvas.shape[1])
  return np.ascontiguousarray(np.tile(canvas, (1, reps, 1)))


def _frames(num_frames: int, width: int, height: int):
  canvas = _texture(height, width)
  max_y = canvas.shape[0] - height
  for i in range(num_frames):
    x, y = (2 * i) % (canvas.shape[1] - width), (i // 2) % max_y
    frame = np.array(canvas[y : y + height, x : x + width])
    yield videos.draw_frame_number(frame, i)


def make_files(
  workdir: str, seconds: float, fps: int, gop: int, width: int, height: int
) -> dict[str, dict]:
  n = int(seconds * fps)
  tag = f"{height}p"
  specs = {
    f"h264_{tag}.mp4": dict(codec="libx264", open_gop=False, preset="veryfast", crf=23),
    f"hevc_open_gop_{tag}.mp4": dict(codec="libx265", open_gop=True, preset="ultrafast", crf=28),
    # SVT-AV1 presets >= 10 damage the frame-number cells at 1080p.
    f"av1_{tag}.mp4": dict(codec="libsvtav1", open_gop=False, preset="8", crf=30),
  }
  files = {}
  for name, spec in specs.items():
    path = os.path.join(workdir, name)
    opts = videos.codec_options(
      spec["codec"],
      gop=gop,
      bframes=3,
      open_gop=spec["open_gop"],
      crf=spec["crf"],
      preset=spec["preset"],
    )
    bframes = ", 3 B-frames" if spec["codec"] in ("libx264", "libx265") else ""
    how = (
      f"{spec['codec']} {width}x{height} {n} frames @ {fps} fps, "
      f"GOP {gop}{bframes}, {'open' if spec['open_gop'] else 'closed'}"
      f" GOP, preset {spec['preset']}, crf {spec['crf']}"
    )
    sidecar = path + ".json"
    if os.path.exists(sidecar) and os.path.exists(path):
      with open(sidecar) as f:
        cached = json.load(f)
      if cached["how"] == how:  # --workdir reuse: same recipe, skip encoding
        files[name] = dict(cached, path=path)
        continue
    t0 = time.perf_counter()
    videos.encode_frames(
      path,
      _frames(n, width, height),
      codec=spec["codec"],
      width=width,
      height=height,
      fps=fps,
      options=opts,
      gop=gop,
    )
    encode_s = round(time.perf_counter() - t0, 1)
    ref = _reference_codes(path)
    files[name] = dict(
      path=path,
      num_frames=n,
      bytes=os.path.getsize(path),
      ref_codes=ref,
      readable=sum(c == i for i, c in enumerate(ref)),
      encode_s=encode_s,
      how=how,
    )
    with open(sidecar, "w") as f:
      json.dump({k: v for k, v in files[name].items() if k != "path"}, f)
  return files


def _reference_codes(path: str) -> list[int]:
  """Frame codes of a plain sequential decode (no seeking): the ground truth.

  -1 where the encoder damaged the code beyond reading; such frames are not
  counted for either reader.
  """
  import av

  codes = []
  with av.open(path) as c:
    for frame in c.decode(video=0):
      try:
        codes.append(videos.frame_number_of(frame.to_ndarray(format="rgb24")))
      except ValueError:
        codes.append(-1)
  return codes


# --- readers (run inside worker processes) ---------------------------------


def _read_ours(path, idx, threads):
  from internvqa_jax.data import read_frames

  return read_frames(path, idx, threads=threads)


def _read_ours_cold(path, idx, threads):
  from internvqa_jax.data import container, decode

  container._INDEX_CACHE.clear()
  return decode.read_frames(path, idx, threads=threads)


def _read_decord(path, idx, threads):
  del threads
  import decord

  vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
  return vr.get_batch(list(idx)).asnumpy()


_READERS = {"ours": _read_ours, "ours-cold": _read_ours_cold, "decord": _read_decord}


def _clip_task(task):
  reader, path, idx, (cy, cx), crop, threads = task
  t0, c0 = time.perf_counter(), time.process_time()
  try:
    frames = _READERS[reader](path, idx, threads)
    clip = np.ascontiguousarray(frames[:, cy : cy + crop, cx : cx + crop])
  except Exception as e:  # pylint: disable=broad-except
    # decord prefixes "[hh:mm:ss] file.cc:line:"; drop it so errors group.
    msg = re.sub(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ", "", str(e))
    return dict(ok=False, n=len(idx), error=f"{type(e).__name__}: {msg}"[:200])
  # process_time counts every thread of this worker (decoder threads too).
  wall, cpu = time.perf_counter() - t0, time.process_time() - c0
  codes = []
  for frame in frames:
    try:
      codes.append(videos.frame_number_of(frame))
    except ValueError:
      codes.append(-1)
  return dict(ok=True, codes=codes, n=len(idx), shape=list(clip.shape), wall=wall, cpu=cpu)


def sample_clip(rng, num_frames: int, t: int) -> list[int]:
  """One random frame in each of t equal segments (InternVideo2 training)."""
  edges = np.linspace(0, num_frames, t + 1)
  return [int(min(num_frames - 1, rng.uniform(a, b))) for a, b in itertools.pairwise(edges)]


def run(files, readers, clips, t, crop, workers, threads, seed):
  """Reads the same clips with every reader, interleaved clip by clip.

  Interleaving gives all readers the same share of a contended machine.
  clips/s = workers / mean wall time per clip; CPU s/clip is the worker's
  process CPU time (all its threads), which contention distorts less.
  """
  rows = []
  ctx = mp.get_context("spawn")
  with ctx.Pool(workers) as pool:
    pool.map(_warm, range(workers))  # imports happen outside the timing
    for name, f in files.items():
      rng = np.random.default_rng(seed)
      h, w = f["height"], f["width"]
      tasks = []
      for _ in range(clips):
        idx = sample_clip(rng, f["num_frames"], t)
        yx = (int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1)))
        tasks.append((idx, yx))
      work = [
        (reader, f["path"], idx, yx, crop, threads) for idx, yx in tasks for reader in readers
      ]
      t0 = time.perf_counter()
      results = pool.map(_clip_task, work, chunksize=1)
      total = time.perf_counter() - t0
      ref = f["ref_codes"]
      for reader in readers:
        mine = [(task[2], r) for task, r in zip(work, results) if task[0] == reader]
        ok = [r for _, r in mine if r["ok"]]
        # Frames whose code the encoder damaged are left out (see make_files).
        checked = [
          (i, c) for idx, r in mine if r["ok"] for i, c in zip(idx, r["codes"]) if ref[i] == i
        ]
        n_req = max(1, sum(1 for idx, _ in mine for i in idx if ref[i] == i))
        exact = sum(c == i for i, c in checked)
        errors = sorted({r["error"] for _, r in mine if not r["ok"]})
        wall = float(np.mean([r["wall"] for r in ok])) if ok else float("nan")
        cpu = float(np.mean([r["cpu"] for r in ok])) if ok else float("nan")
        rows.append(
          dict(
            file=name,
            reader=reader,
            clips=clips,
            clips_per_s=round(workers / wall, 2) if ok else 0.0,
            cpu_s_per_clip=round(cpu, 3) if ok else None,
            frames_exact=round(exact / n_req, 4),
            frames_wrong=len(checked) - exact,
            failed_clips=len(mine) - len(ok),
            errors=errors[:2],
            file_seconds_all_readers=round(total, 1),
          )
        )
        print(_row(rows[-1]), flush=True)
  return rows


def _warm(_):
  with contextlib.suppress(ImportError):
    import decord  # noqa: F401
  from internvqa_jax.data import decode  # noqa: F401

  return os.getpid()


def _row(r):
  err = "; ".join(e[-70:] for e in r["errors"])
  cpu = f"{r['cpu_s_per_clip']:.3f}" if r["cpu_s_per_clip"] is not None else "-"
  return (
    f"| {r['file']} | {r['reader']} | {r['clips_per_s']:.2f} | {cpu} | "
    f"{r['frames_exact']:.3f} | {r['frames_wrong']} | {r['failed_clips']} | "
    f"{err} |"
  )


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--seconds", type=float, default=10.0)
  ap.add_argument("--fps", type=int, default=30)
  ap.add_argument("--gop", type=int, default=60)
  ap.add_argument("--width", type=int, default=1920)
  ap.add_argument("--height", type=int, default=1080)
  ap.add_argument("--clips", type=int, default=32, help="clips per file and reader")
  ap.add_argument("--frames", type=int, default=8, help="frames per clip (T)")
  ap.add_argument("--crop", type=int, default=224)
  ap.add_argument("--workers", type=int, default=2)
  ap.add_argument(
    "--threads", type=int, default=1, help="decoder threads per worker for our reader (0 = auto)"
  )
  ap.add_argument("--readers", default="ours,ours-cold,decord")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--workdir", default=None, help="keep the videos here")
  ap.add_argument("--out", default=None, help="write results as JSON")
  args = ap.parse_args()
  readers = args.readers.split(",")
  if "decord" in readers:
    try:
      import decord  # noqa: F401
    except ImportError:
      print("decord is not installed: skipping the decord reader")
      readers.remove("decord")

  with tempfile.TemporaryDirectory() as tmp:
    workdir = args.workdir or tmp
    os.makedirs(workdir, exist_ok=True)
    files = make_files(workdir, args.seconds, args.fps, args.gop, args.width, args.height)
    for f in files.values():
      f.update(width=args.width, height=args.height)
    print("## Test videos (generated with PyAV)\n")
    for name, f in files.items():
      print(
        f"- {name}: {f['how']}; {f['bytes'] / 1e6:.1f} MB, "
        f"encoded in {f['encode_s']} s; frame code readable in "
        f"{f['readable']}/{f['num_frames']} frames of a sequential decode"
      )
    print(
      f"\n## {args.frames}-frame clips (segment sampling) + random "
      f"{args.crop} crop, {args.workers} worker processes, "
      f"{os.cpu_count()} CPUs, our decoder threads={args.threads}\n"
    )
    print(
      "| file | reader | clips/s | CPU s/clip | frames exact | wrong frames "
      "| failed clips | error |"
    )
    print("|---|---|---|---|---|---|---|---|")
    rows = run(
      files, readers, args.clips, args.frames, args.crop, args.workers, args.threads, args.seed
    )
  if args.out:
    with open(args.out, "w") as f:
      json.dump(
        dict(
          args=vars(args),
          files={
            k: {kk: vv for kk, vv in v.items() if kk not in ("path", "ref_codes")}
            for k, v in files.items()
          },
          results=rows,
        ),
        f,
        indent=1,
      )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
  main()
