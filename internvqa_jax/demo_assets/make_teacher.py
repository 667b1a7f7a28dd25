r"""Makes the demo's pretrained teacher (internvqa_jax/demo_assets/teacher/): run once, offline.

  python -m internvqa_jax.demo_assets.make_teacher --workdir /tmp/demo_teacher_pretrain

Builds `synthetic_compressed/pretrain` under $TFDS_DATA_DIR (about 2.5 min on 2 cores), trains
configs/demo_teacher_pretrain.py (the proxy task: predict each clip's CRF; no quality label)
in WORKDIR, then copies the exported model into the package with a provenance note. The run is
deterministic on one machine (fixed seed, decoding in the main process); on another CPU, float
rounding may give slightly different weights. The demo's results with the shipped weights are
in docs/demo.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil

from internvqa_jax import demo_assets, train


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="where the pretraining run writes")
  parser.add_argument("--arg", default="", help="configs/demo_teacher_pretrain.py argument")
  args = parser.parse_args(argv)
  # configs/ is a folder of files loaded by path (run from the repository root).
  spec = importlib.util.spec_from_file_location(
    "configs_demo_teacher_pretrain", os.path.join("configs", "demo_teacher_pretrain.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(args.arg)
  results = train.train_and_evaluate(config, args.workdir)
  if "stopped_at" in results:
    raise SystemExit(f"pretraining stopped at step {results['stopped_at']}; rerun to resume")
  src = os.path.join(args.workdir, "export", "model")
  dst = demo_assets.TEACHER_DIR
  if os.path.exists(dst):
    shutil.rmtree(dst)
  shutil.copytree(src, dst)
  meta_path = os.path.join(dst, "meta.json")
  with open(meta_path) as f:
    meta = json.load(f)
  meta["made_by"] = (
    "python -m internvqa_jax.demo_assets.make_teacher "
    f"(configs/demo_teacher_pretrain.py:{args.arg})"
  )
  meta["proxy_validation"] = results["model"]
  with open(meta_path, "w") as f:
    json.dump(meta, f, indent=2)
  print(f"wrote {dst}: proxy-task validation {results['model']}")


if __name__ == "__main__":
  main()
