"""score --maps / --html: map overlays per video and model, one self-contained page per run."""

import html.parser
import os

import jax
import numpy as np
import pytest
import videos  # tests/videos.py

from internvqa_jax import models, score
from internvqa_jax.models import checkpoint, internvideo2


class _Page(html.parser.HTMLParser):
  def __init__(self):
    super().__init__()
    self.video_rows, self.images = 0, 0

  def handle_starttag(self, tag, attrs):
    a = dict(attrs)
    self.video_rows += tag == "tr" and a.get("class") == "video-row"
    self.images += tag == "img" and a.get("src", "").startswith("data:image/png;base64,")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  root = tmp_path_factory.mktemp("score_report")
  module = internvideo2.make("tiny")
  params = jax.jit(module.init)(jax.random.key(0), np.zeros(module.input_shape(1), np.float32))
  kw = {"family": module.FAMILY, "model_kwargs": models.model_kwargs(module)}
  model_dir = checkpoint.save_params(root / "iv2", params["params"], kw)
  vdir = root / "videos"
  vdir.mkdir()
  vids = [str(videos.make_video(vdir / f"v{i}.mp4", num_frames=30 + 10 * i)) for i in range(2)]
  return dict(root=root, model=str(model_dir), vids=vids)


def test_maps_and_html_from_the_command_line(env, capsys):
  root = env["root"]
  args = ["--model", env["model"], *env["vids"], "--out", root / "s.csv", "--clips", 2]
  args += ["--crops", 1, "--segments", 0.5, "--maps", root / "maps", "--html", root / "report"]
  assert score.main([str(a) for a in args]) == 0
  err = capsys.readouterr().err
  assert "wrote the report" in err
  pngs = sorted(f for f in os.listdir(root / "maps") if f.endswith(".png"))
  npz = sorted(f for f in os.listdir(root / "maps") if f.endswith(".map.npz"))
  # Two videos, one model: up to 4 sampled frames each, and one raw-map file each.
  assert len(npz) == 2 and {f.split(".")[0] for f in pngs} == {"v0", "v1"}
  assert 2 < len(pngs) <= 8
  saved = np.load(root / "maps" / npz[0])
  assert saved["map"].shape == (2, 2, 2, 2)  # 2 clips x 1 crop, 2 frames of 2x2 patches.
  page = _Page()
  page.feed(open(root / "report" / "index.html", encoding="utf-8").read())
  assert page.video_rows == 2
  assert page.images == len(pngs) + 2  # Every map, and one curve per video.


def test_maps_dir_must_be_a_directory(env, tmp_path, capsys):
  f = tmp_path / "file"
  f.write_text("x")
  args = ["--model", env["model"], env["vids"][0], "--out", tmp_path / "s.csv", "--maps", f]
  assert score.main([str(a) for a in args]) == 2
  assert "--maps" in capsys.readouterr().err
