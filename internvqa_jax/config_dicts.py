"""Configs arrive as ml_collections.ConfigDicts (from config files) or plain mappings
(from tests and library callers); the code that reads them takes plain dicts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ml_collections


def config_dict(cfg: Any, what: str = "config") -> dict[str, Any]:
  """A ConfigDict or Mapping (None: empty) as a plain dict, nested ones included."""
  if cfg is None:
    return {}
  if isinstance(cfg, ml_collections.ConfigDict):
    return cfg.to_dict()
  if isinstance(cfg, Mapping):
    return {
      k: config_dict(v) if isinstance(v, (Mapping, ml_collections.ConfigDict)) else v
      for k, v in cfg.items()
    }
  raise TypeError(f"{what} must be a ConfigDict or Mapping, got {type(cfg).__name__}")
