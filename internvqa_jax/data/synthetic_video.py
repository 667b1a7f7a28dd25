"""Synthetic compressed-video clips: camera motion over natural images, real encoders, FR labels.

The embedded dataset needs no download: its pristine content is the natural photographs that
scikit-image ships inside its wheel (skimage/data/*.png|jpg). Each source image is filmed by a virtual
camera that pans and zooms smoothly (sub-pixel, bilinear resampling), the clip is converted once to
yuv420p, and that exact yuv420p clip is both the encoder input and the full-reference pristine signal.
The encoded clip is decoded again and compared with the pristine one, so the label measures only what
the encoder did.

Content: the 8 colour photographs plus 8 greyscale ones (textures such as brick, grass and gravel,
and documents, coins, the moon, the cameraman; filmed as neutral-grey colour video), so that a model
trained on a few sources sees flat, textured, sharp and soft content alike. Every resolution of a
source is filmed along its own camera path (its own region and zoom of the photograph).

Label: the detail-to-error ratio (DSNR) of the luma, a full-reference score in dB. Per frame,
  DSNR = 10 log10(D / MSE),  D = mean((Y_ref - G_1(Y_ref))^2),  MSE = mean((Y_dec - Y_ref)^2),
where G_1 is a Gaussian blur (sigma 1 px) of the pristine luma, so D is the energy of the pristine
clip's fine detail: 0 dB means the coding error is as strong as all the fine detail the clip had.
Each frame is clipped to +-30 dB (an exact frame counts as +30 dB, an erroneous flat frame as
-30 dB), then frames are averaged.
Unlike PSNR, which rates smooth content high and textured content low at equal coding strength,
DSNR judges the error against the content's own detail, as contrast masking does in vision: errors
hide in texture and show on flat areas. It is what a no-reference model can see (detail lost,
relative to the detail left): simple no-reference sharpness features predict it on held-out
photographs better than PSNR or SSIM, and consistently across training photographs. It is mapped
to a 0-100 MOS-like scale by a fixed logistic:  mos = 100 / (1 + exp(-DSNR / 4)).
So 0 dB -> 50, -8 dB -> 11.9, +8 dB -> 88.1; higher is better. The midpoint sits near the median
DSNR of the default grid. The YUV-PSNR, (6 PSNR_Y + PSNR_U + PSNR_V) / 8 per frame (each plane
capped at 60 dB) averaged over frames, is stored alongside for reference.

Determinism: rendering is plain NumPy/scikit-image arithmetic with seeds derived from the source name;
every encoder runs single-threaded (x264 threads=1, x265 pools=none/frame-threads=1, libvpx threads=1
row-mt=0, SVT-AV1 lp=1), which makes the bitstreams, and therefore the labels, reproducible bit for bit
on a given FFmpeg build and CPU (the tests compare builds made in two processes). x264 also needs
mbtree=0: with macroblock-tree rate control, single-threaded x264 from the PyAV wheel still produced
different bitstreams in different processes (about 1 clip in 4; asm=0 also cures it, so it is an
assembly path reading undefined memory).
"""

from __future__ import annotations

import dataclasses
import io
import os
import zlib

import av
import numpy as np
import scipy.ndimage
import skimage.data
import skimage.io
import skimage.transform

# Natural photographs bundled with scikit-image (file names in skimage/data): the colour ones, then
# greyscale ones (replicated to neutral grey RGB). Left out: the right view of the motorcycle stereo
# pair (same scene as the left one), and drawings, synthetic patterns, binary and motion-blurred
# images (chessboard, horse, logo, phantom, clock_motion, microaneurysms, cell).
SOURCE_IMAGES = {
  "astronaut": "astronaut.png",
  "chelsea": "chelsea.png",
  "coffee": "coffee.png",
  "hubble_deep_field": "hubble_deep_field.jpg",
  "ihc": "ihc.png",
  "motorcycle_left": "motorcycle_left.png",
  "retina": "retina.jpg",
  "rocket": "rocket.jpg",
  "brick": "brick.png",
  "camera": "camera.png",
  "coins": "coins.png",
  "grass": "grass.png",
  "gravel": "gravel.png",
  "moon": "moon.png",
  "page": "page.png",
  "text": "text.png",
}
GREYSCALE_SOURCES = frozenset(
  {"brick", "camera", "coins", "grass", "gravel", "moon", "page", "text"}
)

# Central fraction of the image kept before filming: retina has a wide black surround.
_CENTRE_CROP = {"retina": 0.62}


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
  codec: str  # codec name of the bitstream as FFmpeg reports it when probing
  quality_option: str  # the option that the level sets (higher = stronger compression)
  options: tuple[tuple[str, str], ...]  # fixed options; all force single-threaded encoding
  max_level: int  # the quality option's strongest setting


ENCODERS = {
  "libx264": EncoderSpec(
    "h264",
    "crf",
    (("preset", "medium"), ("threads", "1"), ("x264-params", "threads=1:mbtree=0")),
    51,
  ),
  "libx265": EncoderSpec(
    "hevc",
    "crf",
    (("preset", "medium"), ("x265-params", "pools=none:frame-threads=1:log-level=error")),
    51,
  ),
  "libvpx-vp9": EncoderSpec(
    "vp9",
    "crf",
    (("b:v", "0"), ("deadline", "good"), ("cpu-used", "4"), ("threads", "1"), ("row-mt", "0")),
    63,
  ),
  "libsvtav1": EncoderSpec("av1", "crf", (("preset", "8"), ("svtav1-params", "lp=1")), 63),
}

PSNR_CAP_DB = 60.0
DSNR_CAP_DB = 30.0
DETAIL_SIGMA_PX = 1.0
MOS_MIDPOINT_DB = 0.0
MOS_SLOPE_DB = 4.0


def skimage_data_dir() -> str:
  return os.path.dirname(skimage.data.__file__)


def load_source_image(name: str) -> np.ndarray:
  """Returns the named bundled photograph as float64 RGB (H, W, 3) in [0, 255] (grey: R = G = B)."""
  if name not in SOURCE_IMAGES:
    raise KeyError(f"Unknown synthetic source {name!r}; known: {sorted(SOURCE_IMAGES)}")
  path = os.path.join(skimage_data_dir(), SOURCE_IMAGES[name])
  if not os.path.isfile(path):
    raise FileNotFoundError(
      f"Synthetic source {name!r} needs {path}, which is missing: this scikit-image install does "
      "not ship its sample images (reinstall scikit-image from a wheel)."
    )
  image = np.asarray(skimage.io.imread(path))
  if name in GREYSCALE_SOURCES:
    if image.ndim != 2 or image.dtype != np.uint8:
      raise ValueError(
        f"{path}: expected an 8-bit greyscale image, got {image.dtype} {image.shape}"
      )
    image = np.repeat(image[..., None], 3, axis=-1)
  elif image.ndim != 3 or image.shape[-1] < 3 or image.dtype != np.uint8:
    raise ValueError(f"{path}: expected an 8-bit colour image, got {image.dtype} {image.shape}")
  image = image[..., :3].astype(np.float64)
  keep = _CENTRE_CROP.get(name)
  if keep:
    h, w = image.shape[:2]
    dh, dw = int(h * (1 - keep) / 2), int(w * (1 - keep) / 2)
    image = image[dh : h - dh, dw : w - dw]
  return image


def source_seed(name: str, seed: int) -> np.random.Generator:
  # crc32 rather than hash(): str hashes change between Python processes.
  return np.random.default_rng([seed, zlib.crc32(name.encode())])


@dataclasses.dataclass(frozen=True)
class CameraPath:
  """A smooth pan and zoom, in units of the image: centres as (y, x) fractions of its height/width.

  The window height is `base_fraction * max_window_height / zoom`; zoom 1 is the widest view.
  """

  centre_start: tuple[float, float]
  centre_end: tuple[float, float]
  zoom_start: float
  zoom_end: float
  base_fraction: float


def random_camera_path(
  rng: np.random.Generator, image_hw: tuple[int, int], aspect: float
) -> CameraPath:
  """Draws a pan of 10-25% of the window size plus a zoom in or out by 1.15-1.4x."""
  hi, wi = image_hw
  base_fraction = float(rng.uniform(0.55, 0.75))
  win_h = base_fraction * min(hi, wi / aspect)
  win_w = win_h * aspect

  def clamp(cy, cx):
    return (
      float(np.clip(cy, win_h / 2 / hi, 1 - win_h / 2 / hi)),
      float(np.clip(cx, win_w / 2 / wi, 1 - win_w / 2 / wi)),
    )

  start = clamp(rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7))
  angle = rng.uniform(0, 2 * np.pi)
  shift = rng.uniform(0.10, 0.25) * win_h
  end = clamp(start[0] + shift * np.sin(angle) / hi, start[1] + shift * np.cos(angle) / wi)
  zoom = float(rng.uniform(1.15, 1.4))
  zoom_start, zoom_end = (1.0, zoom) if rng.uniform() < 0.5 else (zoom, 1.0)
  return CameraPath(start, end, zoom_start, zoom_end, base_fraction)


def _bilinear_rows(image: np.ndarray, coords: np.ndarray) -> np.ndarray:
  """Samples image (H, W, C) at fractional row coordinates (pixel centres at integers)."""
  top = np.clip(np.floor(coords).astype(np.int64), 0, image.shape[0] - 2)
  frac = np.clip(coords - top, 0.0, 1.0)[:, None, None]
  return image[top] * (1 - frac) + image[top + 1] * frac


def render_clip(
  image: np.ndarray, path: CameraPath, width: int, height: int, num_frames: int
) -> np.ndarray:
  """Films `image` along `path`; returns uint8 (T, height, width, 3)."""
  if width % 2 or height % 2:
    raise ValueError(f"yuv420p needs even frame sizes, got {width}x{height}")
  aspect = width / height
  hi, wi = image.shape[:2]
  win_h = path.base_fraction * min(hi, wi / aspect)
  # Pre-shrink with an anti-aliasing filter so that the widest window samples at most one source
  # pixel per output pixel: bilinear sampling alone would alias when minifying.
  shrink = min(1.0, height / win_h)
  if shrink < 1.0:
    image = skimage.transform.resize(
      image,
      (round(hi * shrink), round(wi * shrink)),
      order=1,
      anti_aliasing=True,
      preserve_range=True,
    )
    shrink_y, shrink_x = image.shape[0] / hi, image.shape[1] / wi
  else:
    shrink_y = shrink_x = 1.0
  hs, ws = image.shape[:2]
  frames = np.empty((num_frames, height, width, 3), np.uint8)
  for t in range(num_frames):
    s = 0.5 - 0.5 * np.cos(np.pi * t / max(num_frames - 1, 1))  # ease in/out: smooth motion
    cy = (path.centre_start[0] + s * (path.centre_end[0] - path.centre_start[0])) * hs
    cx = (path.centre_start[1] + s * (path.centre_end[1] - path.centre_start[1])) * ws
    zoom = path.zoom_start * (path.zoom_end / path.zoom_start) ** s
    step_y = win_h * shrink_y / zoom / height
    step_x = win_h * aspect * shrink_x / zoom / width
    ys = cy + (np.arange(height) + 0.5 - height / 2) * step_y - 0.5
    xs = cx + (np.arange(width) + 0.5 - width / 2) * step_x - 0.5
    rows = _bilinear_rows(image, ys)  # (height, ws, 3)
    frame = _bilinear_rows(rows.transpose(1, 0, 2), xs).transpose(1, 0, 2)
    frames[t] = np.clip(np.round(frame), 0, 255).astype(np.uint8)
  return frames


def to_yuv420p(frames: np.ndarray) -> list:
  """Converts RGB uint8 frames once with libswscale; the result is encoder input and reference."""
  return [
    av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24").reformat(format="yuv420p")
    for f in frames
  ]


def encode_clip(yuv_frames: list, encoder: str, level: int, fps: int) -> bytes:
  """Encodes yuv420p frames into an in-memory MP4 with one single-threaded encoder."""
  if encoder not in ENCODERS:
    raise KeyError(f"Unknown encoder {encoder!r}; known: {sorted(ENCODERS)}")
  spec = ENCODERS[encoder]
  # SVT-AV1 prints its whole configuration to stderr at info level for every clip.
  os.environ.setdefault("SVT_LOG", "1")
  buffer = io.BytesIO()
  with av.open(buffer, mode="w", format="mp4") as container:
    stream = container.add_stream(encoder, rate=fps)
    stream.width = yuv_frames[0].width
    stream.height = yuv_frames[0].height
    stream.pix_fmt = "yuv420p"
    stream.thread_count = 1
    stream.options = {**dict(spec.options), spec.quality_option: str(level)}
    for i, frame in enumerate(yuv_frames):
      frame.pts = i
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  return buffer.getvalue()


def _plane_psnr(a: np.ndarray, b: np.ndarray) -> float:
  mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
  return min(PSNR_CAP_DB, 10 * np.log10(255.0**2 / mse)) if mse > 0 else PSNR_CAP_DB


def decode_yuv420p(encoded: bytes, num_frames: int) -> list[np.ndarray]:
  """Decodes an encoded clip to yuv420p planes, one (H * 3 / 2, W) uint8 array per frame."""
  with av.open(io.BytesIO(encoded)) as container:
    decoded = [f.to_ndarray(format="yuv420p") for f in container.decode(video=0)]
  if len(decoded) != num_frames:
    raise ValueError(f"decoded {len(decoded)} frames, encoded {num_frames}")
  return decoded


def yuv_psnr(decoded: list[np.ndarray], reference: list) -> float:
  """Mean over frames of (6 Y + U + V) / 8 PSNR of decoded yuv420p planes against the reference."""
  scores = []
  for dec, ref in zip(decoded, reference, strict=True):
    ref = ref.to_ndarray()
    h = ref.shape[0] * 2 // 3
    chroma = ref[h:].size // 2
    rc, dc = ref[h:].reshape(-1), dec[h:].reshape(-1)
    y = _plane_psnr(dec[:h], ref[:h])
    u = _plane_psnr(dc[:chroma], rc[:chroma])
    v = _plane_psnr(dc[chroma:], rc[chroma:])
    scores.append((6 * y + u + v) / 8)
  return float(np.mean(scores))


def detail_snr(decoded: list[np.ndarray], reference: list) -> float:
  """Mean over frames of the luma detail-to-error ratio (dB) against the reference (module doc)."""
  scores = []
  for dec, ref in zip(decoded, reference, strict=True):
    ref = ref.to_ndarray()
    h = ref.shape[0] * 2 // 3
    y_ref = ref[:h].astype(np.float64)
    mse = float(np.mean((dec[:h].astype(np.float64) - y_ref) ** 2))
    detail = float(np.mean((y_ref - scipy.ndimage.gaussian_filter(y_ref, DETAIL_SIGMA_PX)) ** 2))
    if mse == 0:
      scores.append(DSNR_CAP_DB)
    elif detail == 0:  # a flat frame: any error is fully visible
      scores.append(-DSNR_CAP_DB)
    else:
      scores.append(min(DSNR_CAP_DB, max(-DSNR_CAP_DB, 10 * np.log10(detail / mse))))
  return float(np.mean(scores))


def dsnr_to_mos(dsnr_db: float) -> float:
  return float(100.0 / (1.0 + np.exp(-(dsnr_db - MOS_MIDPOINT_DB) / MOS_SLOPE_DB)))
