"""One convention for command-line errors, shared by every entry point.

A known user or input error ends the command with ONE line on stderr,

  error: <the thing (file, flag, key, video)>: <what was wrong and what was expected>

and an exit code that says whose fault it is:

  2  usage error: a flag value or combination is wrong (argparse's own code),
  1  input error: a file, directory, checkpoint or label the command reads is
     wrong, or an output cannot be written.

Anything else (a bug) keeps Python's traceback. `--verbose` on the command
line, or INTERNVQA_VERBOSE=1 in the environment, prints the traceback of a
known error too.

  def main(argv=None) -> int:
    return cli_errors.run(_main, argv)
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence

USAGE_EXIT = 2
INPUT_EXIT = 1
INTERRUPTED_EXIT = 130
VERBOSE_FLAG = "--verbose"
VERBOSE_ENV = "INTERNVQA_VERBOSE"


class UsageError(ValueError):
  """The command line is wrong (a flag's value or a combination of flags): exit code 2."""


class InputError(ValueError):
  """Something the command reads or writes is wrong (names it): exit code 1."""


# Errors that carry a message meant for the user. ValueError covers the project's own
# error types (VideoDecodeError, CheckpointMismatchError, ReportError, ...); OSError
# covers missing, unreadable and unwritable paths (its message names the path).
INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)


def verbose_requested(argv: Sequence[str] | None = None) -> bool:
  argv = sys.argv[1:] if argv is None else argv
  return VERBOSE_FLAG in argv or os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def add_verbose_argument(parser: argparse.ArgumentParser) -> None:
  """Lists `--verbose` in --help (`run` reads it from argv and removes it before parsing)."""
  parser.add_argument(
    VERBOSE_FLAG,
    action="store_true",
    help=f"print the traceback of an error too (or set {VERBOSE_ENV}=1)",
  )


def message(e: BaseException) -> str:
  """The user-facing text of an error: its message, or its type when it has none."""
  if isinstance(e, OSError) and e.filename is not None and e.strerror:
    text = f"{e.filename}: {e.strerror}"
    if e.filename2 is not None:
      text += f" (-> {e.filename2})"
    return text
  text = str(e)
  if isinstance(e, KeyError) and e.args:
    text = str(e.args[0])
  return text or type(e).__name__


def report(e: BaseException, *, verbose: bool, stream=None) -> None:
  stream = stream or sys.stderr
  if verbose:
    traceback.print_exception(type(e), e, e.__traceback__, file=stream)
  print(f"error: {message(e)}", file=stream, flush=True)


def exit_code(e: BaseException) -> int | None:
  """The exit code of a known error, None for an unknown one (a bug)."""
  if isinstance(e, UsageError):
    return USAGE_EXIT
  if isinstance(e, KeyboardInterrupt):
    return INTERRUPTED_EXIT
  if isinstance(e, INPUT_ERRORS):
    return INPUT_EXIT
  return None


def run(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> int:
  """Calls main(argv) and turns a known error into one line and its exit code.

  `--verbose` is taken out of argv here, so a parser need not declare it
  (`add_verbose_argument` only lists it in --help).
  """
  argv = list(sys.argv[1:] if argv is None else argv)
  verbose = verbose_requested(argv)
  argv = [a for a in argv if a != VERBOSE_FLAG]
  try:
    rc = main(argv)
  except (UsageError, KeyboardInterrupt, *INPUT_ERRORS) as e:
    if isinstance(e, KeyboardInterrupt):
      print("interrupted", file=sys.stderr, flush=True)
      return INTERRUPTED_EXIT
    report(e, verbose=verbose)
    return exit_code(e)
  return 0 if rc is None else int(rc)


def _int_at_least(value: str, minimum: int, expected: str) -> int:
  try:
    n = int(value)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected {expected}, got {value!r}") from None
  if n < minimum:
    raise argparse.ArgumentTypeError(f"expected {expected}, got {n}")
  return n


def positive_int(value: str) -> int:
  """argparse type: an integer >= 1 (0 and negatives are usage errors, never 'default')."""
  return _int_at_least(value, 1, "a positive integer")


def non_negative_int(value: str) -> int:
  """argparse type: an integer >= 0."""
  return _int_at_least(value, 0, "an integer >= 0")
