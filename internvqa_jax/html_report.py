"""One self-contained HTML page per scoring run: DIR/index.html.

  html_report.write_html("report/", rows, title="BVI-HD, student vs teacher")

`rows` are result rows (internvqa_jax.report_rows: path, model, score and the
optional interval, mos, segments, curve_png, maps). The page has an index
table of every video and model (score, 95% interval, std, views, and the
calibrated mos with its interval when any row has one), then one section per
video with its models, their quality-over-time curves (the row's curve_png,
or drawn here from its segments) and map overlays. Every image is embedded as
a base64 data URI and the style is inline, so the file opens offline and can
be moved or mailed on its own; no script runs.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

from internvqa_jax import report_rows

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; background: #fff; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th { background: #eee; }
td.text, th.text { text-align: left; }
section { border-top: 2px solid #888; margin-top: 1.5em; }
figure { display: inline-block; margin: 0.4em; vertical-align: top; }
figure img { max-width: min(960px, 100%); border: 1px solid #ccc; }
figcaption { font-size: 0.85em; color: #555; }
.absent { color: #999; }
"""


def draw_segment_curve(segments: Sequence[Mapping[str, Any]], title: str) -> bytes:
  """PNG bytes of a quality-over-time curve: each window's score at its centre,
  a band of +-score_std where given, and the windows' extents as ticks."""
  segs = sorted(segments, key=lambda s: (s["start"], s["end"]))
  mid = [(s["start"] + s["end"]) / 2 for s in segs]
  score = [s["score"] for s in segs]
  fig = Figure(figsize=(7.0, 2.6), dpi=100)
  ax = fig.add_subplot()
  if all(report_rows.present(s, "score_std") for s in segs):
    lo = [s["score"] - s["score_std"] for s in segs]
    hi = [s["score"] + s["score_std"] for s in segs]
    ax.fill_between(mid, lo, hi, alpha=0.25, linewidth=0, label="+- std over views")
  ax.plot(mid, score, marker="o", markersize=3, label="segment score")
  for s in segs:
    ax.plot([s["start"], s["end"]], [s["score"], s["score"]], color="0.6", linewidth=0.8)
  ax.set_xlabel("time (s)")
  ax.set_ylabel("score")
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="best")
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png")
  return buf.getvalue()


def _data_uri(png: bytes) -> str:
  return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _read_png(path: str, where: str) -> bytes:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{where}: image {path} does not exist")
  with open(path, "rb") as f:
    data = f.read()
  if not data.startswith(b"\x89PNG\r\n\x1a\n"):
    raise ValueError(f"{where}: {path} is not a PNG file")
  return data


def _num(row: Mapping[str, Any], key: str, fmt: str = "{:.4f}") -> str:
  if not report_rows.present(row, key):
    return '<span class="absent">&ndash;</span>'
  return html.escape(fmt.format(row[key]))


def _interval(row: Mapping[str, Any], low: str, high: str) -> str:
  if not (report_rows.present(row, low) and report_rows.present(row, high)):
    return '<span class="absent">&ndash;</span>'
  return f"[{row[low]:.4f}, {row[high]:.4f}]"


def _score_cells(row: Mapping[str, Any], with_mos: bool) -> str:
  cells = [
    _num(row, "score"),
    _interval(row, "score_ci_low", "score_ci_high"),
    _num(row, "score_std"),
    _num(row, "num_views", "{:.0f}"),
  ]
  if with_mos:
    cells += [_num(row, "mos"), _interval(row, "mos_ci_low", "mos_ci_high")]
  return "".join(f"<td>{c}</td>" for c in cells)


def _score_header(with_mos: bool) -> str:
  names = ["score", "95% interval", "std", "views"] + (
    ["mos", "mos 95% interval"] if with_mos else []
  )
  return "".join(f"<th>{n}</th>" for n in names)


def _figure(png: bytes, caption: str) -> str:
  cap = html.escape(caption)
  return f'<figure><img src="{_data_uri(png)}" alt="{cap}"><figcaption>{cap}</figcaption></figure>'


def write_html(
  out_dir: str,
  rows: Sequence[Mapping[str, Any]],
  *,
  title: str = "Video quality scores",
  notes: Sequence[str] = (),
) -> str:
  """Writes out_dir/index.html for `rows`; returns its path.

  notes: lines shown under the title (e.g. the CSV header: models, protocol,
  seed, what the mos scale means). Videos keep the order of their first row;
  a video's models keep row order. Rows of one video may share a curve_png
  (one plot of all its models): it is shown once.
  """
  rows = report_rows.check_rows(rows)
  with_mos = any(report_rows.present(r, "mos") for r in rows)
  videos: dict[str, list[tuple[int, Mapping[str, Any]]]] = {}
  for i, r in enumerate(rows):
    videos.setdefault(r["path"], []).append((i, r))
  anchors = {path: f"v{k}" for k, path in enumerate(videos)}

  out = [
    "<!DOCTYPE html>",
    '<html lang="en"><head><meta charset="utf-8">',
    f"<title>{html.escape(title)}</title>",
    f"<style>{_STYLE}</style></head><body>",
    f"<h1>{html.escape(title)}</h1>",
  ]
  out += [f"<p>{html.escape(n)}</p>" for n in notes]
  out.append(f"<p>{len(videos)} video(s), {len(rows)} row(s).</p>")
  out.append('<table id="index"><thead><tr><th class="text">video</th><th class="text">model</th>')
  out.append(_score_header(with_mos) + "</tr></thead><tbody>")
  for path, items in videos.items():
    for _, r in items:
      link = f'<a href="#{anchors[path]}">{html.escape(path)}</a>'
      out.append(
        f'<tr class="video-row"><td class="text">{link}</td>'
        f'<td class="text">{html.escape(r["model"])}</td>{_score_cells(r, with_mos)}</tr>'
      )
  out.append("</tbody></table>")

  for path, items in videos.items():
    out.append(f'<section id="{anchors[path]}"><h2>{html.escape(path)}</h2>')
    out.append(f'<table><thead><tr><th class="text">model</th>{_score_header(with_mos)}')
    out.append("<th>bit depth</th></tr></thead><tbody>")
    for _, r in items:
      out.append(
        f'<tr><td class="text">{html.escape(r["model"])}</td>{_score_cells(r, with_mos)}'
        f"<td>{_num(r, 'bit_depth', '{:.0f}')}</td></tr>"
      )
    out.append("</tbody></table>")
    shown = set()  # One curve PNG may hold all models of a video: embed it once.
    for i, r in items:
      name = os.path.basename(path)
      if report_rows.present(r, "curve_png"):
        curve = os.path.realpath(r["curve_png"])
        if curve not in shown:
          shown.add(curve)
          png = _read_png(r["curve_png"], f"rows[{i}] ({path}) 'curve_png'")
          out.append(_figure(png, f"quality over time, {r['model']}"))
      elif report_rows.present(r, "segments") and r["segments"]:
        png = draw_segment_curve(r["segments"], f"{name} | {r['model']}")
        out.append(_figure(png, f"quality over time, {r['model']}"))
      for j, map_path in enumerate(r.get("maps") or ()):
        png = _read_png(map_path, f"rows[{i}] ({path}) 'maps'[{j}]")
        out.append(_figure(png, f"quality map, {r['model']}: {os.path.basename(map_path)}"))
    out.append("</section>")
  out.append("</body></html>")

  os.makedirs(out_dir, exist_ok=True)
  page = os.path.join(out_dir, "index.html")
  tmp = page + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write("\n".join(out) + "\n")
  os.replace(tmp, page)  # A reader never sees a half-written page.
  return page
