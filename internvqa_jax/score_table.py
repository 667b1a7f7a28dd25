"""The score CSV: a commented header, one row per (video, model), written as videos finish.

  # internvqa_jax.score 0.1.0
  # scale <model>: <what mos means, or raw output only>
  # run: {"models": [...], "seed": 0, "bootstrap": 1000, ...}   (one JSON line)
  path,model,score,score_std,score_ci_low,score_ci_high,num_views,mos,mos_ci_low,mos_ci_high,bit_depth
  a.mp4,student,0.61234,...

Read it with `pandas.read_csv(path, comment="#")` or skip lines starting with '#'. Rows are
appended and flushed to disk per video, so an interrupted run keeps every finished video; a
partial last line (killed mid-write) is cut off when the run resumes. `--resume` compares the
`run` line of the file with the new run (models, protocols, seed, bootstrap, segments) and
refuses a mismatch, naming the keys that differ.

The skipped-file log `<out>.skipped.jsonl` has one JSON object per line,
{"path": ..., "reason": ...}, so any file name (newlines, tabs) survives.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from internvqa_jax import report_rows

# One CSV column per field of the shared result row (internvqa_jax.report_rows).
COLUMNS = ("path", "model", *report_rows.NUMBERS)
SEGMENT_COLUMNS = ("path", "model", *report_rows.SEGMENT_NUMBERS)
_RUN_PREFIX = "# run: "
# Keys of the run line that may change between a run and its resumption.
_FREE_KEYS = ("version",)


class ResumeError(ValueError):
  """An output file cannot be resumed (different run, or not a score CSV)."""


def _cell(v: Any) -> str:
  if v is None:
    return ""
  if isinstance(v, float):
    return "" if math.isnan(v) else repr(v)
  return str(v)


def header_lines(run: Mapping[str, Any], scales: Mapping[str, str]) -> list[str]:
  lines = [f"# internvqa_jax.score {run.get('version', '')}"]
  lines += [f"# scale {name}: {text}" for name, text in scales.items()]
  lines.append(_RUN_PREFIX + json.dumps(run, sort_keys=True))
  return lines


def read_run(path: str) -> dict[str, Any]:
  """The run line of an existing score CSV (ResumeError if it has none)."""
  with open(path, newline="") as f:
    for line in f:
      if not line.startswith("#"):
        break
      if line.startswith(_RUN_PREFIX):
        try:
          return json.loads(line[len(_RUN_PREFIX) :])
        except json.JSONDecodeError as e:
          raise ResumeError(f"{path}: unreadable run line in the header ({e})") from e
  raise ResumeError(f"{path}: no '{_RUN_PREFIX.strip()}' header line; not a score CSV of this tool")


def run_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
  keys = sorted((set(old) | set(new)) - set(_FREE_KEYS))
  return [k for k in keys if old.get(k) != new.get(k)]


def _cut_partial_line(path: str) -> bool:
  """Drops a last line without its newline (a write cut by a kill); True if one was cut."""
  with open(path, "rb+") as f:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    if size == 0:
      return False
    f.seek(size - 1)
    if f.read(1) == b"\n":
      return False
    # Search backwards for the last newline.
    pos, chunk = size, 4096
    while pos > 0:
      start = max(0, pos - chunk)
      f.seek(start)
      data = f.read(pos - start)
      nl = data.rfind(b"\n")
      if nl >= 0:
        f.truncate(start + nl + 1)
        return True
      pos = start
    f.truncate(0)
    return True


class Table:
  """Appends rows to a CSV with the header above; every `write` is flushed and fsynced."""

  def __init__(
    self,
    path: str,
    columns: Sequence[str],
    run: Mapping[str, Any],
    scales: Mapping[str, str],
    resume: bool,
  ):
    self.path = path
    self.columns = tuple(columns)
    self.done: dict[str, set[str]] = {}  # path -> models with a row
    if resume and os.path.exists(path) and os.path.getsize(path) > 0:
      old = read_run(path)
      diff = run_differences(old, run)
      if diff:
        raise ResumeError(
          f"{path}: cannot resume: the file was written with different "
          + ", ".join(f"{k} ({old.get(k)!r} there, {run.get(k)!r} now)" for k in diff)
          + "; use another --out or drop --resume to start over"
        )
      self.cut_partial = _cut_partial_line(path)
      with open(path, newline="") as f:
        rows = _data_reader(f)
        if tuple(rows.fieldnames or ()) != self.columns:
          raise ResumeError(f"{path}: columns {rows.fieldnames}, expected {list(self.columns)}")
        for r in rows:
          self.done.setdefault(r["path"], set()).add(r["model"])
      self._f = open(path, "a", newline="")  # noqa: SIM115 - held open for the run
    else:
      self.cut_partial = False
      self._f = open(path, "w", newline="")  # noqa: SIM115 - held open for the run
      self._f.write("\n".join(header_lines(run, scales)) + "\n")
      csv.writer(self._f).writerow(self.columns)
      self._sync()
    self._w = csv.writer(self._f)

  def keep_only(self, done: Mapping[str, set[str]]) -> None:
    """Drops rows of videos absent from `done` (windows written before a kill cut their video)."""
    self._f.close()
    with open(self.path, newline="") as f:
      header = []
      line = f.readline()
      while line.startswith("#"):
        header.append(line)
        line = f.readline()
      rows = list(csv.DictReader(itertools.chain([line], f)))
    keep = [r for r in rows if r["model"] in done.get(r["path"], ())]
    if len(keep) != len(rows):
      tmp = self.path + ".tmp"
      with open(tmp, "w", newline="") as f:
        f.writelines(header)
        w = csv.writer(f)
        w.writerow(self.columns)
        w.writerows([r[c] for c in self.columns] for r in keep)
      os.replace(tmp, self.path)
    self.done = {}
    for r in keep:
      self.done.setdefault(r["path"], set()).add(r["model"])
    self._f = open(self.path, "a", newline="")  # noqa: SIM115 - held open for the run
    self._w = csv.writer(self._f)

  def is_done(self, path: str, models: Iterable[str]) -> bool:
    return set(models) <= self.done.get(path, set())

  def write(self, rows: Sequence[Mapping[str, Any]]) -> None:
    for r in rows:
      self._w.writerow([_cell(r.get(c)) for c in self.columns])
      self.done.setdefault(r["path"], set()).add(r["model"])
    self._sync()

  def _sync(self):
    self._f.flush()
    os.fsync(self._f.fileno())

  def close(self):
    self._f.close()


class SkipLog:
  """<out>.skipped.jsonl: one {"path", "reason"} object per line (appended when resuming)."""

  def __init__(self, path: str, resume: bool):
    self.path = path
    self.count = 0
    self._f = open(path, "a" if resume else "w")  # noqa: SIM115 - held open for the run

  def write(self, path: str, reason: str) -> None:
    self._f.write(json.dumps({"path": path, "reason": reason}, ensure_ascii=False) + "\n")
    self._f.flush()
    self.count += 1

  def close(self):
    self._f.close()


def read_skipped(path: str) -> list[dict[str, str]]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _data_reader(f) -> csv.DictReader:
  """DictReader after the '#' header lines (a data row may itself start with '#')."""
  line = f.readline()
  while line.startswith("#"):
    line = f.readline()
  return csv.DictReader(itertools.chain([line], f))


def read_rows(path: str) -> list[dict[str, str]]:
  """Rows of a score (or segments) CSV, header comments skipped."""
  with open(path, newline="") as f:
    return list(_data_reader(f))
