"""The five families build from specs at ImageNet and small inputs; specs round-trip; convert() works."""

import json

import pytest
import torch

from labnas import convert
from labnas.models import FAMILIES, ArchSpec, SpecError, create_model, default_spec
from labnas.nn import LAB, BinaryConv2d, SteSign

SLOTS = {"xnornet_alexnet": 6, "bireal18": 16, "quicknet": 16, "reactnet_mbv1": 26, "labbnn": 16}


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("binarizer", ["sign", "lab"])
def test_family_builds_at_224_and_small_inputs(family, binarizer):
    assert len(FAMILIES[family].slots) == SLOTS[family]
    with torch.no_grad():
        big = create_model(default_spec(family, binarizer)).eval()
        assert big(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
        for c, hw in ((3, 32), (1, 28)):
            spec = default_spec(family, binarizer, stem="small", num_classes=10, in_channels=c, width_mult=0.25)
            assert create_model(spec).eval()(torch.randn(2, c, hw, hw)).shape == (2, 10)
    convs = [m for m in big.modules() if isinstance(m, BinaryConv2d)]
    assert len(convs) == SLOTS[family]
    assert all(isinstance(m.binarizer, LAB) == (binarizer == "lab") for m in convs)


def test_lab_params_added_to_bireal18_match_the_reference_count():
    sign = sum(p.numel() for p in create_model(default_spec("bireal18", "sign")).parameters())
    lab = sum(p.numel() for p in create_model(default_spec("bireal18", "lab")).parameters())
    assert lab - sign == 67_856  # 16 LABs, 20 C + 1 each (reference lab_paper.md section 1.4)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_spec_round_trips_through_json(family):
    spec = default_spec(family, "lab", width_mult=0.5, lab_pairing="per_channel")
    spec.layers[0].binarizer = "ste_sign"
    spec.layers[-1].lab_kernel = 7
    again = ArchSpec.from_json(spec.to_json())
    assert again == spec
    assert json.loads(again.to_json()) == spec.to_dict()


def test_spec_errors_name_the_field(tmp_path):
    with pytest.raises(SpecError, match="unknown family 'resnet9'"):
        default_spec("resnet9")
    bad = default_spec("bireal18").to_dict()
    bad["layers"][3]["lab_kernel"] = 4
    with pytest.raises(SpecError, match=r"layers\[3\]\.lab_kernel"):
        ArchSpec.from_dict(bad)
    bad = default_spec("bireal18").to_dict() | {"colour": "red"}
    with pytest.raises(SpecError, match="unknown spec key"):
        ArchSpec.from_dict(bad)
    path = tmp_path / "s.json"
    path.write_text("{not json")
    with pytest.raises(SpecError, match="s.json: spec is not valid JSON"):
        ArchSpec.load(path)


def test_per_layer_choices_reach_the_modules():
    spec = default_spec("labbnn", "sign", stem="small", num_classes=10, width_mult=0.25)
    spec.layers[2] = type(spec.layers[2])(binarizer="lab", lab_kernel=5, kernel=5)
    convs = [m for m in create_model(spec).modules() if isinstance(m, BinaryConv2d)]
    assert isinstance(convs[2].binarizer, LAB) and convs[2].binarizer.kernel_size == 5 and convs[2].kernel_size == 5
    assert isinstance(convs[1].binarizer, SteSign) and convs[1].kernel_size == 3


def test_convert_swaps_binarizers_in_one_line():
    model = create_model(default_spec("bireal18", "sign", stem="small", num_classes=10, width_mult=0.25))
    convert(model, "lab", kernel_size=5)
    labs = [m.binarizer for m in model.modules() if isinstance(m, BinaryConv2d)]
    assert all(isinstance(b, LAB) and b.kernel_size == 5 for b in labs)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    convert(model, "ste_sign", where=lambda name, conv: conv.stride == 2)
    assert sum(isinstance(b.binarizer, SteSign) for b in model.modules() if isinstance(b, BinaryConv2d)) == 3
    with pytest.raises(ValueError, match="no labnas.nn.BinaryConv2d"):
        convert(torch.nn.Linear(2, 2))


def test_small_lab_bnn_learns_digits():
    from labnas.data import load_digits
    from labnas.train import TrainConfig, train_proxy

    spec = default_spec("bireal18", "lab", stem="small", num_classes=10, in_channels=1, width_mult=0.25)
    result = train_proxy(spec, load_digits(), TrainConfig(epochs=5, batch_size=64, seed=0))
    assert result.accuracy >= 0.85


def test_a_run_stopped_after_an_epoch_resumes_from_its_checkpoint_to_the_same_weights(tmp_path):
    """A long reference training stopped midway (a sitting ends) continues from its last epoch: same batches,
    same schedule, bit-identical weights to a run never stopped; the finished model is back in NCHW layout."""
    from labnas.data import load_digits
    from labnas.train import TrainConfig, train_model

    data = load_digits()
    spec = default_spec("bireal18", "lab", width_mult=0.25, in_channels=1, num_classes=10, stem="small")
    config = TrainConfig(epochs=2, batch_size=64, seed=3, subset=300)

    torch.manual_seed(0)
    straight = create_model(spec)
    train_model(straight, data, config)

    class Stop(Exception):
        pass

    def stop_after_first(epoch, loss):
        if epoch == 1:
            raise Stop

    ckpt = tmp_path / "run.pt"
    torch.manual_seed(0)
    stopped = create_model(spec)
    with pytest.raises(Stop):
        train_model(stopped, data, config, stop_after_first, checkpoint=ckpt)
    assert ckpt.exists()
    torch.manual_seed(0)
    resumed = create_model(spec)
    epochs_run = []
    train_model(resumed, data, config, lambda epoch, loss: epochs_run.append(epoch), checkpoint=ckpt)
    assert epochs_run == [2]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert all(p.is_contiguous() for p in resumed.parameters())
