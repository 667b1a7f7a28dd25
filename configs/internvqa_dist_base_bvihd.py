r"""InternVQA-dist-Base on BVI-HD: InternVideo2-1B teacher (preset 'paper') distilled into Base.

Run:
  python -m internvqa_jax.train --config configs/internvqa_dist_base_bvihd.py --workdir $WORKDIR/internvqa_dist_base_bvihd \
      --config.data.manual_dir=/data/BVI-HD --config.data.build=True
Smoke test (4 steps, batch 2): --config configs/internvqa_dist_base_bvihd.py:runlocal

Checkpoints: $INTERNVQA_CKPT_DIR must hold the converted checkpoints named in configs/common.py
(python -m converters.internvideo2 / converters.fastvqa), or override --config.*.init=PATH.
Expected: the paper's Table I reports PLCC 0.813, SRCC 0.711 (not yet reproduced here: needs the real data and checkpoints).
"""

from configs import common


def get_config(arg=None):
  return common.internvqa_distill("base", "bvihd", arg)
