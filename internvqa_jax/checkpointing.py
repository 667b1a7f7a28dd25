"""Training checkpoints: the N latest steps plus the best by validation SRCC.

One Orbax CheckpointManager per role, both under the workdir:

  WORKDIR/checkpoints/<step>/{state, data, meta}   latest N (resume from here)
  WORKDIR/best/<step>/{state, meta}                 best validation SRCC

`state` is the full train state (student and teacher-trainable parameters,
optimizer states, step); `data` is the grain iterator state, so a resumed run
sees exactly the batches an uninterrupted run would; `meta` is JSON (config,
metrics). Saves are asynchronous; `wait()` before exit. Every process calls
every method (Orbax coordinates multi-host writes).
"""

from __future__ import annotations

import os
from typing import Any

import grain
import orbax.checkpoint as ocp


def _grain_args():
  return grain.checkpoint.CheckpointSave, grain.checkpoint.CheckpointRestore


class Checkpointer:
  def __init__(
    self,
    workdir: str,
    *,
    keep: int = 2,
    keep_best: bool = True,
    best_metric: str = "srcc",
    async_save: bool = True,
  ):
    self.best_metric = best_metric
    self.latest = ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), "checkpoints"),
      options=ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save
      ),
    )
    self.best = None
    if keep_best:
      self.best = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "best"),
        options=ocp.CheckpointManagerOptions(
          max_to_keep=1,
          create=True,
          best_fn=lambda m: m[best_metric],
          best_mode="max",
          keep_checkpoints_without_metrics=False,
          enable_async_checkpointing=async_save,
        ),
      )

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def save(
    self,
    step: int,
    state: Any,
    *,
    data_iter: Any = None,
    meta: dict | None = None,
    force: bool = False,
  ) -> bool:
    items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta or {})}
    if data_iter is not None:
      items["data"] = _grain_args()[0](data_iter)
    return self.latest.save(step, args=ocp.args.Composite(**items), force=force)

  def save_best(
    self, step: int, state: Any, metrics: dict[str, float], meta: dict | None = None
  ) -> bool:
    if self.best is None:
      return False
    items = {
      "state": ocp.args.StandardSave(state),
      "meta": ocp.args.JsonSave({**(meta or {}), "metrics": metrics}),
    }
    return self.best.save(
      step, args=ocp.args.Composite(**items), metrics={k: float(v) for k, v in metrics.items()}
    )

  def restore(self, step: int, abstract_state: Any, *, data_iter: Any = None) -> tuple[Any, dict]:
    """Restores into `abstract_state` (ShapeDtypeStructs with shardings); data_iter in place."""
    items = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
    if data_iter is not None:
      items["data"] = _grain_args()[1](data_iter)
    out = self.latest.restore(step, args=ocp.args.Composite(**items))
    return out["state"], dict(out["meta"] or {})

  def best_step(self) -> int | None:
    return None if self.best is None else self.best.best_step()

  def wait(self) -> None:
    self.latest.wait_until_finished()
    if self.best is not None:
      self.best.wait_until_finished()

  def close(self) -> None:
    self.wait()
    self.latest.close()
    if self.best is not None:
      self.best.close()
