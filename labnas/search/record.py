"""The trial record: every value a search trial stores, typed, with its meaning (the columns of ``trials.csv``).

The objective writes a trial's values only through :func:`store`, which refuses a name the record does not
have; ``labnas.search.results`` builds ``trials.csv`` from :class:`TrialRecord`. The values live in Optuna's
user attrs, so ``optuna.load_study`` and optuna-dashboard see the same record.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import optuna

__all__ = ["TrialRecord", "store", "CSV_COLUMNS", "column_meanings"]


def _col(meaning: str, csv: bool = True):
    return field(default=None, metadata={"meaning": meaning, "csv": csv})


@dataclass
class TrialRecord:
    """One trial of a search (``None``: not reached, e.g. no accuracy for an over-budget candidate)."""

    accuracy: float | None = _col("the accuracy estimate, a fraction in [0, 1]; empty when over budget (not estimated) or failed")
    estimator: str | None = _col("the accuracy estimator: published, trained or supernet")
    accuracy_basis: str | None = _col("what the accuracy rests on: a published configuration, interpolated between published ones "
                                      "(a stage partly LAB; a family with only all-sign and all-LAB published), or a training")
    accuracy_validated: str | None = _col("what the estimator's ranking was validated against (Kendall tau on a reference table, "
                                          "labnas.accuracy.validation), 'outside its validation' when the candidate's kernel "
                                          "choices are beyond what that check covered, or 'not validated'")
    accuracy_interpolated: bool | None = _col("the accuracy is interpolated outside the published configurations (published estimator)")
    fidelity_epochs: float | None = _col("epochs of training behind the accuracy (0: none)")
    accuracy_per_seed: list | None = _col("per-seed accuracies when several seeds are averaged")
    latency_ms: float | None = _col("latency on the target in ms: drift-corrected (paired ratio x the reference's calibrated time) when timed "
                                    "on this machine, the plain median on a board, or the table's prediction")
    latency_raw_ms: float | None = _col("the candidate's own median in the paired rounds, ms (not drift-corrected)")
    latency_ratio: float | None = _col("median over the paired rounds of candidate / reference time")
    latency_source: str | None = _col("measured (compiled and timed), measured side by side (then timed again with the run's other "
                                      "networks in rotated rounds), simulated (compiled and simulated on cpu_model without the "
                                      "board, labnas.simulation) or lut (predicted from a block table)")
    cpu_model: str | None = _col("the CPU model a simulated latency is for (labnas list shows the models)")
    latency_measured_ms: float | None = _col("a LUT search's end-to-end re-timing of the Pareto set, ms")
    latency_predicted_ms: float | None = _col("the front strategy's prediction from the block table, ms, before the candidate was timed")
    latency_p10_ms: float | None = _col("10th percentile of the timing series (paired: of the per-round corrected values; timed side "
                                        "by side: of the median over the rounds, bootstrapped), ms")
    latency_p90_ms: float | None = _col("90th percentile of the timing series (as latency_p10_ms), ms")
    latency_single_ms: float | None = _col("a front search's own timing of the candidate, ms, when the measured networks were then "
                                           "timed side by side (latency_source 'measured side by side', labnas.search.side_by_side)")
    latency_first_ms: float | None = _col("near the budget: the first timing's median, ms, before the re-timing")
    latency_retimed_ms: float | None = _col("near the budget: the lowest of the re-timings (taken after pauses), ms; latency_ms is "
                                            "the lower of this and latency_first_ms")
    latency_timings: int | None = _col("near the budget: how many timings the verdict rests on", csv=False)
    ops: float | None = _col("OPs = BOPs/64 + FLOPs at the deployment shape")
    bops: int | None = _col("binary MACs at the deployment shape")
    flops: int | None = _col("float MACs at the deployment shape (stem, shortcuts, LAB, classifier)")
    params: int | None = _col("parameters of the deployment network")
    n_lab: int | None = _col("binary layers with LAB")
    feasible: bool | None = _col("latency within the budget")
    trained: bool | None = _col("whether a training produced the accuracy")
    compile_s: float | None = _col("seconds to compile the deployment network")
    train_s: float | None = _col("seconds spent on the accuracy estimate")
    threads: int | None = _col("TVM threads used for timing")
    timing_attempts: int | None = _col("timing series taken (more than one when a series was disturbed)", csv=False)
    reference_ms: float | None = _col("the fixed reference workload's median in the trial's paired rounds, ms (the host's speed)")
    reference_calibrated_ms: float | None = _col("the reference's calibrated quiet time the correction scales by, ms")
    core_round_trip_ns: float | None = _col("round trip of a cache line between two CPUs just before the timing, ns: on a VM, which "
                                            "placement of the vCPUs latency_ms was taken in (docs/timing.md)")
    cpus_apart: bool | None = _col("the CPUs were placed further apart than this machine's best placement (core_round_trip_ns "
                                   "over 3.2x the lowest seen): a slower machine for two threads, timed and corrected as usual")
    host_slowdown: float | None = _col("timed in a slow spell of the host (nothing else running, the reference this many times "
                                       "its calibration): slower alike for candidate and reference, corrected as usual")
    duplicate_of: int | None = _col("an earlier trial with the same spec whose values were reused")
    stopped_by: str | None = _col("why a trial has no answer of its own: interrupted (Ctrl-C) or disturbed (the machine too busy to "
                                  "time on); such a trial does not count toward --trials and a re-run times its candidate again")
    error: str | None = _col("why the trial failed, one line")
    failure: str | None = _col("diverged or chance when a training failed")
    spec: str | None = _col("the deployment ArchSpec as JSON")
    spec_key: str | None = _col("canonical string of the choices (finds repeated specs)", csv=False)

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> "TrialRecord":
        """The record of a stored trial (attrs it does not know, e.g. from another labnas version, are ignored)."""
        return cls(**{k: v for k, v in attrs.items() if k in _FIELDS})


_FIELDS = {f.name for f in dataclasses.fields(TrialRecord)}

#: The record's columns in ``trials.csv``, in order (before the per-layer choice columns).
CSV_COLUMNS = tuple(f.name for f in dataclasses.fields(TrialRecord) if f.metadata["csv"])


def column_meanings() -> dict[str, str]:
    """Column name -> meaning, for the data dictionary."""
    return {f.name: f.metadata["meaning"] for f in dataclasses.fields(TrialRecord) if f.metadata["csv"]}


def store(trial: optuna.Trial, **values: Any) -> None:
    """Write record fields onto ``trial``; a name that is not a :class:`TrialRecord` field is an error."""
    unknown = set(values) - _FIELDS
    if unknown:
        raise KeyError(f"not trial-record fields: {sorted(unknown)}")
    for name, value in values.items():
        trial.set_user_attr(name, value)
