"""``labnas report``: a Markdown report next to a study's results, with its figures."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..results import ResultsError, StudyResults, load_results
from .plots import plot_choice_map, plot_pareto

__all__ = ["write_report"]


def _table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def _ops_breakdown(spec: dict, input_shape: tuple[int, int, int]) -> tuple[str, float]:
    from ..models import ArchSpec, create_model
    from ..ops import count_ops

    counted = count_ops(create_model(ArchSpec.from_dict(spec)), input_shape)
    layers = counted.layers.copy()
    layers["share of OPs"] = [
        f"{100 * (m / 64 if b else m) / counted.ops:.1f} %" for m, b in zip(layers.macs, layers.binary)
    ]
    layers = layers[["layer", "type", "binary", "macs", "share of OPs"]]
    return _table(layers), counted.ops


def _latency_breakdown(spec: dict, input_shape: tuple[int, int, int], target, searched_ms: float,
                       calibration: dict | None = None, threads: int | None = None) -> str:
    """Re-time the best architecture on ``target`` (this machine), paired with the reference workload in the
    study's calibration (``calibration``, as the search stored it) when it applies here, and say how, next to the
    search's figure."""
    from ..models import ArchSpec, create_model
    from ..timing import TimingDisturbed, measure, reference_for, workload_named
    from ..tvm import compile_model

    arch = ArchSpec.from_dict(spec)
    compiled = compile_model(create_model(arch).eval(), (1, *input_shape), target, threads=threads)
    # the study's own reference workload (the space's all-sign network, or the conv pair of older studies)
    workload = workload_named((calibration or {}).get("workload"), arch, tuple(input_shape))
    reference = reference_for(target, threads, stored=calibration, workload=workload)
    try:
        result = measure(compiled, number=3, repeat=5, threads=threads, profile_kernels=True, reference=reference)
    except TimingDisturbed as err:
        return (f"Not re-timed for target {target.name} on this machine: {err}. The search's figure ({searched_ms:.2f} ms) "
                "stays the one in the tables above.")
    rows = pd.DataFrame(
        [(name, f"{ms:.3f}", calls, "yes" if binary else "") for name, ms, calls, binary in result.kernels[:25]],
        columns=["kernel", "ms", "calls", "binary"],
    )
    ratio = result.median_ms / searched_ms if searched_ms == searched_ms and searched_ms > 0 else float("nan")
    if result.paired:
        scale = "the search's own" if reference.how == "stored" else f"this machine's ({reference.how}; the search's is for another CPU or thread count)"
        how = (f"paired with the reference workload ({reference.timer.workload.name}) in {len(result.runs_ms)} shared rounds of 3 runs: drift-corrected "
               f"{result.median_ms:.2f} ms = ratio {result.paired_ratio:.3f} x the reference's calibrated {result.reference_calibrated_ms:.3f} ms "
               f"({scale} calibration); raw median {result.raw_median_ms:.2f} ms with the reference at {result.reference_ms:.3f} ms "
               f"in the same rounds (p10 {result.p10_ms:.2f}, p90 {result.p90_ms:.2f} corrected)")
    else:
        how = f"median of 5 timings of 3 runs each = {result.median_ms:.2f} ms (p10 {result.p10_ms:.2f}, p90 {result.p90_ms:.2f})"
    return (f"Re-timed now for target {target.name} on this machine ({result.device.get('cpu', '?')}, {_threads(result.threads)}), "
            f"{how}; the search measured {searched_ms:.2f} ms, so this re-timing is {ratio:.2f}x the search's figure. The search's "
            "figure stays the one in the tables above; a ratio far from 1 means the machine's speed moved more than the "
            "correction follows, or another machine ran the search.\n\nKernels of one instrumented run:\n\n" + _table(rows))


def _threads(n) -> str:
    return f"{n} TVM thread" + ("" if n == 1 else "s")


def _settings_table(settings: dict) -> str:
    """The study's settings as a two-column markdown table; nested records (the front search's figures, the reference
    calibration) as ``outer.inner`` rows, numbers to 4 significant digits."""
    def rows(prefix: str, value) -> list[tuple[str, str]]:
        if isinstance(value, dict):
            return [row for k, v in value.items() for row in rows(f"{prefix}.{k}" if prefix else str(k), v)]
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, (list, tuple)):
            value = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value)
        return [(prefix, str(value).replace("|", "/"))]

    return "| setting | value |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows("", settings))


def _study_target(res: StudyResults):
    """The study's target preset, or None when its name is not a preset (a custom JSON target)."""
    from ..tvm import TARGETS

    return TARGETS.get(str(res.target_name or "host"))


#: Figure formats a report can be written with (a paper wants pdf or svg).
FIGURE_FORMATS = ("png", "svg", "pdf")


def write_report(path: str | Path, measure_latency: bool = True, progress=None, threads: int | None = None,
                 fmt: str = "png") -> Path:
    """Write ``report.md`` and its figures (``fmt``: png, svg or pdf) into the results directory ``path``; return
    the report path.

    ``progress(text)`` is told each step (figures, OPs, the re-timing of the best architecture). The re-timing
    uses ``threads`` TVM threads, by default the thread count the search timed the best trial with (its
    ``threads`` column), else every core."""
    say = progress or (lambda text: None)
    if fmt not in FIGURE_FORMATS:
        raise ResultsError(f"figure format {fmt!r} is not one of {', '.join(FIGURE_FORMATS)}; choose one with {{opt:fmt|--format}}")
    res: StudyResults = load_results(path)
    if res.feasible.empty:
        raise ResultsError(f"study {res.name} ({res.path}) has no feasible trial; nothing to report yet")
    out = res.path
    say("drawing the Pareto curves and the choice map")
    figures = {}
    for x in ("latency", "ops"):
        fig = plot_pareto([res], x)
        figures[x] = out / f"pareto_{x}.{fmt}"
        fig.savefig(figures[x], dpi=120)
    fig = plot_choice_map(res)
    figures["map"] = out / f"choice_map.{fmt}"
    fig.savefig(figures["map"], dpi=120)

    best = res.best
    spec = best["spec"] if best else json.loads(res.pareto.sort_values("accuracy").iloc[-1].spec)
    deploy = _deploy_shape(res, spec)
    pareto = res.pareto.sort_values("latency_ms")
    front = pareto[["trial", "accuracy", "latency_ms", "ops", "bops", "flops", "n_lab"]].copy()
    front["accuracy"] = front.accuracy.map(lambda v: f"{100 * v:.2f}")
    front = front.rename(columns={"accuracy": "accuracy %"})
    if "accuracy_basis" in pareto and pareto.accuracy_basis.notna().any():
        front["accuracy basis"] = pareto.accuracy_basis.fillna("")
    front["latency_ms"] = front.latency_ms.map(lambda v: f"{v:.2f}")
    for col in ("ops", "bops", "flops"):
        front[col] = front[col].map(lambda v: f"{v:.3g}")
    say("counting the best architecture's OPs (fvcore, thop)")
    ops_table, ops_total = _ops_breakdown(spec, deploy)
    estimator = res.estimator_or_default
    meaning = res.settings.get("accuracy_description") or f"{estimator} estimator"
    caveat = {
        "published": "predicted ImageNet top-1 from published results, not trained; it ranks the LAB authors' stage "
                     "ablation with leave-one-out Kendall tau 0.90 (docs/accuracy.md)",
        "trained": "training on a small proxy dataset; measured against ImageNet on the LAB stage ablation, one "
                   "short training ranks placements at best partly (Kendall tau -0.64 .. +0.72 over the settings tried) "
                   "and only the mean of 6 capacity-limited Fashion-MNIST trainings ranks them well (tau 0.76, the "
                   "bireal18_placement_trained space; docs/accuracy.md): compare candidates of this study only, and "
                   "train on your own data for a real answer",
        "supernet": "scores of weight-sharing supernets on a small proxy dataset; measured against ImageNet on the "
                    "LAB stage ablation, one capacity-limited Fashion-MNIST supernet ranks placements partly (Kendall "
                    "tau 0.28-0.58 with 8 epochs) and the mean of 6 ranks them (tau 0.72, the "
                    "bireal18_placement_supernet space; docs/accuracy.md), on sign vs LAB 3x3 placements only: "
                    "compare candidates of this study only",
    }.get(estimator, "")
    validated = _validation_line(res)
    settings = _settings_table({k: v for k, v in res.settings.items() if k not in ("accuracy_description", "study")})
    summary = res.summary()
    notes = summary.notes()
    lines = [
        f"# labnas report: {res.name}",
        "",
        f"**Accuracy column**: {meaning}. {caveat[:1].upper() + caveat[1:]}.",
        "",
        *([validated, ""] if validated else []),
        "## Settings",
        "",
        settings,
        "",
        f"{len(res.trials)} trials: {len(res.feasible)} distinct specs within budget, {len(res.infeasible)} over budget (not estimated), "
        f"{int(res.trials.duplicate_of.notna().sum())} repeats of an earlier spec, "
        f"{int((res.trials.state == 'FAIL').sum())} failed."
        + "".join(f" **Note**: {note[:1].upper() + note[1:]}." for note in notes),
        "",
        "## Best architecture",
        "",
        f"Trial {best['trial'] if best else '?'}: accuracy {100 * best['accuracy'] if best else float('nan'):.2f} % ({estimator}), "
        f"latency {best['latency_ms'] if best else float('nan'):.2f} ms, OPs {ops_total:.3g}.",
        "",
        "Per layer (binarizer / LAB kernel / conv kernel): "
        + ", ".join(f"{i}: {l['binarizer']}" + (f"{l['lab_kernel']}" if l["binarizer"] == "lab" else "") + f"/c{l['kernel']}"
                    for i, l in enumerate(spec["layers"])),
        "",
        "## Pareto front (feasible; accuracy vs latency vs OPs)",
        "",
        _table(front),
        "",
        f"![accuracy vs latency]({figures['latency'].name})",
        "",
        f"![accuracy vs OPs]({figures['ops'].name})",
        "",
        f"![where LAB sits]({figures['map'].name})",
        "",
        "## OPs of the best architecture",
        "",
        ops_table,
        "",
    ]
    searched_ms = float(best["latency_ms"] if best else res.pareto.sort_values("accuracy").iloc[-1].latency_ms)
    target = _study_target(res)
    if measure_latency and target is not None and target.runs_here and not target.is_remote_only:
        say(f"re-timing the best architecture for {target.name} on this machine (the search measured {searched_ms:.2f} ms)")
        threads = threads or _search_threads(res, best["trial"] if best else None)
        lines += ["## Latency of the best architecture (re-timed now)", "",
                  _latency_breakdown(spec, deploy, target, searched_ms, res.settings.get("reference_calibration"), threads), ""]
    elif measure_latency and res.simulated_on:
        lines += ["## Latency of the best architecture", "",
                  f"Simulated, not measured: no board of the study's target ({res.target_name}) was connected, so "
                  f"every latency is predicted from the compiled code on the CPU model {res.simulated_on} "
                  f"(labnas.simulation: executed blocks under qemu x llvm-mca cycles, plus a DRAM term); the best "
                  f"architecture's simulated latency is {searched_ms:.2f} ms.", ""]
    elif measure_latency:
        lines += ["## Latency of the best architecture", "",
                  f"Not re-timed: the study's target ({res.target_name}) does not run on this machine; "
                  f"the search measured {searched_ms:.2f} ms on it.", ""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report


def _search_threads(res: StudyResults, trial) -> int | None:
    """The TVM thread count the search timed ``trial`` with (``threads`` column), or None when not recorded."""
    if trial is None or "threads" not in res.trials:
        return None
    values = res.trials.loc[res.trials.trial == trial, "threads"].dropna()
    return int(values.iloc[0]) if len(values) and values.iloc[0] > 0 else None


def _validation_line(res) -> str:
    """What the front's accuracies were validated against (the trials' ``accuracy_validated``), one line; empty for a
    study recorded before the column existed."""
    if "accuracy_validated" not in res.pareto or res.pareto.accuracy_validated.isna().all():
        return ""
    counts = res.pareto.accuracy_validated.dropna().value_counts()
    if len(counts) == 1:
        return f"**Validated against**: {counts.index[0]} (every front member)."
    return "**Validated against**: " + "; ".join(f"{n} of {len(res.pareto)} front members: {text}" for text, n in counts.items()) + "."


def _deploy_shape(res: StudyResults, spec: dict) -> tuple[int, int, int]:
    """The deployment input of a study: from the space file its settings name, else from the spec's stem."""
    from ..space import SpaceError, load_space

    space = res.study_settings.space if res.study_settings else res.settings.get("space")
    if space:
        try:
            return tuple(load_space(space).deploy_input)  # type: ignore[return-value]
        except SpaceError:  # the space file is gone or unreadable: the stem says what the network was built for
            pass
    return (spec["in_channels"], 224, 224) if spec.get("stem") == "imagenet" else (spec["in_channels"], 32, 32)
