"""Files the end-to-end demo (configs/demo.py) loads from the package: nothing is fetched.

teacher/  the demo teacher, pretrained on the proxy task by `make_teacher.py` (a converted-model
          directory, read by internvqa_jax.models.load and by `init` in configs).
"""

import os

TEACHER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "teacher")
