"""Fragment sampling: temporal indices, patch provenance, upsampling, errors."""

import numpy as np
import pytest

from internvqa_jax.data import fragments as fr
from internvqa_jax.data import transforms as T


def coord_video(n, h, w):
  """uint8 frames whose pixel (t, y, x) holds (y, x, t); needs h, w, n <= 256."""
  y, x = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  v = np.empty((n, h, w, 3), np.uint8)
  v[..., 0] = y
  v[..., 1] = x
  v[..., 2] = np.arange(n)[:, None, None]
  return v


def recording_reader(video):
  calls = []

  def read(idx):
    calls.append(np.array(idx))
    return video[idx]

  return read, calls


def denormalize(x):
  return np.rint(x * fr.STD + fr.MEAN).astype(np.int64)


def patch_corners(coords, fragments, fsize):
  """Decodes (T, S, S, 3) coordinate fragments into per-patch corners.

  Asserts every patch is a contiguous fsize x fsize crop of one frame.
  Returns tops, lefts, frames: (T, F, F) int arrays.
  """
  t = coords.shape[0]
  p = coords.reshape(t, fragments, fsize, fragments, fsize, 3)
  p = p.transpose(0, 1, 3, 2, 4, 5)  # (T, F, F, a, b, 3)
  tops, lefts, src = p[..., 0, 0, 0], p[..., 0, 0, 1], p[..., 0, 0, 2]
  a = np.arange(fsize)
  np.testing.assert_array_equal(
    p[..., 0], np.broadcast_to(tops[..., None, None] + a[:, None], p[..., 0].shape)
  )
  np.testing.assert_array_equal(
    p[..., 1], np.broadcast_to(lefts[..., None, None] + a[None, :], p[..., 1].shape)
  )
  np.testing.assert_array_equal(p[..., 2], np.broadcast_to(src[..., None, None], p[..., 2].shape))
  return tops, lefts, src


# ------------------------------------------------------------------ variants


@pytest.mark.parametrize(
  "variant,size,clip_len,train_clips,test_clips",
  [
    ("fast_vqa_b", 224, 32, 1, 4),
    ("faster_vqa", 224, 32, 1, 1),
    ("faster_vqa_mt", 224, 16, 1, 1),
    ("faster_vqa_ms", 160, 32, 1, 1),
    ("fast_vqa_m", 128, 16, 1, 4),
  ],
)
def test_variant_shapes(variant, size, clip_len, train_clips, test_clips):
  s = fr.FragmentSampler(variant)
  assert (s.size, s.clip_len) == (size, clip_len)
  assert (s.num_clips(True), s.num_clips(False)) == (train_clips, test_clips)
  video = np.zeros((70, 232, 240, 3), np.uint8)
  for train, clips in [(True, train_clips), (False, test_clips)]:
    out = s(lambda i: video[i], 70, np.random.default_rng(0), train)
    assert out.shape == (clips, clip_len, size, size, 3)
    assert out.dtype == np.float32


def test_variant_table_matches_reference_configs():
  v = fr.VARIANT_SAMPLING
  assert v["fast_vqa_b"]["aligned"] == 32 and v["fast_vqa_b"]["t_frag"] is None
  for name in ["faster_vqa", "faster_vqa_mt", "faster_vqa_ms", "fast_vqa_m"]:
    assert v[name]["aligned"] == 8
  assert [v[n]["t_frag"] for n in ["faster_vqa", "faster_vqa_mt", "faster_vqa_ms"]] == [8, 4, 8]
  assert all(c["frame_interval"] == 2 and c["fsize"] == 32 for c in v.values())
  # Overrides replace single fields (fast-3d fine-tuning uses aligned 4).
  assert fr.FragmentSampler("faster_vqa", aligned=4).config.aligned == 4


# ------------------------------------------------------------------ temporal


def test_temporal_center_mode_hand_computed():
  k = np.arange(32) * 2
  b = fr.FragmentSampler("fast_vqa_b", test_sampling="center")
  # 4 segments of 75 frames, span 64 -> centred offset (75 - 64) // 2 = 5.
  np.testing.assert_array_equal(
    b.frame_indices(300, None, False), [75 * c + 5 + k for c in range(4)]
  )
  f = fr.FragmentSampler("faster_vqa", test_sampling="center")
  # 8 segments of 37 frames, span 8 -> offset 14; 4 frames at interval 2.
  want = np.concatenate([37 * i + 14 + np.arange(4) * 2 for i in range(8)])
  np.testing.assert_array_equal(f.frame_indices(300, None, False), want[None])
  mt = fr.FragmentSampler("faster_vqa_mt", test_sampling="center")
  want = np.concatenate([25 * i + 8 + np.arange(4) * 2 for i in range(4)])
  np.testing.assert_array_equal(mt.frame_indices(100, None, False), want[None])


def test_temporal_short_videos_wrap():
  k = np.arange(32) * 2
  b = fr.FragmentSampler("fast_vqa_b")
  rng = np.random.default_rng(0)
  # Segments shorter than the span: offset 0, indices modulo N.
  np.testing.assert_array_equal(b.frame_indices(10, rng, True), [k % 10])
  np.testing.assert_array_equal(
    b.frame_indices(10, rng, False), [(2 * c + k) % 10 for c in range(4)]
  )
  np.testing.assert_array_equal(b.frame_indices(1, rng, False), np.zeros((4, 32)))
  f = fr.FragmentSampler("faster_vqa")
  # N=5 < 8 segments: every segment starts at 0.
  np.testing.assert_array_equal(f.frame_indices(5, rng, True), [np.tile(np.arange(4) * 2, 8) % 5])


def test_temporal_demo_mode_matches_sampleframes():
  # avg = (100 - 32 + 1) / 4 = 17.25 -> starts int(8.625 + 17.25 c).
  np.testing.assert_array_equal(
    fr.uniform_clip_indices(100, 32, 4).reshape(4, 32), [s + np.arange(32) for s in (8, 25, 43, 60)]
  )
  d = fr.FragmentSampler("faster_vqa", test_sampling="demo")
  np.testing.assert_array_equal(
    d.frame_indices(20, np.random.default_rng(0), False), [np.arange(32) % 20]
  )


def test_temporal_random_offsets_cover_exclusive_range():
  # FAST-VQA-B train, N=70: one segment, offset uniform in [0, 70 - 64).
  b = fr.FragmentSampler("fast_vqa_b")
  starts = set()
  for seed in range(200):
    idx = b.frame_indices(70, np.random.default_rng(seed), True)[0]
    np.testing.assert_array_equal(np.diff(idx), 2)
    starts.add(int(idx[0]))
  assert starts == set(range(6))
  # FasterVQA: each of the 8 segments (12 frames) draws its own offset.
  f = fr.FragmentSampler("faster_vqa")
  offs = np.stack(
    [
      f.frame_indices(96, np.random.default_rng(s), True)[0, ::4] - 12 * np.arange(8)
      for s in range(100)
    ]
  )
  assert offs.min() == 0 and offs.max() == 3  # [0, 12 - 8)
  assert len({tuple(o) for o in offs}) > 90  # independent per segment


def test_test_sampling_is_random_by_default():
  # The reference ignores its train flag: test clips are random too.
  b = fr.FragmentSampler("fast_vqa_b")
  draws = {tuple(b.frame_indices(400, np.random.default_rng(s), False)[:, 0]) for s in range(5)}
  assert len(draws) > 1


# ------------------------------------------------------------------ spatial


@pytest.mark.parametrize(
  "variant,train", [("fast_vqa_b", False), ("faster_vqa", True), ("fast_vqa_m", False)]
)
def test_patch_provenance(variant, train):
  n, h, w = 90, 256, 250
  video = coord_video(n, h, w)
  read, calls = recording_reader(video)
  s = fr.FragmentSampler(variant)
  cfg = s.config
  seed = 7
  out = s(read, n, np.random.default_rng(seed), train)
  # Temporal draws come first from the same generator.
  idx = s.frame_indices(n, np.random.default_rng(seed), train)
  # read_frames is called once with the sorted unique indices.
  assert len(calls) == 1
  np.testing.assert_array_equal(calls[0], np.unique(idx))

  f, fs = cfg.fragments, cfg.fsize
  coords = denormalize(out.reshape((-1,) + out.shape[2:]))
  tops, lefts, src = patch_corners(coords, f, fs)
  np.testing.assert_array_equal(src, np.broadcast_to(idx.reshape(-1)[:, None, None], src.shape))
  # Each patch lies inside its grid cell.
  hlen, wlen = h // f, w // f
  cell = np.arange(f)
  assert np.all(tops >= (hlen * cell)[None, :, None])
  assert np.all(tops + fs <= (hlen * (cell + 1))[None, :, None])
  assert np.all(lefts >= (wlen * cell)[None, None, :])
  assert np.all(lefts + fs <= (wlen * (cell + 1))[None, None, :])
  # Offsets are shared inside each aligned group and redrawn between groups.
  g = tops.reshape(-1, cfg.aligned, f, f)
  gl = lefts.reshape(-1, cfg.aligned, f, f)
  assert np.all(g == g[:, :1]) and np.all(gl == gl[:, :1])
  assert g.shape[0] > 1
  for a in range(g.shape[0] - 1):
    assert np.any(gl[a, 0] != gl[a + 1, 0])


@pytest.mark.parametrize("variant,mode", [("fast_vqa_b", "random"), ("faster_vqa", "center")])
def test_sample_with_geometry_reports_patch_sources(variant, mode):
  n, h, w = 90, 256, 250
  video = coord_video(n, h, w)
  s = fr.FragmentSampler(variant, test_sampling=mode)
  plain = s(lambda i: video[i], n, np.random.default_rng(5), False)
  x, geom = s.sample_with_geometry(lambda i: video[i], n, np.random.default_rng(5), False)
  np.testing.assert_array_equal(x, plain)  # Same draws, same fragments.
  cfg = s.config
  f, fs = cfg.fragments, cfg.fsize
  tops, lefts, src = patch_corners(denormalize(x.reshape((-1,) + x.shape[2:])), f, fs)
  clips, clip_len = geom.frame_indices.shape
  groups = clip_len // geom.aligned
  assert geom.aligned == cfg.aligned and geom.tops.shape == (clips, groups, f, f)
  assert geom.frame_size == (h, w) and geom.scale == 1.0 and geom.fsize == fs
  np.testing.assert_array_equal(geom.frame_indices.reshape(-1), src[:, 0, 0])
  per_frame = lambda a: np.repeat(a.reshape(-1, f, f), geom.aligned, axis=0)
  np.testing.assert_array_equal(per_frame(geom.tops), tops)
  np.testing.assert_array_equal(per_frame(geom.lefts), lefts)


def test_sample_with_geometry_upsampled_scale():
  video = coord_video(20, 100, 150)  # Below 224: upsampled by 2.24.
  s = fr.FragmentSampler("faster_vqa", test_sampling="center")
  _, geom = s.sample_with_geometry(lambda i: video[i], 20, None, False)
  assert geom.scale == pytest.approx(100 / 224)


def test_center_mode_spatial_offsets():
  video = coord_video(64, 256, 250)
  s = fr.FragmentSampler("fast_vqa_b", test_sampling="center")
  out = s(lambda i: video[i], 64, None, False)
  tops, lefts, _ = patch_corners(denormalize(out.reshape(-1, 224, 224, 3)), 7, 32)
  # Cells of 36 x 35 pixels: patches centred at (36-32)//2 = 2 and (35-32)//2 = 1.
  np.testing.assert_array_equal(tops[0], np.broadcast_to((36 * np.arange(7) + 2)[:, None], (7, 7)))
  np.testing.assert_array_equal(lefts[0], np.broadcast_to(35 * np.arange(7) + 1, (7, 7)))


def test_fragment_offsets_clamp_and_zero_offsets():
  # 240 // 7 = 34 (offsets in [0, 2)); 230 // 7 = 32 (no room: offset 0).
  tops, lefts = fr.fragment_offsets(240, 230, 3, 7, 32, np.random.default_rng(0))
  assert tops.shape == lefts.shape == (3, 7, 7)
  np.testing.assert_array_equal(lefts, np.broadcast_to(32 * np.arange(7), (3, 7, 7)))
  assert set(np.unique(tops - (34 * np.arange(7))[:, None])) == {0, 1}
  starts, length = fr.grid_starts(150, 7, 32)
  np.testing.assert_array_equal(starts, [0, 21, 42, 63, 84, 105, 118])  # min(21 i, 118)
  assert length == 21


def test_determinism():
  video = np.random.default_rng(0).integers(0, 256, (50, 240, 240, 3), np.uint8)
  s = fr.FragmentSampler("faster_vqa")
  a = s(lambda i: video[i], 50, np.random.default_rng(3), True)
  b = s(lambda i: video[i], 50, np.random.default_rng(3), True)
  c = s(lambda i: video[i], 50, np.random.default_rng(4), True)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_single_frame_forces_aligned_one():
  img = coord_video(1, 224, 224)
  out = fr.grid_mini_patch_sampling(img, 7, 32, aligned=32, rng=np.random.default_rng(0))
  assert out.shape == (1, 224, 224, 3)
  np.testing.assert_array_equal(out, img)  # 224 // 7 = 32: the grid tiles the frame


# ------------------------------------------------------------------ upsampling


@pytest.mark.parametrize(
  "h,w,out_hw", [(144, 256, (223, 398)), (200, 200, (223, 223)), (180, 320, (224, 398))]
)
def test_upsample_sizes(h, w, out_hw):
  up, ratio = fr.upsample_small_frames(np.zeros((1, h, w, 3), np.uint8), 224, 224)
  assert up.shape == (1,) + out_hw + (3,)
  assert ratio == min(h / 224, w / 224)


def test_upsample_matches_torch_bit_exact():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  for h, w in [(144, 256), (100, 150), (37, 50)]:
    x = rng.integers(0, 256, (2, h, w, 3), np.uint8)
    v = torch.from_numpy(x).permute(3, 0, 1, 2)  # (C, T, H, W) as the reference
    ratio = min(h / 224, w / 224)
    ref = (
      (torch.nn.functional.interpolate(v / 255.0, scale_factor=1 / ratio, mode="bilinear") * 255.0)
      .type_as(v)
      .permute(1, 2, 3, 0)
      .numpy()
    )
    got, _ = fr.upsample_small_frames(x, 224, 224)
    np.testing.assert_array_equal(got, ref)
    part, _ = fr.upsample_small_frames(x, 224, 224, keep_h=h, keep_w=w)
    np.testing.assert_array_equal(part, ref[:, :h, :w])


def test_small_video_grid_uses_pre_upsample_size():
  # 180x320 is upsampled to 224x398, but the grid stays min(25 i, 148) in rows
  # with offset 0 (25 < 32) and min(45 j, 288) + [0, 13) in columns.
  n, h, w = 32, 180, 320
  video = np.random.default_rng(1).integers(0, 256, (n, h, w, 3), np.uint8)
  s = fr.FragmentSampler("fast_vqa_b")
  out = s(lambda i: video[i], n, np.random.default_rng(5), True)
  assert out.shape == (1, 32, 224, 224, 3)
  rng = np.random.default_rng(5)
  idx = s.frame_indices(n, rng, True)
  tops, lefts = fr.fragment_offsets(h, w, 1, 7, 32, rng)
  rows = np.minimum(25 * np.arange(7), 148)
  np.testing.assert_array_equal(tops[0], np.broadcast_to(rows[:, None], (7, 7)))
  cols = np.minimum(45 * np.arange(7), 288)
  assert np.all((lefts[0] - cols >= 0) & (lefts[0] - cols < 13))
  up, _ = fr.upsample_small_frames(video[idx[0]], 224, 224)
  assert up.shape == (32, 224, 398, 3)
  want = np.empty((32, 224, 224, 3), np.uint8)
  for i in range(7):
    for j in range(7):
      t0, l0 = tops[0, i, j], lefts[0, i, j]
      want[:, 32 * i : 32 * i + 32, 32 * j : 32 * j + 32] = up[:, t0 : t0 + 32, l0 : l0 + 32]
  np.testing.assert_array_equal(out[0], T.normalize(want, fr.MEAN, fr.STD, scale=1.0))


# ------------------------------------------------------------------ normalisation


def test_normalisation_known_values():
  np.testing.assert_array_equal(fr.MEAN, np.float32([123.675, 116.28, 103.53]))
  np.testing.assert_array_equal(fr.STD, np.float32([58.395, 57.12, 57.375]))
  s = fr.FragmentSampler("fast_vqa_m")
  for value, want in [(0, [-2.117904, -2.035714, -1.804444]), (255, [2.248908, 2.428571, 2.64])]:
    video = np.full((16, 128, 128, 3), value, np.uint8)
    out = s(lambda i, video=video: video[i], 16, np.random.default_rng(0), True)
    np.testing.assert_allclose(out[0, 0, 0, 0], want, atol=1e-6)
    assert np.all(out == out[0, 0, 0, 0])


# ------------------------------------------------------------------ errors


def test_errors():
  rng = np.random.default_rng(0)
  video = np.zeros((40, 240, 240, 3), np.uint8)
  with pytest.raises(
    ValueError, match=r"unknown fragment sampling variant 'fast_vqa_x'.*fast_vqa_b"
  ):
    fr.FragmentSampler("fast_vqa_x")
  with pytest.raises(ValueError, match="unknown fragment sampling override"):
    fr.FragmentSampler("fast_vqa_b", clip_length=8)
  with pytest.raises(ValueError, match="not a multiple of aligned"):
    fr.FragmentSampler("fast_vqa_b", clip_len=16)
  with pytest.raises(ValueError, match="test_sampling"):
    fr.FragmentSampler("fast_vqa_b", test_sampling="middle")
  s = fr.FragmentSampler("faster_vqa")
  with pytest.raises(ValueError, match="num_video_frames must be a positive int"):
    s(lambda i: video[i], 0, rng, True)
  with pytest.raises(ValueError, match=r"uint8 or float32 \(N, H, W, 3\), got float64"):
    s(lambda i: video[i].astype(np.float64), 40, rng, True)
  with pytest.raises(
    ValueError, match=r"uint8 or float32 \(N, H, W, 3\), got uint8 \(\d+, 240, 240\)"
  ):
    s(lambda i: video[i][..., 0], 40, rng, True)
  with pytest.raises(ValueError, match="returned 1 frames"):
    s(lambda i: video[:1], 40, rng, True)
  with pytest.raises(TypeError, match="np.random.Generator"):
    s(lambda i: video[i], 40, None, True)
  with pytest.raises(ValueError, match="smaller than one fragment patch"):
    s(lambda i: np.zeros((len(i), 20, 300, 3), np.uint8), 40, rng, True)
