"""`bvi_hd`: BVI-HD (Zhang et al., IEEE TMM 2018), 32 sources x 12 HEVC / HEVC-SYNTH sequences, DMOS.

Manual download (CDVL account). The builder reads the score table the InternVQA loader reads
(`BVIHD.txt`: Original_Name, Name, dmos, encoder, distortion_level) and the raw yuv420p files at
`<manual_dir>/<encoder>/<Name>`. Frame size, frame rate and bit depth come from the file name
(`..._<W>x<H>_<fps>fps...`, 8-bit unless the name says `10bit`); the frame count from the file size.
Every listed file must exist and decode its first frame; otherwise the build fails listing them all.

Score: DMOS exactly as in the table (score_kind 'dmos': higher is WORSE; slightly negative values
occur). `level` is the table's distortion_level (the QP for plain HEVC).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import re

import tensorflow_datasets as tfds

from internvqa_jax.data import builders as common
from internvqa_jax.data import yuv

SCORE_FILE = "BVIHD.txt"
SCORE_COLUMNS = ("original_name", "name", "dmos", "encoder", "distortion_level")

# The 32 BVI-HD source names (file-name prefixes), as used by the dataset's file names.
SOURCES = (
  "BallUnderWater",
  "Bookcase",
  "Boxing",
  "BricksLeaves",
  "BridgeRiver",
  "BubblesPitcher",
  "CalmingWater",
  "CarpetCircleFast",
  "CloudsZoom",
  "Diver",
  "DiverFishAndRock",
  "FishAndRock",
  "Fountain",
  "Grass",
  "Hamster",
  "KineticFastPainting",
  "Lightreef",
  "MartialArts",
  "Music",
  "PaintingTilting",
  "ParkPlay",
  "PlasmaAveragePan",
  "PlasmaSlowRandom",
  "RockWater",
  "RockWave",
  "Rowing",
  "SmokeGuns",
  "Surfers",
  "Toys",
  "TreeGrassFamily",
  "TreeTrunk",
  "Typing",
)

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
BVI-HD (32 sources x 12 distorted 1920x1080 sequences: 6 HEVC QPs + 6 HEVC with synthesis mode;
DMOS from 86 subjects, higher = worse).
1. Videos: from CDVL (https://www.cdvl.org/members-section/view-file/?id=2955, needs a personal CDVL
   account). Put every distorted .yuv file in a folder named after its encoder, as the score table
   names it, e.g. <manual_dir>/HEVC/Boxing_1920x1080_30fps_HEVC_QP22.yuv. References (ORIG/) are not
   needed. Names must keep the `<W>x<H>_<fps>fps` part (the frame geometry is read from it).
2. Scores: <manual_dir>/{SCORE_FILE}, one optional header line, then one row per distorted sequence:
       Original_Name, Name, dmos, encoder, distortion_level
   separated by commas, tabs or spaces (the table InternVQA's BVI-HD loader reads; DMOS values come
   from the official subjective data, vilab.blogs.bristol.ac.uk/files/2018/07/BVIHD_SUB_DATA-1p2b9zx.zip).
   The file is read at <manual_dir>/<encoder>/<Name> (".yuv" is appended when Name has no extension).
Expected layout:
  <manual_dir>/{SCORE_FILE}
  <manual_dir>/HEVC/<Source>_1920x1080_<fps>fps_HEVC_QP<22|27|32|37|42|47>.yuv   (192 files)
  <manual_dir>/<synthesis encoder folder>/<Name>.yuv                               (192 files)
Then: python -c "from internvqa_jax.data import sources; sources.build('bvi_hd', DATA_DIR, manual_dir=MANUAL_DIR)"
"""

_INTEGER = re.compile(r"-?\d+")


@dataclasses.dataclass(eq=False)
class BviHdConfig(tfds.core.BuilderConfig):
  # Sources that must be present; tests build a subset. Rows of other sources are errors.
  sources: tuple[str, ...] = SOURCES
  distortions_per_source: int = 12


def parse_geometry(*names: str) -> tuple[int, int, float, int]:
  """(width, height, fps, bit_depth) from the first name with a `<W>x<H>` field (yuv.py's rules)."""
  for name in names:
    fields = yuv.parse_yuv_name(name)
    if "width" in fields:
      if "fps" not in fields:
        raise ValueError(f'no "<fps>fps" field in file name {name!r}')
      return fields["width"], fields["height"], fields["fps"], fields.get("bit_depth", 8)
  raise ValueError(f'no "<W>x<H>" field in file name(s) {list(names)}')


def _split_row(line: str) -> list[str]:
  if "," in line:
    return [f.strip() for f in line.split(",")]
  if "\t" in line:
    return [f.strip() for f in line.split("\t")]
  return line.split()


def _is_number(text: str) -> bool:
  try:
    float(text)
  except ValueError:
    return False
  return True


def _label_problem(text: str) -> str | None:
  """Why `text` is not a usable label (empty, not a number, NaN or infinite), or None."""
  if not text:
    return "is empty"
  try:
    x = float(text)
  except ValueError:
    return "is not a number"
  return None if math.isfinite(x) else "is not finite"


def parse_score_file(path: str) -> tuple[list[dict[str, str]], list[str]]:
  """Returns (rows as dicts keyed by SCORE_COLUMNS, problems). Header detected, never assumed.

  The first line is a header iff its dmos field is not a number; a header also fixes column order.
  """
  rows, problems = [], []
  with open(path, encoding="utf-8-sig") as f:
    lines = [(n, line.strip()) for n, line in enumerate(f, 1) if line.strip()]
  columns = list(SCORE_COLUMNS)
  if lines:
    first = _split_row(lines[0][1])
    dmos_pos = SCORE_COLUMNS.index("dmos")
    if len(first) < len(SCORE_COLUMNS) or not _is_number(first[dmos_pos]):
      names = [c.lower() for c in first]
      if sorted(names) == sorted(SCORE_COLUMNS):
        columns = names
      elif len(first) != len(SCORE_COLUMNS):
        problems.append(
          f"{path}:{lines[0][0]}: header {first} is not the expected columns {list(SCORE_COLUMNS)}"
        )
      lines = lines[1:]
  for lineno, line in lines:
    fields = _split_row(line)
    if len(fields) != len(columns):
      problems.append(f"{path}:{lineno}: expected {len(columns)} fields {columns}, got {fields}")
      continue
    row = dict(zip(columns, fields))
    why = _label_problem(row["dmos"])
    if why:
      problems.append(
        f"{path}:{lineno}: video {row['name']!r}: dmos {row['dmos']!r} {why}; expected a "
        "finite number"
      )
      continue
    row["lineno"] = str(lineno)
    rows.append(row)
  return rows, problems


def source_of(original_name: str) -> str:
  """'Boxing_1920x1080_30fps.yuv' (or a path to it) -> 'Boxing'."""
  return os.path.basename(original_name).split("_")[0].split(".")[0]


def list_entries(manual_dir: str, config: BviHdConfig) -> tuple[list[dict], list[str]]:
  """Parses the score table into file entries and checks the source x distortion counts."""
  score_path = os.path.join(manual_dir, SCORE_FILE)
  if not os.path.isfile(score_path):
    return [], [f"{score_path}: score table missing (see the manual download instructions)"]
  rows, problems = parse_score_file(score_path)
  entries, per_source, seen = [], collections.Counter(), set()
  for row in rows:
    where = f"{score_path}:{row['lineno']}"
    source = source_of(row["original_name"])
    if source not in config.sources:
      problems.append(
        f"{where}: source {source!r} (from {row['original_name']!r}) is not one of "
        f"the expected {len(config.sources)} BVI-HD sources"
      )
      continue
    level = _INTEGER.fullmatch(row["distortion_level"].upper().removeprefix("QP"))
    if not level:
      problems.append(f"{where}: distortion_level {row['distortion_level']!r} is not an integer")
      continue
    name = row["name"] if os.path.splitext(row["name"])[1] else row["name"] + ".yuv"
    try:
      width, height, fps, bit_depth = parse_geometry(name, row["original_name"])
    except ValueError as e:
      problems.append(f"{where}: {e}")
      continue
    path = common.path_inside(manual_dir, row["encoder"], name)
    if path is None:
      problems.append(
        f"{where}: video {row['name']!r} (encoder {row['encoder']!r}) points outside the "
        f"manual_dir {manual_dir}; names must be plain file names"
      )
      continue
    video_id = f"{row['encoder']}/{os.path.splitext(name)[0]}"
    if video_id in seen:
      problems.append(f"{where}: duplicate row for {video_id}")
      continue
    seen.add(video_id)
    per_source[source] += 1
    entries.append(
      {
        "dataset": "bvi_hd",
        "video_id": video_id,
        "source": source,
        "path": path,
        "score": float(row["dmos"]),
        "score_kind": "dmos",
        "encoder": row["encoder"],
        "level": int(level.group(0)),
        "_geometry": (width, height, fps, bit_depth),
      }
    )
  for source in config.sources:
    if per_source[source] != config.distortions_per_source:
      problems.append(
        f"{score_path}: source {source} has {per_source[source]} rows, expected "
        f"{config.distortions_per_source}"
      )
  return entries, problems


def _inspect(entry: dict) -> common.VideoMeta:
  width, height, fps, bit_depth = entry["_geometry"]
  return common.inspect_raw_yuv(entry["path"], width, height, fps, bit_depth)


class BviHd(common.ManualRecordsBuilder, tfds.core.GeneratorBasedBuilder):
  """BVI-HD distorted sequences (raw yuv420p on disk) with their DMOS."""

  name = "bvi_hd"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  LIST_ENTRIES = staticmethod(list_entries)
  INSPECT = staticmethod(_inspect)
  BUILDER_CONFIGS = [BviHdConfig(name="default", description="All 32 sources x 12 sequences.")]
  DEFAULT_CONFIG_NAME = "default"

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      features=common.common_features(),
      homepage="https://fan-aaron-zhang.github.io/BVI-HD/",
      disable_shuffling=True,
      citation="Zhang, Moss, Baddeley, Bull. BVI-HD: A Video Quality Database for HEVC Compressed "
      "and Texture Synthesised Content. IEEE TMM 20(10):2620-2630, 2018.",
    )
