"""Running compiled models and timing them: on this machine or on a board over RPC, the reference workload
timed beside candidates, side-by-side comparisons, the popcount ceiling, and the machine-wide timing lock.

:mod:`labnas.tvm` compiles; this package only runs what it compiled, through one :class:`VmRunner`.
"""

from .compare import paired_ratio, round_robin
from .host_lock import exclusive_timing, shared_training
from .measure import LatencyResult, kernel_profile, measure, verify
from .paired import TimingDisturbed
from .reference import (CONV_PAIR, CalibratedReference, ReferenceTimer, ReferenceWorkload, baseline_workload,
                        reference_for, workload_named)
from .remote import START_BOARD_HINT, RemoteError, RemoteSpec, connect
from .runner import VmRunner, local_device_info, set_threads

__all__ = [
    "CalibratedReference",
    "LatencyResult",
    "ReferenceTimer",
    "RemoteError",
    "RemoteSpec",
    "START_BOARD_HINT",
    "TimingDisturbed",
    "VmRunner",
    "connect",
    "exclusive_timing",
    "kernel_profile",
    "local_device_info",
    "measure",
    "paired_ratio",
    "reference_for",
    "ReferenceWorkload",
    "CONV_PAIR",
    "baseline_workload",
    "workload_named",
    "round_robin",
    "set_threads",
    "shared_training",
    "verify",
]
