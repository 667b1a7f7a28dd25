"""InternVQA-JAX: compressed-video quality assessment with distilled foundation models."""

__version__ = "0.1.0"
