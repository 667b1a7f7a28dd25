"""GPU parity: cuDNN attention against XLA's, GPU against CPU, the bf16 train step.

Skipped without an NVIDIA GPU; benchmarks/device_check.sh runs them on one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from internvqa_jax import models as models_lib
from internvqa_jax import sharding, train
from internvqa_jax.models import internvideo2
from tests.train_configs import tiny

pytestmark = pytest.mark.skipif(
  not any(d.platform == "gpu" for d in jax.devices()), reason="no GPU on this machine"
)


def _gpu():
  return next(d for d in jax.devices() if d.platform == "gpu")


@pytest.mark.parametrize("head_dim", [64, 88])  # Small/Base heads and the 1B teacher's.
def test_cudnn_attention_matches_xla(head_dim):
  rng = np.random.default_rng(0)
  shape = (2, 257, 4, head_dim)
  q, k, v = (rng.standard_normal(shape).astype(np.float32) for _ in range(3))
  scale = head_dim**-0.5
  with jax.default_device(_gpu()):
    ref = internvideo2.attention(*(jnp.asarray(x) for x in (q, k, v)), scale, "xla")
    bf = [jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)]
    got = internvideo2.attention(*bf, scale, "cudnn")
    xla_bf = internvideo2.attention(*bf, scale, "xla")
  got, xla_bf, ref = (np.asarray(x, np.float32) for x in (got, xla_bf, ref))
  # bf16 inputs: both bf16 paths sit within bf16 rounding of the float32 result.
  assert np.max(np.abs(got - ref)) < 3e-2
  assert np.max(np.abs(got - xla_bf)) < 3e-2
  assert np.mean(np.abs(got - ref)) <= 1.5 * np.mean(np.abs(xla_bf - ref)) + 1e-4


def test_model_on_gpu_matches_cpu_in_float32():
  module = models_lib.make("internvideo2", "tiny", attention_impl="xla")
  x = np.random.default_rng(1).standard_normal(module.input_shape(2)).astype(np.float32)
  cpu = jax.devices("cpu")[0]
  with jax.default_matmul_precision("highest"):
    params = jax.device_put(module.init(jax.random.key(0), x)["params"], cpu)
    out_cpu = module.apply({"params": params}, jax.device_put(x, cpu))
    out_gpu = module.apply({"params": jax.device_put(params, _gpu())}, jax.device_put(x, _gpu()))
  np.testing.assert_allclose(
    np.asarray(out_gpu["feature"]), np.asarray(out_cpu["feature"]), rtol=1e-4, atol=1e-4
  )
  np.testing.assert_allclose(
    np.asarray(out_gpu["score"]), np.asarray(out_cpu["score"]), rtol=1e-4, atol=1e-5
  )


def test_bf16_train_step_matches_float32_on_gpu():
  losses = {}
  for dtype in ("float32", "bfloat16"):
    config = tiny.get_config("mode=finetune,batch_size=4")
    with config.unlocked():
      config.compute_dtype = dtype
    gpus = [d for d in jax.devices() if d.platform == "gpu"][:1]
    mesh = sharding.make_mesh(data=1, fsdp=1, devices=gpus)
    run = train.build_run(config, mesh, jax.random.key(0), log=lambda *a: None)
    rng = np.random.default_rng(0)
    state, out = run.state, []
    for i in range(3):
      batch = sharding.make_global_batch(
        {
          "video": rng.standard_normal((4, 2, 28, 28, 3)).astype(np.float32),
          "label": rng.uniform(0.2, 0.9, 4).astype(np.float32),
        },
        mesh,
      )
      state, m = run.train_step(state, run.frozen, batch, jax.random.key(i))
      out.append(float(m["loss"]))
    losses[dtype] = out
  assert all(np.isfinite(losses["bfloat16"]))
  np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=5e-2, atol=5e-3)
