"""What every config shares: argument parsing, trainer bookkeeping, dataset plumbing, AdamW fields.

configs/ is a folder of files, not a package: the trainer loads a config by its path
(`--config configs/NAME.py[:ARG]`), and a config loads this file by its path too (the
`importlib.util` lines at the top of each config), so configs work from any directory and
nothing named `configs` is installed.

Everything a Table I run is about (model, init checkpoint, lr, layer decay, epochs, batch, frames,
mesh) is written out in the config file itself; this file holds only what is the same for all of
them. Each config takes an optional argument string `key=value,key2=value2` (e.g. `:runlocal`)
and returns a ConfigDict that the trainer locks, so a mistyped `--config.key=...` override or an
unknown `:key=` argument is an error.
"""

from __future__ import annotations

import os

import ml_collections as mlc

from internvqa_jax import optim

# TFDS name, named content-disjoint split and label transform of each dataset a config can name.
DATASETS = {
  # DMOS/100 as the authors train (higher = worse); SRCC/PLCC are reported against DMOS.
  "bvihd": dict(dataset="bvi_hd", split="authors", labels=dict(scale=0.01, flip_dmos=False)),
  "waterloo": dict(dataset="waterloo_ivc_4k", split="authors", labels=dict(scale=0.01)),
  "synthetic": dict(dataset="synthetic_compressed", split="heldout", labels=dict(scale=0.01)),
}


def parse_arg(arg: str | None, **defaults):
  """'runlocal,epochs=10' -> ConfigDict(runlocal=True, epochs=10) over typed `defaults`."""
  cfg = mlc.ConfigDict(defaults)
  for item in (arg or "").split(","):
    if not item:
      continue
    key, eq, value = item.partition("=")
    if key not in cfg:
      raise ValueError(f"unknown config argument {key!r}; known: {sorted(cfg)}")
    if not eq:
      cfg[key] = True
    else:
      cfg[key] = (
        type(cfg[key])(value)
        if not isinstance(cfg[key], bool)
        else value.lower() in ("1", "true", "yes")
      )
  return cfg


def ckpt(name: str) -> str:
  """Converted checkpoints (converters/) live in $INTERNVQA_CKPT_DIR/<name>; nothing is downloaded.

  Override per run with --config.model.init=/path (or .teacher.init / .student.init).
  """
  return os.path.join(os.environ.get("INTERNVQA_CKPT_DIR", "$INTERNVQA_CKPT_DIR"), name)


def model(
  family: str,
  variant: str,
  *,
  init: str = "",
  dont_load=(),
  trainable=".*",
  view: str = "video",
  **kwargs,
) -> mlc.ConfigDict:
  """A model section: family and variant, what to load, what trains, which batch key it reads."""
  return mlc.ConfigDict(
    dict(
      family=family,
      variant=variant,
      init=init,
      dont_load=list(dont_load),
      trainable=trainable,
      view=view,
      kwargs=dict(kwargs),
    )
  )


def internvideo2_view(
  num_frames=8, crop_size=224, resize_short=224, test_clips=4, test_crops=3, flip=True
) -> dict:
  """InternVideo2 input: segment sampling, short-side resize, crop; S clips x C crops at test."""
  return dict(
    recipe="internvideo2",
    num_frames=num_frames,
    crop_size=crop_size,
    resize_short=resize_short,
    flip=flip,
    test_clips=test_clips,
    test_crops=test_crops,
  )


def data(
  name: str,
  views: dict,
  *,
  data_dir: str = "",
  manual_dir: str = "",
  build: bool = False,
  workers: int = 2,
  eval_batch_size: int = 8,
) -> mlc.ConfigDict:
  """The data section for DATASETS[name], reading the named `views` of each video."""
  d = DATASETS[name]
  return mlc.ConfigDict(
    dict(
      dataset=d["dataset"],
      split=d["split"],
      data_dir=data_dir,
      manual_dir=manual_dir,
      build=build,
      eval_batch_size=eval_batch_size,
      pipeline=dict(
        views=views, labels=dict(d["labels"]), worker_count=workers, prefetch_buffer_size=2
      ),
    )
  )


def adamw(
  lr: float,
  *,
  warmup_steps: int,
  layer_decay=None,
  weight_decay=0.05,
  min_lr=1e-6,
  warmup_lr=1e-6,
  clip_grad_norm=None,
  lr_mults=(),
  no_decay_standard=True,
  schedule="cosine",
) -> mlc.ConfigDict:
  """Every optimizer field (optim.default_config), defaults from InternVideo2's finetuning recipe.

  AdamW (0.9, 0.999, 1e-8), weight decay 0.05 except 1-D parameters, biases, pos_embed and
  cls_token, per-step warmup from 1e-6 and cosine decay to 1e-6.
  """
  cfg = optim.default_config()
  cfg.lr = lr
  cfg.warmup_steps = warmup_steps
  cfg.weight_decay = weight_decay
  cfg.min_lr = min_lr
  cfg.warmup_lr = warmup_lr
  cfg.schedule = schedule
  cfg.no_decay_standard = no_decay_standard
  cfg.lr_mults = [list(x) for x in lr_mults]
  if layer_decay is not None:
    cfg.layer_decay = layer_decay
  if clip_grad_norm is not None:
    cfg.clip_grad_norm = clip_grad_norm
  return cfg


def base(mode: str, *, total_steps: int, batch_size: int = 8) -> mlc.ConfigDict:
  """The trainer's bookkeeping: seed, bf16 compute, data-parallel mesh, logging and checkpoints."""
  c = mlc.ConfigDict()
  c.mode = mode
  c.seed = 0
  c.total_steps = total_steps
  c.batch_size = batch_size
  c.compute_dtype = "bfloat16"
  c.matmul_precision = ""
  c.distributed = False
  c.mesh = dict(data=-1, fsdp=1, rules=[])
  c.log_every = 10
  c.eval_every = 0
  c.ckpt_every = 200
  c.keep_ckpts = 2
  c.keep_best = True
  c.stop_after_steps = 0  # > 0: checkpoint and exit after this many steps (time-limited jobs).
  c.loss = dict(kind="l2")
  return c


def distill_loss(**overrides) -> dict:
  """L2(teacher) + L2(student) + SmoothL1(beta 2) on parameter-free-LayerNormed 768-d features."""
  d = dict(
    kind="l2",
    teacher_weight=1.0,
    student_weight=1.0,
    feature_weight=1.0,
    smooth_l1_beta=2.0,
    teacher_feature_grad=True,
  )
  d.update(overrides)
  return d


def runlocal(c: mlc.ConfigDict) -> mlc.ConfigDict:
  """A few steps with tiny batches to check a config end to end on a workstation."""
  c.total_steps = 4
  c.batch_size = 2
  c.log_every = 1
  c.ckpt_every = 2
  c.eval_every = 0
  c.data.eval_batch_size = 2
  c.data.pipeline.worker_count = 0
  return c
