"""HTML report: page contents, self-containment, errors, and a real headless-Chromium render."""

import html.parser
import os
import shutil
import subprocess

import matplotlib.image
import numpy as np
import pytest

from internvqa_jax import html_report

MAGENTA = (1.0, 0.0, 1.0)
# .ci/run installs Chromium and sets this, so there the render test cannot skip.
REQUIRE_CHROMIUM = os.environ.get("INTERNVQA_REQUIRE_CHROMIUM") == "1"


def solid_png(path, color, h=60, w=90):
  matplotlib.image.imsave(path, np.broadcast_to(np.array(color), (h, w, 3)).copy())
  return str(path)


def sample_rows(tmp_path):
  odd = "/videos/a&b <1>.mp4"  # Needs escaping.
  segments = [
    {"start": 0.0, "end": 2.0, "score": 0.61, "score_std": 0.02},
    {"start": 2.0, "end": 4.0, "score": 0.55, "score_std": 0.03},
    {"start": 4.0, "end": 5.3, "score": 0.58, "score_std": 0.01},
  ]
  return [
    {
      "path": odd,
      "model": "student",
      "score": 0.5812345,
      "score_std": 0.031,
      "score_ci_low": 0.561,
      "score_ci_high": 0.602,
      "num_views": 4,
      "mos": 71.25,
      "mos_ci_low": 69.5,
      "mos_ci_high": 73.0,
      "segments": segments,
    },
    {"path": odd, "model": "teacher", "score": 0.7, "num_views": 12, "mos": float("nan")},
    {
      "path": "/videos/c.y4m",
      "model": "student",
      "score": -0.25,
      "score_std": 0.01,
      "score_ci_low": -0.27,
      "score_ci_high": -0.23,
      "num_views": 4,
      "bit_depth": 10,
      "curve_png": solid_png(tmp_path / "curve.png", (0.2, 0.6, 0.2)),
      "maps": [
        solid_png(tmp_path / "map0.png", MAGENTA),
        solid_png(tmp_path / "map1.png", MAGENTA),
      ],
    },
  ]


class _Collector(html.parser.HTMLParser):
  def __init__(self):
    super().__init__()
    self.rows, self.srcs, self.hrefs, self.ids = [], [], [], []
    self._row = None

  def handle_starttag(self, tag, attrs):
    a = dict(attrs)
    if tag == "tr" and a.get("class") == "video-row":
      self._row = []
    if tag == "img":
      self.srcs.append(a["src"])
    if tag in ("a", "link") and "href" in a:
      self.hrefs.append(a["href"])
    if "id" in a:
      self.ids.append(a["id"])

  def handle_endtag(self, tag):
    if tag == "tr" and self._row is not None:
      self.rows.append("|".join(c.strip() for c in self._row if c.strip()))
      self._row = None

  def handle_data(self, data):
    if self._row is not None:
      self._row.append(data)


def test_page_is_self_contained_and_lists_every_row(tmp_path):
  rows = sample_rows(tmp_path)
  page = html_report.write_html(str(tmp_path / "report"), rows, title="Run 1", notes=["seed 0"])
  assert page == str(tmp_path / "report" / "index.html")
  text = open(page, encoding="utf-8").read()
  p = _Collector()
  p.feed(text)
  assert p.rows == [
    "/videos/a&b <1>.mp4|student|0.5812|[0.5610, 0.6020]|0.0310|4|71.2500|[69.5000, 73.0000]",
    "/videos/a&b <1>.mp4|teacher|0.7000|–|–|12|–|–",
    "/videos/c.y4m|student|-0.2500|[-0.2700, -0.2300]|0.0100|4|–|–",
  ]
  # Curve drawn from segments, given curve, two maps: all embedded PNGs.
  assert len(p.srcs) == 4 and all(s.startswith("data:image/png;base64,") for s in p.srcs)
  # Only in-page links; nothing to fetch.
  assert p.hrefs == ["#v0", "#v0", "#v1"] and {"v0", "v1", "index"} <= set(p.ids)
  assert "http:" not in text and "https:" not in text and "<script" not in text
  assert "&lt;1&gt;" in text and "<1>" not in text
  assert "seed 0" in text and "<title>Run 1</title>" in text
  # The report does not depend on the source images after writing.
  for name in ("curve.png", "map0.png", "map1.png"):
    os.remove(tmp_path / name)
  assert open(page, encoding="utf-8").read() == text


def test_shared_curve_is_embedded_once(tmp_path):
  curve = solid_png(tmp_path / "both.png", (0.1, 0.2, 0.9))
  rows = [{"path": "a.mp4", "model": m, "score": 1.0, "curve_png": curve} for m in ("s", "t")]
  rows.append({"path": "b.mp4", "model": "s", "score": 2.0, "curve_png": curve})
  p = _Collector()
  p.feed(open(html_report.write_html(str(tmp_path / "r"), rows), encoding="utf-8").read())
  assert len(p.srcs) == 2  # Once per video.


def test_mos_columns_only_when_some_row_has_mos(tmp_path):
  page = html_report.write_html(str(tmp_path), [{"path": "a.mp4", "model": "m", "score": 1.0}])
  text = open(page, encoding="utf-8").read()
  assert "mos" not in text and "<img" not in text


def test_errors_name_the_row_and_key(tmp_path):
  with pytest.raises(ValueError, match=r"rows\[1\]: missing required key 'score'"):
    html_report.write_html(
      str(tmp_path), [{"path": "a", "model": "m", "score": 1}, {"path": "b", "model": "m"}]
    )
  with pytest.raises(ValueError, match=r"rows\[0\] \(a\): 'score' must be a finite number"):
    html_report.write_html(str(tmp_path), [{"path": "a", "model": "m", "score": float("inf")}])
  with pytest.raises(ValueError, match=r"segments\[0\]\['end'\] must be a number"):
    html_report.write_html(
      str(tmp_path),
      [{"path": "a", "model": "m", "score": 1, "segments": [{"start": 0, "score": 1}]}],
    )
  with pytest.raises(FileNotFoundError, match=r"rows\[0\] \(a\) 'maps'\[0\]: image .*nope.png"):
    html_report.write_html(
      str(tmp_path), [{"path": "a", "model": "m", "score": 1, "maps": [str(tmp_path / "nope.png")]}]
    )
  (tmp_path / "x.png").write_text("not a png")
  with pytest.raises(ValueError, match="is not a PNG file"):
    html_report.write_html(
      str(tmp_path), [{"path": "a", "model": "m", "score": 1, "curve_png": str(tmp_path / "x.png")}]
    )
  with pytest.raises(ValueError, match="no rows"):
    html_report.write_html(str(tmp_path), [])
  assert not (tmp_path / "index.html").exists()


def _chromium():
  exe = shutil.which("chromium") or shutil.which("chromium-browser")
  if exe is None:
    if REQUIRE_CHROMIUM:
      pytest.fail("INTERNVQA_REQUIRE_CHROMIUM=1 but no chromium on PATH")
    pytest.skip("chromium not installed (apt-get install chromium); see docs/quality_maps.md")
  return exe


def _headless(exe, profile, *args):
  cmd = [
    exe,
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    f"--user-data-dir={profile}",
    *args,
  ]
  return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


def test_renders_in_headless_chromium(tmp_path):
  exe = _chromium()
  page = html_report.write_html(str(tmp_path / "report"), sample_rows(tmp_path))
  url = "file://" + page
  dom = _headless(exe, tmp_path / "profile1", "--dump-dom", url).stdout
  p = _Collector()
  p.feed(dom)
  assert len(p.rows) == 3 and p.rows[2].startswith("/videos/c.y4m|student|-0.2500")
  assert len(p.srcs) == 4
  shot = tmp_path / "shot.png"
  _headless(exe, tmp_path / "profile2", f"--screenshot={shot}", "--window-size=1280,2400", url)
  img = matplotlib.image.imread(shot)[..., :3]
  assert img.shape[:2] == (2400, 1280)
  # Not blank: text, tables and images drew something.
  assert np.mean(img.min(axis=-1) < 0.9) > 0.01
  # The embedded magenta map images were decoded and painted.
  magenta = (img[..., 0] > 0.9) & (img[..., 1] < 0.1) & (img[..., 2] > 0.9)
  assert magenta.sum() >= 2 * 0.8 * 60 * 90
