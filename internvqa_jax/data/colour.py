"""Y'CbCr -> RGB conversion with an explicit colour matrix and range.

Which matrix: the stream's own tag when it has one (H.264/HEVC/AV1 VUI
`matrix_coefficients`, surfaced by FFmpeg as `AVFrame.colorspace`); otherwise
BT.709 for HD and larger (height >= 720) and BT.601 for SD, the convention of
ITU-R BT.709 / SMPTE ST 274 vs BT.601 material. Range: limited ("MPEG",
Y' in [16, 235] * 2^(n-8)) unless the stream says full ("JPEG", or a yuvj*
pixel format).

The fast path is libswscale through PyAV with the matrix, range and
ACCURATE_RND passed explicitly (swscale's default fast path uses 8-bit
fixed-point tables that are off by up to 6 levels on 10-bit input).
`yuv_to_rgb_reference` is a float64 NumPy oracle used by the tests.
"""

from __future__ import annotations

import numpy as np
from av.video.reformatter import ColorRange, Colorspace, Interpolation

# (Kr, Kb) luma coefficients per matrix; Kg = 1 - Kr - Kb.
KR_KB = {
  "bt601": (0.299, 0.114),
  "bt709": (0.2126, 0.0722),
  "bt2020": (0.2627, 0.0593),
  "smpte240m": (0.212, 0.087),
  "fcc": (0.30, 0.11),
}

# AVColorSpace (libavutil/pixfmt.h) -> matrix name. 0 (RGB), 2 (unspecified),
# 3 (reserved) and anything unknown fall back to the resolution rule.
_AVCOL_SPC = {
  1: "bt709",
  4: "fcc",
  5: "bt601",  # BT470BG
  6: "bt601",  # SMPTE170M
  7: "smpte240m",
  9: "bt2020",  # BT2020_NCL
  10: "bt2020",  # BT2020_CL, approximated by the NCL matrix
}
_AVCOL_RANGE_JPEG = 2

HD_MIN_HEIGHT = 720


def choose_matrix(height: int, colorspace_tag: int | None = None) -> str:
  """Matrix name for a stream: its tag if it has one, else by resolution."""
  if colorspace_tag is not None and int(colorspace_tag) in _AVCOL_SPC:
    return _AVCOL_SPC[int(colorspace_tag)]
  return "bt709" if height >= HD_MIN_HEIGHT else "bt601"


def is_full_range(color_range_tag: int | None, pix_fmt: str) -> bool:
  """Full range only when the stream says so (tag or a yuvj* format)."""
  if pix_fmt.startswith("yuvj"):
    return True
  return color_range_tag is not None and int(color_range_tag) == _AVCOL_RANGE_JPEG


def yuv_to_rgb_reference(
  y: np.ndarray,
  u: np.ndarray,
  v: np.ndarray,
  *,
  bit_depth: int,
  matrix: str,
  full_range: bool = False,
) -> np.ndarray:
  """Float64 reference conversion of one frame to uint8 RGB (H, W, 3).

  Chroma planes of any subsampling are upsampled by sample repetition
  (nearest); slow, meant for tests and for checking the fast path.
  """
  kr, kb = KR_KB[matrix]
  kg = 1.0 - kr - kb
  h, w = y.shape
  ry, rx = -(-h // u.shape[0]), -(-w // u.shape[1])
  u = np.repeat(np.repeat(u, ry, 0), rx, 1)[:h, :w].astype(np.float64)
  v = np.repeat(np.repeat(v, ry, 0), rx, 1)[:h, :w].astype(np.float64)
  y = y.astype(np.float64)
  scale = float(1 << (bit_depth - 8))
  if full_range:
    peak = float((1 << bit_depth) - 1)
    yn = y / peak
    cb = (u - 128.0 * scale) / peak
    cr = (v - 128.0 * scale) / peak
  else:
    yn = (y - 16.0 * scale) / (219.0 * scale)
    cb = (u - 128.0 * scale) / (224.0 * scale)
    cr = (v - 128.0 * scale) / (224.0 * scale)
  r = yn + 2.0 * (1.0 - kr) * cr
  b = yn + 2.0 * (1.0 - kb) * cb
  g = (yn - kr * r - kb * b) / kg
  rgb = np.stack([r, g, b], axis=-1) * 255.0
  return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def rgb_to_yuv_reference(
  rgb: np.ndarray, *, bit_depth: int, matrix: str, full_range: bool = False
) -> tuple[np.ndarray, ...]:
  """Inverse of `yuv_to_rgb_reference` at full chroma resolution (4:4:4).

  Returns float64 (Y, Cb, Cr) planes in code values; callers round and
  subsample. Used to build known-colour test inputs.
  """
  kr, kb = KR_KB[matrix]
  kg = 1.0 - kr - kb
  x = np.asarray(rgb, np.float64) / 255.0
  yn = kr * x[..., 0] + kg * x[..., 1] + kb * x[..., 2]
  cb = (x[..., 2] - yn) / (2.0 * (1.0 - kb))
  cr = (x[..., 0] - yn) / (2.0 * (1.0 - kr))
  scale = float(1 << (bit_depth - 8))
  if full_range:
    peak = float((1 << bit_depth) - 1)
    return yn * peak, cb * peak + 128.0 * scale, cr * peak + 128.0 * scale
  return (
    16.0 * scale + 219.0 * scale * yn,
    128.0 * scale + 224.0 * scale * cb,
    128.0 * scale + 224.0 * scale * cr,
  )


def _is_rgb_format(pix_fmt: str) -> bool:
  return pix_fmt.startswith(("rgb", "bgr", "gbr", "argb", "abgr"))


def _is_yuv_format(pix_fmt: str) -> bool:
  return pix_fmt.startswith(("yuv", "gray", "nv12", "nv21", "p010", "p016"))


def frame_to_rgb(
  frame,
  *,
  matrix: str | None = None,
  full_range: bool | None = None,
  threads: int = 1,
  high_precision: bool = False,
) -> np.ndarray:
  """av.VideoFrame -> uint8 RGB (H, W, 3) with an explicit matrix and range.

  matrix / full_range default to the frame's tags and the rules above.
  high_precision: convert to float RGB and return float32 on the 0-255 scale, so a source
  deeper than 8 bits keeps its precision (no rounding to 256 levels). The float output is
  swscale's planar float format: its 16-bit RGB output (rgb48) with full horizontal chroma
  interpolation overflows near white (values wrap to 0), so it is not used.
  Raises ValueError for pixel formats that are neither Y'CbCr nor RGB.
  """
  rgb_format = "gbrpf32le" if high_precision else "rgb24"
  pix_fmt = frame.format.name
  if _is_rgb_format(pix_fmt):
    return _scaled(frame.to_ndarray(format=rgb_format))
  if not _is_yuv_format(pix_fmt):
    raise ValueError(f"unsupported pixel format {pix_fmt!r} for RGB conversion")
  if matrix is None:
    matrix = choose_matrix(frame.height, frame.colorspace)
  if full_range is None:
    full_range = is_full_range(frame.color_range, pix_fmt)
  sws_cs = {
    "bt601": Colorspace.ITU601,
    "bt709": Colorspace.ITU709,
    "bt2020": Colorspace.BT2020,
    "smpte240m": Colorspace.SMPTE240M,
    "fcc": Colorspace.FCC,
  }[matrix]
  rng = ColorRange.JPEG if full_range else ColorRange.MPEG
  # Bilinear chroma upsampling at full horizontal chroma resolution, exact
  # rounding. Without ACCURATE_RND swscale biases 10-bit input by ~1 level.
  flags = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
  out = frame.reformat(
    format=rgb_format,
    src_colorspace=sws_cs,
    dst_colorspace=sws_cs,
    src_color_range=rng,
    dst_color_range=ColorRange.JPEG,
    interpolation=flags,
    threads=threads,
  )
  return _scaled(out.to_ndarray())


def _scaled(rgb: np.ndarray) -> np.ndarray:
  """uint8 as is; float RGB in [0, 1] as float32 on the 0-255 scale."""
  if rgb.dtype == np.uint8:
    return rgb
  return np.ascontiguousarray(rgb, np.float32) * np.float32(255.0)
