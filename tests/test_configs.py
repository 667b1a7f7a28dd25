"""Every config file loads by its path, is locked against typos, and builds the models the paper counts."""

from __future__ import annotations

import glob
import importlib.util
import os
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from internvqa_jax import config_files, model_setup, optim, tree_paths

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(
  p for p in glob.glob(os.path.join(REPO, "configs", "*.py")) if os.path.basename(p) != "common.py"
)

# The paper's Table I, PLCC / SRCC per dataset, as each config's docstring must state it.
TABLE_I = {
  "fastvqa": {"bvihd": (0.655, 0.623), "waterloo": (0.780, 0.734)},
  "internvqa_small": {"bvihd": (0.686, 0.630), "waterloo": (0.751, 0.766)},
  "internvqa_base": {"bvihd": (0.752, 0.688), "waterloo": (0.751, 0.759)},
  "internvqa_1b": {"bvihd": (0.792, 0.761), "waterloo": (0.849, 0.891)},
  "fastvqa_dist": {"bvihd": (0.714, 0.644), "waterloo": (0.790, 0.742)},
  "internvqa_dist_small": {"bvihd": (0.759, 0.734), "waterloo": (0.821, 0.794)},
  "internvqa_dist_base": {"bvihd": (0.813, 0.711), "waterloo": (0.824, 0.852)},
}


def _load(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_every_table_row_has_a_config():
  names = {os.path.basename(p)[:-3] for p in CONFIGS}
  expected = {f"internvqa_{s}_{d}" for s in ("small", "base", "1b") for d in ("bvihd", "waterloo")}
  expected |= {f"internvqa_dist_{s}_{d}" for s in ("small", "base") for d in ("bvihd", "waterloo")}
  expected |= {f"fastvqa_{d}" for d in ("bvihd", "waterloo")}
  expected |= {f"fastvqa_dist_{d}" for d in ("bvihd", "waterloo")}
  expected |= {"demo", "demo_teacher_pretrain"}
  assert names == expected
  assert {f"{row}_{d}" for row in TABLE_I for d in ("bvihd", "waterloo")} == expected - {
    "demo",
    "demo_teacher_pretrain",
  }


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.basename(p))
def test_config_loads_with_run_command_and_runlocal(path):
  mod = _load(path)
  name = os.path.basename(path)
  assert f"--config configs/{name}" in mod.__doc__
  c = mod.get_config()
  assert mod.get_config("runlocal") is not None
  with pytest.raises(ValueError, match="unknown config argument"):
    mod.get_config("no_such_arg=1")
  if "stages" not in c:
    # Optimizer configs are complete: make_optimizer's own validation accepts them.
    optim._read_config(c.optim.to_dict())


def _parse_flags(argv):
  """What `python -m internvqa_jax.train` does with its --config flags."""
  values = flags.FlagValues()
  config_flags.DEFINE_config_file(
    "config", None, "", flag_values=values, lock_config=True, sys_argv=argv
  )
  values(argv)
  return values.config


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.basename(p))
def test_config_flags_load_each_config_by_path_from_any_directory(path, tmp_path, monkeypatch):
  # configs/ is not an installed package: a config that imports `configs.*` fails here.
  monkeypatch.chdir(tmp_path)
  monkeypatch.setitem(sys.modules, "configs", None)
  # The demo runs stages, each a full training config of its own.
  seed = "stage_configs.teacher.seed" if os.path.basename(path) == "demo.py" else "seed"
  value = _parse_flags(["train", f"--config={path}:runlocal", f"--config.{seed}=7"])
  for key in seed.split("."):
    value = value[key]
  assert value == 7
  with pytest.raises(AttributeError, match="no_such_key"):
    _parse_flags(["train", f"--config={path}", "--config.no_such_key=1"])


@pytest.mark.parametrize(
  "row,dataset", [(r, d) for r in TABLE_I for d in ("bvihd", "waterloo")], ids="_".join
)
def test_table_i_config_states_the_paper_target(row, dataset):
  doc = _load(os.path.join(REPO, "configs", f"{row}_{dataset}.py")).__doc__
  plcc, srcc = TABLE_I[row][dataset]
  assert f"PLCC {plcc:.3f}, SRCC {srcc:.3f}" in doc
  assert f"--config configs/{row}_{dataset}.py:runlocal" in doc


@pytest.mark.parametrize(
  "name,role,count",
  [
    ("internvqa_dist_small_bvihd", "student", 23_046_145),
    ("internvqa_base_waterloo", "model", 89_441_281),
    ("internvqa_dist_base_waterloo", "teacher", 1_020_710_913),
    ("fastvqa_dist_bvihd", "student", 28_127_901),
  ],
)
def test_config_models_have_the_paper_parameter_counts(name, role, count):
  c = _load(os.path.join(REPO, "configs", name + ".py")).get_config()
  module = model_setup.build_module(c[role], c.compute_dtype)
  abstract = model_setup.abstract_params(module)
  assert model_setup.count(abstract) == count


def test_paper_preset_trains_only_the_last_block_and_head_of_the_1b_teacher():
  c = _load(os.path.join(REPO, "configs", "internvqa_dist_small_bvihd.py")).get_config()
  module = model_setup.build_module(c.teacher, c.compute_dtype)
  assert module.frozen_blocks == 39 and module.depth == 40
  abstract = model_setup.abstract_params(module)
  mask = model_setup.trainable_mask(abstract, c.teacher, module)
  trainable, _ = tree_paths.split_tree(abstract, mask)
  tops = {p.split("/")[0] for p in tree_paths.flatten(trainable)}
  assert tops == {"blocks_39", "clip_projector", "fc_norm", "head"}
  # One block (25,248,768) + attention pool (7,042,176) + fc_norm (1,536) + head (769).
  assert model_setup.count(trainable) == 25_248_768 + 7_042_176 + 1_536 + 769


def test_load_sibling_names_the_missing_file(tmp_path):
  cfg = tmp_path / "x.py"
  cfg.write_text("")
  with pytest.raises(FileNotFoundError, match=r"x\.py needs .*common\.py"):
    config_files.load_sibling(str(cfg), "common")


def test_load_sibling_shares_one_module_per_file(tmp_path):
  (tmp_path / "common.py").write_text("VALUE = []\n")
  a = config_files.load_sibling(str(tmp_path / "a.py"), "common")
  b = config_files.load_sibling(str(tmp_path / "b.py"), "common")
  assert a is b and a.VALUE == []
