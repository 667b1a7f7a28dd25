"""Spatial quality maps: where in the frame a model's score comes from.

  maker = quality_maps.MapMaker(module, params, sampler_or_recipe, name="student")
  pngs = quality_maps.write_maps("maps/", maker, "a.mp4", read_frames, num_frames,
                                 rng=np.random.default_rng(seed))

Each model family gives a local map of every test view
(`internvqa_jax.models.local_quality_map`): FAST-VQA the head's per-token
quality map before its mean, InternVideo2 per-patch contributions to the score
(docs/quality_maps.md has the method and its limits). Every map value covers a
block of view pixels (`map_layout` stride); the sampling pipeline says where
each view pixel came from in the decoded frames (`Placement`): fragments cut
F x F mini-patches from a grid over the frame (`FragmentSampler
.sample_with_geometry`), InternVideo2 crops squares from the resized frame
(`InternVideo2Recipe.eval_geometry`). Values are placed back through that
geometry onto the frames the views were sampled from and drawn as heatmap
overlays: the exact footprint of each piece strongly, its grid cell (the part
of the frame it stands for) faintly, with the pieces outlined.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
from collections.abc import Callable

import jax
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from internvqa_jax import models
from internvqa_jax.data import fragments, recipes, transforms

FrameReader = Callable[[np.ndarray], np.ndarray]

# Longest side of a rendered overlay's frame, in pixels: 4K frames are drawn subsampled,
# tiny ones enlarged.
MAX_RENDER_SIDE = 960
MIN_RENDER_SIDE = 480


@dataclasses.dataclass(frozen=True)
class Placement:
  """Where the pixels of V test views came from in the decoded frames.

  View v's frame t is decoded frame frame_indices[v, t]. Each view frame is
  made of K rectangular pieces: view_boxes[k] = (y, x, h, w) in view pixels
  came from src_boxes[v, t // aligned, k] = (y, x, h, w) in decoded-frame
  pixels (float: resizing makes them fractional) and stands for the part
  cell_boxes[v, t // aligned, k] of the frame (its fragment grid cell; the
  crop itself for crops).
  """

  frame_size: tuple[int, int]
  frame_indices: np.ndarray  # (V, T) int64
  view_boxes: np.ndarray  # (K, 4) int64
  src_boxes: np.ndarray  # (V, G, K, 4) float64
  cell_boxes: np.ndarray  # (V, G, K, 4) float64
  aligned: int


def fragment_placement(geometry: fragments.FragmentGeometry) -> Placement:
  """Placement of fragments: cell (i, j) of a view is one fsize patch of the frame."""
  clips, groups, f, _ = geometry.tops.shape
  fs, s = geometry.fsize, float(geometry.scale)
  i, j = (a.reshape(-1) for a in np.meshgrid(np.arange(f), np.arange(f), indexing="ij"))
  view_boxes = np.stack([i * fs, j * fs, np.full_like(i, fs), np.full_like(i, fs)], -1)
  tops = geometry.tops.reshape(clips, groups, f * f).astype(np.float64)
  lefts = geometry.lefts.reshape(clips, groups, f * f).astype(np.float64)
  side = np.full_like(tops, fs * s)
  src = np.stack([tops * s, lefts * s, side, side], -1)
  # Grid cells come from the decoded size (the sampler's rule, also for upsampled frames).
  h, w = geometry.frame_size
  hstarts, hlen = fragments.grid_starts(h, f, fs)
  wstarts, wlen = fragments.grid_starts(w, f, fs)
  cells = np.stack(
    [
      hstarts[i] * s,
      wstarts[j] * s,
      np.full(i.shape, max(hlen, fs) * s),
      np.full(i.shape, max(wlen, fs) * s),
    ],
    -1,
  ).astype(np.float64)
  return Placement(
    frame_size=(int(h), int(w)),
    frame_indices=np.asarray(geometry.frame_indices, np.int64),
    view_boxes=view_boxes.astype(np.int64),
    src_boxes=src,
    cell_boxes=np.broadcast_to(cells, src.shape).copy(),
    aligned=int(geometry.aligned),
  )


def crop_placement(
  recipe: recipes.InternVideo2Recipe, num_video_frames: int, frame_size: tuple[int, int]
) -> Placement:
  """Placement of InternVideo2 test views: each is one crop of the resized frames."""
  h, w = frame_size
  idx, boxes, (oh, ow) = recipe.eval_geometry(num_video_frames, h, w)
  c = recipe.crop_size
  sy, sx = h / oh, w / ow
  src = np.stack(
    [boxes[:, 0] * sy, boxes[:, 1] * sx, np.full(len(boxes), c * sy), np.full(len(boxes), c * sx)],
    -1,
  )[:, None, None, :]
  return Placement(
    frame_size=(int(h), int(w)),
    frame_indices=idx,
    view_boxes=np.array([[0, 0, c, c]], np.int64),
    src_boxes=src,
    cell_boxes=src.copy(),
    aligned=recipe.num_frames,
  )


def _span(start: float, length: float, limit: int) -> tuple[int, int]:
  lo = min(max(math.floor(start + 0.5), 0), limit)
  return lo, min(max(math.floor(start + length + 0.5), lo), limit)


def place(
  values: np.ndarray, stride: tuple[int, int, int], placement: Placement, frame: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Puts the map values of all views back onto decoded frame `frame`.

  Args:
    values: (V, T', H', W') local maps of the views; value (t, i, j) covers view
      frames [t * st, (t + 1) * st) and pixels [i * sh, (i + 1) * sh) x
      [j * sw, (j + 1) * sw) with (st, sh, sw) = stride.

  Returns:
    (footprint, cells, boxes): two (H, W) float64 maps, NaN where nothing
    was placed (where several views cover a pixel, their mean): footprint
    holds each view pixel's value on the frame pixels it came from
    (nearest-neighbour through any resize), cells each piece's mean value
    over its cell; boxes (M, 4) = the source boxes (y, x, h, w) used.
  """
  values = np.asarray(values, np.float64)
  if values.ndim != 4 or values.shape[0] != placement.frame_indices.shape[0]:
    raise ValueError(
      f"place: values must be (V, T', H', W') with V = {placement.frame_indices.shape[0]} "
      f"views, got shape {values.shape}"
    )
  h, w = placement.frame_size
  st, sh, sw = stride
  acc, cnt = np.zeros((h, w)), np.zeros((h, w))
  cacc, ccnt = np.zeros((h, w)), np.zeros((h, w))
  used = []
  for v, t in zip(*np.nonzero(placement.frame_indices == frame)):
    m = values[v, min(t // st, values.shape[1] - 1)]
    g = t // placement.aligned
    for k, (vy, vx, vh, vw) in enumerate(placement.view_boxes):
      rows = np.minimum((vy + np.arange(vh)) // sh, m.shape[0] - 1)
      cols = np.minimum((vx + np.arange(vw)) // sw, m.shape[1] - 1)
      piece = m[rows][:, cols]  # (vh, vw): the value under each view pixel
      y, x, bh, bw = placement.src_boxes[v, g, k]
      y0, y1 = _span(y, bh, h)
      x0, x1 = _span(x, bw, w)
      if y1 > y0 and x1 > x0:
        # Nearest view pixel of each frame pixel centre.
        ri = np.clip(((np.arange(y0, y1) + 0.5 - y) * vh / bh).astype(np.int64), 0, vh - 1)
        ci = np.clip(((np.arange(x0, x1) + 0.5 - x) * vw / bw).astype(np.int64), 0, vw - 1)
        acc[y0:y1, x0:x1] += piece[ri][:, ci]
        cnt[y0:y1, x0:x1] += 1
        used.append((y, x, bh, bw))
      cy, cx, chh, cww = placement.cell_boxes[v, g, k]
      cy0, cy1 = _span(cy, chh, h)
      cx0, cx1 = _span(cx, cww, w)
      cacc[cy0:cy1, cx0:cx1] += piece.mean()
      ccnt[cy0:cy1, cx0:cx1] += 1
  with np.errstate(invalid="ignore", divide="ignore"):
    footprint = np.where(cnt > 0, acc / cnt, np.nan)
    cells = np.where(ccnt > 0, cacc / ccnt, np.nan)
  return footprint, cells, np.asarray(used, np.float64).reshape(-1, 4)


# ------------------------------------------------------------------ model ---


class MapMaker:
  """One model with its test-view pipeline, ready to map videos.

  pipeline: the model's `fragments.FragmentSampler` (FAST-VQA; or the
  `recipes.FragmentRecipe` holding it as `.sampler`) or
  `recipes.InternVideo2Recipe`, as used for scoring, so the mapped views
  are the scored views (pass write_maps the scorer's rng for random sampling).
  """

  def __init__(
    self,
    module,
    params,
    pipeline: fragments.FragmentSampler | recipes.InternVideo2Recipe,
    *,
    name: str,
    batch_size: int | None = None,
  ):
    if isinstance(getattr(pipeline, "sampler", None), fragments.FragmentSampler):
      pipeline = pipeline.sampler  # A recipes.FragmentRecipe.
    if not isinstance(pipeline, (fragments.FragmentSampler, recipes.InternVideo2Recipe)):
      raise TypeError(
        "MapMaker: pipeline must be a fragments.FragmentSampler or a "
        f"recipes.InternVideo2Recipe, got {type(pipeline).__name__}"
      )
    if batch_size is not None and batch_size < 1:
      raise ValueError(f"MapMaker: batch_size must be >= 1, got {batch_size}")
    self.name = name
    self.pipeline = pipeline
    self.batch_size = batch_size
    layout = models.map_layout(module)
    self.stride = tuple(int(s) for s in layout["stride"])
    self.pooling = layout["pooling"]
    self._params = jax.device_put(params)
    self._fn = jax.jit(lambda p, x: models.local_quality_map(module, p, x))

  def views(
    self, read_frames: FrameReader, num_video_frames: int, rng: np.random.Generator | None = None
  ) -> tuple[np.ndarray, Placement]:
    """The test views (V, T, H, W, 3) and where they came from."""
    p = self.pipeline
    if isinstance(p, fragments.FragmentSampler):
      views, geometry = p.sample_with_geometry(read_frames, num_video_frames, rng, train=False)
      return views.astype(np.float32), fragment_placement(geometry)
    views = p.eval(read_frames, num_video_frames)
    # A frame eval has just read (a caching reader does not decode it again).
    first = transforms.segment_indices(
      num_video_frames, p.num_frames, clip_index=0, num_clips=p.test_clips
    )[:1]
    frame_size = tuple(np.asarray(read_frames(first)).shape[1:3])
    return views, crop_placement(p, num_video_frames, frame_size)

  def local_maps(self, views: np.ndarray) -> dict[str, np.ndarray]:
    """{'map': (V, T', H', W'), 'score': (V,), 'rest': (V,)} float32 numpy."""
    views = np.asarray(views, np.float32)
    b = self.batch_size or len(views)
    parts = []
    for start in range(0, len(views), b):
      out = self._fn(self._params, views[start : start + b])
      parts.append({k: np.asarray(v, np.float32) for k, v in out.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


# ---------------------------------------------------------------- drawing ---


def select_frames(frame_indices: np.ndarray, max_frames: int) -> np.ndarray:
  """Up to max_frames of the sampled frames, evenly spread over time."""
  if max_frames < 1:
    raise ValueError(f"max_frames must be >= 1, got {max_frames}")
  unique = np.unique(np.asarray(frame_indices).reshape(-1))
  if len(unique) <= max_frames:
    return unique
  return unique[np.round(np.linspace(0, len(unique) - 1, max_frames)).astype(np.int64)]


def _display_rgb(frame: np.ndarray) -> np.ndarray:
  """A decoded frame as float RGB in [0, 1]: uint8, or float on the same 0-255 scale
  (how sources deeper than 8 bits are decoded), or a high-bit-depth integer."""
  frame = np.asarray(frame)
  if frame.ndim != 3 or frame.shape[-1] != 3:
    raise ValueError(f"expected an (H, W, 3) RGB frame, got shape {frame.shape}")
  if frame.dtype == np.uint8:
    return frame.astype(np.float32) / 255.0
  if np.issubdtype(frame.dtype, np.integer):
    bits = max(8, int(np.ceil(np.log2(int(frame.max()) + 1))))
    return frame.astype(np.float32) / float(2**bits - 1)
  return np.clip(frame.astype(np.float32) / 255.0, 0.0, 1.0)


def color_range(values: np.ndarray, pooling: str) -> tuple[float, float]:
  """Colour limits shared by all frames of one video: the data range for mean-pooled
  maps, symmetric about 0 for contributions (their sign says raise or lower)."""
  v = np.asarray(values, np.float64)
  if pooling == "sum":
    m = float(np.max(np.abs(v))) or 1.0
    return -m, m
  lo, hi = float(v.min()), float(v.max())
  return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def render_overlay(
  frame: np.ndarray,
  footprint: np.ndarray,
  cells: np.ndarray,
  boxes: np.ndarray,
  path: str,
  *,
  vmin: float,
  vmax: float,
  title: str,
  label: str,
) -> str:
  """Writes a PNG: the frame, dimmed, with cells faint, footprints strong, pieces outlined."""
  rgb = _display_rgb(frame)
  h, w = rgb.shape[:2]
  step = max(1, math.ceil(max(h, w) / MAX_RENDER_SIDE))  # Arrays drawn at most this big.
  extent = (0, w, h, 0)
  # Drawn size in inches at 100 dpi: the long side between MIN_ and MAX_RENDER_SIDE pixels.
  side = min(max(max(h, w), MIN_RENDER_SIDE), MAX_RENDER_SIDE) / 100
  dw, dh = side * w / max(h, w), side * h / max(h, w)
  fw, fh = dw + 1.8, dh + 0.5  # Room for the colour bar with its label, and the title.
  fig = Figure(figsize=(fw, fh), dpi=100)
  ax = fig.add_axes((0.1 / fw, 0.1 / fh, dw / fw, dh / fh))
  ax.imshow(rgb[::step, ::step] * 0.6, extent=extent, interpolation="nearest")
  kw = dict(cmap="RdYlGn", vmin=vmin, vmax=vmax, extent=extent, interpolation="nearest")
  ax.imshow(np.ma.masked_invalid(cells[::step, ::step]), alpha=0.35, **kw)
  im = ax.imshow(np.ma.masked_invalid(footprint[::step, ::step]), alpha=0.85, **kw)
  for y, x, bh, bw in boxes:
    ax.add_patch(Rectangle((x, y), bw, bh, fill=False, edgecolor="white", linewidth=0.6, alpha=0.7))
  ax.set_xlim(0, w)
  ax.set_ylim(h, 0)
  ax.set_axis_off()
  ax.set_title(title, fontsize=9)
  cax = fig.add_axes(((dw + 0.3) / fw, (0.1 + 0.1 * dh) / fh, 0.15 / fw, 0.8 * dh / fh))
  fig.colorbar(im, cax=cax).set_label(label, fontsize=8)
  fig.savefig(path)
  return path


_LABELS = {
  "mean": "local quality (the clip score is their mean)",
  "sum": "contribution to the score (patches + cls + offset = score)",
}


def map_stem(video_path: str, model_name: str) -> str:
  """File stem for one video and model: readable names plus a hash of the full path,
  so same-named videos in different directories do not collide."""
  safe = lambda s: re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("._") or "x"
  digest = hashlib.sha1(os.path.abspath(video_path).encode()).hexdigest()[:8]
  return f"{safe(os.path.basename(video_path))}.{safe(model_name)}.{digest}"


def write_maps(
  out_dir: str,
  maker: MapMaker,
  video_path: str,
  read_frames: FrameReader,
  num_video_frames: int,
  *,
  rng: np.random.Generator | None = None,
  max_frames: int = 4,
  fps: float | None = None,
) -> list[str]:
  """Maps one video with one model; returns the PNG paths written (for a row's 'maps').

  Writes, under out_dir, `<stem>.frame<NNNNNN>.png` overlays for up to
  max_frames of the sampled frames and `<stem>.map.npz` with the raw maps
  ('map' (V, T', H', W'), 'score', 'rest', 'stride') and the placement arrays.
  rng: the generator the scorer used for this video (random test sampling
  draws from it; deterministic pipelines ignore it).
  """
  views, placement = maker.views(read_frames, num_video_frames, rng)
  out = maker.local_maps(views)
  frames = select_frames(placement.frame_indices, max_frames)
  pixels = np.asarray(read_frames(frames))
  vmin, vmax = color_range(out["map"], maker.pooling)
  os.makedirs(out_dir, exist_ok=True)
  stem = map_stem(video_path, maker.name)
  paths = []
  for f, img in zip(frames.tolist(), pixels):
    footprint, cells, boxes = place(out["map"], maker.stride, placement, f)
    when = f" ({f / fps:.2f} s)" if fps else ""
    title = f"{os.path.basename(video_path)} | {maker.name} | frame {f}{when}"
    paths.append(
      render_overlay(
        img,
        footprint,
        cells,
        boxes,
        os.path.join(out_dir, f"{stem}.frame{f:06d}.png"),
        vmin=vmin,
        vmax=vmax,
        title=title,
        label=_LABELS.get(maker.pooling, "local value"),
      )
    )
  np.savez(
    os.path.join(out_dir, f"{stem}.map.npz"),
    stride=np.asarray(maker.stride),
    frame_size=np.asarray(placement.frame_size),
    frame_indices=placement.frame_indices,
    view_boxes=placement.view_boxes,
    src_boxes=placement.src_boxes,
    cell_boxes=placement.cell_boxes,
    **out,
  )
  return paths
