"""Loading the files of configs/ by path.

configs/ is a folder of Python files, not an installed package: ml_collections' config_flags loads a
config by its file path, so `import configs.common` would work only from the repository root. A
config loads its shared helpers with `load_sibling(__file__, "common")` instead.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types


def load_sibling(config_file: str, name: str) -> types.ModuleType:
  """Returns the module `name`.py from the folder holding `config_file`, loaded by path."""
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), f"{name}.py")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{config_file} needs {path}, which does not exist")
  return load_by_path(path)


def load_by_path(path: str) -> types.ModuleType:
  """Returns the Python file at `path` as a module.

  The module is cached in sys.modules under a name derived from its absolute path, so every config
  of one folder shares one instance of its helpers.
  """
  path = os.path.abspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no config file {path}")
  key = "_internvqa_config_files." + os.path.splitext(path)[0].strip(os.sep).replace(os.sep, ".")
  if key in sys.modules:
    return sys.modules[key]
  spec = importlib.util.spec_from_file_location(key, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[key] = module
  try:
    spec.loader.exec_module(module)
  except BaseException:
    del sys.modules[key]
    raise
  return module
