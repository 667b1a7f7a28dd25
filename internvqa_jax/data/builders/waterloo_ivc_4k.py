"""`waterloo_ivc_4k`: Waterloo IVC 4K (Li et al., ICIAR 2019), 20 sources x 5 encoders x 3 resolutions
x 4 levels = 1,200 videos, MOS (higher is better).

Manual download. `scores.txt` rows are (encoder, video_number, resolution, level, MOS), comma
separated; whether the file starts with a header line is detected from its first row (a header is a
row whose MOS field is not a number), so no data row is ever dropped. Files are read at
`<manual_dir>/<encoder>/<NN>/<W>x<H>_<level>.mp4` (InternVQA's layout), with 540p/1080p/2160p mapped to
960x540/1920x1080/3840x2160. Every expected (encoder, source, resolution, level) must have exactly one
score row, and every file must exist and decode its first frame; otherwise the build fails listing all
problems. Frame count, rate, size, bit depth and codec are probed from each file.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os

import tensorflow_datasets as tfds

from internvqa_jax.data import builders as common

SCORE_FILE = "scores.txt"
RESOLUTIONS = {"540p": (960, 540), "1080p": (1920, 1080), "2160p": (3840, 2160)}
NUM_SOURCES = 20

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Waterloo IVC 4K Video Quality Database (20 sources x H.264/HEVC/VP9/AVS2/AV1 x 540p/1080p/2160p x 4
levels = 1,200 videos; MOS 0-100, higher = better). Download the archives from
http://ivc.uwaterloo.ca/database/4KVQA.html (no registration; AVS2 and AV1 come in 4 parts each) and
extract them so that the layout is:
  <manual_dir>/{SCORE_FILE}                      rows: encoder, video_number, resolution, level, MOS
  <manual_dir>/<encoder>/<NN>/<W>x<H>_<level>.mp4  e.g. HEVC/01/960x540_1.mp4
where <encoder> is spelled as in {SCORE_FILE}, NN is the 2-digit source number (01-20), and
540p/1080p/2160p files are named 960x540/1920x1080/3840x2160. A header line in {SCORE_FILE} is optional.
Files the installed decoders cannot open (possibly AVS2) are reported by the build; convert them (e.g.
to lossless FFV1 or x264 -qp 0 in the same .mp4 path) before building.
Then: python -c "from internvqa_jax.data import sources; sources.build('waterloo_ivc_4k', DATA_DIR, manual_dir=MANUAL_DIR)"
"""


@dataclasses.dataclass(eq=False)
class WaterlooConfig(tfds.core.BuilderConfig):
  """The expected grid. `encoders=None` takes the spellings in scores.txt (must be num_encoders)."""

  sources: tuple[int, ...] = tuple(range(1, NUM_SOURCES + 1))
  encoders: tuple[str, ...] | None = None
  num_encoders: int = 5
  resolutions: tuple[str, ...] = ("540p", "1080p", "2160p")
  levels: tuple[int, ...] = (1, 2, 3, 4)


def _is_number(text: str) -> bool:
  try:
    float(text)
  except ValueError:
    return False
  return True


def parse_score_file(path: str) -> tuple[list[dict], list[str]]:
  """Returns (rows, problems). Row keys: encoder, source (int), resolution, level (int), mos, lineno."""
  with open(path, encoding="utf-8-sig") as f:
    lines = [(n, line.strip()) for n, line in enumerate(f, 1) if line.strip()]
  if lines and not _is_number(lines[0][1].split(",")[-1].strip()):
    lines = lines[1:]  # header line: its MOS field is a column name, not a number
  rows, problems = [], []
  for lineno, line in lines:
    fields = [f.strip() for f in line.split(",")]
    if len(fields) != 5:
      problems.append(
        f"{path}:{lineno}: expected 5 comma-separated fields (encoder, video_number, "
        f"resolution, level, MOS), got {fields}"
      )
      continue
    encoder, number, resolution, level, mos = fields
    try:
      row = {
        "encoder": encoder,
        "source": int(number),
        "resolution": resolution.lower(),
        "level": int(level),
        "mos": float(mos),
        "lineno": lineno,
      }
    except ValueError as e:
      problems.append(f"{path}:{lineno}: {e} in {fields}")
      continue
    if not math.isfinite(row["mos"]):
      problems.append(
        f"{path}:{lineno}: video {encoder}/{number} {resolution} level {level}: MOS {mos!r} "
        "is not finite; expected a finite number"
      )
      continue
    rows.append(row)
  return rows, problems


def file_path(manual_dir: str, encoder: str, source: int, resolution: str, level: int) -> str:
  width, height = RESOLUTIONS[resolution]
  return os.path.abspath(
    os.path.join(manual_dir, encoder, f"{source:02d}", f"{width}x{height}_{level}.mp4")
  )


def list_entries(manual_dir: str, config: WaterlooConfig) -> tuple[list[dict], list[str]]:
  """Parses scores.txt into file entries; checks that the expected grid is covered exactly once."""
  score_path = os.path.join(manual_dir, SCORE_FILE)
  if not os.path.isfile(score_path):
    return [], [f"{score_path}: score file missing (see the manual download instructions)"]
  rows, problems = parse_score_file(score_path)
  encoders = config.encoders or tuple(sorted({r["encoder"] for r in rows}))
  if config.encoders is None and len(encoders) != config.num_encoders:
    problems.append(
      f"{score_path}: expected {config.num_encoders} encoders, found "
      f"{len(encoders)}: {list(encoders)}"
    )
  by_key = {}
  for row in rows:
    where = f"{score_path}:{row['lineno']}"
    if common.path_inside(manual_dir, row["encoder"]) is None:
      problems.append(
        f"{where}: encoder {row['encoder']!r} points outside the manual_dir {manual_dir}"
      )
      continue
    key = (row["encoder"], row["source"], row["resolution"], row["level"])
    if (
      row["encoder"] not in encoders
      or row["source"] not in config.sources
      or row["resolution"] not in config.resolutions
      or row["level"] not in config.levels
    ):
      problems.append(
        f"{where}: unexpected row {key}: encoders {list(encoders)}, sources "
        f"{list(config.sources)}, resolutions {list(config.resolutions)}, levels "
        f"{list(config.levels)}"
      )
    elif key in by_key:
      problems.append(f"{where}: duplicate row for {key} (first at line {by_key[key]['lineno']})")
    else:
      by_key[key] = row
  entries = []
  for key in itertools.product(encoders, config.sources, config.resolutions, config.levels):
    if key not in by_key:
      problems.append(
        f"{score_path}: no score row for encoder {key[0]}, source {key[1]}, "
        f"{key[2]}, level {key[3]}"
      )
      continue
    encoder, source, resolution, level = key
    entries.append(
      {
        "dataset": "waterloo_ivc_4k",
        "video_id": f"{encoder}_{source:02d}_{resolution}_{level}",
        "source": f"{source:02d}",
        "path": file_path(manual_dir, *key),
        "score": by_key[key]["mos"],
        "score_kind": "mos",
        "encoder": encoder,
        "level": level,
        "resolution": resolution,
      }
    )
  return entries, problems


def _inspect(entry: dict) -> common.VideoMeta:
  return common.inspect_container_video(entry["path"])


class WaterlooIvc4k(common.ManualRecordsBuilder, tfds.core.GeneratorBasedBuilder):
  """Waterloo IVC 4K compressed videos (files on disk) with their MOS."""

  name = "waterloo_ivc_4k"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  LIST_ENTRIES = staticmethod(list_entries)
  INSPECT = staticmethod(_inspect)
  BUILDER_CONFIGS = [WaterlooConfig(name="default", description="All 1,200 videos.")]
  DEFAULT_CONFIG_NAME = "default"

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      features=common.common_features(resolution=tfds.features.Text()),
      homepage="https://ivc.uwaterloo.ca/database/4KVQA.html",
      disable_shuffling=True,
      citation="Li, Duanmu, Liu, Wang. AVC, HEVC, VP9, AVS2 or AV1? A Comparative Study of "
      "State-of-the-art Video Encoders on 4K Videos. ICIAR 2019.",
    )
