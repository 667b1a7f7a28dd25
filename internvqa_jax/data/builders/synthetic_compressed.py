"""`synthetic_compressed`: the embedded compressed-video quality set (no download).

Each source photograph bundled with scikit-image is filmed with a smooth pan + zoom at several
small resolutions (each resolution along its own camera path, i.e. its own region of the photo),
encoded by four real encoders (x264, x265, libvpx-vp9, SVT-AV1) at several CRFs that run from
visually lossless to heavy artefacts, and labelled with a full-reference score: the encoded clip is
decoded and compared with the pristine yuv420p clip (luma detail-to-error ratio mapped to 0-100 by
a fixed logistic; see internvqa_jax/data/synthetic_video.py). Higher is better (score_kind 'mos').
Records embed the MP4 bytes (`video_bytes`) and also carry the YUV-PSNR (`psnr`) and the DSNR
behind the score (`dsnr`).

Configs: `default` (what the demo trains on: 16 sources x 3 resolutions x 4 encoders x 5 CRFs = 960
clips of 24 frames) and `tiny` (for tests: 2 sources x 2 resolutions x 4 encoders x 2 CRFs, 16
frames).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from internvqa_jax.data import synthetic_video
from internvqa_jax.data.builders import FULL_SPLIT, common_features

_DEFAULT_LEVELS = (
  ("libx264", (18, 26, 34, 42, 51)),
  ("libx265", (18, 26, 34, 42, 51)),
  # libvpx/SVT-AV1 CRF scales are 0-63 and gentler per step: spread further for similar PSNRs.
  ("libvpx-vp9", (16, 32, 44, 54, 63)),
  ("libsvtav1", (16, 32, 44, 54, 63)),
)


@dataclasses.dataclass(eq=False)
class SyntheticConfig(tfds.core.BuilderConfig):
  sources: tuple[str, ...] = tuple(synthetic_video.SOURCE_IMAGES)
  # (width, height). Small frames: a model's native-resolution crop (48 px in the demo) covers much
  # of the frame, so its quality is close to the clip's label.
  resolutions: tuple[tuple[int, int], ...] = ((64, 48), (96, 72), (128, 96))
  encoder_levels: tuple[tuple[str, tuple[int, ...]], ...] = _DEFAULT_LEVELS
  num_frames: int = 24
  fps: int = 24
  seed: int = 0
  camera_paths: int = 1  # camera paths (regions of the photograph) filmed per resolution
  # "dsnr": the full-reference quality label. "crf": a proxy label that needs no quality
  # measurement, 100 * (1 - level / the encoder's maximum level), for pretraining.
  label: str = "dsnr"

  @property
  def num_clips(self) -> int:
    return (
      len(self.sources)
      * len(self.resolutions)
      * self.camera_paths
      * sum(len(levels) for _, levels in self.encoder_levels)
    )


DEFAULT_CONFIG = SyntheticConfig(
  name="default",
  description="16 sources x 3 resolutions x 4 encoders x 5 CRFs, 24 frames at 24 fps.",
)
# Teacher pretraining (internvqa_jax/demo_assets/make_teacher.py): more regions, resolutions and
# levels of the 12 photographs outside the demo's held-out split, labelled only by encoder setting.
PRETRAIN_CONFIG = SyntheticConfig(
  name="pretrain",
  description="Proxy-label set: 12 photographs x 4 resolutions x 3 camera paths x 4 encoders x "
  "8 levels, label = CRF.",
  sources=tuple(
    s for s in synthetic_video.SOURCE_IMAGES if s not in ("coffee", "rocket", "camera", "grass")
  ),
  resolutions=((64, 48), (80, 60), (96, 72), (128, 96)),
  encoder_levels=(
    ("libx264", (14, 20, 26, 30, 34, 38, 44, 51)),
    ("libx265", (14, 20, 26, 30, 34, 38, 44, 51)),
    ("libvpx-vp9", (10, 24, 32, 40, 46, 52, 58, 63)),
    ("libsvtav1", (10, 24, 32, 40, 46, 52, 58, 63)),
  ),
  seed=1,
  camera_paths=3,
  label="crf",
)
TINY_CONFIG = SyntheticConfig(
  name="tiny",
  description="Test-size: 2 sources x 2 resolutions x 4 encoders x 2 CRFs, 16 frames.",
  sources=("astronaut", "coffee"),
  resolutions=((64, 48), (96, 72)),
  encoder_levels=(
    ("libx264", (20, 46)),
    ("libx265", (20, 46)),
    ("libvpx-vp9", (20, 63)),
    ("libsvtav1", (20, 63)),
  ),
  num_frames=16,
)


class SyntheticCompressed(tfds.core.GeneratorBasedBuilder):
  """Camera-motion clips of bundled photographs, really encoded, labelled by full-reference DSNR."""

  name = "synthetic_compressed"
  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {
    "1.0.0": "First release.",
    "2.0.0": "Label = luma detail-to-error ratio (was YUV-PSNR); 8 greyscale sources added; "
    "one camera path per resolution; resolutions 64x48, 96x72, 128x96 (were 2x).",
  }
  BUILDER_CONFIGS = [DEFAULT_CONFIG, TINY_CONFIG, PRETRAIN_CONFIG]
  DEFAULT_CONFIG_NAME = "default"

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      features=common_features(
        video_bytes=tfds.features.Tensor(shape=(), dtype=np.object_),  # the MP4 file
        dsnr=tfds.features.Scalar(np.float32),  # detail-to-error ratio (dB) behind the score
        psnr=tfds.features.Scalar(np.float32),  # YUV-PSNR (dB), for reference
      ),
      # Keep generation order (sorted by source, resolution, encoder, level): indices are stable
      # and readable, and splits select by source anyway.
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # everything is made locally
    if self.builder_config.label not in ("dsnr", "crf"):
      raise ValueError(
        f"synthetic_compressed/{self.builder_config.name}: label must be 'dsnr' or 'crf', "
        f"got {self.builder_config.label!r}"
      )
    for name in self.builder_config.sources:  # fail before any encoding if an image is missing
      synthetic_video.load_source_image(name)
    return {FULL_SPLIT: self._generate_examples()}

  def _generate_examples(self):
    config = self.builder_config
    for source in config.sources:
      image = synthetic_video.load_source_image(source)
      for (width, height), take in (
        (r, k) for r in config.resolutions for k in range(config.camera_paths)
      ):
        # Each resolution (and path) films its own region of the photograph: more distinct
        # content per source (the split unit stays the photograph).
        suffix = f"#{take}" if take else ""
        path = synthetic_video.random_camera_path(
          synthetic_video.source_seed(f"{source}@{width}x{height}{suffix}", config.seed),
          image.shape[:2],
          width / height,
        )
        pristine = synthetic_video.to_yuv420p(
          synthetic_video.render_clip(image, path, width, height, config.num_frames)
        )
        for encoder, levels in config.encoder_levels:
          spec = synthetic_video.ENCODERS[encoder]
          for level in levels:
            data = synthetic_video.encode_clip(pristine, encoder, level, config.fps)
            decoded = synthetic_video.decode_yuv420p(data, config.num_frames)
            dsnr = synthetic_video.detail_snr(decoded, pristine)
            video_id = f"{source}_{width}x{height}{suffix}_{encoder}_{spec.quality_option}{level}"
            if config.label == "crf":
              score = 100.0 * (1.0 - level / spec.max_level)
            else:
              score = synthetic_video.dsnr_to_mos(dsnr)
            yield (
              video_id,
              {
                "dataset": self.name,
                "video_id": video_id,
                "source": source,
                "path": "",
                "video_bytes": data,
                "score": score,
                "score_kind": "mos",
                "num_frames": config.num_frames,
                "fps": float(config.fps),
                "width": width,
                "height": height,
                "bit_depth": 8,
                "codec": spec.codec,
                "encoder": encoder,
                "level": level,
                "dsnr": dsnr,
                "psnr": synthetic_video.yuv_psnr(decoded, pristine),
              },
            )
