r"""InternVQA-Base finetuned on BVI-HD (authors' split, DMOS/100, L2).

Run:
  python -m internvqa_jax.train --config configs/internvqa_base_bvihd.py --workdir $WORKDIR/internvqa_base_bvihd \
      --config.data.manual_dir=/data/BVI-HD --config.data.build=True
Smoke test (4 steps, batch 2): --config configs/internvqa_base_bvihd.py:runlocal

Checkpoints: $INTERNVQA_CKPT_DIR must hold the converted checkpoints named in configs/common.py
(python -m converters.internvideo2 / converters.fastvqa), or override --config.*.init=PATH.
Expected: the paper's Table I reports PLCC 0.752, SRCC 0.688 (not yet reproduced here: needs the real data and checkpoints).
"""

from configs import common


def get_config(arg=None):
  return common.internvqa_finetune("base", "bvihd", arg)
