"""Public per-chip figures of TPU generations and common NVIDIA GPUs, for planning.

Each entry: HBM capacity, peak dense bf16 FLOP/s and HBM bandwidth of one
chip, from the vendor's public specification page named in `source`. GPU
figures are the SXM parts without sparsity. A v4 chip has two TensorCores,
which a topology without megacore shows as two devices: per-device figures
are the chip's divided by `cores_per_chip`.
"""

from __future__ import annotations

import dataclasses

GiB = 2**30
GB = 10**9
TFLOPS = 10**12


@dataclasses.dataclass(frozen=True)
class Chip:
  name: str
  hbm_bytes: int  # per chip
  peak_bf16_flops: float  # per chip per second, dense
  hbm_bandwidth: float  # bytes per second per chip
  cores_per_chip: int
  kinds: tuple[str, ...]  # substrings of jax Device.device_kind that name this chip
  source: str

  def per_device(self, devices_per_chip: int) -> tuple[int, float, float]:
    """(HBM bytes, peak FLOP/s, HBM bytes/s) of one JAX device."""
    k = max(1, devices_per_chip)
    return self.hbm_bytes // k, self.peak_bf16_flops / k, self.hbm_bandwidth / k


_TPU_DOCS = "https://cloud.google.com/tpu/docs/"
_NV = "https://www.nvidia.com/"

CHIPS = {
  "v4": Chip("v4", 32 * GiB, 275 * TFLOPS, 1200 * GB, 2, ("TPU v4",), _TPU_DOCS + "v4"),
  "v5e": Chip(
    "v5e", 16 * GiB, 197 * TFLOPS, 819 * GB, 1, ("TPU v5 lite", "TPU v5e"), _TPU_DOCS + "v5e"
  ),
  "v5p": Chip(
    "v5p", 95 * GiB, 459 * TFLOPS, 2765 * GB, 1, ("TPU v5p", "TPU v5"), _TPU_DOCS + "v5p"
  ),
  "v6e": Chip(
    "v6e", 32 * GiB, 918 * TFLOPS, 1640 * GB, 1, ("TPU v6 lite", "TPU v6e"), _TPU_DOCS + "v6e"
  ),
  "a100-40gb": Chip(
    "A100 40GB",
    40 * GB,
    312 * TFLOPS,
    1555 * GB,
    1,
    ("A100-SXM4-40GB", "A100-PCIE-40GB", "A100 40GB"),
    _NV
    + "content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf",
  ),
  "a100-80gb": Chip(
    "A100 80GB",
    80 * GB,
    312 * TFLOPS,
    2039 * GB,
    1,
    ("A100-SXM4-80GB", "A100-PCIE-80GB", "A100 80GB"),
    _NV
    + "content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf",
  ),
  "h100": Chip(
    "H100 80GB",
    80 * GB,
    989 * TFLOPS,
    3350 * GB,
    1,
    ("H100",),
    _NV + "en-us/data-center/h100/",
  ),
  "h200": Chip(
    "H200 141GB",
    141 * GB,
    989 * TFLOPS,
    4800 * GB,
    1,
    ("H200",),
    _NV + "en-us/data-center/h200/",
  ),
}

# Order matters where one kind string contains another ("TPU v5 lite" before "TPU v5").
_MATCH_ORDER = ("v5e", "v6e", "v5p", "v4", "h200", "h100", "a100-80gb", "a100-40gb")


def for_device_kind(kind: str) -> Chip | None:
  """The chip whose kind strings occur in `kind` (jax Device.device_kind), or None (CPU, unknown)."""
  for key in _MATCH_ORDER:
    chip = CHIPS[key]
    if any(k.lower() in kind.lower() for k in chip.kinds):
      return chip
  return None


def for_generation(gen: str) -> Chip:
  if gen not in CHIPS:
    raise ValueError(f"unknown chip generation {gen!r}; known: {sorted(CHIPS)}")
  return CHIPS[gen]
