"""Random model parameters for scoring tests, without compiling `init` (slow for Swin3D)."""

import jax
import numpy as np


def random_params(module, input_shape, seed):
  """Parameters of the right shapes: norm scales near 1, everything else small, the head's
  kernel larger, so that scores are O(1) and differ per video."""
  abstract = jax.eval_shape(
    lambda: module.init(jax.random.key(0), np.zeros(input_shape, np.float32), train=False)["params"]
  )
  rng = np.random.default_rng(seed)

  def fill(path, x):
    name = jax.tree_util.keystr(path)
    v = rng.normal(0.0, 0.05, x.shape)
    if "scale" in name:
      v += 1.0
    if "head" in name and "kernel" in name:
      v *= 20.0
    return v.astype(np.float32)

  return jax.tree_util.tree_map_with_path(fill, abstract)
