r"""End-to-end demo on the embedded synthetic_compressed set, on a laptop CPU.

Teacher finetune, then an undistilled student and a distilled student (teacher
from stage 1, trained jointly with the student as in InternVQA), all tiny
InternVideo2 models trained from scratch on really-encoded H.264/HEVC/VP9/AV1
clips of 14 photographs, labelled by a full-reference score (luma detail-to-error
ratio, mapped to 0-100). Prints PLCC/SRCC on the 120 clips of the two held-out
photographs (coffee, rocket) and writes WORKDIR/results.json:
  {"teacher": {...}, "student": {...}, "distilled_student": {...}}

Run (builds the dataset under $TFDS_DATA_DIR or ~/tensorflow_datasets on first use, ~30 s):
  python -m internvqa_jax.train --config configs/demo.py --workdir /tmp/internvqa_demo

Variants: `configs/demo.py:runlocal` (a few steps, for smoke tests),
`configs/demo.py:steps=N` (N steps per stage), `configs/demo.py:data=tiny` (2-source test set),
`configs/demo.py:untrained` (adds an untrained-student row).

Expected (600 steps per stage, batch 32; one run on a shared 2-core CPU at load average 3-5:
about 6.8 min wall with the dataset build, 12 min of CPU time):
  held-out SRCC / PLCC: teacher 0.45 / 0.44, student 0.58 / 0.61, distilled student 0.65 / 0.68.
An untrained student (`:untrained`) gives 0.16 / 0.14. These tiny models see only 14 photographs,
and 120 held-out clips of 2 photographs make SRCC noisy: with 400 steps per stage the same recipe
gave 0.50, 0.45 and 0.33.
"""

import importlib.util
import os

import ml_collections as mlc

# configs/ is a folder of files loaded by path, not a package: load common.py from beside this file.
_spec = importlib.util.spec_from_file_location(
  "configs_common", os.path.join(os.path.dirname(__file__), "common.py")
)
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)

TEACHER = dict(embed_dim=96, depth=4, num_heads=4, mlp_hidden=384)
STUDENT = dict(embed_dim=64, depth=2, num_heads=2, mlp_hidden=256)


def _stage(mode, a, steps):
  c = common.base(mode, total_steps=steps, batch_size=a.batch_size)
  c.compute_dtype = "float32"  # bf16 matmuls are slow on most CPUs.
  c.log_every = 25
  c.ckpt_every = 100
  c.keep_best = False
  # Native-resolution crops (resizing would blur the artefacts) that cover most of the small
  # frames, so that a crop's quality is close to its clip's label; several test views per video.
  view = common.internvideo2_view(
    num_frames=a.frames,
    crop_size=a.crop,
    resize_short=None,
    test_clips=a.test_clips,
    test_crops=a.test_crops,
  )
  c.data = common.data(
    "synthetic", {"video": view}, build=True, workers=a.workers, eval_batch_size=16
  )
  c.data.dataset = "synthetic_compressed" + ("" if a.data == "default" else "/" + a.data)
  c.data.split = "heldout"
  return c


def _model(dims, a, **kw):
  # Trained from scratch: the released models' layer scale (1e-5) and head scale (0.001) suit
  # finetuning a pretrained trunk; from scratch they keep the blocks and head near-silent for
  # hundreds of steps, so both start at 1 here.
  return common.model(
    "internvideo2",
    "tiny",
    num_frames=a.frames,
    img_size=a.crop,
    patch_size=a.patch,
    layerscale_init=1.0,
    init_scale=1.0,
    **dims,
    **kw,
  )


def _optim(a, lr):
  return common.adamw(
    lr, warmup_steps=max(1, a.steps // 10), min_lr=lr / 100, warmup_lr=0.0, clip_grad_norm=1.0
  )


def get_config(arg=None):
  a = common.parse_arg(
    arg,
    runlocal=False,
    steps=600,
    batch_size=32,
    frames=2,
    crop=48,
    patch=8,
    test_clips=4,
    test_crops=3,
    workers=2,
    data="default",
    lr=1e-3,
    untrained=False,
  )
  if a.runlocal:
    a.steps, a.batch_size, a.workers = 4, 4, 0
  c = mlc.ConfigDict()
  c.stages = ["teacher", "student", "distill"] + (["untrained"] if a.untrained else [])
  teacher = _stage("finetune", a, a.steps)
  teacher.model = _model(TEACHER, a)
  teacher.optim = _optim(a, a.lr)
  student = _stage("finetune", a, a.steps)
  student.model = _model(STUDENT, a)
  student.optim = _optim(a, a.lr)
  distill = _stage("distill", a, a.steps)
  # The finetuned teacher of stage 1; the student starts from the same fresh init as stage 2.
  distill.teacher = _model(TEACHER, a, init="stage:teacher/model", trainable="paper")
  distill.student = _model(STUDENT, a)
  distill.optim = _optim(a, a.lr)
  distill.teacher_optim = _optim(a, a.lr / 10)
  distill.loss = common.distill_loss()
  untrained = _stage("finetune", a, 0)
  untrained.model = _model(STUDENT, a)
  # Never stepped; a cosine schedule cannot be built over 0 steps.
  untrained.optim = common.adamw(a.lr, warmup_steps=0, schedule="constant")
  c.stage_configs = {
    "teacher": teacher,
    "student": student,
    "distill": distill,
    "untrained": untrained,
  }
  c.report = [
    ["teacher", "teacher", "model"],
    ["student", "student", "model"],
    ["distilled_student", "distill", "student"],
  ]
  if a.untrained:
    c.report.append(["untrained_student", "untrained", "model"])
  return c
