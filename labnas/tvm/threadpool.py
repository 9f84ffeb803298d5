"""TVM's CPU thread pool: how many workers run a compiled model's parallel loops in this process.

One place for it because two callers need it: :class:`labnas.timing.VmRunner` fixes the count before it times a
network, and :mod:`labnas.tvm.strategy` times kernel candidates with the count the network will run with
(TVM's default pool on a 2-vCPU VM has one worker, not two).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["set_threads", "threads_meanwhile"]


def set_threads(threads: int) -> None:
    """Fix TVM's worker-thread count (and pin none). TVM caps the pool at ``TVM_NUM_THREADS``, read on every
    resize, so the variable is set as well as the pool."""
    import tvm

    os.environ["TVM_NUM_THREADS"] = str(threads)
    tvm.get_global_func("runtime.config_threadpool")(0, threads)


@contextlib.contextmanager
def threads_meanwhile(threads: int) -> Iterator[None]:
    """TVM's pool at ``threads`` workers meanwhile, then back at what the process had set (``TVM_NUM_THREADS``,
    as :func:`set_threads` records it), else TVM's default."""
    import tvm

    before = os.environ.get("TVM_NUM_THREADS")
    set_threads(threads)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TVM_NUM_THREADS", None)
        else:
            os.environ["TVM_NUM_THREADS"] = before
        tvm.get_global_func("runtime.config_threadpool")(0, int(before) if before and before.isdigit() else 0)
