"""InternVQA-JAX: compressed-video quality assessment with distilled foundation models."""

__version__ = "0.1.0"

from internvqa_jax import host_memory as _host_memory

# `python -m internvqa_jax.<tool>`: restart once with malloc huge pages (why: host_memory).
_host_memory.reexec_for_cli()
