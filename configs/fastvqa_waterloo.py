r"""FastVQA on Waterloo IVC 4K: FAST-VQA-B finetuned on MOS (a Table I baseline).

Paper target, Table I row "FastVQA" (92.22M parameters), Waterloo IVC 4K:
  PLCC 0.780, SRCC 0.734.
Not reproduced here yet: that needs the real data and the converted checkpoints.

FAST-VQA-B, from its released LSVQ-trained checkpoint, finetuned with FAST-VQA's own recipe (PLCC +
0.3 x rank loss); 32-frame clips of 7x7 fragments, 4 clips per video at test. The paper counts
92.22M parameters; the released FAST-VQA-B has 28,127,901 (no released configuration gives 92.22M).

Run, with the converted checkpoints in $INTERNVQA_CKPT_DIR (docs/models_and_converters.md) and the
raw Waterloo IVC 4K files in /data/Waterloo_IVC_4K (docs/data_and_decoding.md):

  python -m internvqa_jax.train --config configs/fastvqa_waterloo.py \
      --workdir $WORKDIR/fastvqa_waterloo \
      --config.data.manual_dir=/data/Waterloo_IVC_4K --config.data.build=True

`runlocal` variant, 4 steps at batch 2 to check the setup end to end on a workstation:

  python -m internvqa_jax.train --config configs/fastvqa_waterloo.py:runlocal \
      --workdir /tmp/fastvqa_waterloo \
      --config.data.manual_dir=/data/Waterloo_IVC_4K --config.data.build=True

Arguments, e.g. `configs/fastvqa_waterloo.py:epochs=10,workers=2`: runlocal, epochs (30), workers
(4 Grain worker processes).
"""

from internvqa_jax.config_files import load_sibling

common = load_sibling(__file__, "common")  # configs/ is loaded by path, not imported


def get_config(arg=None):
  arg = common.parse_arg(arg, runlocal=False, epochs=30, workers=4)
  batch_size = 8  # the paper's batch
  # The authors' split trains on sources 05-20, 60 encodes each
  steps_per_epoch = 16 * 60 // batch_size

  c = common.base("finetune", total_steps=arg.epochs * steps_per_epoch, batch_size=batch_size)
  c.mesh = dict(data=-1, fsdp=1, rules=[])  # data parallel: the model fits on each device
  c.model = dict(
    family="fastvqa",
    variant="fast_vqa_b",  # Swin3D-T with fragment position bias, 28,127,901 parameters
    init=common.ckpt("FAST_VQA_B_1_4"),  # the released FAST-VQA-B, trained on LSVQ
    dont_load=[],
    trainable=".*",
    view="fragments",
    kwargs=dict(),
  )
  c.data = common.data(
    "waterloo",  # waterloo_ivc_4k, labels MOS/100, the authors' content-disjoint split
    # 32 frames of 7x7 fragments of 32x32 px (224x224); 4 clips per video at test.
    {"fragments": dict(recipe="fastvqa", variant="fast_vqa_b")},
    workers=arg.workers,
  )
  c.loss = dict(kind="fastvqa")  # PLCC loss + 0.3 x rank loss
  # FAST-VQA's recipe: head lr 1e-3, backbone x0.1, weight decay on everything, its LambdaLR
  # schedule (warmup from 0; the original warms up for 2.5 epochs, this config for 2).
  c.optim = common.adamw(
    1e-3,
    warmup_steps=2 * steps_per_epoch,
    min_lr=0.0,
    warmup_lr=0.0,
    lr_mults=[("fragments_backbone/.*", 0.1)],
    no_decay_standard=False,
    schedule="fastvqa",
  )
  c.eval_every = 2 * steps_per_epoch
  return common.runlocal(c) if arg.runlocal else c
