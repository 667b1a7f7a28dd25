r"""InternVQA-dist-Small on Waterloo IVC 4K: InternVideo2-1B teacher (preset 'paper') distilled into Small.

Run:
  python -m internvqa_jax.train --config configs/internvqa_dist_small_waterloo.py --workdir $WORKDIR/internvqa_dist_small_waterloo \
      --config.data.manual_dir=/data/Waterloo_IVC_4K --config.data.build=True
Smoke test (4 steps, batch 2): --config configs/internvqa_dist_small_waterloo.py:runlocal

Checkpoints: $INTERNVQA_CKPT_DIR must hold the converted checkpoints named in configs/common.py
(python -m converters.internvideo2 / converters.fastvqa), or override --config.*.init=PATH.
Expected: the paper's Table I reports PLCC 0.821, SRCC 0.794 (not yet reproduced here: needs the real data and checkpoints).
"""

from configs import common


def get_config(arg=None):
  return common.internvqa_distill("small", "waterloo", arg)
