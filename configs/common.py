"""Building blocks shared by the configs: every config file is `get_config(arg)` over these.

Configs are code (big_vision style): each file states its run command in its
docstring, takes an optional argument string `key=value,key2=value2` (e.g.
`:runlocal`), and returns a ConfigDict that the trainer locks, so a mistyped
`--config.key=...` override is an error.
"""

from __future__ import annotations

import ml_collections as mlc

from internvqa_jax import optim

# Datasets: TFDS name, named content-disjoint split, label transform, frames used per clip.
DATASETS = {
  # DMOS/100 as the authors train (higher = worse); SRCC/PLCC are reported against DMOS.
  "bvihd": dict(dataset="bvi_hd", split="authors", labels=dict(scale=0.01, flip_dmos=False)),
  "waterloo": dict(dataset="waterloo_ivc_4k", split="authors", labels=dict(scale=0.01)),
  "synthetic": dict(dataset="synthetic_compressed", split="heldout", labels=dict(scale=0.01)),
}


def parse_arg(arg: str | None, **defaults):
  """'runlocal,steps=10' -> ConfigDict(runlocal=True, steps=10) over typed `defaults`."""
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
  import os

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
  return dict(
    recipe="internvideo2",
    num_frames=num_frames,
    crop_size=crop_size,
    resize_short=resize_short,
    flip=flip,
    test_clips=test_clips,
    test_crops=test_crops,
  )


def fastvqa_view(variant="fast_vqa_b") -> dict:
  return dict(recipe="fastvqa", variant=variant)


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
  """InternVideo2 finetuning optimizer: AdamW (0.9, 0.999, 1e-8), warmup + cosine per step."""
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


def fastvqa_adamw(*, warmup_steps: int) -> mlc.ConfigDict:
  """FAST-VQA recipe: head lr 1e-3, backbone lr 1e-4 (x0.1), weight decay 0.05 on everything."""
  return adamw(
    1e-3,
    warmup_steps=warmup_steps,
    min_lr=0.0,
    warmup_lr=0.0,
    lr_mults=[("fragments_backbone/.*", 0.1)],
    no_decay_standard=False,
    schedule="fastvqa",
  )


def base(mode: str, *, total_steps: int, batch_size: int = 8) -> mlc.ConfigDict:
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


# InternVideo2 students/teachers of Table I: converted K400 finetuned checkpoints.
INTERNVIDEO2 = {
  "small": dict(variant="small", init="S14_ft_k710_ft_k400_f8", layer_decay=0.75, lr=2e-5),
  "base": dict(variant="base", init="B14_ft_k710_ft_k400_f8", layer_decay=0.75, lr=2e-5),
  "1b": dict(variant="1b", init="1B_ft_k710_ft_k400_f8", layer_decay=0.9, lr=1e-5),
}


# Optimizer steps per epoch at batch 8: training videos of the authors' split / 8.
STEPS_PER_EPOCH = {"bvihd": 26 * 12 // 8, "waterloo": 16 * 60 // 8}


def internvqa_finetune(size: str, dataset: str, arg=None) -> mlc.ConfigDict:
  """InternVQA-S/B/1B: a K400-finetuned InternVideo2 regressed on MOS with L2, 8x224x224 clips."""
  a = parse_arg(arg, runlocal=False, epochs=20, workers=4)
  m, spe = INTERNVIDEO2[size], STEPS_PER_EPOCH[dataset]
  c = base("finetune", total_steps=a.epochs * spe)
  c.model = model(
    "internvideo2",
    m["variant"],
    init=ckpt(m["init"]),
    dont_load=["head/.*"],
    num_outputs=1,
    drop_path_rate=0.1 if size != "1b" else 0.3,
    remat=size == "1b",
  )
  c.data = data(dataset, {"video": internvideo2_view()}, workers=a.workers)
  c.optim = adamw(m["lr"], warmup_steps=spe, layer_decay=m["layer_decay"])
  c.eval_every = spe * 2
  if size == "1b":
    c.mesh.fsdp, c.mesh.data = -1, 1
  return _runlocal(c) if a.runlocal else c


def fastvqa_finetune(dataset: str, arg=None) -> mlc.ConfigDict:
  """FAST-VQA-B finetuned from its released checkpoint with the FAST-VQA recipe."""
  a = parse_arg(arg, runlocal=False, epochs=30, workers=4)
  spe = STEPS_PER_EPOCH[dataset]
  c = base("finetune", total_steps=a.epochs * spe)
  c.model = model("fastvqa", "fast_vqa_b", init=ckpt("FAST_VQA_B_1_4"), view="fragments")
  c.data = data(dataset, {"fragments": fastvqa_view("fast_vqa_b")}, workers=a.workers)
  c.optim = fastvqa_adamw(warmup_steps=2 * spe)
  c.loss.kind = "fastvqa"
  c.eval_every = spe * 2
  return _runlocal(c) if a.runlocal else c


def internvqa_distill(size: str, dataset: str, arg=None) -> mlc.ConfigDict:
  """InternVQA-dist-S/B: 1B teacher (block 39 + head trained) distilled into an S/B student."""
  a = parse_arg(arg, runlocal=False, epochs=20, workers=4, preset="paper")
  s = INTERNVIDEO2[size]
  c = _distill(dataset, a, {"video": internvideo2_view()})
  c.student = model(
    "internvideo2",
    s["variant"],
    init=ckpt(s["init"]),
    dont_load=["head/.*"],
    num_outputs=1,
    drop_path_rate=0.1,
  )
  c.optim = adamw(s["lr"], warmup_steps=STEPS_PER_EPOCH[dataset], layer_decay=s["layer_decay"])
  return _runlocal(c) if a.runlocal else c


def fastvqa_distill(dataset: str, arg=None) -> mlc.ConfigDict:
  """FastVQA-dist: the 1B teacher distilled into FAST-VQA-B (heterogeneous: own fragment input)."""
  a = parse_arg(arg, runlocal=False, epochs=30, workers=4, preset="paper")
  c = _distill(dataset, a, {"video": internvideo2_view(), "fragments": fastvqa_view("fast_vqa_b")})
  c.student = model("fastvqa", "fast_vqa_b", init=ckpt("FAST_VQA_B_1_4"), view="fragments")
  c.optim = fastvqa_adamw(warmup_steps=2 * STEPS_PER_EPOCH[dataset])
  return _runlocal(c) if a.runlocal else c


def _distill(dataset: str, a, views: dict) -> mlc.ConfigDict:
  """What every Table I distillation shares: the 1B teacher, its optimizer, the loss, FSDP."""
  t, spe = INTERNVIDEO2["1b"], STEPS_PER_EPOCH[dataset]
  c = base("distill", total_steps=a.epochs * spe)
  c.teacher = model(
    "internvideo2",
    "1b",
    init=ckpt(t["init"]),
    dont_load=["head/.*"],
    trainable=a.preset,
    num_outputs=1,
    drop_path_rate=0.3,
    remat=True,
  )
  c.data = data(dataset, views, workers=a.workers)
  c.teacher_optim = adamw(t["lr"], warmup_steps=spe, layer_decay=t["layer_decay"])
  c.loss = distill_loss()
  c.mesh.fsdp, c.mesh.data = (
    -1,
    1,
  )  # The 1B teacher and its Adam states are sharded over all devices.
  c.eval_every = spe * 2
  return c


def _runlocal(c: mlc.ConfigDict) -> mlc.ConfigDict:
  """A few steps with tiny batches to check a config end to end on a workstation."""
  c.total_steps = 4
  c.batch_size = 2
  c.log_every = 1
  c.ckpt_every = 2
  c.eval_every = 0
  c.data.eval_batch_size = 2
  c.data.pipeline.worker_count = 0
  return c
