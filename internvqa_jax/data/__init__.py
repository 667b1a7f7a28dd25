"""Video data: frame-exact decoding of containers and raw YUV.

Imports are lazy so that `import internvqa_jax.data` does not load PyAV.
"""

import importlib

_EXPORTS = {
  "read_frames": "internvqa_jax.data.decode",
  "probe": "internvqa_jax.data.decode",
  "VideoInfo": "internvqa_jax.data.video_types",
  "VideoDecodeError": "internvqa_jax.data.video_types",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(_EXPORTS[name]), name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
