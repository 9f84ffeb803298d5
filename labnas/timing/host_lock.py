"""One machine, several search workers: timing never overlaps training or another timing.

A worker that times a candidate on this machine uses every core; a worker training at the same moment
takes one of them, and TVM's thread pool then stalls at every barrier (measured: the reference workload at
25.6 ms instead of 0.84 ms with two workers on two cores). So timing takes an exclusive lock on a file that
every worker of the machine shares, and accuracy estimates take it shared: trainers run side by side, a
timing waits until they are done and holds the others back while it runs. Compiling (LLVM on one core,
seconds per candidate) is held shared as training is. Timing on a board over RPC takes no lock (the board
is the RPC session's alone).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path

__all__ = ["LOCK_PATH", "exclusive_timing", "shared_training"]

#: The machine-wide lock file (``LABNAS_HOST_LOCK`` overrides it).
LOCK_PATH = Path(os.environ.get("LABNAS_HOST_LOCK", Path(tempfile.gettempdir()) / "labnas-host.lock"))


#: This process's hold on the lock file: one open file, its mode and the nesting depth. A search trial holds the
#: lock shared and times inside it (exclusive): the hold is converted in place, since a second open file of the
#: same process would wait for the first one forever. Linux converts a flock by dropping the old lock before
#: waiting for the new one, so two processes converting at once take turns instead of deadlocking.
_held: dict = {"fh": None, "mode": None, "depth": 0}


@contextlib.contextmanager
def _locked(mode: int):
    if _held["fh"] is None:
        LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
        fh = open(LOCK_PATH, "a")
        fcntl.flock(fh.fileno(), mode)
        _held.update(fh=fh, mode=mode, depth=1)
        try:
            yield
        finally:
            _held.update(fh=None, mode=None, depth=0)
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            fh.close()
        return
    outer = _held["mode"]
    upgrade = mode == fcntl.LOCK_EX and outer == fcntl.LOCK_SH
    if upgrade:
        fcntl.flock(_held["fh"].fileno(), fcntl.LOCK_EX)
        _held["mode"] = fcntl.LOCK_EX
    _held["depth"] += 1
    try:
        yield
    finally:
        _held["depth"] -= 1
        if upgrade:
            fcntl.flock(_held["fh"].fileno(), fcntl.LOCK_SH)
            _held["mode"] = fcntl.LOCK_SH


def exclusive_timing():
    """Held while a candidate is timed on this machine: waits for every trainer, compiler and timer to finish."""
    return _locked(fcntl.LOCK_EX)


def shared_training():
    """Held while an accuracy estimate trains or a candidate compiles: any number of them side by side, but no
    timing meanwhile. Re-entrant within a process; an exclusive hold inside a shared one converts it."""
    return _locked(fcntl.LOCK_SH)
