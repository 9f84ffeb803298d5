"""Boards reached over TVM RPC: where a board is, how to open a session, what it says about itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from .._errors import LabnasError

__all__ = ["RemoteSpec", "RemoteError", "START_BOARD_HINT", "connect", "remote_device_info"]

#: How to bring a board online; every "no board" message ends with it.
START_BOARD_HINT = "on the board run 'pip install apache-tvm' and 'python -m tvm.exec.rpc_server --host 0.0.0.0 --port 9090'"


class RemoteError(LabnasError, RuntimeError):
    """The board cannot be reached or dropped the session; the message says how to start one."""


@dataclass(frozen=True)
class RemoteSpec:
    """Where the board is: ``rpc=(host, port)`` or ``tracker=(host, port)`` with ``key``."""

    rpc: tuple[str, int] | None = None
    tracker: tuple[str, int] | None = None
    key: str | None = None
    timeout_s: int = 60

    def describe(self) -> str:
        if self.rpc:
            return f"rpc {self.rpc[0]}:{self.rpc[1]}"
        return f"tracker {self.tracker[0]}:{self.tracker[1]} key {self.key}"


def connect(remote: RemoteSpec):
    """Open an RPC session; an unreachable board raises :class:`RemoteError` in at most the timeout."""
    from tvm import rpc

    try:
        if remote.rpc:
            return rpc.connect(remote.rpc[0], remote.rpc[1], session_timeout=remote.timeout_s)
        tracker = rpc.connect_tracker(remote.tracker[0], remote.tracker[1])
        return tracker.request(remote.key, session_timeout=remote.timeout_s, max_retry=2)
    except Exception as err:  # noqa: BLE001 - tvm raises TVMError / RuntimeError / OSError
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RemoteError(f"cannot reach the board at {remote.describe()} ({first[:120]}); {START_BOARD_HINT}") from None


def remote_device_info(session, target) -> dict[str, Any]:
    """What the board tells over RPC (its TVM thread count), plus what the target implies."""
    info: dict[str, Any] = {"remote": True, "machine": target.arch, "os_bits": 64 if target.arch in ("aarch64", "x86_64") else 32}
    if target.config and target.config.get("mcpu"):
        info["cpu"] = target.config["mcpu"]
    try:
        info["device_exists"] = bool(session.cpu().exist)
        info["threads"] = int(session.get_function("runtime.NumThreads")())
    except Exception:  # noqa: BLE001 - an older RPC server may lack the function
        pass
    return info
