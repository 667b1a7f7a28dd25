r"""InternVQA-Base on Waterloo IVC 4K: InternVideo2-Base finetuned on MOS.

Paper target, Table I row "InternVQA-Base" (89.44M parameters), Waterloo IVC 4K:
  PLCC 0.751, SRCC 0.759.
Not reproduced here yet: that needs the real data and the converted checkpoints.

InternVideo2-Base, Kinetics-400 finetuned, regressed on MOS/100 with L2 loss; 8x224x224 clips,
evaluated on 4 clips x 3 crops per video.

Run, with the converted checkpoints in $INTERNVQA_CKPT_DIR (docs/models_and_converters.md) and the
raw Waterloo IVC 4K files in /data/Waterloo_IVC_4K (docs/data_and_decoding.md):

  python -m internvqa_jax.train --config configs/internvqa_base_waterloo.py \
      --workdir $WORKDIR/internvqa_base_waterloo \
      --config.data.manual_dir=/data/Waterloo_IVC_4K --config.data.build=True

`runlocal` variant, 4 steps at batch 2 to check the setup end to end on a workstation:

  python -m internvqa_jax.train --config configs/internvqa_base_waterloo.py:runlocal \
      --workdir /tmp/internvqa_base_waterloo \
      --config.data.manual_dir=/data/Waterloo_IVC_4K --config.data.build=True

Arguments, e.g. `configs/internvqa_base_waterloo.py:epochs=10,workers=2`: runlocal, epochs (20),
workers (4 Grain worker processes).
"""

from internvqa_jax.config_files import load_sibling

common = load_sibling(__file__, "common")  # configs/ is loaded by path, not imported


def get_config(arg=None):
  arg = common.parse_arg(arg, runlocal=False, epochs=20, workers=4)
  batch_size = 8  # the paper's batch
  # The authors' split trains on sources 05-20, 60 encodes each
  steps_per_epoch = 16 * 60 // batch_size

  c = common.base("finetune", total_steps=arg.epochs * steps_per_epoch, batch_size=batch_size)
  c.mesh = dict(data=-1, fsdp=1, rules=[])  # data parallel: the model fits on each device
  c.model = dict(
    family="internvideo2",
    variant="base",  # InternVideo2-B/14: width 768, 12 blocks
    init=common.ckpt("B14_ft_k710_ft_k400_f8"),  # K710 -> K400 finetuned, 8x224x224
    dont_load=["head/.*"],  # a fresh 1-output regression head
    trainable=".*",
    view="video",
    kwargs=dict(num_outputs=1, drop_path_rate=0.1, remat=False),
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
    "waterloo",  # waterloo_ivc_4k, labels MOS/100, the authors' content-disjoint split
    {"video": video},
    workers=arg.workers,
  )
  # InternVideo2's K400 finetuning recipe, at its script's base lr (not rescaled to batch 8).
  c.optim = common.adamw(2e-5, layer_decay=0.75, warmup_steps=steps_per_epoch)
  c.eval_every = 2 * steps_per_epoch
  return common.runlocal(c) if arg.runlocal else c
