"""One writer per training workdir: a lock file holding the owner's pid and host.

WORKDIR/train.lock is created exclusively (O_EXCL) by the process that trains
in WORKDIR and removed when it ends. A second trainer finds it and stops with
a message naming the owner. A lock whose process is gone (same host, pid not
running: a kill -9 or a crash), or one a crash left empty, is stale: it is
taken over and the takeover is logged. A lock of another host cannot be checked from here; the message says
how to remove it once that run is known to be over.
"""

from __future__ import annotations

import json
import os
import socket
import time

from internvqa_jax import cli_errors

LOCK_FILE = "train.lock"
# A lock file is written right after it is created; one still empty after this long is debris.
EMPTY_LOCK_GRACE_S = 60.0


class WorkdirLockedError(cli_errors.InputError):
  """Another live process trains in this workdir."""


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Exists, owned by someone else.
    return True
  return True


class WorkdirLock:
  """Context manager: holds WORKDIR/train.lock for the life of the block."""

  def __init__(self, workdir: str, *, log=print):
    self.path = os.path.join(os.fspath(workdir), LOCK_FILE)
    self.log = log
    self.held = False

  def _owner(self) -> dict:
    try:
      with open(self.path) as f:
        return json.load(f)
    except (OSError, ValueError):
      return {}

  def _age(self) -> float:
    try:
      return time.time() - os.path.getmtime(self.path)
    except OSError:
      return 0.0

  def acquire(self) -> None:
    host, pid = socket.gethostname(), os.getpid()
    for _ in range(2):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        owner = self._owner()
        o_pid, o_host = owner.get("pid"), owner.get("host")
        if o_host == host and isinstance(o_pid, int) and o_pid != pid and not _alive(o_pid):
          os.remove(self.path)
          self.log(f"{self.path}: taking over a stale lock of process {o_pid} (no longer running)")
          continue
        if not owner and self._age() > EMPTY_LOCK_GRACE_S:  # Its writer died before writing.
          os.remove(self.path)
          self.log(f"{self.path}: taking over an empty or unreadable lock file")
          continue
        since = owner.get("started", "?")
        raise WorkdirLockedError(
          f"{os.path.dirname(self.path)} is in use by another trainer (pid {o_pid} on host "
          f"{o_host}, started {since}; lock file {self.path}). Two trainers would interleave "
          "their checkpoints and metrics: wait for it, or choose another --workdir. If that "
          "run is over (e.g. its machine is gone), delete the lock file."
        ) from None
      with os.fdopen(fd, "w") as f:
        json.dump({"pid": pid, "host": host, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}, f)
      self.held = True
      return
    raise WorkdirLockedError(f"{self.path}: could not take the lock (raced with another trainer)")

  def release(self) -> None:
    if self.held and self._owner().get("pid") == os.getpid():
      os.remove(self.path)
    self.held = False

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()
