r"""InternVQA-1B on BVI-HD: InternVideo2-1B finetuned on DMOS.

Paper target, Table I row "InternVQA-1B" (1020.71M parameters), BVI-HD:
  PLCC 0.792, SRCC 0.761.
Not reproduced here yet: that needs the real data and the converted checkpoints.

InternVideo2-1B, Kinetics-400 finetuned, regressed on DMOS/100 with L2 loss; 8x224x224 clips,
evaluated on 4 clips x 3 crops per video.

Run, with the converted checkpoints in $INTERNVQA_CKPT_DIR (docs/models_and_converters.md) and the
raw BVI-HD files in /data/BVI-HD (docs/data_and_decoding.md):

  python -m internvqa_jax.train --config configs/internvqa_1b_bvihd.py \
      --workdir $WORKDIR/internvqa_1b_bvihd \
      --config.data.manual_dir=/data/BVI-HD --config.data.build=True

`runlocal` variant, 4 steps at batch 2 to check the setup end to end on a workstation:

  python -m internvqa_jax.train --config configs/internvqa_1b_bvihd.py:runlocal \
      --workdir /tmp/internvqa_1b_bvihd \
      --config.data.manual_dir=/data/BVI-HD --config.data.build=True

Arguments, e.g. `configs/internvqa_1b_bvihd.py:epochs=10,workers=2`: runlocal, epochs (20), workers
(4 Grain worker processes).
"""

from internvqa_jax.config_files import load_sibling

common = load_sibling(__file__, "common")  # configs/ is loaded by path, not imported


def get_config(arg=None):
  arg = common.parse_arg(arg, runlocal=False, epochs=20, workers=4)
  batch_size = 8  # the paper's batch
  # The authors' split trains on 26 of the 32 sources, 12 encodes each
  steps_per_epoch = 26 * 12 // batch_size

  c = common.base("finetune", total_steps=arg.epochs * steps_per_epoch, batch_size=batch_size)
  c.mesh = dict(data=1, fsdp=-1, rules=[])  # FSDP: 1B parameters + Adam states over all devices
  c.model = dict(
    family="internvideo2",
    variant="1b",  # InternVideo2-1B/14: width 1408, 40 blocks
    init=common.ckpt("1B_ft_k710_ft_k400_f8"),  # K710 -> K400 finetuned, 8x224x224
    dont_load=["head/.*"],  # a fresh 1-output regression head
    trainable=".*",
    view="video",
    kwargs=dict(num_outputs=1, drop_path_rate=0.3, remat=True),
  )
  # 8 frames (segment sampling), short side to 224, 224x224 crops; 4 clips x 3 crops at test.
  video = dict(
    recipe="internvideo2",
    num_frames=8,
    crop_size=224,
    resize_short=224,
    flip=True,
    test_clips=4,
    test_crops=3,
  )
  c.data = common.data(
    "bvihd",  # bvi_hd, labels DMOS/100 (higher = worse), the authors' content-disjoint split
    {"video": video},
    workers=arg.workers,
  )
  # InternVideo2's K400 finetuning recipe, at its script's base lr (not rescaled to batch 8).
  c.optim = common.adamw(1e-5, layer_decay=0.9, warmup_steps=steps_per_epoch)
  c.eval_every = 2 * steps_per_epoch
  return common.runlocal(c) if arg.runlocal else c
