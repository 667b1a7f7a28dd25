"""Tests for the Grain pipelines (internvqa_jax.data.pipeline) and labels."""

import math

import grain
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
import videos  # tests/videos.py

from internvqa_jax import metrics
from internvqa_jax.data import decode
from internvqa_jax.data import labels as L
from internvqa_jax.data import pipeline as P
from internvqa_jax.data import recipes as R
from internvqa_jax.data import transforms as T

H, W, NF = 48, 64, 20
VIEW = {"num_frames": 4, "crop_size": 32, "resize_short": None, "test_clips": 2, "test_crops": 3}
CFG = {"views": {"video": VIEW}, "num_threads": 0}


class SyntheticReader:
  """read_frames for paths 'syn://<video>': channel 0 encodes (video, frame).

  Red = 20 * video + frame (NF = 20 frames), so every sampled frame is identifiable after
  cropping, flipping and normalisation.
  """

  def __init__(self, bad=()):
    self.bad = set(bad)

  def __call__(self, src, indices, **kwargs):
    video = int(src.split("/")[-1])
    if video in self.bad:
      raise RuntimeError("corrupt bitstream")
    idx = np.asarray(indices)
    out = np.zeros((len(idx), H, W, 3), np.uint8)
    out[..., 0] = (NF * video + idx)[:, None, None]
    out[..., 1] = (np.arange(W) * 3)[None, None, :]
    out[..., 2] = (np.arange(H) * 5)[None, :, None]
    return out


def _records(n, **extra):
  return [
    dict(
      video_id=f"vid{i:02d}",
      path=f"syn://{i}",
      score=10.0 * i + 1,
      score_kind="mos",
      num_frames=NF,
      **extra,
    )
    for i in range(n)
  ]


def _frame_ids(video):
  """(..., T, H, W, 3) normalized -> (..., T) encoded NF * video + frame."""
  r = video[..., 0] * T.IMAGENET_STD[0] + T.IMAGENET_MEAN[0]
  vals = np.rint(r * 255).astype(int)
  assert (vals == vals[..., :1, :1]).all()  # Channel 0 is constant per frame.
  return vals[..., 0, 0]


def _train(records, cfg=CFG, *, gbs=4, seed=0, pi=0, pc=1, reader=None):
  return P.make_train_iterator(
    records,
    cfg,
    global_batch_size=gbs,
    seed=seed,
    process_index=pi,
    process_count=pc,
    read_frames=reader or SyntheticReader(),
  )


def _assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# ------------------------------------------------------------------ labels ---


def test_labels_scale_flip_and_per_dataset():
  mos = {"video_id": "a", "score": 73.0, "score_kind": "mos"}
  dmos = {"video_id": "b", "score": 40.0, "score_kind": "dmos", "dataset": "bvihd"}
  assert L.make_label_transform(None)(mos) == np.float32(0.73)
  assert L.make_label_transform({})(dmos) == np.float32(0.40)
  flip = L.make_label_transform({"flip_dmos": True})
  assert flip(dmos) == np.float32(-0.40) and flip(mos) == np.float32(0.73)
  np.testing.assert_allclose(flip.inverse(np.float32(-0.4), "dmos"), 40.0, rtol=1e-6)
  per = L.make_label_transform(
    {"per_dataset": {"bvihd": {"flip_dmos": True, "scale": 0.02}}, "default": {"scale": 0.01}}
  )
  assert per(dmos) == np.float32(-0.8) and per(mos) == np.float32(0.73)
  strict = L.make_label_transform({"per_dataset": {"bvihd": {}}})
  with pytest.raises(KeyError, match="no label transform for dataset=None"):
    strict(mos)
  with pytest.raises(ValueError, match="unknown label options"):
    L.make_label_transform({"scal": 0.01})


@pytest.mark.parametrize("bad", [math.nan, math.inf, "n/a"])
def test_labels_non_finite_score_names_the_video(bad):
  rec = {"video_id": "HEVC/01/960x540_1", "path": "/data/HEVC/01/960x540_1.mp4", "score": bad}
  with pytest.raises(ValueError, match=r"HEVC/01/960x540_1.*960x540_1\.mp4"):
    L.LabelTransform()(rec)


def test_nan_label_in_pipeline_is_an_error_naming_the_video():
  recs = _records(4)
  recs[2]["score"] = float("nan")
  it = _train(recs, {**CFG, "shuffle": False})
  with pytest.raises(ValueError, match="vid02"):
    next(it)


# ------------------------------------------------------------------- train ---


def test_train_batches_content_and_determinism():
  recs = _records(6)
  a, b, c = _train(recs, seed=7), _train(recs, seed=7), _train(recs, seed=8)
  batches_a = [next(a) for _ in range(4)]
  for x in batches_a:
    _assert_batches_equal(x, next(b))
  assert not all(np.array_equal(x["video"], next(c)["video"]) for x in batches_a)
  x = batches_a[0]
  assert x["video"].shape == (4, 4, 32, 32, 3) and x["video"].dtype == np.float32
  assert x["label"].dtype == np.float32 and x["index"].dtype == np.int32
  np.testing.assert_allclose(x["label"], (10.0 * x["index"] + 1) / 100, rtol=1e-6)
  np.testing.assert_array_equal(x["score"], 10.0 * x["index"] + 1)
  # Every clip comes from its own video, one frame per segment of 4.75 frames.
  ids = _frame_ids(x["video"])
  np.testing.assert_array_equal(ids // NF, np.repeat(x["index"][:, None], 4, 1))
  frames = ids % NF
  for lo_hi, col in zip([(0, 5), (5, 10), (10, 14), (14, 19)], frames.T):
    assert ((col >= lo_hi[0]) & (col <= lo_hi[1])).all()
  # Epochs: each block of 6 consecutive samples is a permutation of the records,
  # reshuffled between epochs.
  order = np.concatenate([b["index"] for b in batches_a])
  assert sorted(order[:6]) == list(range(6)) and sorted(order[6:12]) == list(range(6))
  assert list(order[:6]) != list(order[6:12])


def test_config_dict_config_gives_the_same_batches():
  recs = _records(4)
  cfg = ml_collections.ConfigDict({**CFG, "labels": {"scale": 0.01, "flip_dmos": True}})
  _assert_batches_equal(next(_train(recs, cfg, seed=5)), next(_train(recs, CFG, seed=5)))
  assert L.make_label_transform(cfg.labels)({"score": 30.0, "score_kind": "dmos"}) == np.float32(
    -0.3
  )


def test_host_sharding_disjoint_covering_and_process_count_independent():
  recs = _records(8)
  cfg = {**CFG, "num_epochs": 1}
  single = list(_train(recs, cfg, gbs=4, pc=1))
  hosts = [list(_train(recs, cfg, gbs=4, pi=p, pc=2)) for p in range(2)]
  assert len(single) == 2 and [len(h) for h in hosts] == [2, 2]
  idx0 = np.concatenate([b["index"] for b in hosts[0]])
  idx1 = np.concatenate([b["index"] for b in hosts[1]])
  assert set(idx0.tolist()).isdisjoint(idx1.tolist())
  assert sorted(np.concatenate([idx0, idx1]).tolist()) == list(range(8))
  # Step k of the 2 hosts together is step k of a single host, same pixels.
  for step in range(2):
    together = {int(i): v for h in hosts for i, v in zip(h[step]["index"], h[step]["video"])}
    alone = {int(i): v for i, v in zip(single[step]["index"], single[step]["video"])}
    assert together.keys() == alone.keys()
    for i in alone:
      np.testing.assert_array_equal(together[i], alone[i])


def test_finite_epochs_keep_whole_global_batches_only():
  recs = _records(7)
  hosts = [list(_train(recs, {**CFG, "num_epochs": 2}, gbs=4, pi=p, pc=2)) for p in range(2)]
  assert [len(h) for h in hosts] == [3, 3]  # 14 samples -> 3 global batches of 4.
  with pytest.raises(ValueError, match="multiple of process_count"):
    _train(recs, gbs=3, pc=2)


def test_iterator_checkpoint_round_trip_through_orbax(tmp_path):
  recs = _records(5)
  it = _train(recs, gbs=2, seed=3)
  for _ in range(3):
    next(it)
  with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
    mngr.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
  expected = [next(it) for _ in range(2)]
  fresh = _train(recs, gbs=2, seed=3)
  with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
    mngr.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
  for want in expected:
    _assert_batches_equal(next(fresh), want)
  # The plain state API gives the same.
  other = _train(recs, gbs=2, seed=3)
  other.set_state(fresh.get_state())
  _assert_batches_equal(next(other), next(fresh))


def test_workers_give_the_same_batches_as_in_process():
  recs = _records(6)
  base = [next(it) for it in [_train(recs, gbs=4, seed=1)] for _ in range(3)]
  it = _train(recs, {**CFG, "worker_count": 2}, gbs=4, seed=1)
  try:
    for want in base:
      _assert_batches_equal(next(it), want)
  finally:
    it.close()


def test_multi_view_video_and_fragments():
  cfg = {
    **CFG,
    "views": {
      "video": VIEW,
      "fragments": {
        "recipe": "fastvqa",
        "variant": "faster_vqa",
        "overrides": {
          "fragments": 2,
          "fsize": 16,
          "clip_len": 8,
          "t_frag": 4,
          "aligned": 4,
          "num_clips_test": 2,
        },
      },
    },
  }
  batch = next(_train(_records(4), cfg, gbs=2))
  assert batch["video"].shape == (2, 4, 32, 32, 3)
  assert batch["fragments"].shape == (2, 8, 32, 32, 3) and batch["fragments"].dtype == np.float32
  # Fragments come from the same video: the red channel still encodes it.
  r = batch["fragments"][..., 0] * 58.395 + 123.675
  np.testing.assert_array_equal(np.rint(r[:, 0, 0, 0]).astype(int) // NF, batch["index"])
  # Evaluation needs equal view counts per video (2*3 vs 2 here).
  with pytest.raises(ValueError, match="different numbers of examples"):
    P.make_eval_batches(
      _records(2),
      cfg,
      batch_size=4,
      process_index=0,
      process_count=1,
      read_frames=SyntheticReader(),
    )
  frag_only = {**cfg, "views": {"fragments": cfg["views"]["fragments"]}}
  batches = list(
    P.make_eval_batches(
      _records(3),
      frag_only,
      batch_size=4,
      process_index=0,
      process_count=1,
      read_frames=SyntheticReader(),
    )
  )
  assert len(batches) == 2 and batches[0]["fragments"].shape == (4, 8, 32, 32, 3)
  assert batches[1]["mask"].tolist() == [True, True, False, False]


class CountingReader(SyntheticReader):
  """Records every (video, frame) it decodes (in-process use only)."""

  def __init__(self):
    super().__init__()
    self.decoded = []

  def __call__(self, src, indices, **kwargs):
    self.decoded += [(src, int(i)) for i in indices]
    return super().__call__(src, indices, **kwargs)


def test_views_share_decoded_frames():
  reader = CountingReader()
  cfg = {
    **CFG,
    "views": {
      "video": {**VIEW, "num_frames": 8},
      "fragments": {
        "recipe": "fastvqa",
        "variant": "faster_vqa",
        "overrides": {"fragments": 2, "fsize": 16, "clip_len": 16, "t_frag": 4, "aligned": 4},
      },
    },
  }
  next(_train(_records(2), cfg, gbs=2, reader=reader))
  # 8 + 16 requested frames of 20 per video must overlap; none is decoded twice.
  assert len(reader.decoded) == len(set(reader.decoded)) < 2 * (8 + 16)


def test_unknown_view_recipe_and_fields_are_errors():
  with pytest.raises(ValueError, match="unknown recipe"):
    _train(_records(2), {"views": {"video": {"recipe": "tsm"}}})
  with pytest.raises(ValueError, match="unknown data config fields"):
    _train(_records(2), {"view": {}})
  with pytest.raises(ValueError, match="num_clips_train=1"):
    _train(
      _records(2),
      {
        "views": {
          "f": {"recipe": "fastvqa", "variant": "faster_vqa", "overrides": {"num_clips_train": 2}}
        }
      },
    )


# -------------------------------------------------------------- bad videos ---


def test_bad_video_raises_naming_the_file():
  it = _train(_records(3), {**CFG, "shuffle": False}, gbs=3, reader=SyntheticReader(bad={1}))
  with pytest.raises(P.BadVideoError, match=r"vid01.*syn://1.*corrupt bitstream"):
    next(it)


def test_skip_bad_videos_logs_and_drops(tmp_path):
  log = tmp_path / "bad.tsv"
  cfg = {**CFG, "shuffle": False, "skip_bad_videos": True, "bad_videos_log": str(log)}
  it = _train(_records(3), cfg, gbs=2, reader=SyntheticReader(bad={1}))
  batches = [next(it) for _ in range(2)]
  assert np.concatenate([b["index"] for b in batches]).tolist() == [0, 2, 0, 2]
  assert log.read_text().splitlines()[0] == "vid01\tsyn://1\tRuntimeError: corrupt bitstream"


# -------------------------------------------------------------------- eval ---


@pytest.mark.parametrize("num_records,process_count,batch_size", [(5, 2, 4), (1, 2, 5), (4, 1, 6)])
def test_eval_covers_every_example_once_with_equal_batches_per_host(
  num_records, process_count, batch_size
):
  recs = _records(num_records)
  seen = []
  lengths = []
  for p in range(process_count):
    ev = P.make_eval_batches(
      recs,
      CFG,
      batch_size=batch_size,
      process_index=p,
      process_count=process_count,
      read_frames=SyntheticReader(),
    )
    batches = list(ev)
    assert len(batches) == len(ev)
    lengths.append(len(batches))
    for b in batches:
      assert b["video"].shape == (batch_size, 4, 32, 32, 3) and b["mask"].dtype == bool
      m = b["mask"]
      seen += list(zip(b["index"][m].tolist(), b["example"][m].tolist()))
      # Real examples carry their video's frames and label.
      np.testing.assert_array_equal(_frame_ids(b["video"][m])[:, 0] // NF, b["index"][m])
      np.testing.assert_allclose(b["label"][m], (10.0 * b["index"][m] + 1) / 100, rtol=1e-6)
  assert len(set(lengths)) == 1
  assert seen == [(i, v) for i in range(num_records) for v in range(6)]  # Each once, in order.


def test_eval_examples_are_the_test_protocol_and_average():
  recs = _records(2)
  b = next(
    iter(
      P.make_eval_batches(
        recs, CFG, batch_size=12, process_index=0, process_count=1, read_frames=SyntheticReader()
      )
    )
  )
  assert b["example"].tolist() == list(range(6)) * 2 and b["mask"].all()
  direct = R.InternVideo2Recipe(**VIEW).eval(lambda idx: SyntheticReader()("syn://1", idx), NF)
  np.testing.assert_array_equal(b["video"][6:], direct)
  # Clip k of 2 uses offsets int(4.75 / 3 * (k + 1)) = 1, 3.
  np.testing.assert_array_equal(
    _frame_ids(b["video"][[0, 3, 9]]),
    [[1, 6, 11, 15], [3, 8, 13, 17], [NF + 3, NF + 8, NF + 13, NF + 17]],
  )
  scores = b["index"] * 2.0 + b["example"] * 0.1
  mask = b["mask"].copy()
  mask[-1] = False
  ids, means = metrics.aggregate_by_video(b["index"], scores, mask)
  assert ids.tolist() == [0, 1] and means.tolist() == pytest.approx([0.25, 2.2])


# ------------------------------------------------------- real encoded video ---


def test_real_encoded_video_through_the_default_decoder():
  data = videos.make_video_bytes(num_frames=NF, width=W, height=H)
  recs = [
    dict(
      video_id="synthetic/0", path="", video_bytes=data, score=55.0, score_kind="mos", num_frames=NF
    )
  ]
  batch = next(
    P.make_train_iterator(recs, CFG, global_batch_size=2, seed=0, process_index=0, process_count=1)
  )
  assert batch["video"].shape == (2, 4, 32, 32, 3) and np.isfinite(batch["video"]).all()
  (ev,) = list(P.make_eval_batches(recs, CFG, batch_size=6, process_index=0, process_count=1))
  frames = decode.read_frames(data, np.arange(NF))
  assert [videos.frame_number_of(f) for f in frames] == list(range(NF))
  np.testing.assert_array_equal(
    ev["video"], R.InternVideo2Recipe(**VIEW).eval(lambda i: frames[i], NF)
  )


def test_raw_yuv_record_gets_its_geometry_from_the_record(tmp_path):
  path = videos.make_yuv(
    tmp_path / "clip.yuv", num_frames=12, width=W, height=H
  )  # No size in name.
  recs = [
    dict(
      video_id="yuv/0",
      path=path,
      score=20.0,
      score_kind="dmos",
      num_frames=12,
      width=W,
      height=H,
      bit_depth=8,
      fps=25.0,
    )
  ]
  cfg = {**CFG, "labels": {"flip_dmos": True}}
  (ev,) = list(P.make_eval_batches(recs, cfg, batch_size=6, process_index=0, process_count=1))
  assert ev["video"].shape == (6, 4, 32, 32, 3) and ev["mask"].all()
  np.testing.assert_allclose(ev["label"], -0.2, rtol=1e-6)


def test_decoded_clip_cache_gives_the_same_batches_and_decodes_each_clip_once():
  recs = _records(4)
  plain = _train(recs)
  reader = CountingReader()
  cached = _train(recs, {**CFG, "decoded_cache_mb": 7}, reader=reader)
  for _ in range(6):  # 6 batches of 4 = 6 epochs of 4 videos
    _assert_batches_equal(next(plain), next(cached))
  # Each video decoded once, whole (20 frames), however many epochs read it.
  assert sorted(reader.decoded) == sorted((f"syn://{i}", f) for i in range(4) for f in range(NF))
  # A second pipeline over the same records (another stage or seed) decodes nothing more.
  again = _train(recs, {**CFG, "decoded_cache_mb": 7}, reader=reader)
  next(again)
  assert len(reader.decoded) == 4 * NF


def test_decoded_clip_cache_drops_least_recently_used_beyond_its_size():
  cache = P.DecodedClipCache(max_bytes=250)
  clip = lambda v: lambda: np.full((10, 10), v, np.uint8)  # 100 bytes
  cache.get(("a",), clip(1))
  cache.get(("b",), clip(2))
  cache.get(("a",), clip(9))  # hit: a is now the most recent
  cache.get(("c",), clip(3))  # 300 bytes > 250: b goes
  assert cache.get(("b",), clip(4))[0, 0] == 4  # decoded again
  assert cache.get(("c",), clip(8))[0, 0] == 3  # still cached
  with pytest.raises(ValueError, match="read-only"):
    cache.get(("c",), clip(8))[0, 0] = 0
  key = P.DecodedClipCache.key
  assert key({"video_id": "x", "video_bytes": b"ab"}) != key(
    {"video_id": "x", "video_bytes": b"ac"}
  )
  with pytest.raises(ValueError, match="decoded_cache_mb must be >= 0"):
    _train(_records(1), {**CFG, "decoded_cache_mb": -1})
