"""Where a network to train, export or profile comes from: one loader for every form a spec takes.

- an architecture spec JSON file (``ArchSpec.save``);
- a search's ``best_spec.json`` (the spec wrapped with its trial, accuracy and latency);
- a study results folder (``trials.csv``) with an optional trial number; without one, the best
  feasible trial (the one ``best_spec.json`` names);
- a checkpoint written by ``labnas train`` (``*.pt``), whose spec and weights travel together.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .._errors import LabnasError
from ..models import ArchSpec, SpecError

__all__ = ["SpecSource", "SpecSourceError", "load_spec_source"]


class SpecSourceError(LabnasError, ValueError):
    """A spec source that cannot be used; the message names the file or trial and the fix."""


@dataclass
class SpecSource:
    """A loaded spec and where it came from.

    Attributes:
        spec: the architecture.
        origin: the path given.
        trial: the study trial it is, when known.
        checkpoint: the checkpoint dict (``labnas train``'s format) when the source was a checkpoint.
        meta: what the source said about it (accuracy, latency_ms, budget_ms, ...).
    """

    spec: ArchSpec
    origin: str
    trial: int | None = None
    checkpoint: dict | None = None
    meta: dict = field(default_factory=dict)


def _spec_from(data, where: str) -> ArchSpec:
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as err:
            raise SpecSourceError(f"{where}: the spec is not valid JSON ({err})") from None
    try:
        return ArchSpec.from_dict(data)
    except SpecError as err:
        raise SpecSourceError(f"{where}: {err}") from None


def _from_study(folder: Path, trial: int | None) -> SpecSource:
    from ..results import ResultsError, load_results

    csv = folder / "trials.csv"
    if not csv.exists():
        raise SpecSourceError(f"{folder} is not a study results folder (no trials.csv); give a spec .json, a study folder or a checkpoint")
    try:
        results = load_results(folder)
    except ResultsError as err:
        raise SpecSourceError(str(err)) from None
    df = results.trials
    if trial is None:
        best = results.best
        if best is None:
            raise SpecSourceError(f"study {folder} has no feasible trial (no best_spec.json); pick one with {{opt:trial}} N")
        trial = int(best["trial"])
    rows = df[df.trial == trial]
    if rows.empty:
        raise SpecSourceError(f"study {folder} has no trial {trial}; its trials are {int(df.trial.min())}..{int(df.trial.max())}")
    row = rows.iloc[0]
    if row.state != "COMPLETE":
        raise SpecSourceError(f"trial {trial} of {folder} is {row.state}{': ' + str(row.error) if isinstance(row.error, str) else ''}; pick a complete, feasible trial")
    if not bool(row.feasible):
        raise SpecSourceError(f"trial {trial} of {folder} is over its latency budget ({row.latency_ms:.2f} ms); pick a feasible trial")
    meta = {k: (None if v != v else v) for k, v in row[["accuracy", "latency_ms", "ops", "n_lab"]].items()}
    return SpecSource(_spec_from(row.spec, f"{csv} trial {trial}"), str(folder), trial, None, meta)


def load_spec_source(path: str | Path, trial: int | None = None) -> SpecSource:
    """Load a spec from a spec JSON, a ``best_spec.json``, a study folder (+ ``trial``) or a checkpoint.

    Raises :class:`SpecSourceError` with a one-line message for a missing file, a trial that does not
    exist or is failed / over budget, or ``trial`` given with a single-spec file.
    """
    path = Path(path)
    if path.is_dir():
        return _from_study(path, trial)
    if not path.exists():
        raise SpecSourceError(f"{path} does not exist; give a spec .json, a study results folder or a checkpoint .pt")
    if trial is not None:
        raise SpecSourceError(f"{{opt:trial}} {trial} needs a study results folder, {path} is a single spec")
    if path.suffix == ".pt":
        import torch

        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
            raise SpecSourceError(f"{path} is not a labnas checkpoint ({type(err).__name__})") from None
        if not isinstance(ckpt, dict) or "spec" not in ckpt or "model" not in ckpt:
            raise SpecSourceError(f"{path} is not a labnas checkpoint (no spec and weights); write one with 'labnas train'")
        if "optimizer" in ckpt:  # last.pt: weights mid-training, BatchNorm not re-estimated, no input scaling
            raise SpecSourceError(f"{path} is a training run's per-epoch checkpoint, not its result: use the model.pt that "
                                  "'labnas train' writes when the run finishes (finish it with --resume)")
        if "input" not in ckpt or "pixel_mean" not in ckpt:
            raise SpecSourceError(f"{path} does not record the input shape and pixel scaling it was trained with; "
                                  "train it again with 'labnas train' (its model.pt carries both)")
        return SpecSource(_spec_from(ckpt["spec"], str(path)), str(path), ckpt.get("trial"), ckpt, dict(ckpt.get("metrics", {})))
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SpecSourceError(f"cannot read {path} as JSON: {err}") from None
    if isinstance(data, dict) and "spec" in data and "family" not in data:  # best_spec.json
        meta = {k: v for k, v in data.items() if k != "spec"}
        return SpecSource(_spec_from(data["spec"], str(path)), str(path), data.get("trial"), None, meta)
    return SpecSource(_spec_from(data, str(path)), str(path))
