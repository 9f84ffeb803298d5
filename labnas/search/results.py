"""Result files of a study: study.json, trials.csv / trials.parquet, pareto.csv, best_spec.json.

Each file is written to a temporary name and renamed, so an interrupted write never leaves a
half-written result behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from ..results import StudySettings
from .record import CSV_COLUMNS, TrialRecord

__all__ = ["trials_frame", "pareto_front", "write_results"]

#: The record's columns of trials.csv (see labnas.search.record.TrialRecord for each one's meaning).
ATTR_COLUMNS = CSV_COLUMNS


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: state, metrics, and each layer's choices as columns."""
    from .side_by_side import side_by_side_latency

    side_by_side = side_by_side_latency(study)
    rows = []
    for t in study.get_trials(deepcopy=False):
        row = {"trial": t.number, "state": t.state.name}
        record = TrialRecord.from_attrs(t.user_attrs)
        for name in ATTR_COLUMNS:
            row[name] = getattr(record, name)
        remeasured = study.user_attrs.get("remeasured_ms", {}).get(str(t.number))
        if remeasured is not None:  # a LUT search's front, timed end to end afterwards
            row["latency_measured_ms"] = remeasured
        if t.number in side_by_side and row["latency_source"] == "measured":  # the front search's measured networks
            row["latency_single_ms"] = row["latency_ms"]
            row["latency_ms"], row["latency_p10_ms"], row["latency_p90_ms"] = side_by_side[t.number]
            row["latency_source"] = "measured side by side"
        spec = json.loads(t.user_attrs["spec"]) if "spec" in t.user_attrs else None
        if spec:
            for i, layer in enumerate(spec["layers"]):
                row[f"L{i:02d}_binarizer"] = layer["binarizer"]
                row[f"L{i:02d}_lab_kernel"] = layer["lab_kernel"] if layer["binarizer"] == "lab" else None
                row[f"L{i:02d}_kernel"] = layer["kernel"]
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=["trial", "state", *ATTR_COLUMNS])
    for col in ("feasible", "trained"):
        df[col] = df[col].astype("boolean")
    for col in df.columns:  # integers stay integers when some rows have none (3, not 3.0)
        if col.endswith(("_lab_kernel", "_kernel")) or col in ("n_lab", "bops", "flops", "params", "threads", "duplicate_of"):
            df[col] = pd.to_numeric(df[col], errors="coerce").round().astype("Int64")
    return df


def pareto_front(df: pd.DataFrame) -> pd.DataFrame:
    """Feasible completed trials not dominated in (accuracy up, latency down, OPs down); one per spec."""
    ok = df[(df.state == "COMPLETE") & (df.feasible == True) & df.duplicate_of.isna()]  # noqa: E712
    if ok.empty:
        return ok
    a, lat, ops = ok.accuracy.to_numpy(float), ok.latency_ms.to_numpy(float), ok.ops.to_numpy(float)
    keep = []
    for i in range(len(ok)):
        better_eq = (a >= a[i]) & (lat <= lat[i]) & (ops <= ops[i])
        strictly = (a > a[i]) | (lat < lat[i]) | (ops < ops[i])
        keep.append(not np.any(better_eq & strictly))
    return ok[np.array(keep)].sort_values("latency_ms")


#: Decimals kept in the CSVs (accuracy as a fraction, times in ms or s); the parquet file keeps every digit.
CSV_DECIMALS = {"accuracy": 5, "latency_ms": 4, "latency_p10_ms": 4, "latency_p90_ms": 4, "latency_measured_ms": 4,
                "latency_first_ms": 4, "latency_retimed_ms": 4, "latency_single_ms": 4,
                "reference_ms": 4, "compile_s": 2, "train_s": 2, "fidelity_epochs": 2}


def _readable(df: pd.DataFrame) -> pd.DataFrame:
    return df.round({k: v for k, v in CSV_DECIMALS.items() if k in df.columns})


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def front_quality(df, plan: dict) -> dict:
    """How the measured front compares with the predicted one (a front search, :func:`labnas.search.study.plan_front`):
    the measured front's size (:func:`labnas.search.front.pareto_mask` on the measured latencies, side by side when
    the search timed them so), how many of its neighbouring points are ties (their timings' noise ranges overlap, so
    their order is within noise), how many of its points are ordered beyond noise
    (:func:`labnas.search.front.pareto_mask_within_noise`), and its hypervolume (the prediction's reference point)."""
    from .front import front_ties, hypervolume, pareto_mask, pareto_mask_within_noise

    done = df[(df.state == "COMPLETE") & df.accuracy.notna()] if not df.empty and "accuracy" in df else df.iloc[0:0]
    if "duplicate_of" in done:
        done = done[done.duplicate_of.isna()]
    if done.empty:
        return {"measured_front": 0}
    acc, lat = done.accuracy.to_numpy(float), done.latency_ms.to_numpy(float)
    ref_acc, ref_lat = plan["reference_point"]
    low = done.latency_p10_ms.to_numpy(float) if "latency_p10_ms" in done else None
    high = done.latency_p90_ms.to_numpy(float) if "latency_p90_ms" in done else None
    on_front = pareto_mask(acc, lat)
    order = np.argsort(lat[on_front], kind="stable")
    front = done[on_front].iloc[order]
    ties = front_ties(lat[on_front], None if low is None else low[on_front], None if high is None else high[on_front])
    beyond = pareto_mask_within_noise(acc, lat, low, high)
    return {"measured": int(len(done)), "measured_front": int(len(front)), "front_ties_within_noise": ties,
            "measured_front_beyond_noise": int(beyond.sum()),
            "front_trials": [int(t) for t in front.trial], "measured_hypervolume": hypervolume(acc, lat, ref_acc, ref_lat)}


def best_key(accuracy: float, latency_ms: float, trial: int) -> tuple:
    """The order "best" means everywhere (the progress bar, ``best_spec.json``, the summary): the most accurate
    feasible trial; of equal accuracy the faster; of equal both the earlier. Smaller is better."""
    return (-accuracy, latency_ms, trial)


def write_results(study: optuna.Study, out_dir: Path) -> dict[str, Path]:
    """Write the result files for ``study`` into ``out_dir`` (its settings, :class:`labnas.results.StudySettings`, are
    the ones the study stored); returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    df = trials_frame(study)
    typed = StudySettings.from_dict(study.user_attrs["labnas"])
    budget_ms = typed.budget_ms
    settings = {"study": study.study_name, **typed.to_dict()}
    for key in ("accuracy_description", "reference_calibration"):  # what the accuracy column is; the latency scale
        if key in study.user_attrs:
            settings[key] = study.user_attrs[key]
    if "front_search" in study.user_attrs:
        settings["front_search"] = {**study.user_attrs["front_search"], **front_quality(df, study.user_attrs["front_search"])}
    _atomic_write(out_dir / "study.json", lambda p: p.write_text(json.dumps(settings, indent=2) + "\n"))
    paths = {"trials_csv": out_dir / "trials.csv", "trials_parquet": out_dir / "trials.parquet", "pareto": out_dir / "pareto.csv"}
    _atomic_write(paths["trials_csv"], lambda p: _readable(df).to_csv(p, index=False))  # parquet keeps full precision
    _atomic_write(paths["trials_parquet"], lambda p: df.to_parquet(p, index=False))
    front = pareto_front(df) if not df.empty else df
    _atomic_write(paths["pareto"], lambda p: _readable(front).to_csv(p, index=False))
    best = out_dir / "best_spec.json"
    if len(front):
        top = front.sort_values(["accuracy", "latency_ms", "trial"], ascending=[False, True, True]).iloc[0]  # best_key's order
        record = {
            "trial": int(top.trial),
            "accuracy": float(top.accuracy),
            "latency_ms": float(top.latency_ms),
            "budget_ms": budget_ms,
            "ops": float(top.ops),
            "spec": json.loads(top.spec),
        }
        _atomic_write(best, lambda p: p.write_text(json.dumps(record, indent=2) + "\n"))
        paths["best_spec"] = best
    elif best.exists():
        best.unlink()
    return paths
