"""BOPs / FLOPs / OPs: literature values, LAB's exact cost, and agreement of fvcore, thop and torch."""

import pytest

from labnas.models import FAMILIES, create_model, default_spec
from labnas.ops import count_ops


def test_bireal18_matches_the_bireal_paper():
    r = count_ops(create_model(default_spec("bireal18", "sign")), (3, 224, 224))
    assert r.bops == pytest.approx(1.68e9, rel=0.01)
    assert 1.63e8 <= r.ops <= 1.65e8
    assert r.disagreements == []


def test_reactnet_a_ops_within_five_percent():
    r = count_ops(create_model(default_spec("reactnet_mbv1", "sign")), (3, 224, 224))
    assert r.ops == pytest.approx(0.87e8, rel=0.05)


@pytest.mark.parametrize("k", [1, 3, 5, 7])
def test_each_lab_adds_exactly_2k2_chw_float_macs(k):
    base = default_spec("labbnn", "sign", stem="small", num_classes=10, width_mult=0.5)
    sign = count_ops(create_model(base), (3, 16, 16))
    one = default_spec("labbnn", "sign", stem="small", num_classes=10, width_mult=0.5)
    one.layers[5].binarizer, one.layers[5].lab_kernel = "lab", k
    lab = count_ops(create_model(one), (3, 16, 16))
    # layer 5 is in stage 2 (64 channels at width 0.5), input 8x8 after the stride-2 layer 4
    c, h, w = 64, 8, 8
    assert lab.flops - sign.flops == 2 * k * k * c * h * w
    assert lab.bops == sign.bops
    row = lab.layers[lab.layers.layer.str.endswith("binarizer.dw")]
    assert row.macs.tolist() == [2 * k * k * c * h * w]


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("binarizer", ["sign", "lab"])
def test_fvcore_and_thop_agree_within_one_percent(family, binarizer):
    r = count_ops(create_model(default_spec(family, binarizer, stem="small", num_classes=10, width_mult=0.25)), (3, 32, 32))
    fv, th = r.counters["fvcore"], r.counters["thop"]
    for metric in ("bops", "flops"):
        assert fv[metric] == pytest.approx(th[metric], rel=0.01)
        assert r.counters["torch"][metric] == pytest.approx(fv[metric], rel=0.01)
    assert r.disagreements == []
    assert r.bops > 0 and r.flops > 0


def test_ops_cli_reports_totals_and_rejects_bad_input(tmp_path):
    import json
    import subprocess
    import sys

    def run(*args):
        return subprocess.run([sys.executable, "-m", "labnas.cli", "ops", *args], capture_output=True, text=True, timeout=300)

    r = run("bireal18", "--input", "3x224x224", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["bops"] == 1_676_279_808 and 1.63e8 <= data["ops"] <= 1.65e8 and data["disagreements"] == []
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(default_spec("labbnn", "lab").to_dict()))
    assert run("--spec", str(spec), "--json").returncode == 0
    for args, message in ((["resnet9"], "unknown family 'resnet9'"), (["--spec", str(tmp_path / "none.json")], "none.json does not exist")):
        r = run(*args)
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    spec.write_text('{"family": "bireal18", "layers": []}')
    r = run("--spec", str(spec))
    assert r.returncode == 2 and "has 16 binary layers, the spec lists 0" in r.stderr
