"""A study's result files read back: the one reader that the CLI's summary, the report, the plots and
``labnas train`` / ``labnas export`` (a spec taken from a study) share.

``labnas search`` writes the files (:mod:`labnas.search.results`, columns from
:class:`labnas.search.record.TrialRecord`): ``study.json`` (settings), ``trials.csv`` (one row per trial),
``pareto.csv`` (the feasible front), ``best_spec.json`` (the most accurate feasible trial).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from ._errors import LabnasError
from .accuracy.registry import DEFAULT_ESTIMATOR

__all__ = ["ResultsError", "StudyResults", "StudySettings", "SearchSummary", "load_results", "read_rows", "append_row"]

#: Columns without which a CSV is not a labnas trials table.
REQUIRED_COLUMNS = {"trial", "state", "accuracy", "latency_ms", "feasible", "duplicate_of"}


class ResultsError(LabnasError, ValueError):
    """A directory that holds no usable labnas results; the message says what is missing."""


@dataclass(frozen=True)
class StudySettings:
    """What a study is made with and must be resumed with: made once from the CLI's or the API's arguments
    (:meth:`labnas.search.study.study_settings`), stored in the study (user attribute ``labnas``) and in
    ``study.json``, and read back by the results, the report and the plots.

    Attributes:
        space: the search space's name; ``family`` its model family.
        budget_ms: the latency budget, in ms on the target (the study's timing scale).
        target: the target preset's name.
        objectives: ``"accuracy"`` (accuracy under the budget) or a multi-objective name of
            ``labnas.search.OBJECTIVES``.
        latency: how latency is obtained: ``measure``, ``simulate`` or ``lut``.
        accuracy: the accuracy estimator's name.
    """

    space: str
    family: str
    budget_ms: float
    target: str
    objectives: str = "accuracy"
    latency: str = "measure"
    accuracy: str = DEFAULT_ESTIMATOR

    def verdict(self, latency_ms: float) -> tuple[float, bool]:
        """``(constraint, feasible)`` of a candidate's latency: Optuna's constraint value (``latency - budget``,
        feasible when <= 0) and the ``feasible`` flag the trial records; one rule, computed in one place."""
        constraint = float(latency_ms) - self.budget_ms
        return constraint, constraint <= 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, stored: dict) -> "StudySettings":
        """The settings a study stored; keys added later take what studies without them did (``latency``:
        measure, ``accuracy``: the default estimator), keys this version does not know are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in stored.items() if k in known}
        missing = sorted({"space", "family", "budget_ms", "target"} - set(values))
        if missing:
            raise ResultsError(f"the study's settings lack {', '.join(missing)}: not a labnas study")
        values["budget_ms"] = float(values["budget_ms"])
        return cls(**values)

    def differences(self, other: "StudySettings") -> str:
        """``"budget_ms 20.0 -> 15.0, ..."``: the fields ``other`` changes (empty when none)."""
        return ", ".join(f"{f.name} {getattr(self, f.name)!r} -> {getattr(other, f.name)!r}" for f in dataclasses.fields(self)
                         if getattr(self, f.name) != getattr(other, f.name))


@dataclass(frozen=True)
class SearchSummary:
    """What a finished (or interrupted) search amounts to, in the words the CLI prints (``str(summary)`` or
    :meth:`lines` give the same text to a Python caller, warnings included).

    ``complete`` counts every complete trial (repeats of an earlier spec included), ``feasible`` those within
    the budget; latencies in ms; ``latency_median_ms`` the median over complete trials; ``reference_ms`` is the
    (min, max) of the reference workload in the trials' paired rounds, ``reference_median_ms`` their median and
    ``reference_calibrated_ms`` the calibration the study's latencies are scaled by. ``stopped`` counts failed
    trials stopped by Ctrl-C or a machine too busy to time on (``stopped_by``: they are run again, not counted).
    """

    trials: int
    complete: int
    feasible: int
    failed: int
    pruned: int
    failures: tuple[tuple[int, str], ...]
    latency_range_ms: tuple[float, float] | None
    latency_predicted: bool
    reference_ms: tuple[float, float] | None
    latency_median_ms: float | None = None
    reference_median_ms: float | None = None
    reference_calibrated_ms: float | None = None
    #: the CPU model when the latencies are simulated (no board), else None
    simulated_on: str | None = None
    budget_ms: float | None = None
    #: the accuracy estimator's name (published, trained, supernet) and how many accuracies are interpolated
    estimator: str | None = None
    interpolated: int = 0
    stopped: dict = field(default_factory=dict)
    #: accuracies whose candidate lies outside what the estimator's ranking was validated on, or not validated at all
    unvalidated: int = 0

    @property
    def reference_spread_pct(self) -> float | None:
        return None if self.reference_ms is None else 100 * (self.reference_ms[1] / self.reference_ms[0] - 1)

    def scale_error(self, faster: float = 0.85) -> float | None:
        """How many times too high this study's drift-corrected latencies read (> 1) when the reference ran clearly
        faster in its trials than its calibration (median below ``faster`` x calibrated): the calibration was taken
        while the machine was slower. ``None`` otherwise (or without paired timings)."""
        if not self.reference_median_ms or not self.reference_calibrated_ms:
            return None
        ratio = self.reference_median_ms / self.reference_calibrated_ms
        return None if ratio >= faster else 1 / ratio

    def calibration_note(self, faster: float = 0.85) -> str | None:
        """A one-line warning when :meth:`scale_error` finds the study's latencies read high. ``None`` otherwise."""
        high = self.scale_error(faster)
        if high is None:
            return None
        return (f"the reference workload ran at {self.reference_median_ms:.3f} ms in the trials, {1 / high:.2f}x its calibrated "
                f"{self.reference_calibrated_ms:.3f} ms: the calibration was taken while this machine was slower, so this "
                f"study's latencies read about {high:.2f}x high; a new study with --recalibrate times on the right "
                f"scale (the cached calibration has been lowered for the next one)")

    def budget_note(self, budget_ms: float, min_trials: int = 3) -> str | None:
        """A one-line warning when the budget split nothing: every complete candidate (at least ``min_trials``)
        ran within it, so the front is the accuracy ranking alone and the search traded no latency. It names the
        measured range and, as a budget that would split these candidates, their median, both on the corrected
        scale when the calibration read high (:meth:`scale_error`). ``None`` otherwise. (No candidate within the
        budget has its own message: the front is empty.)"""
        if self.complete < min_trials or self.latency_range_ms is None or self.latency_median_ms is None:
            return None
        low, high = self.latency_range_ms
        if high > budget_ms:
            return None
        scale = 1 / (self.scale_error() or 1.0)
        corrected = " (corrected for the slow calibration)" if scale != 1.0 else ""
        return (f"the budget did not bind: all {self.complete} complete candidates ran in {low * scale:.2f} .. {high * scale:.2f} ms"
                f"{corrected}, under {budget_ms:g} ms, so the front ranks accuracy alone; to trade accuracy for latency on this "
                f"target, try --budget-ms {self.latency_median_ms * scale:.3g} (their median)")

    def failure_lines(self, most: int = 5) -> list[str]:
        """Failed trials grouped by reason, each reason once with its trials (numbers in the reason ignored when
        grouping), at most ``most`` reasons and then how many more."""
        import re

        groups: dict[str, list[tuple[int, str]]] = {}
        for trial, error in self.failures:
            groups.setdefault(re.sub(r"[0-9.]+", "#", error), []).append((trial, error))
        lines = []
        for members in list(groups.values())[:most]:
            numbers = ", ".join(str(t) for t, _ in members[:8]) + (f" and {len(members) - 8} more" if len(members) > 8 else "")
            lines.append(f"  {'trial' if len(members) == 1 else 'trials'} {numbers} failed: {members[0][1]}")
        if len(groups) > most:
            lines.append(f"  ... {len(groups) - most} more reasons (the error column of trials.csv has each)")
        return lines

    @property
    def _budget_text(self) -> str:
        return f"{self.budget_ms:g} ms" if self.budget_ms is not None else "the budget"

    def next_step(self) -> str:
        """What to do when no candidate fit: the advice depends on why."""
        disturbed, interrupted = self.stopped.get("disturbed", 0), self.stopped.get("interrupted", 0)
        if self.complete == 0 and disturbed:
            return (f"no candidate was timed: {disturbed} trial(s) found the machine too busy to time on (they do not count): "
                    "wait until the other work ends, or pass --threads 1, then run the same command again")
        if self.complete == 0 and interrupted:
            return "no candidate was timed before the interrupt: run the same command again to resume"
        if self.complete == 0 and self.failed:
            return "no candidate finished: every trial failed (reasons above); fix what they name, then run again"
        return f"no candidate fit within {self._budget_text} yet: raise --budget-ms or run more --trials"

    def notes(self) -> list[str]:
        """Every warning the CLI prints in yellow: the calibration, the budget, trials stopped and to be run again."""
        out = [n for n in (self.calibration_note(), self.budget_note(self.budget_ms) if self.budget_ms is not None else None) if n]
        if self.stopped:
            what = ", ".join(f"{n} {why}" for why, n in self.stopped.items())
            out.append(f"{what} trial(s) have no answer of their own and do not count: running the same command again times "
                       "their candidates")
        if self.interpolated:
            out.append(f"{self.interpolated} accuracies are interpolated between published configurations, not published "
                       "themselves (accuracy_basis in trials.csv)")
        if self.unvalidated:
            out.append(f"{self.unvalidated} accuracies rank candidates outside what the estimator's ranking was checked on "
                       "(e.g. LAB or conv kernels other than 3x3) or with settings no check covered (accuracy_validated in "
                       "trials.csv): compare them with care")
        return out

    def lines(self) -> list[str]:
        """The summary as the CLI prints it, without colour (the front table apart)."""
        out = [f"{self.trials} trials: {self.complete} complete ({self.feasible} within {self._budget_text}, "
               f"{self.complete - self.feasible} over budget and not estimated), {self.failed} failed"
               + (f", {self.pruned} pruned early" if self.pruned else "")]
        out += self.failure_lines()
        if self.latency_range_ms:
            low, high = self.latency_range_ms
            how = ("predicted (latency table)" if self.latency_predicted else
                   f"simulated ({self.simulated_on}, no board)" if self.simulated_on else "measured")
            out.append(f"{how} latency range {low:.2f} .. {high:.2f} ms")
        out += [f"warning: {n}" for n in self.notes()]
        if self.feasible == 0:
            out.append(self.next_step())
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


@dataclass
class StudyResults:
    """One study's result files. ``trials`` and ``pareto`` are the CSVs as written; the properties select
    distinct specs (repeats of an earlier spec are left out) by state and budget."""

    path: Path
    name: str
    settings: dict
    trials: pd.DataFrame
    pareto: pd.DataFrame

    @property
    def study_settings(self) -> StudySettings | None:
        """The study's typed settings (:class:`StudySettings`), None for a results folder without them."""
        try:
            return StudySettings.from_dict(self.settings)
        except ResultsError:
            return None

    @property
    def budget_ms(self) -> float | None:
        """The study's budget (ms); read from a partial ``study.json`` too (a table written by another tool)."""
        if self.study_settings:
            return self.study_settings.budget_ms
        value = self.settings.get("budget_ms")
        return float(value) if value is not None else None

    @property
    def target_name(self) -> str | None:
        return self.study_settings.target if self.study_settings else self.settings.get("target")

    @property
    def complete(self) -> pd.DataFrame:
        return self.trials[(self.trials.state == "COMPLETE") & self.trials.duplicate_of.isna()]

    @property
    def feasible(self) -> pd.DataFrame:
        c = self.complete
        return c[c.feasible.astype(bool)]

    @property
    def infeasible(self) -> pd.DataFrame:
        c = self.complete
        return c[~c.feasible.astype(bool)]

    @property
    def best(self) -> dict | None:
        """``best_spec.json`` (trial, accuracy, latency_ms, spec, ...), or None when no trial was feasible."""
        path = self.path / "best_spec.json"
        return json.loads(path.read_text()) if path.is_file() else None

    @property
    def estimator(self) -> str | None:
        """The accuracy estimator's name (published, trained, supernet), from the settings or the trials."""
        name = self.settings.get("accuracy")  # absent from studies older than the record: then from the trials
        if name is None and "estimator" in self.trials:
            names = self.trials.estimator.dropna()
            name = str(names.iloc[0]) if len(names) else None
        return name

    @property
    def estimator_or_default(self) -> str:
        """:attr:`estimator`, or the default estimator for studies written before it was recorded."""
        return self.estimator or DEFAULT_ESTIMATOR

    @property
    def simulated_on(self) -> str | None:
        """The CPU model the study's latencies were simulated on (no board was connected), else None."""
        df = self.trials
        if "latency_source" not in df or "cpu_model" not in df:
            return None
        models = df[df.latency_source == "simulated"].cpu_model.dropna()
        return str(models.iloc[0]) if len(models) else None

    def summary(self) -> SearchSummary:
        df = self.trials
        done = df[df.state == "COMPLETE"]
        lat = done.latency_ms.dropna()
        ref = done.reference_ms.dropna() if "reference_ms" in done else pd.Series(dtype=float)
        calibrated = done.reference_calibrated_ms.dropna() if "reference_calibrated_ms" in done else pd.Series(dtype=float)
        return SearchSummary(
            trials=len(df),
            complete=len(done),
            feasible=int(done.feasible.fillna(False).astype(bool).sum()),
            failed=int((df.state == "FAIL").sum()),
            pruned=int((df.state == "PRUNED").sum()),
            failures=tuple((int(r.trial), str(r.error)) for r in df[df.state == "FAIL"].itertuples()) if "error" in df else (),
            latency_range_ms=(float(lat.min()), float(lat.max())) if len(lat) else None,
            latency_predicted=bool("latency_source" in done and (done.latency_source == "lut").any()),
            reference_ms=(float(ref.min()), float(ref.max())) if len(ref) > 1 else None,
            latency_median_ms=float(lat.median()) if len(lat) else None,
            reference_median_ms=float(ref.median()) if len(ref) else None,
            reference_calibrated_ms=float(calibrated.median()) if len(calibrated) else None,
            simulated_on=self.simulated_on,
            budget_ms=self.budget_ms,
            estimator=self.estimator,
            interpolated=int(done.accuracy_interpolated.fillna(False).astype(bool).sum()) if "accuracy_interpolated" in done else 0,
            stopped=(df[df.state == "FAIL"].stopped_by.dropna().value_counts().to_dict() if "stopped_by" in df else {}),
            unvalidated=(int(done.accuracy_validated.dropna().astype(str).str.startswith(("outside", "not validated")).sum())
                         if "accuracy_validated" in done else 0),
        )


def load_results(path: str | Path) -> StudyResults:
    """Read a results directory written by ``labnas search``; :class:`ResultsError` says what is missing."""
    path = Path(path)
    if not path.is_dir():
        raise ResultsError(f"{path} is not a directory; give a results directory such as results/examples/bireal18_placement-host-20ms")
    if not (path / "trials.csv").is_file():
        raise ResultsError(f"{path} holds no labnas results (no trials.csv); run 'labnas search' first")
    try:
        trials = pd.read_csv(path / "trials.csv")
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as err:
        raise ResultsError(f"{path / 'trials.csv'} is not a labnas trials table: {err}") from None
    if not REQUIRED_COLUMNS <= set(trials.columns):
        raise ResultsError(f"{path / 'trials.csv'} is not a labnas trials table (missing {sorted(REQUIRED_COLUMNS - set(trials.columns))})")
    pareto_csv = path / "pareto.csv"
    pareto = pd.read_csv(pareto_csv) if pareto_csv.is_file() and pareto_csv.stat().st_size > 1 else trials.iloc[0:0]
    settings = json.loads((path / "study.json").read_text()) if (path / "study.json").is_file() else {}
    return StudyResults(path, settings.get("study", path.name), settings, trials, pareto)


def read_rows(path: Path) -> list[dict]:
    """The rows of a results CSV a long study appends to (:func:`append_row`), as dicts; ``[]`` before the first."""
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def append_row(path: Path, columns: list[str], row: dict) -> None:
    """Append one finished row to ``path`` (with the ``columns`` header on a new file), flushed to disk at once, so a
    study stopped at any point keeps every row it finished and a re-run can skip them."""
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, columns)
        if new:
            writer.writeheader()
        writer.writerow(row)
        fh.flush()
        os.fsync(fh.fileno())
