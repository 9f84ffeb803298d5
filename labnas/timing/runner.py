"""One way to run a compiled model for timing: a Relax VM on this machine or on a board over RPC.

Every latency labnas reports (a search trial, ``labnas profile``, the latency tables, the reference
workload, the benchmarks) runs through :class:`VmRunner`, so thread count, device synchronisation and
the timer are the same everywhere.
"""

from __future__ import annotations

import os
import platform
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np

from ..tvm.threadpool import set_threads
from .remote import RemoteError, RemoteSpec, connect, remote_device_info

__all__ = ["VmRunner", "set_threads", "local_device_info"]


def local_device_info() -> dict[str, Any]:
    """This machine: CPU model, the ISA features in :data:`labnas.tvm.cpu.ISA_FLAGS` it has, cores, OS."""
    from ..tvm.cpu import cpu_model, isa_summary

    return {
        "cpu": cpu_model(),
        "isa": isa_summary(),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "os_bits": 64 if platform.architecture()[0] == "64bit" else 32,
        "system": f"{platform.system()} {platform.release()}",
    }


class VmRunner:
    """A compiled model loaded into a Relax VM on its device, with its thread count fixed.

    Build one with :meth:`local` or :meth:`remote`. ``threads`` is the TVM worker count the runs use
    (on a board: the board's own setting, as its RPC server reports it); ``device`` describes the machine.
    """

    def __init__(self, vm, dev, threads: int, device: dict[str, Any]):
        self.vm, self.dev, self.threads, self.device = vm, dev, int(threads), device

    @classmethod
    def local(cls, executable, threads: int | None = None) -> "VmRunner":
        """``executable`` (a ``relax.VMExecutable``) on this machine's CPU with ``threads`` TVM workers
        (default: every core)."""
        import tvm
        from tvm import relax

        threads = threads or os.cpu_count() or 1
        set_threads(threads)
        dev = tvm.cpu()
        return cls(relax.VirtualMachine(executable, dev), dev, threads, local_device_info())

    @classmethod
    def remote(cls, compiled, remote: RemoteSpec, threads: int | None = None, session=None,
               filename: str = "labnas_model.so") -> "VmRunner":
        """``compiled`` (a :class:`~labnas.tvm.CompiledModel`) exported, uploaded to the board at ``remote``
        as ``filename`` and loaded there; :class:`RemoteError` when the board cannot be reached or cannot load it.

        ``session``: an open RPC session to load into instead of a new one (the paired reference shares the
        candidate's session: an RPC server serves one session at a time). The runner keeps its session open
        (``runner.session``) until it is dropped."""
        from tvm import relax

        session = session or connect(remote)
        with tempfile.TemporaryDirectory() as tmp:
            path = compiled.export(os.path.join(tmp, filename))
            try:
                session.upload(path)
                lib = session.load_module(filename)
            except Exception as err:  # noqa: BLE001 - tvm raises TVMError / RuntimeError / OSError
                raise RemoteError(f"the board at {remote.describe()} could not load the model: {str(err).splitlines()[0][:160]}") from None
        dev = session.cpu()
        device = remote_device_info(session, compiled.target)
        runner = cls(relax.VirtualMachine(lib, dev), dev, threads or int(device.get("threads", 0)), device)
        runner.session = session  # the session must outlive the VM
        return runner

    def tensor(self, x: np.ndarray):
        """``x`` copied to the runner's device."""
        import tvm

        return tvm.runtime.tensor(x, self.dev)

    def run(self, *args):
        """One call of ``main`` on device tensors; returns the output tensor (on the device)."""
        return self.vm["main"](*args)

    def time_runs(self, args, number: int, repeat: int) -> list[float]:
        """``repeat`` timings in seconds, each the mean of ``number`` runs (TVM's ``time_evaluator``, timed on
        the device, after its own warm-up call)."""
        timer = self.vm.time_evaluator("main", self.dev, number=number, repeat=repeat)
        return [float(r) for r in timer(*args).results]

    def time_ms(self, args, number: int = 10, repeat: int = 5) -> float:
        """Median over :meth:`time_runs`, in milliseconds."""
        return 1e3 * float(np.median(self.time_runs(args, number, repeat)))

    def caller(self, x: np.ndarray) -> tuple[Callable[[], Any], np.ndarray]:
        """A zero-argument call of the model on ``x`` that waits for the device (for
        :func:`labnas.timing.round_robin`), and the output of one call."""
        xi, fn, dev = self.tensor(x), self.vm["main"], self.dev

        def call():
            out = fn(xi)
            dev.sync()
            return out

        return call, call().numpy()
