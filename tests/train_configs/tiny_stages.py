r"""Two-stage tiny config for the trainer's stage tests: `a` finetunes, `b` starts from a's export.

python -m internvqa_jax.train --config tests/train_configs/tiny_stages.py:steps_a=4,steps_b=2 --workdir W
"""

import ml_collections as mlc

from internvqa_jax.config_files import load_sibling

tiny = load_sibling(__file__, "tiny")


def get_config(arg=None):
  a = tiny.common.parse_arg(arg, steps_a=4, steps_b=2, data_dir="")
  first = tiny.get_config(f"steps={a.steps_a},data_dir={a.data_dir},ckpt_every=0")
  second = tiny.get_config(f"steps={a.steps_b},data_dir={a.data_dir},ckpt_every=0")
  second.model.init = "stage:a/model"
  c = mlc.ConfigDict()
  c.stages = ["a", "b"]
  c.stage_configs = {"a": first, "b": second}
  c.report = [["first", "a", "model"], ["second", "b", "model"]]
  return c
