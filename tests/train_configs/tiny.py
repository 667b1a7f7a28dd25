r"""Tiny training config for the trainer's tests (synthetic_compressed/tiny, 2 sources).

python -m internvqa_jax.train --config tests/train_configs/tiny.py:mode=distill,steps=4 --workdir W
"""

import os

import ml_collections as mlc

from internvqa_jax.config_files import load_by_path

common = load_by_path(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "common.py"))

TEACHER = dict(embed_dim=128, depth=3, num_heads=2, mlp_hidden=512)
STUDENT = dict(embed_dim=32, depth=1, num_heads=2, mlp_hidden=64)


def get_config(arg=None):
  a = common.parse_arg(
    arg,
    mode="finetune",
    steps=4,
    batch_size=8,
    preset="paper",
    lr=1e-3,
    data_dir="",
    fsdp=1,
    ckpt_every=2,
    seed=0,
    student="internvideo2",
  )
  c = common.base(a.mode, total_steps=a.steps, batch_size=a.batch_size)
  c.seed = a.seed
  c.compute_dtype = "float32"
  c.log_every = 1
  c.ckpt_every = a.ckpt_every
  c.keep_best = False
  c.mesh.fsdp = a.fsdp
  view = common.internvideo2_view(
    num_frames=2, crop_size=28, resize_short=None, test_clips=1, test_crops=1, flip=False
  )
  views = {"video": view}
  if a.student == "fastvqa":
    # FAST-VQA fragments scaled to the tiny Swin: 3x3 grid of 16 px patches, 8 frames.
    views["fragments"] = dict(
      recipe="fastvqa",
      variant="fast_vqa_b",
      overrides=dict(
        fragments=3, fsize=16, aligned=8, clip_len=8, num_clips_test=1, test_sampling="center"
      ),
    )
  c.data = common.data(
    "synthetic", views, data_dir=a.data_dir, build=True, workers=0, eval_batch_size=8
  )
  c.data.dataset = "synthetic_compressed/tiny"
  opt = common.adamw(a.lr, warmup_steps=1, min_lr=a.lr / 10, warmup_lr=0.0)
  model = lambda dims, **kw: common.model(
    "internvideo2", "tiny", num_frames=2, img_size=28, **dims, **kw
  )
  if a.mode == "finetune":
    c.model = model(STUDENT)
  else:
    if a.student == "fastvqa":
      # The tiny Swin ends at 16 * 8 = 128 channels: pool the teacher to the same width.
      c.teacher = model(TEACHER, trainable=a.preset, pool_dim=128)
      c.student = common.model("fastvqa", "tiny", view="fragments", drop_path_rate=0.0)
    else:
      c.teacher = model(TEACHER, trainable=a.preset)
      c.student = model(STUDENT)
    c.teacher_optim = mlc.ConfigDict(opt.to_dict())
    c.loss = common.distill_loss()
  c.optim = opt
  return c
