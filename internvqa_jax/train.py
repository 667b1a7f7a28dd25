"""Trains InternVQA models: `finetune` one model, or `distill` a teacher into a student.

  python -m internvqa_jax.train --config configs/NAME.py[:ARG] --workdir DIR [--config.key=value ...]

The config is locked: an override of a key the config does not have is an
error. Rerunning with the same --workdir resumes from the latest checkpoint
(parameters, optimizer states, data iterator position, step), provided the
config matches the saved WORKDIR/config.json (internvqa_jax.saved_config;
--allow_config_change for keys that change results but not shapes).
metrics.jsonl is cut back to the restored step. One trainer per workdir
(internvqa_jax.workdir_lock). SIGTERM saves a checkpoint and exits cleanly
(code 0). A config with `stages` (configs/demo.py) runs several such trainings
in sub-directories and writes results.json (with `seeds` too, all of them once per
seed: internvqa_jax.demo_results); SIGTERM stops the whole run, and a
rerun skips finished stages and resumes the interrupted one. Errors follow
internvqa_jax.cli_errors (one line; --verbose for the traceback).

The file is one readable loop, in sections: setup, data, models, state,
restore, loop, final evaluation and export.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import signal
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from jax.experimental import multihost_utils
from ml_collections import config_flags

from internvqa_jax import (
  calibration,
  checkpointing,
  cli_errors,
  data_setup,
  evaluate,
  host_memory,
  metric_writer,
  model_setup,
  saved_config,
  sharding,
  tree_paths,
  workdir_lock,
)
from internvqa_jax import models as models_lib
from internvqa_jax import steps as steps_lib
from internvqa_jax.models import checkpoint as ckpt_lib

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Training config file (configs/NAME.py[:ARG]).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
  "allow_config_change",
  False,
  "Resume although the config differs from WORKDIR/config.json in keys that change results "
  "but not the saved state's shapes (see internvqa_jax.saved_config).",
)
flags.DEFINE_bool("verbose", False, "Print the traceback of an error (or INTERNVQA_VERBOSE=1).")
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


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
  loss_cfg: Any = None  # steps.LossConfig the train step was made with
  schedules: Any = None  # role -> learning-rate schedule


def build_run(config, mesh, rng_init, *, log=print, abstract: bool = False) -> Run:
  """Models, parameters (sharded; loaded from converted checkpoints), optimizers, jitted steps.

  abstract=True builds the same Run from shapes only: `state` and `frozen` are
  trees of jax.ShapeDtypeStruct carrying their shardings, nothing is
  initialised, loaded or placed on a device, and the jitted steps can be
  lowered and compiled ahead of time for `mesh` (internvqa_jax.plan does).
  """
  mode = config.mode
  roles = {"finetune": ["model"], "distill": ["teacher", "student"]}.get(mode)
  if roles is None:
    raise ValueError(f"config.mode must be 'finetune' or 'distill', got {mode!r}")
  rules = [tuple(r) for r in config.mesh.get("rules", [])] or None
  parts, trainable, frozen, schedules = {}, {}, {}, {}
  for role, r in zip(roles, jax.random.split(rng_init, len(roles))):
    mcfg = config[role]
    module = model_setup.build_module(mcfg, config.compute_dtype)
    if abstract:
      params = model_setup.abstract_sharded(module, mesh, rules)
    else:
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

  state_shapes = jax.eval_shape(init_state, trainable)
  state_sh = sharding.infer_param_shardings(state_shapes, mesh, rules)
  frozen = steps_lib.frozen_storage(parts, frozen)  # Compute dtype: read, never updated.
  frozen_sh = jax.tree.map(lambda x: x.sharding, frozen)
  if abstract:
    state = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state_shapes, state_sh
    )
  else:
    state = jax.jit(init_state, out_shardings=state_sh)(trainable)
  loss_cfg = steps_lib.LossConfig(mode=mode, **config.loss.to_dict())
  batch_sh = sharding.batch_sharding(mesh)
  train_step = jax.jit(
    steps_lib.make_train_step(parts, loss_cfg, schedules, mesh=mesh),
    in_shardings=(state_sh, frozen_sh, batch_sh, None),
    out_shardings=(state_sh, None),
    donate_argnums=(0,),
  )
  predict = {
    role: jax.jit(
      steps_lib.make_predict_fn(part, mesh=mesh),
      in_shardings=(state_sh[role]["params"], frozen_sh[role], batch_sh),
    )
    for role, part in parts.items()
  }
  return Run(parts, state, frozen, state_sh, frozen_sh, train_step, predict, loss_cfg, schedules)


def check_config(config) -> None:
  """Config values whose typos would otherwise fail late or with a misleading error."""
  if config.get("stages"):
    return
  roles = {"finetune": ["model"], "distill": ["teacher", "student"]}.get(config.get("mode"))
  if roles is None:
    raise cli_errors.UsageError(
      f"config.mode={config.get('mode')!r}: expected 'finetune' or 'distill'"
    )
  missing = [r for r in roles if r not in config]
  if missing:
    raise cli_errors.UsageError(
      f"config.mode={config.mode!r} needs config.{' and config.'.join(missing)}, which the "
      f"config does not have"
    )
  if config.get("compute_dtype") not in COMPUTE_DTYPES:
    raise cli_errors.UsageError(
      f"config.compute_dtype={config.get('compute_dtype')!r}: expected one of {list(COMPUTE_DTYPES)}"
    )


def prepare_workdir(workdir: str) -> str:
  """Creates WORKDIR; a file in its place or an unwritable parent is a one-line error."""
  workdir = os.path.abspath(workdir)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise NotADirectoryError(f"--workdir {workdir} is a file; expected a directory")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise OSError(f"--workdir {workdir}: cannot create it ({cli_errors.message(e)})") from e
  if not os.access(workdir, os.W_OK | os.X_OK):
    raise PermissionError(f"--workdir {workdir} is not writable")
  return workdir


def train_and_evaluate(
  config, workdir: str, *, allow_config_change: bool = False
) -> dict[str, Any]:
  """Runs (or resumes) one training; returns the final evaluation metrics per model.

  Holds WORKDIR's lock for the whole run (process 0 only: it alone writes
  logs and config.json; Orbax coordinates the checkpoint writes).
  """
  check_config(config)
  workdir = prepare_workdir(workdir)
  if jax.process_index() != 0:
    return _train_and_evaluate(config, workdir, allow_config_change)
  with workdir_lock.WorkdirLock(workdir):
    return _train_and_evaluate(config, workdir, allow_config_change)


def _train_and_evaluate(config, workdir: str, allow_config_change: bool) -> dict[str, Any]:
  # ---------------------------------------------------------------- setup --
  if config.get("matmul_precision"):
    jax.config.update("jax_default_matmul_precision", config.matmul_precision)
  is_main = jax.process_index() == 0
  log = (lambda *a: print(*a, flush=True)) if is_main else (lambda *a: None)
  # Before anything is written: a run that cannot resume keeps its config.json.
  saved_config.check_and_save(
    config.to_json_best_effort(indent=2),
    workdir,
    allow_change=allow_config_change,
    write=is_main,
    log=log,
  )
  writer = metric_writer.MetricWriter(workdir, enabled=is_main)
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
  dropped = writer.truncate_after(first_step)
  if dropped:
    log(f"metrics.jsonl: dropped {dropped} row(s) logged after step {first_step} (logged again)")

  eval_preds = {}  # role -> per-video predictions of the latest evaluation

  def run_eval(step):
    results = {}
    for role, part in parts.items():
      fn = lambda b, role=role: predict[role](state[role]["params"], frozen[role], b)
      eval_preds[role] = evaluate.collect_predictions(
        fn,
        data.eval_batches(part.batch_key),
        lambda b, key=part.batch_key: data.global_batch(b, mesh, keys=[key]),
      )
      results[role] = evaluate.metrics_of(eval_preds[role])
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
        if ckpt.latest_step() != step:  # ckpt_every may have saved this very step.
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
    # Converted-model directories hold float32; the frozen part ran in the compute dtype.
    params = jax.tree.map(lambda x: np.asarray(x, np.float32), params)
    if is_main:
      write_eval_predictions(
        os.path.join(workdir, f"eval_predictions_{role}.csv"), eval_preds[role], data.eval_records
      )
    cal = fit_calibration(eval_preds[role], data.eval_records, config.data, log)
    ckpt_lib.save_params(
      os.path.join(workdir, "export", role),
      params,
      {
        "family": part.module.FAMILY,
        "model_kwargs": models_lib.model_kwargs(part.module),
        "trained_by": "internvqa_jax.train",
        "step": int(step),
        "eval": results[role],
        "eval_view": data.views[part.batch_key],  # The test protocol `internvqa_jax.score` reuses.
        "calibration": cal,  # Raw score -> label units, for `score`'s mos column.
      },
      overwrite=True,
      log=log,
    )
  if is_main:
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(results, f, indent=2)
  writer.close()
  return results


def write_eval_predictions(path: str, preds, records) -> None:
  """Per-video predictions of the final evaluation: video_id, path, target, label, prediction."""
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["video_id", "path", "target", "label", "prediction"])
    for i, t, lab, p in zip(preds["index"], preds["target"], preds["label"], preds["score"]):
      r = records[int(i)]
      w.writerow(
        [r.get("video_id", ""), r.get("path", ""), repr(float(t)), repr(float(lab)), repr(float(p))]
      )


def fit_calibration(preds, records, dcfg, log) -> dict | None:
  """The 4-parameter logistic from predictions to raw labels on the eval split, or None (logged)
  when the split mixes MOS and DMOS or the fit fails."""
  kinds = {str(records[int(i)].get("score_kind", "mos")).lower() for i in preds["index"]}
  if len(kinds) != 1:
    log(f"no calibration: the eval split mixes label kinds {sorted(kinds)}")
    return None
  try:
    return calibration.fit(
      preds["score"],
      preds["target"],
      kinds.pop(),
      fit_split=f"{dcfg.get('split', '')} eval",
      dataset=str(dcfg.get("dataset", "")),
    )
  except calibration.CalibrationError as e:
    log(f"no calibration: {e}")
    return None


def sharding_to_host(tree):
  """Global (possibly multi-host sharded) arrays -> numpy on every process."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def run_stages(config, workdir: str, *, allow_config_change: bool = False) -> dict[str, Any]:
  """Runs config.stages in order, each a full training in WORKDIR/<stage> (configs/demo.py).

  A model `init` of the form "stage:NAME/ROLE" is the model ROLE exported by
  the earlier stage NAME. config.report maps report rows to (stage, role);
  the table is printed and written to WORKDIR/results.json.
  """
  workdir = prepare_workdir(workdir)  # Absolute: stage inits resolve the same on every rerun.
  lock = workdir_lock.WorkdirLock(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
  with lock, _Preemption() as preempt:
    return _run_stages(config, workdir, preempt, allow_config_change)


def _stage_done(stage_cfg, stage_dir: str) -> dict | None:
  """The results of a stage that finished (results.json and every export written), else None."""
  roles = [r for r in ("model", "teacher", "student") if r in stage_cfg]
  results = os.path.join(stage_dir, "results.json")
  exports = [os.path.join(stage_dir, "export", r, "meta.json") for r in roles]
  if not os.path.exists(results) or not all(os.path.exists(e) for e in exports):
    return None
  with open(results) as f:
    return json.load(f)


def _run_stages(config, workdir: str, preempt, allow_config_change: bool) -> dict[str, Any]:
  results = {}
  for name in config.stages:
    if preempt.requested:  # SIGTERM between stages.
      print(f"SIGTERM: stopping before stage {name}; rerun the same command to go on.", flush=True)
      return {"stopped_before": name}
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
    stage_dir = os.path.join(workdir, name)
    done = _stage_done(stage_cfg, stage_dir)
    if done is not None:
      # Still compared with the saved config: a changed stage must not be skipped silently.
      saved_config.check_and_save(
        stage_cfg.to_json_best_effort(indent=2),
        stage_dir,
        allow_change=allow_config_change,
        write=jax.process_index() == 0,
      )
      print(f"=== stage {name}: finished earlier, results from {stage_dir} ===", flush=True)
      results[name] = done
      continue
    print(f"=== stage {name} ===", flush=True)
    results[name] = train_and_evaluate(
      stage_cfg, stage_dir, allow_config_change=allow_config_change
    )
    if "stopped_at" in results[name]:  # SIGTERM inside the stage: it saved; stop the run.
      print(f"stopped in stage {name}; rerun the same command to resume it.", flush=True)
      return results[name]
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
  if jax.process_index() == 0:
    print(f"malloc huge pages: {host_memory.status()}", flush=True)  # Speed on CPU: host_memory.
  workdir = _WORKDIR.value
  allow = _ALLOW_CONFIG_CHANGE.value
  if config.get("seeds"):  # Every stage once per seed, then mean ± std (configs/demo.py).
    from internvqa_jax import demo_results

    demo_results.run_seeds(
      config, workdir, lambda c, w: run_stages(c, w, allow_config_change=allow)
    )
  elif config.get("stages"):
    run_stages(config, workdir, allow_config_change=allow)
  else:
    train_and_evaluate(config, workdir, allow_config_change=allow)


# Errors a training run reports in one line (cli_errors): a diverged loss is not a bug.
KNOWN_TRAIN_ERRORS = (FloatingPointError,)


def _override_error(e: BaseException, argv: list[str]) -> cli_errors.UsageError | None:
  """ml_collections reports an unknown --config.KEY as a bare AttributeError/KeyError('key')."""
  key = str(e.args[0]).strip("\"'") if e.args else ""
  for arg in argv:
    if arg.startswith("--config.") and key:
      path = arg[len("--config.") :].split("=", 1)[0]
      if key in path.split("."):
        return cli_errors.UsageError(
          f"{arg}: the config has no key {key!r} there (overrides must name existing keys; a typo?)"
        )
  return None


def _parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with usage errors raised as cli_errors.UsageError (exit code 2)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    raise cli_errors.UsageError(str(e).splitlines()[0]) from e
  except (AttributeError, KeyError) as e:
    usage = _override_error(e, argv)
    if usage is None:
      raise
    raise usage from e


def cli(argv: list[str] | None = None) -> int:
  """`python -m internvqa_jax.train`: app.run under the cli_errors convention."""
  # Required here, not at import: internvqa_jax.plan imports this module for its --config flag.
  flags.mark_flags_as_required(["config", "workdir"])

  def run(args):
    try:
      app.run(main, argv=[sys.argv[0], *args], flags_parser=_parse_flags)
    except KNOWN_TRAIN_ERRORS as e:
      raise cli_errors.InputError(str(e)) from e

  return cli_errors.run(run, argv)


if __name__ == "__main__":
  sys.exit(cli())
