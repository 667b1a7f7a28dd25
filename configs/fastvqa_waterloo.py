r"""FAST-VQA-B finetuned on Waterloo IVC 4K with the FAST-VQA recipe (fragments, plcc + 0.3 rank loss).

Run:
  python -m internvqa_jax.train --config configs/fastvqa_waterloo.py --workdir $WORKDIR/fastvqa_waterloo \
      --config.data.manual_dir=/data/Waterloo_IVC_4K --config.data.build=True
Smoke test (4 steps, batch 2): --config configs/fastvqa_waterloo.py:runlocal

Checkpoints: $INTERNVQA_CKPT_DIR must hold the converted checkpoints named in configs/common.py
(python -m converters.internvideo2 / converters.fastvqa), or override --config.*.init=PATH.
Expected: the paper's Table I reports PLCC 0.780, SRCC 0.734 (not yet reproduced here: needs the real data and checkpoints).
"""

from configs import common


def get_config(arg=None):
  return common.fastvqa_finetune("waterloo", arg)
