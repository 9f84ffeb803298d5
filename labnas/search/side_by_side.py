"""The measured front timed again side by side, so that members about 1 % apart are ordered.

A front search times each candidate once, when its trial runs: paired with the reference workload and corrected
for the host's drift, but minutes apart from the other candidates. On a shared VM that timing's p10..p90 spans
+-5-10 % of the network, more than LAB's cost per layer (about 1 %), so the measured front within noise collapses
to its most accurate member and two runs agree only because everything is a tie. Here every network the run
timed (still compiled in memory) is timed once per round, in a rotated order, for :data:`FRONT_ROUNDS` rounds;
each timing is divided by its round's median (:func:`labnas.timing.relative_speeds`), which cancels the drift
between rounds, and the median ratio's bootstrap band says how well it is known. The ratios are put on the
study's millisecond scale (the drift-corrected scale of the trials' own timings) and stored in the study's user
attr ``side_by_side``; ``trials.csv`` then reports them as ``latency_ms`` / ``latency_p10_ms`` / ``latency_p90_ms``
(the trial's own timing stays in ``latency_single_ms``).

A re-run of the same study times side by side what it measured itself; members of earlier runs keep their values
from their run (each run on the study's scale).
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import optuna

__all__ = ["FRONT_ROUNDS", "ROUNDS_RESERVE_S", "SIDE_BY_SIDE_MAX", "retime_side_by_side", "side_by_side_latency"]

#: Rounds of the side-by-side timing: 15 rounds of ~20 networks take ~10-15 s on a 2-core VM.
FRONT_ROUNDS = 15
#: Seconds a front search's time allowance keeps for the side-by-side timing.
ROUNDS_RESERVE_S = 15.0
#: Each network's timing in one round: the median of ``repeat`` timings of ``number`` calls.
ROUND_NUMBER, ROUND_REPEAT = 2, 3
#: At most this many networks of a front search are kept compiled for it (each holds its weights and workspace in
#: memory); trials beyond keep their own timing. A front search's allowance measures ~20.
SIDE_BY_SIDE_MAX = 64


def retime_side_by_side(study: optuna.Study, compiled: dict[int, object], threads: int | None = None,
                        rounds: int = FRONT_ROUNDS, progress: bool = True) -> dict | None:
    """Time the compiled networks of ``compiled`` (trial number -> :class:`labnas.tvm.CompiledModel`, timed on
    this machine by those trials) side by side and store the result in the study (see the module doc); returns
    the stored run summary, or ``None`` when fewer than two of them finished with a measured latency. The host
    lock is held exclusively meanwhile (no worker trains or times)."""
    from ..timing import exclusive_timing, relative_speeds, round_robin, tvm_runner

    trials = {t.number: t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))}
    members = {n: c for n, c in sorted(compiled.items())
               if n in trials and trials[n].user_attrs.get("latency_source") == "measured"
               and trials[n].user_attrs.get("latency_ms") is not None}
    if len(members) < 2:
        return None
    started = time.perf_counter()
    if progress:
        print(f"timing the {len(members)} measured networks side by side ({rounds} rounds)", file=sys.stderr, flush=True)
    with exclusive_timing():
        calls = {}
        for n, net in members.items():
            x = np.random.default_rng(n).standard_normal(net.input_shape).astype(np.float32)
            calls[n] = tvm_runner(net, x, threads or os.cpu_count() or 1)[0]
        timed = round_robin(calls, rounds=rounds, repeat=ROUND_REPEAT, number=ROUND_NUMBER,
                            progress="side by side" if progress else "")
    relative = relative_speeds(timed)
    # the ratios on the study's scale: the scale that best maps them onto the trials' own drift-corrected timings
    scale = float(np.median([trials[n].user_attrs["latency_ms"] / relative[n][0] for n in members]))
    stored = dict(study.user_attrs.get("side_by_side") or {"ms": {}, "runs": []})
    stored["ms"] = {**stored.get("ms", {}), **{str(n): [round(scale * v, 4) for v in relative[n]] for n in members}}
    run = {"members": len(members), "rounds": rounds, "seconds": round(time.perf_counter() - started, 1),
           "scale_ms": round(scale, 4)}
    stored["runs"] = [*stored.get("runs", []), run]
    study.set_user_attr("side_by_side", stored)
    return run


def side_by_side_latency(study: optuna.Study) -> dict[int, tuple[float, float, float]]:
    """Trial number -> (ms, p10 ms, p90 ms) of the side-by-side timing of the study's measured front (empty when
    none was made)."""
    stored = study.user_attrs.get("side_by_side") or {}
    return {int(n): (float(v[0]), float(v[1]), float(v[2])) for n, v in stored.get("ms", {}).items()}
