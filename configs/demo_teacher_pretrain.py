r"""Pretrains the demo teacher on a proxy task that needs no quality label (run once, offline).

The task: predict each clip's encoder level, 100 * (1 - CRF / the encoder's maximum CRF), on
`synthetic_compressed/pretrain` (the 12 photographs outside the demo's held-out split, filmed
along 3 other camera paths at 4 resolutions and encoded at 8 levels by 4 encoders; 4608 clips).
Validation: the proxy label on the clips of one of those photographs (split `proxy`). The model
is the demo's teacher (configs/demo.py TEACHER), trained whole from its initialisation (DCT patch
embedding, the rest random). 3000 steps: about 12 min on 2 CPU cores; proxy validation SRCC
0.884, the shipped teacher (0.13 at 300 steps without the DCT patch embedding).

Run through internvqa_jax/demo_assets/make_teacher.py, which also copies the exported model into
the package; or alone:
  python -m internvqa_jax.train --config configs/demo_teacher_pretrain.py --workdir /tmp/pretrain
"""

import importlib.util
import os

# configs/ is a folder of files loaded by path, not a package: load demo.py from beside this file.
_spec = importlib.util.spec_from_file_location(
  "configs_demo", os.path.join(os.path.dirname(__file__), "demo.py")
)
demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo)
common = demo.common


def get_config(arg=None):
  a = common.parse_arg(
    arg,
    runlocal=False,
    steps=3000,
    batch_size=32,
    frames=2,
    crop=48,
    patch=8,
    test_clips=2,
    test_crops=2,
    workers=0,
    lr=1e-3,
  )
  if a.runlocal:
    a.steps, a.batch_size = 4, 4
  c = demo.stage("finetune", a, a.steps, dataset="synthetic_compressed/pretrain", split="proxy")
  # The whole pretraining set decoded: 4608 clips x 24 frames, about 2.1 GB.
  c.data.pipeline.decoded_cache_mb = 2400
  c.model = demo.model(demo.TEACHER, a)
  c.optim = demo.optimizer(a, a.lr, a.steps)
  return c
