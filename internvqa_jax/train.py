"""Trains InternVQA models: `finetune` one model, or `distill` a teacher into a student.

  python -m internvqa_jax.train --config configs/NAME.py[:ARG] --workdir DIR [--config.key=value ...]

The config is locked: an override of a key the config does not have is an
error. Rerunning with the same --workdir resumes from the latest checkpoint
(parameters, optimizer states, data iterator position, step). SIGTERM saves a
checkpoint and exits cleanly. A config with `stages` (configs/demo.py) runs
several such trainings in sub-directories and writes results.json.

The file is one readable loop, in sections: setup, data, models, state,
restore, loop, final evaluation and export.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from jax.experimental import multihost_utils
from ml_collections import config_flags

from internvqa_jax import (
  checkpointing,
  data_setup,
  evaluate,
  metric_writer,
  model_setup,
  sharding,
  tree_paths,
)
from internvqa_jax import models as models_lib
from internvqa_jax import steps as steps_lib
from internvqa_jax.models import checkpoint as ckpt_lib

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Training config file (configs/NAME.py[:ARG]).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
flags.mark_flags_as_required(["config", "workdir"])


def maybe_initialize_distributed(config) -> None:
  """Starts JAX's multi-host runtime when the config or the environment asks for it.

  Must run before anything touches a JAX backend. On TPU pods and Slurm,
  jax.distributed.initialize() finds the coordinator itself; the INTERNVQA_*
  variables (launch/local_multiprocess.sh) set it explicitly.
  """
  want = bool(config.get("distributed", False)) or os.environ.get("INTERNVQA_DISTRIBUTED") == "1"
  if not want:
    return
  kwargs = {}
  if "INTERNVQA_COORDINATOR" in os.environ:
    kwargs = dict(
      coordinator_address=os.environ["INTERNVQA_COORDINATOR"],
      num_processes=int(os.environ["INTERNVQA_NUM_PROCESSES"]),
      process_id=int(os.environ["INTERNVQA_PROCESS_ID"]),
    )
  jax.distributed.initialize(**kwargs)


class _Preemption:
  """Turns SIGTERM into a flag the loop checks between steps."""

  def __init__(self):
    self.requested = False
    self._old = None

  def __enter__(self):
    try:
      self._old = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # Not the main thread (e.g. called from a test thread).
      self._old = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)


@dataclasses.dataclass
class Run:
  """Everything a training run holds on device, and its jitted functions."""

  parts: dict  # role -> steps.Part
  state: Any  # donated train state (trainable params, optimizer states, step)
  frozen: Any  # role -> frozen params (never differentiated)
  state_sh: Any
  frozen_sh: Any
  train_step: Any  # (state, frozen, batch, rng) -> (state, metrics)
  predict: dict  # role -> (trainable, frozen, batch) -> score


def build_run(config, mesh, rng_init, *, log=print) -> Run:
  """Models, parameters (sharded; loaded from converted checkpoints), optimizers, jitted steps."""
  mode = config.mode
  roles = {"finetune": ["model"], "distill": ["teacher", "student"]}.get(mode)
  if roles is None:
    raise ValueError(f"config.mode must be 'finetune' or 'distill', got {mode!r}")
  rules = [tuple(r) for r in config.mesh.get("rules", [])] or None
  parts, trainable, frozen, schedules = {}, {}, {}, {}
  for role, r in zip(roles, jax.random.split(rng_init, len(roles))):
    mcfg = config[role]
    module = model_setup.build_module(mcfg, config.compute_dtype)
    params = model_setup.init_sharded(module, r, mesh, rules, log=log, model_cfg=mcfg)
    mask = model_setup.trainable_mask(params, mcfg, module)
    trainable[role], frozen[role] = tree_paths.split_tree(params, mask)
    n_train = model_setup.count(trainable[role])
    log(
      f"{role}: {mcfg.family}/{mcfg.variant}, {model_setup.count(params):,} parameters, "
      f"{n_train:,} trainable, frozen_blocks={getattr(module, 'frozen_blocks', 0)}"
    )
    if n_train == 0:
      raise ValueError(f"config.{role}.trainable={mcfg.get('trainable')!r} selects no parameter")
    tx, sched = model_setup.make_optimizer(
      config.optim if role != "teacher" else config.teacher_optim,
      module,
      trainable[role],
      total_steps=config.total_steps,
    )
    parts[role] = steps_lib.Part(
      name=role, module=module, batch_key=mcfg.get("view", "video"), tx=tx
    )
    schedules[role] = sched["lr"]

  if mode == "distill":
    dims = {r: model_setup.feature_dim(parts[r].module) for r in parts}
    if dims["teacher"] != dims["student"]:
      raise ValueError(
        f"distill: the student's feature has {dims['student']} dims, the teacher's "
        f"{dims['teacher']}; the feature loss needs equal widths (InternVideo2 "
        f"pool_dim, FAST-VQA's last stage width)"
      )

  def init_state(trainable):
    return {
      "step": jnp.zeros((), jnp.int32),
      **{
        role: {"params": trainable[role], "opt": parts[role].tx.init(trainable[role])}
        for role in parts
      },
    }

  state_sh = sharding.infer_param_shardings(jax.eval_shape(init_state, trainable), mesh, rules)
  frozen_sh = jax.tree.map(lambda x: x.sharding, frozen)
  state = jax.jit(init_state, out_shardings=state_sh)(trainable)
  loss_cfg = steps_lib.LossConfig(mode=mode, **config.loss.to_dict())
  batch_sh = sharding.batch_sharding(mesh)
  train_step = jax.jit(
    steps_lib.make_train_step(parts, loss_cfg, schedules),
    in_shardings=(state_sh, frozen_sh, batch_sh, None),
    out_shardings=(state_sh, None),
    donate_argnums=(0,),
  )
  predict = {
    role: jax.jit(
      steps_lib.make_predict_fn(part),
      in_shardings=(state_sh[role]["params"], frozen_sh[role], batch_sh),
    )
    for role, part in parts.items()
  }
  return Run(parts, state, frozen, state_sh, frozen_sh, train_step, predict)


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Runs (or resumes) one training; returns the final evaluation metrics per model."""
  # ---------------------------------------------------------------- setup --
  if config.get("matmul_precision"):
    jax.config.update("jax_default_matmul_precision", config.matmul_precision)
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0
  log = (lambda *a: print(*a, flush=True)) if is_main else (lambda *a: None)
  writer = metric_writer.MetricWriter(workdir, enabled=is_main)
  if is_main:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  mesh = sharding.make_mesh(data=config.mesh.data, fsdp=config.mesh.fsdp)
  log(f"{jax.process_count()} process(es), {jax.device_count()} device(s), mesh {dict(mesh.shape)}")
  rng = jax.random.key(config.seed)
  rng_init, rng_train = jax.random.split(rng)

  # ----------------------------------------------------------------- data --
  data = data_setup.make_data(config, log=log)
  global_batch = config.batch_size
  if global_batch % jax.device_count():
    raise ValueError(
      f"config.batch_size={global_batch} must be divisible by the {jax.device_count()} devices"
    )

  # ------------------------------------------------------ models and state --
  run = build_run(config, mesh, rng_init, log=log)
  parts, state, frozen = run.parts, run.state, run.frozen
  roles, train_step, predict = list(parts), run.train_step, run.predict

  # -------------------------------------------------------------- restore --
  ckpt = checkpointing.Checkpointer(
    workdir, keep=config.get("keep_ckpts", 2), keep_best=config.get("keep_best", True)
  )
  train_iter = data.train_iterator()
  first_step = 0
  if ckpt.latest_step() is not None:
    abstract = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, run.state_sh
    )
    state, _ = ckpt.restore(ckpt.latest_step(), abstract, data_iter=train_iter)
    first_step = int(state["step"])
    log(f"resumed from step {first_step} in {workdir}")

  def run_eval(step):
    results = {}
    for role, part in parts.items():
      fn = lambda b, role=role: predict[role](state[role]["params"], frozen[role], b)
      results[role] = evaluate.evaluate_model(
        fn,
        data.eval_batches(part.batch_key),
        lambda b, key=part.batch_key: data.global_batch(b, mesh, keys=[key]),
      )
    writer.write(step, {f"eval/{role}/{k}": v for role, m in results.items() for k, v in m.items()})
    log(
      evaluate.format_table(
        results,
        title=f"evaluation at step {step} ({results[roles[0]]['num_videos']} held-out videos)",
      )
    )
    return results

  # ----------------------------------------------------------------- loop --
  total = config.total_steps
  progress = metric_writer.Progress(total, first_step, enabled=is_main)
  log_every = config.get("log_every", 10)
  eval_every = config.get("eval_every", 0)
  ckpt_every = config.get("ckpt_every", 0)
  meta = {"config": json.loads(config.to_json_best_effort())}
  best_role = "student" if config.mode == "distill" else "model"
  pending = (
    None  # (step, metrics) of the previous step, checked one step late: keeps dispatch async.
  )

  def check(pending):
    """Raises on a non-finite loss or gradient norm; nothing of that step is ever saved."""
    step_done, m = pending
    m = jax.device_get(m)
    bad = [k for k in ["loss", *sorted(m)] if not np.isfinite(m[k])]
    if bad:
      ckpt.wait()
      last = ckpt.latest_step()
      where = (
        f"The last good checkpoint is step {last} in {os.path.join(workdir, 'checkpoints')}"
        if last is not None
        else "No checkpoint was written yet"
      )
      raise FloatingPointError(f"{bad[0]} is {m[bad[0]]} at step {step_done}; stopping. {where}.")
    return step_done, m

  def flush(pending, force=False):
    """Checks a finished step's metrics and logs them when due (each step exactly once)."""
    done, m = check(pending)
    if force or done % log_every == 0 or done == 1:
      writer.write(done, m)
      progress.update(done, {k: m[k] for k in m if k.startswith("loss")})

  with _Preemption() as preempt:
    step = first_step
    while step < total:
      batch = data.global_batch(next(train_iter), mesh)
      state, metrics = train_step(state, frozen, batch, rng_train)
      if pending is not None:
        flush(pending)
      step += 1
      pending = (step, metrics)
      if eval_every and step % eval_every == 0 and step < total:
        check(pending)
        results = run_eval(step)
        ckpt.save_best(step, state, results[best_role], meta=meta)
      if ckpt_every and step % ckpt_every == 0:
        check(pending)
        ckpt.save(step, state, data_iter=train_iter, meta=meta)
      stop = preempt.requested
      if jax.process_count() > 1:  # Every host must take the same decision.
        stop = bool(np.any(multihost_utils.process_allgather(np.array(stop))))
      budget = config.get("stop_after_steps", 0)
      if stop or (budget and step - first_step >= budget and step < total):
        flush(pending, force=True)
        ckpt.save(step, state, data_iter=train_iter, meta=meta, force=True)
        ckpt.close()
        why = "SIGTERM" if stop else f"stop_after_steps={budget}"
        log(f"{why}: saved step {step} to {workdir}; exiting. Rerun the same command to resume.")
        writer.close()
        return {"stopped_at": step}
    if pending is not None:
      flush(pending, force=True)

  # ------------------------------------------------- final eval and export --
  if ckpt.latest_step() != step:
    ckpt.save(step, state, data_iter=train_iter, meta=meta, force=True)
  results = run_eval(step)
  ckpt.save_best(step, state, results[best_role], meta=meta)
  ckpt.close()
  for role, part in parts.items():
    # The deliverable: each trained model as a converted-model directory that
    # internvqa_jax.models.load() (and the PyTorch exporters) read.
    params = sharding_to_host(tree_paths.merge_trees(state[role]["params"], frozen[role]))
    ckpt_lib.save_params(
      os.path.join(workdir, "export", role),
      params,
      {
        "family": part.module.FAMILY,
        "model_kwargs": models_lib.model_kwargs(part.module),
        "trained_by": "internvqa_jax.train",
        "step": int(step),
        "eval": results[role],
        "eval_view": data.views[part.batch_key],
      },  # The test protocol `internvqa_jax.score` reuses.
      overwrite=True,
    )
  if is_main:
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(results, f, indent=2)
  writer.close()
  return results


def sharding_to_host(tree):
  """Global (possibly multi-host sharded) arrays -> numpy on every process."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def run_stages(config, workdir: str) -> dict[str, Any]:
  """Runs config.stages in order, each a full training in WORKDIR/<stage> (configs/demo.py).

  A model `init` of the form "stage:NAME/ROLE" is the model ROLE exported by
  the earlier stage NAME. config.report maps report rows to (stage, role);
  the table is printed and written to WORKDIR/results.json.
  """
  results = {}
  for name in config.stages:
    stage_cfg = config.stage_configs[name]
    for role in ("model", "teacher", "student"):
      init = stage_cfg[role].get("init", "") if role in stage_cfg else ""
      if init.startswith("stage:"):
        src_stage, _, src_role = init[len("stage:") :].partition("/")
        if src_stage not in results:
          raise ValueError(
            f"stage {name!r}: {role}.init={init!r} names a stage that has not run "
            f"yet (order: {list(config.stages)})"
          )
        with stage_cfg.unlocked():
          stage_cfg[role].init = os.path.join(workdir, src_stage, "export", src_role)
    print(f"=== stage {name} ===", flush=True)
    results[name] = train_and_evaluate(stage_cfg, os.path.join(workdir, name))
  report = {key: results[stage][role] for key, stage, role in config.report}
  print(evaluate.format_table(report, title="held-out sources"), flush=True)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(report, f, indent=2)
  return report


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO.
  maybe_initialize_distributed(config)
  workdir = _WORKDIR.value
  if config.get("stages"):
    run_stages(config, workdir)
  else:
    train_and_evaluate(config, workdir)


if __name__ == "__main__":
  app.run(main)
