"""Test-wide JAX settings: float32 parity needs the highest matmul precision.

8 fake CPU devices let sharding tests build real meshes; single-device code
just uses device 0.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# libtpu (the plan extra) locks a file per process by default; tests only compile for TPU.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
# Tests compile the same tiny programs many times, also in subprocesses (which
# inherit this): XLA's persistent cache turns the repeats into disk reads.
os.environ.setdefault(
  "JAX_COMPILATION_CACHE_DIR",
  os.path.join(os.environ.get("TMPDIR", "/tmp"), "internvqa_jax_xla_cache"),
)

import jax

jax.config.update("jax_default_matmul_precision", "highest")
