"""Pareto curves and per-layer choice maps from a study's result files (matplotlib, headless).

The functions return the matplotlib Figure and draw only from the files ``labnas search`` wrote, so
what a plot shows can be checked against ``trials.csv`` and ``pareto.csv``.
"""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display

import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import matplotlib.transforms  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..results import ResultsError, StudyResults  # noqa: E402

__all__ = ["front_2d", "plot_pareto", "plot_choice_map", "X_AXES"]

#: --x name -> (trials.csv column, axis label, divisor of the column for the axis unit)
X_AXES = {
    "latency": ("latency_ms", "latency (ms, measured on the target)", 1.0),
    "ops": ("ops", "OPs = BOPs/64 + FLOPs (M)", 1e6),
    "bops": ("bops", "BOPs (G)", 1e9),
}

#: What the accuracy axis is, by estimator (the study's settings name it).
ACCURACY_AXIS = {
    "published": "predicted ImageNet top-1 (published results, not trained)",
    "trained": "proxy accuracy (short training on the proxy dataset)",
    "supernet": "proxy accuracy (weight-sharing supernet)",
}


def accuracy_axis_label(settings: dict) -> str:
    return ACCURACY_AXIS.get(settings.get("accuracy", "trained"), "accuracy")


def front_2d(points: pd.DataFrame, x: str) -> pd.DataFrame:
    """Points not dominated in (accuracy up, ``x`` down), sorted by ``x``: the plotted step line."""
    pts = points.sort_values([x, "accuracy"], ascending=[True, False])
    keep, best = [], -np.inf
    for idx, row in pts.iterrows():
        if row.accuracy > best:
            keep.append(idx)
            best = row.accuracy
    return pts.loc[keep]


def plot_pareto(results: list[StudyResults], x: str = "latency", ax=None):
    """Accuracy against ``x`` for one or more studies: feasible trials (dots), over-budget trials (crosses on
    the x axis: never trained, so no accuracy), the budget line, and the Pareto front of the plotted axes
    (step line, its members ringed), computed from every feasible trial."""
    if x not in X_AXES:
        raise ResultsError(f"{{opt:x}} must be one of {', '.join(X_AXES)}, got {x!r}")
    column, label, unit = X_AXES[x]
    estimators = {res.name: res.settings.get("accuracy", "trained") for res in results}
    if len(set(estimators.values())) > 1:  # e.g. a digits proxy (~0.94) beside predicted ImageNet top-1 (~0.57)
        raise ResultsError("these studies' accuracies are different quantities ("
                           + ", ".join(f"{name}: {est}" for name, est in estimators.items())
                           + "), so one accuracy axis would compare them; plot studies with the same estimator together")
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(9, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    rug = matplotlib.transforms.blended_transform_factory(ax.transData, ax.transAxes)
    for i, res in enumerate(results):
        if res.feasible.empty:
            raise ResultsError(f"study {res.name} ({res.path}) has no feasible trial to plot; raise {{opt:budget_ms}} or run more trials")
        color = colors[i % len(colors)]
        feas, infeas = res.feasible, res.infeasible
        ax.scatter(feas[column] / unit, feas.accuracy, color=color, s=28, label=f"{res.name}: within budget", gid=f"feasible-{i}")
        if not infeas.empty:
            ax.scatter(infeas[column] / unit, np.full(len(infeas), 0.03), transform=rug, color=color, marker="x", s=28,
                       alpha=0.7, label=f"{res.name}: over budget (not trained)", gid=f"infeasible-{i}", clip_on=False)
        front = front_2d(feas, column)
        ax.step(front[column] / unit, front.accuracy, where="post", color=color, lw=1.5, gid=f"front-{i}")
        ax.scatter(front[column] / unit, front.accuracy, facecolors="none", edgecolors=color, s=90, lw=1.2,
                   label=f"{res.name}: Pareto front on these axes", gid=f"pareto-{i}")
        if x == "latency" and res.budget_ms is not None:
            ax.axvline(res.budget_ms, color=color, ls="--", lw=1, label=f"{res.name}: budget {res.budget_ms:g} ms", gid=f"budget-{i}")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter(useOffset=False))
    simulated = {res.simulated_on for res in results} - {None}
    if x == "latency" and simulated:
        label = f"latency (ms, SIMULATED on {', '.join(sorted(simulated))}: no board, predicted from the compiled code)"
    ax.set_xlabel(label)
    ax.set_ylabel(accuracy_axis_label(results[0].settings))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    if len(results) == 1:
        r = results[0]
        ax.set_title(f"{r.name}: accuracy vs {x} on {r.settings.get('target', '?')} "
                     f"({r.settings.get('accuracy', 'trained')} accuracy)", fontsize=9)
    else:
        ax.set_title(f"accuracy vs {x}", fontsize=9)
    fig.tight_layout()
    return fig


def _layer_cells(spec_json: str) -> list[tuple[str, int, int]]:
    layers = json.loads(spec_json)["layers"]
    return [(l["binarizer"], l["lab_kernel"], l["kernel"]) for l in layers]


def plot_choice_map(res: StudyResults, ax=None):
    """Rows: Pareto architectures by latency; columns: binary layers. Cell colour: sign (grey) or LAB
    by its kernel; text: LAB kernel and binary-conv kernel (e.g. ``L5 c3``)."""
    front = res.pareto.sort_values("latency_ms")
    if front.empty:
        raise ResultsError(f"study {res.name} ({res.path}) has no Pareto architecture to map; no trial was feasible")
    cells = [_layer_cells(s) for s in front.spec]
    n_rows, n_cols = len(cells), len(cells[0])
    lab_colors = {1: "#fde0c5", 3: "#f9a65a", 5: "#e8590c", 7: "#a33b00"}
    grid = np.ones((n_rows, n_cols, 3))
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(max(7, 0.6 * n_cols + 4), 0.5 * n_rows + 1.8))
    for r, row in enumerate(cells):
        for c, (binarizer, lab_k, conv_k) in enumerate(row):
            rgb = matplotlib.colors.to_rgb(lab_colors.get(lab_k, "#e8590c") if binarizer == "lab" else "#d9d9d9")
            grid[r, c] = rgb
            text = f"L{lab_k}\nc{conv_k}" if binarizer == "lab" else f"s\nc{conv_k}"
            ax.text(c, r, text, ha="center", va="center", fontsize=7)
    ax.imshow(grid, aspect="auto", interpolation="nearest")
    for boundary in _stage_boundaries(json.loads(front.spec.iloc[0])["family"]):
        ax.axvline(boundary - 0.5, color="black", lw=1.2)
    ax.set_xticks(range(n_cols), [str(i) for i in range(n_cols)], fontsize=8)
    ax.set_yticks(range(n_rows), [f"#{t} {lat:.1f} ms {acc:.1%}" for t, lat, acc in zip(front.trial, front.latency_ms, front.accuracy)], fontsize=8)
    ax.set_xlabel("binary layer, input to output (black lines: stage boundaries)", fontsize=8)
    used = sorted({k for row in cells for b, k, _ in row if b == "lab"})
    handles = [matplotlib.patches.Patch(color="#d9d9d9", label="sign")]
    handles += [matplotlib.patches.Patch(color=lab_colors.get(k, "#e8590c"), label=f"LAB {k}x{k}") for k in used]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
              title="binarizer (cell text: s / Lk, then conv ck)", title_fontsize=7)
    ax.set_title(f"{res.name}: where LAB sits on the Pareto front", fontsize=9)
    fig.tight_layout()
    return fig


def _stage_boundaries(family: str) -> list[int]:
    """Slot indices where a family's binary layers change width (a new stage starts)."""
    from ..models.families import get_family

    slots = get_family(family).slots
    return [i for i in range(1, len(slots)) if slots[i].out_channels != slots[i - 1].out_channels]
