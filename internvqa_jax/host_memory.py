"""Transparent huge pages for glibc malloc, switched on for the project's command-line tools.

Why: on the CPU backend XLA allocates every jitted call's temporaries afresh.
Above glibc's mmap threshold each allocation is a new mapping, faulted in 4 KiB
page by page on every call and unmapped after it: a quarter of the demo's CPU
time went to the kernel (about 20 million minor page faults per seed). glibc's
`glibc.malloc.hugetlb=1` tunable (glibc >= 2.35) makes malloc advise its
mappings for transparent huge pages, so a call faults in 2 MiB at a time.
Measured (benchmarks/bench_host_memory.py, docs/benchmarks.md): the demo's
minor faults fell 20-fold and its wall time by a sixth, with identical results.

glibc reads tunables once, at process start, so a tool cannot switch this on
for itself. Instead, when Python runs one of this package's modules with
`python -m internvqa_jax.<tool>`, the package's `__init__` calls
`reexec_for_cli()` while the module is being located (before any heavy import),
and the process re-executes itself once with the tunable added to
GLIBC_TUNABLES. Importing the package as a library never does this.

Nothing happens when any of these holds: not Linux/glibc, glibc older than
2.35, transparent huge pages set to `never`, GLIBC_TUNABLES already naming
`glibc.malloc.hugetlb` (the user's choice wins), or INTERNVQA_HUGE_PAGES=0
(the opt-out). The trainer prints `status()` at start.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

TUNABLE = "glibc.malloc.hugetlb"
OPT_OUT = "INTERNVQA_HUGE_PAGES"
MIN_GLIBC = (2, 35)  # The first release with glibc.malloc.hugetlb.
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def _glibc_version() -> tuple[int, ...] | None:
  """(major, minor) of the running glibc, or None (another libc, or not Unix)."""
  try:
    lib, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # e.g. "glibc 2.36"
    return tuple(int(p) for p in version.split(".")[:2]) if lib == "glibc" else None
  except (AttributeError, ValueError, OSError):
    return None


def _thp_setting() -> str | None:
  """The selected mode of transparent huge pages ('always', 'madvise', 'never'), or None."""
  try:
    with open(THP_SETTING) as f:
      text = f.read()
  except OSError:
    return None
  start, end = text.find("["), text.find("]")
  return text[start + 1 : end] if 0 <= start < end else None


def why_not(
  environ: Mapping[str, str],
  *,
  platform: str,
  glibc: tuple[int, ...] | None,
  thp: str | None,
) -> str | None:
  """None if the tunable should be added to this environment, else the reason it is not."""
  if environ.get(OPT_OUT, "") == "0":
    return f"{OPT_OUT}=0 (opted out)"
  if TUNABLE in environ.get("GLIBC_TUNABLES", ""):
    return f"GLIBC_TUNABLES already sets {TUNABLE}"
  if platform != "linux" or glibc is None:
    return "not Linux with glibc"
  if glibc < MIN_GLIBC:
    return f"glibc {'.'.join(map(str, glibc))} is older than 2.35"
  if thp in (None, "never"):
    return f"transparent huge pages are {thp or 'unavailable'} ({THP_SETTING})"
  return None


def with_tunable(environ: Mapping[str, str]) -> dict[str, str]:
  """A copy of environ with glibc.malloc.hugetlb=1 appended to GLIBC_TUNABLES."""
  env = dict(environ)
  current = env.get("GLIBC_TUNABLES", "")
  env["GLIBC_TUNABLES"] = f"{current}:{TUNABLE}=1" if current else f"{TUNABLE}=1"
  return env


def cli_module(argv0: str, orig_argv: Sequence[str]) -> str | None:
  """The module `python -m` is locating, if that is what is happening now.

  While `-m` locates its module (importing the parent packages), sys.argv[0] is
  "-m"; the module's name follows "-m" in sys.orig_argv.
  """
  if argv0 != "-m":
    return None
  args = list(orig_argv)
  for i, a in enumerate(args[1:], start=1):
    if a == "-m":
      return args[i + 1] if i + 1 < len(args) else None
    if a.startswith("-m"):  # python -mpackage.module
      return a[2:]
  return None


def reexec_for_cli() -> None:
  """Re-executes `python -m internvqa_jax.<tool> ...` once with huge pages (module docstring)."""
  module = cli_module(sys.argv[0], getattr(sys, "orig_argv", ()))
  if not module or not module.startswith("internvqa_jax."):
    return
  if why_not(os.environ, **this_machine()) is None:
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], with_tunable(os.environ))


def this_machine() -> dict:
  """why_not's machine arguments, read from this machine."""
  return dict(platform=sys.platform, glibc=_glibc_version(), thp=_thp_setting())


def status(environ: Mapping[str, str] | None = None) -> str:
  """'on (GLIBC_TUNABLES=...)' or 'off (why)', for this process or the given environment."""
  environ = os.environ if environ is None else environ
  tunables = environ.get("GLIBC_TUNABLES", "")
  if f"{TUNABLE}=1" in tunables:
    return f"on (GLIBC_TUNABLES={tunables})"
  reason = why_not(environ, **this_machine()) or "not started with python -m internvqa_jax.<tool>"
  return f"off ({reason})"
