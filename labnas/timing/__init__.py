"""Running compiled models and timing them: on this machine or on a board over RPC, the reference workload
timed beside candidates, side-by-side comparisons, the popcount ceiling, and the machine-wide timing lock.

:mod:`labnas.tvm` compiles; this package only runs what it compiled, through one :class:`VmRunner`.
"""

from .compare import paired_ratio, relative_speeds, round_robin
from .host_lock import exclusive_timing, shared_training
from .measure import LatencyResult, kernel_profile, measure, verify
from .paired import TimingDisturbed
from .reference import (CONV_PAIR, CalibratedReference, ReferenceTimer, ReferenceWorkload, baseline_workload,
                        reference_for, workload_named)
from .remote import START_BOARD_HINT, RemoteError, RemoteSpec, connect
from .runner import VmRunner, local_device_info, set_threads

# used by the benchmarks (measurement tools reach these through the package entry point)
from .core_latency import PROBE_ROUNDS, core_round_trip_ns, placement_labels
from .compare import machine_facts, onnxruntime_runner, torch_runner, tvm_runner
from .popcount_limit import PopcountCeiling, xnor_words
from .calibration import calibrate
from .measure import measure_in_passes

__all__ = [
    "PROBE_ROUNDS",
    "core_round_trip_ns",
    "placement_labels",
    "machine_facts",
    "onnxruntime_runner",
    "torch_runner",
    "tvm_runner",
    "PopcountCeiling",
    "xnor_words",
    "calibrate",
    "measure_in_passes",
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
    "relative_speeds",
    "set_threads",
    "shared_training",
    "verify",
]
