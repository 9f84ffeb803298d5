"""Block latency tables: build, round trip, prediction of unseen combinations, refusal, LUT-driven search."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from labnas.latency import LatencyTable, TableError, block_units, build_table, load_table, predict, table_path
from labnas.latency.table import space_units
from labnas.models import LayerSpec, create_model
from labnas.search import SearchConfig, load_space, run_search
from labnas.tvm import TARGETS

TINY = str(Path(__file__).parent / "data" / "tiny_space.toml")


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory):
    """The tiny space's table, built once on the host (13 blocks + 4 calibration networks, 2 timing passes, ~30 s)."""
    root = tmp_path_factory.mktemp("lut")
    space = load_space(TINY)
    seen = []
    table = build_table(space, TARGETS["host"], threads=1, number=2, repeat=3, fit_networks=2, timings=2,
                        progress=lambda what, done, total: seen.append((done, total)))
    table.save(table_path(space.name, "host", root))
    return space, root, table, seen


def test_every_unique_block_is_timed_once_with_progress(tiny_table):
    space, _, table, seen = tiny_table
    unique, calibration = space_units(space, fit_networks=2)
    assert len(table.entries) == len(unique) == 13  # 9 sign blocks/stem/head + LAB 3 and 5 on the 2 searched layers
    assert len(calibration) == 4  # all-sign, all-LAB and 2 random candidates
    assert seen[-1] == (51, 51)  # 17 compiles, then 2 timing passes over the 17
    assert all(ms > 0 for ms in table.entries.values())
    assert len(table.meta["calibration_differences_ms"]) == 4


def test_blocks_are_timed_paired_and_the_table_keeps_its_calibration(tiny_table):
    """Each entry is the drift-corrected figure: paired ratio x the reference's calibrated time, stored in the table."""
    _, _, table, _ = tiny_table
    meta, rows = table.meta, table.rows
    assert meta["timing"] == "paired" and meta["reference_calibration"]["ms"] > 0 and "host" in meta["reference_calibration"]["key"]
    assert rows.median_ms.to_numpy() == pytest.approx(rows.paired_ratio.to_numpy() * meta["reference_calibration"]["ms"], rel=1e-3)
    sums, measured = meta["calibration_block_sums_ms"], meta["calibration_measured_ms"]
    # the prediction reproduces the calibration networks through the fitted line
    predicted = [meta["scale"] * b + meta["overhead_ms"] for b in sums]
    assert sum(predicted) == pytest.approx(sum(measured), rel=1e-3)


def test_scale_and_overhead_are_fitted_to_the_calibration_networks():
    from labnas.latency.table import fit_scale_overhead

    sums = [4.0, 5.0, 6.0, 8.0]
    assert fit_scale_overhead(sums, [1.1 * b + 0.3 for b in sums]) == pytest.approx((1.1, 0.3))
    # two networks, alike block sums, or an implausible slope: scale 1 and the mean difference
    assert fit_scale_overhead([4.0, 6.0], [4.5, 6.7]) == pytest.approx((1.0, 0.6))
    assert fit_scale_overhead([5.0, 5.01, 5.02], [5.5, 5.4, 5.6]) == pytest.approx((1.0, 0.49))
    assert fit_scale_overhead(sums, [3 * b for b in sums]) == pytest.approx((1.0, 2 * sum(sums) / 4))


def test_a_table_under_another_calibration_is_rescaled_or_refused(tiny_table):
    space, _, table, _ = tiny_table
    built = table.meta["reference_calibration"]
    units = block_units(create_model(space.deploy_spec(space.default_layers())).eval(), (1, *space.deploy_input))
    same = table.rescaled_to(dict(built))
    assert same is table  # its own calibration: unchanged
    slower = table.rescaled_to({"key": built["key"], "ms": 2 * built["ms"]})  # this machine recalibrated at twice the time
    assert slower.predict_units(units) == pytest.approx(2 * table.predict_units(units))
    assert slower.meta["rescaled_from_ms"] == built["ms"] and slower.meta["reference_calibration"]["ms"] == 2 * built["ms"]
    with pytest.raises(TableError, match="another CPU, thread count or version.*labnas profile --space tiny --target host --lut"):
        table.rescaled_to({"key": "Other CPU | avx2 | host | 1 threads", "ms": built["ms"]})


def test_table_round_trips_through_its_csv(tiny_table):
    space, root, table, _ = tiny_table
    loaded = load_table(space, "host", root)
    assert loaded.entries == pytest.approx(table.entries, rel=1e-4)
    for key in ("space", "target", "labnas_version", "kernels", "overhead_ms", "device", "space_fingerprint"):
        assert loaded.meta[key] == table.meta[key]
    assert list(loaded.rows.columns) == ["key", "block", "median_ms", "p10_ms", "p90_ms", "raw_median_ms", "paired_ratio"]
    assert loaded.meta["scale"] == table.meta["scale"] and loaded.meta["reference_calibration"] == table.meta["reference_calibration"]


def test_unseen_combination_of_seen_blocks_is_predicted(tiny_table):
    space, root, table, _ = tiny_table
    layers = space.default_layers()
    layers[0] = LayerSpec(binarizer="lab", lab_kernel=5)  # LAB-5 first, sign last: no network the table timed
    layers[15] = LayerSpec(binarizer="sign")
    spec = space.deploy_spec(layers)
    units = block_units(create_model(spec).eval(), (1, *space.deploy_input))
    expected = table.meta["scale"] * sum(table.entries[u.key] for u in units) + table.meta["overhead_ms"]
    assert predict(spec, "host", space, root) == pytest.approx(expected, rel=1e-3)
    # identical blocks at different positions share one entry: 16 blocks + stem + head, fewer keys
    assert len(units) == 18 and len({u.key for u in units}) < len(units)


def test_block_outside_the_space_is_refused_with_the_rebuild_command(tiny_table):
    space, root, table, _ = tiny_table
    layers = space.default_layers()
    layers[0] = LayerSpec(binarizer="lab", lab_kernel=7)  # the space offers LAB 3 and 5 only
    with pytest.raises(TableError, match="labnas profile --space tiny --target host --lut"):
        predict(space.deploy_spec(layers), "host", space, root)


@pytest.mark.parametrize("what", ["space", "target", "version", "kernels"])
def test_table_for_something_else_is_refused(tiny_table, tmp_path, what):
    space, root, _, _ = tiny_table
    text = table_path(space.name, "host", root).read_text()
    if what == "space":  # same name, other choices
        other = tmp_path / "tiny.toml"
        other.write_text(Path(TINY).read_text().replace("lab_kernel = [3, 5]", "lab_kernel = [3]"))
        space = load_space(str(other))
        path = table_path("tiny", "host", root)
    else:
        edits = {"target": ('# target: "host"', '# target: "x86"'),
                 "version": ('# labnas_version: "', '# labnas_version: "0.0.1-old'),
                 "kernels": ('# kernels: "', '# kernels: "0ld')}
        path = table_path("tiny", "host", tmp_path)
        path.parent.mkdir(parents=True)
        path.write_text(text.replace(*edits[what]))
    with pytest.raises(TableError, match="rebuild it with 'labnas profile --space tiny --target host --lut'"):
        LatencyTable.load(path, space, "host")


def test_missing_or_malformed_table_says_how_to_build_one(tmp_path):
    space = load_space(TINY)
    with pytest.raises(TableError, match="no latency table at .*labnas profile --space tiny --target host --lut"):
        load_table(space, "host", tmp_path)
    bad = table_path("tiny", "host", tmp_path)
    bad.parent.mkdir(parents=True)
    bad.write_text("not,a\ntable,here\n")
    with pytest.raises(TableError, match="not a labnas latency table"):
        load_table(space, "host", tmp_path)


def test_lut_search_predicts_then_measures_the_front(tiny_table, tmp_path):
    space, root, table, _ = tiny_table
    config = SearchConfig(budget_ms=1000.0, timing_number=1, timing_repeat=3, threads=1, latency="lut", lut_root=str(root))
    run = run_search(space, config, "lut1", tmp_path, n_trials=3, progress=False)
    study, out = run.study, run.path
    df = pd.read_csv(out / "trials.csv")
    assert set(df.state) == {"COMPLETE"} and (df.latency_source == "lut").all()
    assert df.compile_s.isna().all()  # nothing was compiled for a trial
    front = pd.read_csv(out / "pareto.csv")
    assert len(front) >= 1 and (front.latency_measured_ms > 0).all()  # the front was timed end to end
    assert set(study.user_attrs["remeasured_ms"]) == {str(t) for t in front.trial}
    # the study took the table's calibration, so the front's end-to-end timings are corrected in the table's scale
    assert study.user_attrs["reference_calibration"] == table.meta["reference_calibration"]
    assert table.meta["reference_calibration"]["workload"] == "conv pair 64x28x28"  # tables keep the small reference


def test_cli_bad_lut_inputs_are_one_line(tmp_path):
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "labnas.cli", *a], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)  # noqa: E731
    r = run("search", "--budget-ms", "20", "--space", TINY, "--latency", "lut", "--lut-root", str(tmp_path / "none"), "--trials", "1")
    assert r.returncode == 2 and "labnas profile --space tiny --target host --lut" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "results").exists()
    r = run("profile", "--lut")
    assert r.returncode == 2 and "--space" in r.stderr
    r = run("profile", "--space", "nope", "--lut")
    assert r.returncode == 2 and "unknown search space" in r.stderr


def test_kernel_fingerprint_ignores_docs_but_not_code():
    from labnas.latency.table import _code_without_docs

    documented = 'def f(x):\n    """Why."""\n    return x + 1  # note\n'
    assert _code_without_docs(documented) == _code_without_docs('def f(x):\n    """Another why."""\n    return x + 1\n')
    assert _code_without_docs(documented) != _code_without_docs("def f(x):\n    return x + 2\n")


def test_a_table_timed_on_another_cpu_is_used_with_a_warning(tiny_table, tmp_path, capsys):
    space, root, table, _ = tiny_table
    load_table(space, "host", root)
    assert "warning" not in capsys.readouterr().err  # built here: silent
    other = LatencyTable(table.entries, {**table.meta, "device": {**table.meta["device"], "isa": ["avx2"], "cpu": "Other CPU"}}, table.rows)
    other.save(table_path(space.name, "host", tmp_path))
    load_table(space, "host", tmp_path)
    err = capsys.readouterr().err
    assert "was timed on Other CPU (avx2)" in err and "rebuild it with 'labnas profile --space tiny" in err
