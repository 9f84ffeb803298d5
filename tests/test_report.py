"""Plots and reports: the drawn data equals the result files; formats are real; bad directories are refused."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from labnas.models import default_spec
from labnas.report import ResultsError, front_2d, load_results, plot_choice_map, plot_pareto
from labnas.search.results import pareto_front


def make_results(path, budget=20.0, feasible=True):
    from labnas.accuracy import ProxySettings, validation_of

    """A results directory in the format labnas search writes (trials.csv, pareto.csv, study.json)."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(10):
        spec = default_spec("labbnn", "sign")
        for j in rng.choice(16, size=int(rng.integers(1, 8)), replace=False):
            spec.layers[j].binarizer, spec.layers[j].lab_kernel = "lab", int(rng.choice([3, 5, 7]))
        lat = float(rng.uniform(12, 28))
        ok = feasible and lat <= budget
        rows.append({"trial": i, "state": "COMPLETE", "accuracy": float(rng.uniform(0.6, 0.97)) if ok else None,
                     "latency_ms": lat, "ops": float(rng.uniform(5e7, 1.2e8)), "bops": 1.7e9, "flops": 3e7,
                     "n_lab": spec.n_lab, "feasible": ok, "trained": ok, "duplicate_of": None, "spec": spec.to_json(),
                     "accuracy_validated": validation_of(ProxySettings(estimator="trained", lr=4e-3), spec.layers) if ok else None})
    rows.append({**rows[0], "trial": 10, "state": "FAIL", "accuracy": None, "latency_ms": None, "feasible": None})
    df = pd.DataFrame(rows)
    path.mkdir(parents=True, exist_ok=True)
    df.to_csv(path / "trials.csv", index=False)
    pareto_front(df).to_csv(path / "pareto.csv", index=False)
    (path / "study.json").write_text(json.dumps({"study": path.name, "budget_ms": budget, "target": "host"}))
    return df


def test_pareto_plot_draws_the_result_files(tmp_path):
    df = make_results(tmp_path / "a")
    res = load_results(tmp_path / "a")
    fig = plot_pareto([res], "latency")
    ax = fig.axes[0]
    by_gid = {c.get_gid(): c for c in ax.collections}
    feasible = df[(df.state == "COMPLETE") & (df.feasible == True)]  # noqa: E712
    expected = front_2d(feasible, "latency_ms")  # the front of the plotted axes, from every feasible trial
    ring = by_gid["pareto-0"].get_offsets()
    assert np.allclose(sorted(map(tuple, np.asarray(ring))), sorted(zip(expected.latency_ms, 100 * expected.accuracy)))  # %
    line = next(l for l in ax.lines if l.get_gid() == "front-0")
    assert np.allclose(line.get_xydata(), expected[["latency_ms", "accuracy"]].to_numpy() * [1, 100])
    assert np.all(np.diff(line.get_xydata()[:, 1]) > 0)  # a front only climbs
    for px, py in np.asarray(ring):  # every ringed point lies on the step line, none below it
        assert py == line.get_xydata()[line.get_xydata()[:, 0] <= px][-1, 1]
    assert "published" not in ax.get_ylabel() and "proxy accuracy" in ax.get_ylabel()
    assert "host" in ax.get_title()
    legend = ax.get_legend()
    assert legend.get_bbox_to_anchor().x0 >= ax.get_window_extent().x1  # outside the data
    feas = df[(df.state == "COMPLETE") & (df.feasible == True)]  # noqa: E712
    infeas = df[(df.state == "COMPLETE") & (df.feasible == False)]  # noqa: E712
    assert len(by_gid["feasible-0"].get_offsets()) == len(feas) and len(by_gid["infeasible-0"].get_offsets()) == len(infeas)
    assert by_gid["infeasible-0"].get_paths()[0] != by_gid["feasible-0"].get_paths()[0]  # another marker
    budget = next(l for l in ax.lines if l.get_gid() == "budget-0")
    assert budget.get_xdata()[0] == 20.0


def test_studies_whose_accuracies_are_different_quantities_are_not_overlaid(tmp_path):
    make_results(tmp_path / "proxy")
    make_results(tmp_path / "imagenet")
    meta = json.loads((tmp_path / "imagenet" / "study.json").read_text())
    (tmp_path / "imagenet" / "study.json").write_text(json.dumps({**meta, "accuracy": "published"}))
    with pytest.raises(ResultsError, match="different quantities .*proxy: trained, imagenet: published"):
        plot_pareto([load_results(tmp_path / "proxy"), load_results(tmp_path / "imagenet")], "latency")


def test_two_studies_overlay_with_a_legend(tmp_path):
    make_results(tmp_path / "host")
    make_results(tmp_path / "arm", budget=25.0)
    fig = plot_pareto([load_results(tmp_path / "host"), load_results(tmp_path / "arm")], "ops")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    # the legend names what differs (the budget), not the study names
    assert any(l.startswith("budget 20.0 ms:") for l in labels) and any(l.startswith("budget 25.0 ms:") for l in labels)
    assert not any(l.startswith(("host", "arm")) for l in labels)
    caption = " ".join(t.get_text() for t in fig.texts)
    assert "budget 25.0 ms: " in caption and "1 failed of 11 trials" in caption


def test_a_figure_for_a_paper_spans_the_data_in_percent_with_spreads_and_counts(tmp_path):
    df = make_results(tmp_path / "a", budget=100.0)  # every candidate far under the budget
    csv = pd.read_csv(tmp_path / "a" / "trials.csv")
    csv["latency_p10_ms"], csv["latency_p90_ms"] = csv.latency_ms - 0.5, csv.latency_ms + 1.0
    csv.to_csv(tmp_path / "a" / "trials.csv", index=False)
    pareto_front(csv).to_csv(tmp_path / "a" / "pareto.csv", index=False)
    ax = plot_pareto([load_results(tmp_path / "a")], "latency").axes[0]
    done = df[df.state == "COMPLETE"]
    low, high = ax.get_xlim()
    assert done.latency_ms.min() - 2 < low < done.latency_ms.min() and done.latency_ms.max() < high < done.latency_ms.max() + 2
    assert not any(l.get_gid() == "budget-0" for l in ax.lines)  # 100 ms is off the data: an arrow at the edge instead
    arrow = next(t for t in ax.texts if t.get_gid() == "budget-0")
    assert arrow.get_text() == "budget 100 ms →"
    ys = np.asarray(next(c for c in ax.collections if c.get_gid() == "feasible-0").get_offsets())[:, 1]
    assert ys.min() > 50 and ys.max() <= 100 and ax.get_ylabel().endswith(", %")  # accuracy in %
    spread = next(c for c in ax.collections if c.get_gid() == "spread-0")  # p10 .. p90 error bars
    segments = np.asarray([seg[:, 0] for seg in spread.get_segments()])
    assert np.allclose(segments[:, 1] - segments[:, 0], 1.5)
    assert "10 within budget, 0 over budget, 1 failed of 11 trials" in ax.get_title()
    assert [t.get_text() for t in ax.get_legend().get_texts()][0] == "within budget"  # no study name in every entry


def test_choice_map_rows_are_pareto_architectures_by_latency(tmp_path):
    make_results(tmp_path / "a")
    res = load_results(tmp_path / "a")
    fig = plot_choice_map(res)
    ax = fig.axes[0]
    image = ax.images[0].get_array()
    pareto = res.pareto.sort_values("latency_ms")
    assert image.shape[:2] == (len(pareto), 16)
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks == [f"#{t} {lat:.1f} ms {acc:.1%}" for t, lat, acc in zip(pareto.trial, pareto.latency_ms, pareto.accuracy)]
    first = json.loads(pareto.iloc[0].spec)["layers"]
    grey = np.array([0xD9 / 255] * 3)
    for c, layer in enumerate(first):
        assert np.allclose(image[0, c], grey) == (layer["binarizer"] != "lab")
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0] == "sign" and all(l.startswith("LAB ") for l in legend[1:])  # a colour legend
    stage_lines = sorted(l.get_xdata()[0] for l in ax.lines)
    assert stage_lines == [3.5, 7.5, 11.5]  # LAB-BNN's four stages of four binary layers


def test_operation_axes_are_in_engineering_units(tmp_path):
    make_results(tmp_path / "a")
    res = load_results(tmp_path / "a")
    ax = plot_pareto([res], "ops").axes[0]
    assert ax.get_xlabel().endswith("(M)") and ax.xaxis.get_offset_text().get_text() == ""
    xs = np.asarray(next(c for c in ax.collections if c.get_gid() == "feasible-0").get_offsets())[:, 0]
    assert xs.max() < 200  # 5e7 .. 1.2e8 OPs drawn as 50 .. 120 M
    assert plot_pareto([res], "bops").axes[0].get_xlabel().endswith("(G)")


def test_report_cli_says_what_it_is_doing(tmp_path):
    make_results(tmp_path / "a")
    r = subprocess.run([sys.executable, "-m", "labnas.cli", "report", str(tmp_path / "a"), "--no-measure", "--format", "pdf"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "drawing the Pareto curves" in r.stdout and "counting the best architecture's OPs" in r.stdout
    for name in ("pareto_latency.pdf", "pareto_ops.pdf", "choice_map.pdf"):  # figures for a paper
        assert (tmp_path / "a" / name).read_bytes()[:4] == b"%PDF"
        assert f"]({name})" in (tmp_path / "a" / "report.md").read_text()


@pytest.mark.parametrize("suffix,magic", [(".png", b"\x89PNG"), (".svg", b"<?xml"), (".pdf", b"%PDF")])
def test_plot_cli_writes_real_files(tmp_path, suffix, magic):
    make_results(tmp_path / "a")
    out = tmp_path / f"fig{suffix}"
    r = subprocess.run([sys.executable, "-m", "labnas.cli", "plot", str(tmp_path / "a"), "--out", str(out), "--map"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes().startswith(magic)
    assert (tmp_path / f"fig_choice_map{suffix}").read_bytes().startswith(magic)


def test_bad_directories_give_clear_messages(tmp_path):
    with pytest.raises(ResultsError, match="holds no labnas results"):
        load_results(tmp_path)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "trials.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ResultsError, match="not a labnas trials table"):
        load_results(tmp_path / "foreign")
    make_results(tmp_path / "none", feasible=False)
    with pytest.raises(ResultsError, match="no feasible trial"):
        plot_pareto([load_results(tmp_path / "none")])
    for verb in ("plot", "report"):
        r = subprocess.run([sys.executable, "-m", "labnas.cli", verb, str(tmp_path / "none")], capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and "no feasible trial" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_report_writes_markdown_with_figures(tmp_path):
    from labnas.report import write_report

    make_results(tmp_path / "a")
    path = write_report(tmp_path / "a", measure_latency=False)
    text = path.read_text()
    assert "## Pareto front" in text and "](pareto_latency.png)" in text and "## OPs of the best architecture" in text
    for name in ("pareto_latency.png", "pareto_ops.png", "choice_map.png"):
        assert (tmp_path / "a" / name).read_bytes().startswith(b"\x89PNG")
    assert "did not bind" not in text  # latencies 12-28 ms against 20 ms: the budget splits them
    # the digits proxy's check covers LAB 3x3 only: front members with LAB 5/7 are said to lie outside it
    validated = next(line for line in text.splitlines() if line.startswith("**Validated against**"))
    assert "front members: outside its validation (LAB kernels 3, binary-conv kernels 3 only)" in validated
    assert "Kendall tau +0.29 [-0.04, +0.62] (proxy_fidelity setting digits8-w25-e4)" in validated
    outside = int(load_results(tmp_path / "a").trials.accuracy_validated.dropna().str.startswith("outside").sum())
    summary = load_results(tmp_path / "a").summary()
    assert outside > 0 and summary.unvalidated == outside
    assert any(n.startswith(f"{outside} accuracies rank candidates outside") for n in summary.notes())
    settings = text[text.index("## Settings"):text.index("## Best architecture")]
    assert "| setting | value |" in settings and "{" not in settings  # a table, not a Python dict
    assert "| budget_ms | 20 |" in settings


def test_one_thread_is_singular():
    from labnas.report.report import _settings_table, _threads

    assert _threads(1) == "1 TVM thread" and _threads(2) == "2 TVM threads"
    table = _settings_table({"front_search": {"space_size": 4, "table_fit": {"scale": 0.947351}}, "target": "host"})
    assert "| front_search.space_size | 4 |" in table and "| front_search.table_fit.scale | 0.9474 |" in table


def test_report_says_when_the_budget_did_not_bind(tmp_path):
    from labnas.report import write_report

    df = make_results(tmp_path / "a", budget=100.0)
    text = write_report(tmp_path / "a", measure_latency=False).read_text()
    median = df[df.state == "COMPLETE"].latency_ms.median()
    assert "The budget did not bind: all 10 complete candidates" in text and f"--budget-ms {median:.3g}" in text


@pytest.mark.parametrize("target", ["host", "arm"])
def test_report_says_what_it_re_timed_and_how_it_compares(tmp_path, target):
    """The report re-times the best architecture only for a target this machine runs, and labels the figure:
    target, threads, how it was timed, and its ratio to the search's own figure."""
    from labnas.report import write_report

    from labnas.timing import reference_for
    from labnas.tvm import TARGETS

    df = make_results(tmp_path / "a")
    meta = json.loads((tmp_path / "a" / "study.json").read_text())
    # the search's own calibration of the reference, as a search stores it: the re-timing is corrected in its scale
    # (a quarter above this machine's own, so that the two scales differ and a quiet reference is not "disturbed")
    here = reference_for(TARGETS["host"], threads=1)
    calibration = {"key": here.key, "ms": round(1.25 * here.ms, 5)}
    (tmp_path / "a" / "study.json").write_text(json.dumps({**meta, "target": target, "space": "cifar_bireal",  # 32x32 deploy
                                                          "reference_calibration": calibration}))
    text = write_report(tmp_path / "a", threads=1).read_text()  # one thread: the test may share the machine
    best = df[df.feasible.fillna(False).astype(bool)].sort_values("accuracy").iloc[-1]
    if target == "host":
        assert "## Latency of the best architecture (re-timed now)" in text
        assert f"the search measured {best.latency_ms:.2f} ms" in text and "Re-timed now for target host" in text
        assert "paired with the reference workload" in text and "(the search's own calibration)" in text
        assert "1 TVM thread" in text and "1 TVM threads" not in text
        ratio = float(text.split("this re-timing is ")[1].split("x the search")[0])
        timed = float(text.split("drift-corrected ")[1].split(" ms")[0])
        paired_ratio = float(text.split("= ratio ")[1].split(" x")[0])
        assert timed == pytest.approx(paired_ratio * calibration["ms"], abs=0.01)  # corrected in the study's scale, not this machine's
        assert ratio == pytest.approx(timed / best.latency_ms, abs=0.01)
    else:
        assert "Not re-timed: the study's target (arm) does not run on this machine" in text
        assert f"the search measured {best.latency_ms:.2f} ms on it" in text


def test_study_settings_are_one_typed_record_with_one_verdict():
    from labnas.results import ResultsError, StudySettings

    settings = StudySettings(space="bireal18_placement", family="bireal18", budget_ms=20.0, target="host")
    assert settings.verdict(19.5) == (-0.5, True) and settings.verdict(20.0) == (0.0, True)
    assert settings.verdict(20.25) == (0.25, False)
    # a study stored before latency/accuracy were recorded reads back with what such studies did
    old = {"space": "bireal18_placement", "family": "bireal18", "budget_ms": 20, "target": "host", "objectives": "accuracy",
           "study": "s", "reference_calibration": {"ms": 1.0}}
    assert StudySettings.from_dict(old) == settings and StudySettings.from_dict(settings.to_dict()) == settings
    other = StudySettings.from_dict({**old, "budget_ms": 15})
    assert settings.differences(other) == "budget_ms 20.0 -> 15.0"
    with pytest.raises(ResultsError, match="lack budget_ms, target: not a labnas study"):
        StudySettings.from_dict({"space": "x", "family": "y"})
