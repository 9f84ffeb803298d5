"""One machine, several search workers: timing never overlaps training or another timing.

A worker that times a candidate on this machine uses every core; a worker training at the same moment
takes one of them, and TVM's thread pool then stalls at every barrier (measured: the reference workload at
25.6 ms instead of 0.84 ms with two workers on two cores). So timing takes an exclusive lock on a file that
every worker of the machine shares, and accuracy estimates take it shared: trainers run side by side, a
timing waits until they are done and holds the others back while it runs. Timing on a board over RPC takes
no lock (the board is the RPC session's alone).
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


@contextlib.contextmanager
def _locked(mode: int):
    LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK_PATH, "a") as fh:
        fcntl.flock(fh.fileno(), mode)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def exclusive_timing():
    """Held while a candidate is timed on this machine: waits for every trainer and timer to finish."""
    return _locked(fcntl.LOCK_EX)


def shared_training():
    """Held while an accuracy estimate trains: any number of trainers, but no timing meanwhile."""
    return _locked(fcntl.LOCK_SH)
