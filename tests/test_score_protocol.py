"""One evaluation protocol: `score` on an exported model reproduces the trainer's final evaluation."""

import csv
import json
import os

import numpy as np
import pytest

from internvqa_jax import calibration, metrics, score, train
from internvqa_jax.data import pipeline, sources
from tests.train_configs import tiny


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  sources.build("synthetic_compressed/tiny", data_dir)
  workdir = str(tmp_path_factory.mktemp("run"))
  config = tiny.get_config(f"steps=4,data_dir={data_dir},ckpt_every=0")
  results = train.train_and_evaluate(config, workdir)
  return dict(config=config, data_dir=data_dir, workdir=workdir, results=results)


def test_score_reproduces_the_trainers_final_evaluation(trained, tmp_path):
  workdir, config = trained["workdir"], trained["config"]
  export = os.path.join(workdir, "export", "model")
  with open(os.path.join(workdir, "eval_predictions_model.csv"), newline="") as f:
    wrote = list(csv.DictReader(f))
  assert len(wrote) == 16
  # The held-out videos as files (the dataset embeds their bytes).
  _, eval_records = sources.open_split(config.data.dataset, config.data.split, trained["data_dir"])
  by_id = {r["video_id"]: r for r in eval_records}
  paths = []
  for row in wrote:
    p = tmp_path / f"{row['video_id']}.mp4"
    p.write_bytes(by_id[row["video_id"]]["video_bytes"])
    paths.append(str(p))
  rows = score.score_videos(export, paths)
  got = np.array([r["score"] for r in rows])
  want = np.array([float(r["prediction"]) for r in wrote])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  labels = np.array([float(r["label"]) for r in wrote])
  m = metrics.evaluate(got, labels)
  final = trained["results"]["model"]
  for k in ("srcc", "plcc"):
    assert m[k] == pytest.approx(final[k], abs=1e-5), k
  # The export's calibration maps the same predictions to the raw labels' units.
  meta = json.load(open(os.path.join(export, "meta.json")))
  cal = meta["calibration"]
  assert cal["label"] == "mos" and cal["direction"] == "higher_is_better"
  assert cal["num_videos"] == 16 and cal["dataset"] == config.data.dataset
  targets = np.array([float(r["target"]) for r in wrote])
  assert cal["range"] == [targets.min(), targets.max()]
  refit = calibration.fit(want, targets, "mos")
  np.testing.assert_allclose(cal["params"], refit["params"], rtol=1e-6)
  np.testing.assert_allclose(
    [r["mos"] for r in rows], calibration.apply(cal, got), rtol=1e-12, atol=1e-12
  )


def test_fastvqa_test_sampling_is_deterministic_by_default():
  (recipe,) = pipeline.make_recipes({"f": {"recipe": "fastvqa", "variant": "fast_vqa_b"}}).values()
  assert recipe.sampler.config.test_sampling == "center"
  assert recipe.settings()["overrides"] == {"test_sampling": "center"}
  frames = np.random.default_rng(0).integers(0, 256, (40, 240, 320, 3), dtype=np.uint8)
  read = lambda idx: frames[np.asarray(idx)]
  a = recipe.eval(read, 40, np.random.default_rng(1))
  b = recipe.eval(read, 40, np.random.default_rng(2))
  np.testing.assert_array_equal(a, b)
  # The reference's random test draws remain an option, seeded.
  (rand,) = pipeline.make_recipes(
    {"f": {"recipe": "fastvqa", "variant": "fast_vqa_b", "overrides": {"test_sampling": "random"}}}
  ).values()
  c = rand.eval(read, 40, np.random.default_rng(1))
  np.testing.assert_array_equal(c, rand.eval(read, 40, np.random.default_rng(1)))
  assert not np.array_equal(c, a)
