"""The DCT patch-embedding prior (initializers.dct_patch_kernel, InternVideo2 patch_init="dct")."""

import jax
import numpy as np
import pytest
import scipy.fft

from internvqa_jax import models
from internvqa_jax.data import transforms
from internvqa_jax.models import initializers

STD = transforms.IMAGENET_STD
LUMA = np.array([0.299, 0.587, 0.114])


def test_dct_basis_is_orthonormal_and_ordered_by_frequency():
  bases = initializers.dct_basis(8)
  freqs = [f for f, _ in bases]
  assert freqs == sorted(freqs) and freqs[0] == 0 and freqs[-1] == 14
  m = np.stack([b.ravel() for _, b in bases])
  np.testing.assert_allclose(m @ m.T, np.eye(64), atol=1e-12)
  np.testing.assert_allclose(bases[0][1], np.full((8, 8), 1 / 8))


def _coefficients(kernel, patch_rgb):
  """The patch embedding (no bias) of one RGB patch (p, p, 3) in [0, 1], normalized."""
  x = transforms.normalize(patch_rgb[None], scale=1.0)[0]  # patch in [0, 1]
  return np.einsum("hwc,hwcj->j", x, np.asarray(kernel)[0])


def test_luma_channels_are_the_weighted_dct_of_luma():
  gain = 4.0
  kernel = initializers.dct_patch_kernel(gain, STD)(jax.random.key(0), (1, 8, 8, 3, 96))
  rng = np.random.default_rng(0)
  patch = rng.uniform(0, 1, (8, 8, 3)).astype(np.float32)
  got = _coefficients(kernel, patch)
  luma_dct = scipy.fft.dctn(patch @ LUMA, norm="ortho")
  # Channel j holds basis j (frequency order); the DC term also carries the mean offset.
  for j, (f, b) in enumerate(initializers.dct_basis(8)):
    if j == 0:
      continue
    u, v = np.argwhere(np.isclose(np.abs(scipy.fft.dctn(b, norm="ortho")), 1.0))[0]
    np.testing.assert_allclose(got[j], luma_dct[u, v] * (1 + gain * f), rtol=1e-4, atol=1e-5)


def test_chroma_then_torch_default_fill_the_remaining_channels():
  shape = (1, 8, 8, 3, 200)
  kernel = np.asarray(initializers.dct_patch_kernel(0.0, STD)(jax.random.key(3), shape))
  bases = initializers.dct_basis(8)
  cb = np.array([-0.168736, -0.331264, 0.5]) * STD
  cr = np.array([0.5, -0.418688, -0.081312]) * STD
  # 64 luma, then (200 - 64) // 2 = 68 per chroma, capped at the 64 bases.
  np.testing.assert_allclose(kernel[0, :, :, :, 64], bases[0][1][..., None] * cb, rtol=1e-6)
  np.testing.assert_allclose(kernel[0, :, :, :, 128 + 5], bases[5][1][..., None] * cr, rtol=1e-6)
  default = np.asarray(initializers.torch_conv_kernel(jax.random.key(3), shape))
  np.testing.assert_array_equal(kernel[..., 192:], default[..., 192:])
  # Luma-free: a grey patch has no chroma response beyond the mean offset of the DC term.
  grey = np.full((8, 8, 3), 0.3, np.float32)
  coeffs = _coefficients(kernel, grey)
  np.testing.assert_allclose(coeffs[65:128], 0, atol=1e-5)


def test_tubelet_frames_share_the_basis():
  k1 = np.asarray(initializers.dct_patch_kernel(4.0, STD)(jax.random.key(0), (1, 8, 8, 3, 64)))
  k2 = np.asarray(initializers.dct_patch_kernel(4.0, STD)(jax.random.key(0), (2, 8, 8, 3, 64)))
  np.testing.assert_allclose(k2[0], k1[0] / 2, rtol=1e-6)
  np.testing.assert_allclose(k2[1], k1[0] / 2, rtol=1e-6)


def test_bad_kernel_shape_is_an_error():
  with pytest.raises(ValueError, match=r"\(kT, p, p, 3, C\) kernel, got \(1, 8, 4, 3, 16\)"):
    initializers.dct_patch_kernel(4.0)(jax.random.key(0), (1, 8, 4, 3, 16))


def _tiny(**kw):
  return models.get("internvideo2").from_kwargs(
    embed_dim=64,
    depth=1,
    num_heads=2,
    mlp_hidden=128,
    num_frames=2,
    img_size=16,
    patch_size=8,
    **kw,
  )


def test_internvideo2_patch_init_dct():
  model = _tiny(patch_init="dct", dct_gain=2.0)
  x = np.zeros(model.input_shape(1), np.float32)
  params = model.init(jax.random.key(1), x)["params"]
  want = initializers.dct_patch_kernel(2.0, STD)(jax.random.key(0), (1, 8, 8, 3, 64))
  np.testing.assert_allclose(params["patch_embed"]["proj"]["kernel"], want, rtol=1e-6)
  default = _tiny().init(jax.random.key(1), x)["params"]
  assert not np.allclose(default["patch_embed"]["proj"]["kernel"], want)
  # Everything but the patch kernel is initialised as without the prior.
  np.testing.assert_array_equal(
    params["blocks_0"]["mlp"]["fc1"]["kernel"], default["blocks_0"]["mlp"]["fc1"]["kernel"]
  )
  assert models.model_kwargs(model)["patch_init"] == "dct"


def test_internvideo2_unknown_patch_init_is_an_error():
  model = _tiny(patch_init="gabor")
  with pytest.raises(ValueError, match=r"patch_init 'gabor' is not one of \('torch', 'dct'\)"):
    model.init(jax.random.key(0), np.zeros(model.input_shape(1), np.float32))
