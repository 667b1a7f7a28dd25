r"""End-to-end demo on the embedded synthetic_compressed set, on a laptop CPU, over 3 seeds.

The paper's recipe at toy scale. Both models' patch embeddings start from 8x8 DCT bases (the
low-level prior that the paper's Kinetics-pretrained models bring). The teacher also arrives
pretrained, as InternVQA's does: a tiny InternVideo2 (96-d, 4 blocks) pretrained once, outside the
demo, on a proxy task that needs no quality label (predict each clip's encoder level, CRF, over
4608 clips of other regions, resolutions and levels of the 12 training photographs;
internvqa_jax/demo_assets/make_teacher.py), shipped with the package. The demo then runs the
paper's part, once per seed:
  teacher    only the teacher's last block and (fresh) head trained on the quality label;
  student    a smaller model (64-d, 2 blocks) trained alone;
  distill    the tuned teacher (last block and head trainable) and a fresh student trained
             jointly: quality losses of both plus the feature loss;
  untrained  the fresh student, evaluated without training (the floor).
Labels: a full-reference score (luma detail-to-error ratio, mapped to 0-100) of really-encoded
H.264/HEVC/VP9/AV1 clips. Held out: every clip of 4 photographs (camera, coffee, grass, rocket;
240 clips). Writes WORKDIR/results.json (per model: metric means over seeds, "std", "per_seed")
and WORKDIR/results.png, and prints mean ± std per model (internvqa_jax.demo_results).

Run (builds the dataset under $TFDS_DATA_DIR or ~/tensorflow_datasets on first use, ~40 s):
  python -m internvqa_jax.train --config configs/demo.py --workdir /tmp/internvqa_demo

Variants: `configs/demo.py:runlocal` (a few steps, for smoke tests), `:steps=N` (student and
distill steps), `:teacher_steps=N`, `:seeds=N`, `:teacher_init=DIR`, `:data=tiny` (2-source test
set, split `heldout`).
Measured, held-out SRCC mean ± std over the 3 seeds (2-core CPU, about 6 min with the build):
teacher 0.793 ± 0.002, student 0.724 ± 0.009, distilled student 0.723 ± 0.017, untrained 0.023.
The paper's ranking for the teacher holds; distillation is neutral here. Details: docs/demo.md.
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

# patch_init="dct": initializers.dct_patch_kernel (why: the docstring, docs/demo.md).
TEACHER = dict(embed_dim=96, depth=4, num_heads=4, mlp_hidden=384, patch_init="dct")
STUDENT = dict(embed_dim=64, depth=2, num_heads=2, mlp_hidden=256, patch_init="dct")


def teacher_dir() -> str:
  # The pretrained teacher ships inside the package (never fetched).
  from internvqa_jax import demo_assets

  return demo_assets.TEACHER_DIR


def view(a):
  # Native-resolution crops (resizing would blur the artefacts) that cover most of the small
  # frames, so that a crop's quality is close to its clip's label; several test views per video.
  return common.internvideo2_view(
    num_frames=a.frames,
    crop_size=a.crop,
    resize_short=None,
    test_clips=a.test_clips,
    test_crops=a.test_crops,
  )


def stage(mode, a, steps, dataset="synthetic_compressed", split="heldout4"):
  c = common.base(mode, total_steps=steps, batch_size=a.batch_size)
  c.compute_dtype = "float32"  # bf16 matmuls are slow on most CPUs.
  c.log_every = 50
  c.ckpt_every = 0  # Short stages: one checkpoint at the end.
  c.keep_best = False
  c.data = common.data(
    "synthetic", {"video": view(a)}, build=True, workers=a.workers, eval_batch_size=48
  )
  # Each clip is decoded once per process and kept (small clips; all stages and seeds share it).
  c.data.pipeline.decoded_cache_mb = 2048
  c.data.dataset = dataset
  c.data.split = split
  if a.get("data", "default") != "default":
    c.data.dataset, c.data.split = f"{dataset}/{a.data}", "heldout"
  return c


def model(dims, a, **kw):
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


def optimizer(a, lr, steps):
  return common.adamw(
    lr, warmup_steps=max(1, steps // 10), min_lr=lr / 100, warmup_lr=0.0, clip_grad_norm=1.0
  )


def get_config(arg=None):
  a = common.parse_arg(
    arg,
    runlocal=False,
    seeds=3,
    steps=400,
    teacher_steps=100,
    batch_size=32,
    frames=2,
    crop=48,
    patch=8,
    test_clips=4,
    test_crops=3,
    workers=0,
    data="default",
    lr=1e-3,
    teacher_lr=1e-3,
    teacher_init="",
  )
  if a.runlocal:
    a.steps, a.teacher_steps, a.batch_size, a.seeds = 4, 4, 4, 1
  c = mlc.ConfigDict()
  c.seeds = list(range(a.seeds))
  c.stages = ["teacher", "student", "distill", "untrained"]
  init = a.teacher_init or teacher_dir()
  teacher = stage("finetune", a, a.teacher_steps)
  # As in the paper: the pretrained trunk frozen, its last block and a fresh head trained.
  teacher.model = model(TEACHER, a, init=init, dont_load=["head/.*"], trainable="paper")
  teacher.optim = optimizer(a, a.teacher_lr, a.teacher_steps)
  student = stage("finetune", a, a.steps)
  student.model = model(STUDENT, a)
  student.optim = optimizer(a, a.lr, a.steps)
  distill = stage("distill", a, a.steps)
  # The tuned teacher of stage 1; the student starts from the same fresh init as stage 2.
  distill.teacher = model(TEACHER, a, init="stage:teacher/model", trainable="paper")
  distill.student = model(STUDENT, a)
  distill.optim = optimizer(a, a.lr, a.steps)
  distill.teacher_optim = optimizer(a, a.teacher_lr / 10, a.steps)
  distill.loss = common.distill_loss()
  untrained = stage("finetune", a, 0)
  untrained.model = model(STUDENT, a)
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
    ["untrained_student", "untrained", "model"],
  ]
  c.ranking = ["teacher", "distilled_student", "student", "untrained_student"]
  return c
