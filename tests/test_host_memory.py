"""The malloc huge-page restart of the command-line tools (internvqa_jax.host_memory)."""

import os
import subprocess
import sys

import pytest

from internvqa_jax import host_memory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OK = dict(platform="linux", glibc=(2, 36), thp="madvise")


def test_why_not_allows_a_capable_machine():
  assert host_memory.why_not({}, **OK) is None
  assert host_memory.why_not({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, **OK) is None
  assert host_memory.why_not({}, **{**OK, "thp": "always"}) is None


@pytest.mark.parametrize(
  "environ,machine,reason",
  [
    ({"INTERNVQA_HUGE_PAGES": "0"}, {}, "INTERNVQA_HUGE_PAGES=0"),
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, {}, "already sets glibc.malloc.hugetlb"),
    ({}, {"platform": "darwin", "glibc": None}, "not Linux with glibc"),
    ({}, {"glibc": None}, "not Linux with glibc"),
    ({}, {"glibc": (2, 34)}, "glibc 2.34 is older than 2.35"),
    ({}, {"thp": "never"}, "transparent huge pages are never"),
    ({}, {"thp": None}, "transparent huge pages are unavailable"),
  ],
)
def test_why_not_names_the_reason(environ, machine, reason):
  assert reason in host_memory.why_not(environ, **{**OK, **machine})


def test_with_tunable_appends_and_copies():
  env = {"A": "1", "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
  out = host_memory.with_tunable(env)
  assert out["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
  assert out["A"] == "1" and env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2"
  assert host_memory.with_tunable({})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"


def test_cli_module_only_while_python_m_locates_it():
  argv = ["/usr/bin/python", "-X", "importtime", "-m", "internvqa_jax.train", "--config", "c.py"]
  assert host_memory.cli_module("-m", argv) == "internvqa_jax.train"
  assert host_memory.cli_module("-m", ["python", "-minternvqa_jax.score"]) == "internvqa_jax.score"
  # After locating, or in a script, a notebook or pytest: never.
  assert host_memory.cli_module("/x/internvqa_jax/train.py", argv) is None
  assert host_memory.cli_module("", ["python"]) is None
  assert host_memory.cli_module("-m", ["python", "-m"]) is None


def _train_until_first_error(tmp_path, **extra):
  """`python -m internvqa_jax.train` up to its first output: the status line, then an error."""
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", host_memory.OPT_OUT)}
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=REPO, **extra)
  not_a_dir = tmp_path / "file"
  not_a_dir.write_text("")
  cmd = [sys.executable, "-m", "internvqa_jax.train", "--config", "configs/demo.py:runlocal"]
  r = subprocess.run(
    [*cmd, "--workdir", str(not_a_dir)], cwd=REPO, env=env, capture_output=True, text=True
  )
  assert r.returncode == 1 and "Not a directory" in r.stderr, r.stderr[-2000:]
  return env, r.stdout.splitlines()[0]


def test_train_cli_restarts_with_huge_pages_where_the_machine_allows(tmp_path):
  env, line = _train_until_first_error(tmp_path)
  reason = host_memory.why_not(env, **host_memory.this_machine())
  if reason is None:
    assert line == "malloc huge pages: on (GLIBC_TUNABLES=glibc.malloc.hugetlb=1)"
  else:
    assert line == f"malloc huge pages: off ({reason})"


def test_train_cli_opt_out(tmp_path):
  _, line = _train_until_first_error(tmp_path, INTERNVQA_HUGE_PAGES="0")
  assert line == "malloc huge pages: off (INTERNVQA_HUGE_PAGES=0 (opted out))"


def test_importing_the_package_never_restarts():
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  env["PYTHONPATH"] = REPO
  code = "import os, internvqa_jax; print(os.environ.get('GLIBC_TUNABLES', '-'), os.getpid())"
  r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
  assert r.returncode == 0 and r.stdout.split()[0] == "-", r.stdout + r.stderr


def test_status_words():
  on = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
  assert host_memory.status(on) == "on (GLIBC_TUNABLES=glibc.malloc.hugetlb=1)"
  assert host_memory.status({host_memory.OPT_OUT: "0"}).startswith("off (INTERNVQA_HUGE_PAGES=0")
