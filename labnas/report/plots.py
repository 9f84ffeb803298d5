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

__all__ = ["front_2d", "plot_pareto", "plot_choice_map", "study_labels", "X_AXES"]

#: --x name -> (trials.csv column, axis label, divisor of the column for the axis unit)
X_AXES = {
    "latency": ("latency_ms", "latency (ms, measured on the target)", 1.0),
    "ops": ("ops", "OPs = BOPs/64 + FLOPs (M)", 1e6),
    "bops": ("bops", "BOPs (G)", 1e9),
}

def accuracy_axis_label(res: StudyResults) -> str:
    """The accuracy axis of a study's plots: what its estimator's accuracy is (:mod:`labnas.accuracy.registry`), in %."""
    from ..accuracy import ESTIMATORS

    entry = ESTIMATORS.get(res.estimator_or_default)
    return (entry.axis if entry else "accuracy") + ", %"


def front_2d(points: pd.DataFrame, x: str) -> pd.DataFrame:
    """Points not dominated in (accuracy up, ``x`` down), sorted by ``x``: the plotted step line."""
    pts = points.sort_values([x, "accuracy"], ascending=[True, False])
    keep, best = [], -np.inf
    for idx, row in pts.iterrows():
        if row.accuracy > best:
            keep.append(idx)
            best = row.accuracy
    return pts.loc[keep]


#: Settings that tell overlaid studies apart in a legend, in the order they are named.
DISTINGUISHING = ("space", "target", "budget_ms", "latency", "objectives", "timing_threads")


def study_labels(results: list[StudyResults]) -> list[str]:
    """A legend label per study naming only what differs between the studies (``target arm, budget_ms 25``);
    the study name where no setting differs; the target alone for a single study."""
    if len(results) == 1:
        return [str(results[0].target_name or results[0].name)]
    differing = [k for k in DISTINGUISHING if len({json.dumps(r.settings.get(k)) for r in results}) > 1]
    if not differing:
        return [r.name for r in results]
    unit = {"budget_ms": " ms"}
    return [", ".join(f"{k.removesuffix('_ms')} {r.settings.get(k)}{unit.get(k, '')}" for k in differing) for r in results]


def _counts(res: StudyResults) -> str:
    trials = res.trials
    failed = int((trials.state == "FAIL").sum())
    return (f"{len(res.feasible)} within budget, {len(res.infeasible)} over budget, {failed} failed"
            f" of {len(trials)} trials")


def plot_pareto(results: list[StudyResults], x: str = "latency", ax=None):
    """Accuracy (%) against ``x`` for one or more studies: feasible trials (dots; with latency, the timing's
    p10..p90 as error bars), over-budget trials (crosses along the bottom of the frame: never estimated, so no
    accuracy), the budget (a line, or an arrow at the edge when it lies outside the data), and the Pareto front of
    the plotted axes (step line, its members ringed), computed from every feasible trial. The x axis spans the
    data, not zero to the budget. The legend names what differs between the studies; the title or caption
    counts the trials, failed ones included."""
    if x not in X_AXES:
        raise ResultsError(f"{{opt:x}} must be one of {', '.join(X_AXES)}, got {x!r}")
    column, label, unit = X_AXES[x]
    estimators = {res.name: res.estimator_or_default for res in results}
    if len(set(estimators.values())) > 1:  # e.g. a digits proxy (~0.94) beside predicted ImageNet top-1 (~0.57)
        raise ResultsError("these studies' accuracies are different quantities ("
                           + ", ".join(f"{name}: {est}" for name, est in estimators.items())
                           + "), so one accuracy axis would compare them; plot studies with the same estimator together")
    for res in results:
        if res.feasible.empty:
            raise ResultsError(f"study {res.name} ({res.path}) has no feasible trial to plot; raise {{opt:budget_ms}} or run more trials")
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(9, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    rug = matplotlib.transforms.blended_transform_factory(ax.transData, ax.transAxes)
    names = study_labels(results)
    several = len(results) > 1
    xs_all = []
    for i, (res, name) in enumerate(zip(results, names)):
        color = colors[i % len(colors)]
        feas, infeas = res.feasible, res.infeasible
        fx, fy = feas[column] / unit, 100 * feas.accuracy
        xs_all += [fx, infeas[column] / unit]
        if x == "latency" and {"latency_p10_ms", "latency_p90_ms"} <= set(feas.columns) and feas.latency_p10_ms.notna().any():
            low = (feas.latency_ms - feas.latency_p10_ms.fillna(feas.latency_ms)).clip(lower=0)
            high = (feas.latency_p90_ms.fillna(feas.latency_ms) - feas.latency_ms).clip(lower=0)
            ax.errorbar(fx, fy, xerr=[low, high], fmt="none", ecolor=color, alpha=0.5, lw=0.8, gid=f"spread-{i}")
        ax.scatter(fx, fy, color=color, s=28, label=f"{name}: within budget" if several else "within budget",
                   gid=f"feasible-{i}")
        if not infeas.empty:  # inside the frame, along its bottom edge
            ax.scatter(infeas[column] / unit, np.full(len(infeas), 0.03), transform=rug, color=color, marker="x", s=28,
                       alpha=0.7, label=f"{name}: over budget (not estimated)" if several else "over budget (not estimated)",
                       gid=f"infeasible-{i}")
        front = front_2d(feas, column)
        ax.step(front[column] / unit, 100 * front.accuracy, where="post", color=color, lw=1.5, gid=f"front-{i}")
        ax.scatter(front[column] / unit, 100 * front.accuracy, facecolors="none", edgecolors=color, s=90, lw=1.2,
                   label=f"{name}: Pareto front" if several else "Pareto front on these axes", gid=f"pareto-{i}")
    xs = pd.concat(xs_all).dropna()
    low, high = float(xs.min()), float(xs.max())
    pad = 0.06 * (high - low) if high > low else 0.05 * max(abs(high), 1e-9)
    ax.set_xlim(low - pad, high + pad)  # the data, not zero to the budget
    if x == "latency":
        for i, (res, name) in enumerate(zip(results, names)):
            if res.budget_ms is None:
                continue
            color, text = colors[i % len(colors)], f"{name}: budget {res.budget_ms:g} ms" if several else f"budget {res.budget_ms:g} ms"
            if low - pad <= res.budget_ms <= high + pad:
                ax.axvline(res.budget_ms, color=color, ls="--", lw=1, label=text, gid=f"budget-{i}")
            else:  # outside the data: an arrow at the edge it lies beyond, inside the frame
                right = res.budget_ms > high
                ax.annotate(f"{text} {'→' if right else '←'}", xy=(0.99 if right else 0.01, 0.95 - 0.06 * i),
                            xycoords="axes fraction", ha="right" if right else "left", va="top", fontsize=8, color=color,
                            gid=f"budget-{i}")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter(useOffset=False))
    simulated = {res.simulated_on for res in results} - {None}
    if x == "latency" and simulated:
        label = f"latency (ms, SIMULATED on {', '.join(sorted(simulated))}: no board, predicted from the compiled code)"
    ax.set_xlabel(label)
    ax.set_ylabel(accuracy_axis_label(results[0]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    if not several:
        r = results[0]
        ax.set_title(f"{r.name}: accuracy vs {x} on {r.target_name or '?'} "
                     f"({r.estimator_or_default} accuracy); {_counts(r)}", fontsize=9)
    else:
        ax.set_title(f"accuracy vs {x}", fontsize=9)
        fig.text(0.01, 0.01, "; ".join(f"{name}: {_counts(r)}" for r, name in zip(results, names)), fontsize=7, va="bottom")
    fig.tight_layout(rect=(0, 0.04 if several else 0, 1, 1))
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
