"""The config a workdir was trained with (WORKDIR/config.json), and what a rerun may change.

A rerun on a workdir that holds a checkpoint resumes it, so its config must be
the saved one. `check_and_save` compares the two before anything is written
and sorts every differing key (dotted path) into one of three kinds:

  operational  how the run is carried out, not what it computes (logging and
               checkpoint cadence, stop_after_steps, where the dataset lives):
               accepted, logged, and the saved config is updated;
  changeable   changes results but not the shapes of the saved state (e.g.
               total_steps, loss weights, seed, mesh): refused unless the run is
               started with --allow_config_change; then the old config is kept
               as config.previous.json;
  structural   the models, their optimizers, the data pipeline whose iterator
               state is checkpointed, worker count included (model.*, teacher.*,
               student.*, optim.*, teacher_optim.*, other data.* keys,
               batch_size, mode): always refused, a new workdir is needed.

The saved config.json of a run that cannot be resumed is never overwritten.
"""

from __future__ import annotations

import json
import os
from typing import Any

from internvqa_jax import cli_errors

CONFIG_FILE = "config.json"
PREVIOUS_FILE = "config.previous.json"
OPERATIONAL = (
  "stop_after_steps",
  "log_every",
  "ckpt_every",
  "eval_every",
  "keep_ckpts",
  "keep_best",
  "distributed",
  "data.data_dir",  # Where the same built dataset lives.
  "data.manual_dir",
  "data.build",
  "data.eval_batch_size",  # Evaluation batching only.
)
STRUCTURAL = ("mode", "model", "teacher", "student", "optim", "teacher_optim", "data", "batch_size")


class ConfigChangedError(cli_errors.UsageError):
  """The config differs from the one the workdir's checkpoint was trained with."""


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  """{'a': {'b': 1}} -> {'a.b': 1}; lists are leaves."""
  if isinstance(tree, dict) and tree:
    out = {}
    for k, v in tree.items():
      out.update(flatten(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: tree}


def _matches(key: str, names: tuple[str, ...]) -> bool:
  return any(key == n or key.startswith(n + ".") for n in names)


def differences(old: dict, new: dict) -> dict[str, tuple[Any, Any]]:
  """{dotted key: (old value, new value)} for every key whose value differs or is new/gone."""
  a, b = flatten(old), flatten(new)
  missing = object()
  diff = {}
  for k in sorted(set(a) | set(b)):
    va, vb = a.get(k, missing), b.get(k, missing)
    if va != vb:
      diff[k] = (None if va is missing else va, None if vb is missing else vb)
  return diff


def has_checkpoint(workdir: str) -> bool:
  d = os.path.join(workdir, "checkpoints")
  return os.path.isdir(d) and any(n.isdigit() for n in os.listdir(d))


def _show(diff: dict[str, tuple[Any, Any]], keys: list[str]) -> str:
  return ", ".join(f"{k}: {json.dumps(diff[k][0])} -> {json.dumps(diff[k][1])}" for k in keys)


def check_and_save(
  config_json: str, workdir: str, *, allow_change: bool = False, write: bool = True, log=print
) -> None:
  """Compares the run's config with WORKDIR/config.json, then writes it (see the module doc).

  Every process of a multi-host run compares (so all stop alike); only the one
  with `write` writes.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  new = json.loads(config_json)
  if os.path.exists(path) and has_checkpoint(workdir):
    try:
      with open(path) as f:
        old = json.load(f)
    except (OSError, ValueError) as e:
      raise ValueError(
        f"{path}: unreadable ({e}); it records the config of the checkpoint in {workdir}"
      ) from e
    diff = differences(old, new)
    if not diff:
      return
    operational = [k for k in diff if _matches(k, OPERATIONAL)]
    structural = [k for k in diff if k not in operational and _matches(k, STRUCTURAL)]
    changeable = [k for k in diff if k not in operational and k not in structural]
    if structural:
      raise ConfigChangedError(
        f"{path}: the config differs from the one {workdir} was trained with in "
        f"{len(structural)} key(s) that the checkpoint depends on ({_show(diff, structural)})"
        + (f"; also {_show(diff, changeable)}" if changeable else "")
        + ". A resumed run cannot change these: restore the old values or use a new --workdir"
      )
    if changeable and not allow_change:
      raise ConfigChangedError(
        f"{path}: the config differs from the one {workdir} was trained with: "
        f"{_show(diff, changeable)}. Rerun with --allow_config_change to resume with the new "
        "values (they change results, not shapes), restore the old values, or use a new --workdir"
      )
    if not write:
      return
    if changeable:
      with open(os.path.join(workdir, PREVIOUS_FILE), "w") as f:
        json.dump(old, f, indent=2)
      log(f"config changed on resume (--allow_config_change): {_show(diff, changeable)}")
    if operational:
      log(f"config changed on resume (operational keys): {_show(diff, operational)}")
  if not write:
    return
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(config_json)
  os.replace(tmp, path)
