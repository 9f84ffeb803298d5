"""Library errors name settings as Python parameters; the CLI shows the same errors with its flags."""

import pytest

from labnas._errors import LabnasError, for_cli
from labnas.data import DatasetError, load_dataset


def test_an_option_reads_as_a_parameter_in_python_and_as_a_flag_on_the_command_line():
    err = LabnasError("no images; pass {opt:data_dir} or use a new {opt:study_name|--study}")
    assert str(err) == "no images; pass data_dir or use a new study_name"
    assert for_cli(err) == "no images; pass --data-dir or use a new --study"
    assert for_cli(ValueError("plain {opt:x}")) == "plain {opt:x}"  # not a labnas error: left as it is


def test_a_missing_dataset_names_data_dir_for_the_caller(tmp_path):
    with pytest.raises(DatasetError) as caught:
        load_dataset("fashion-mnist", data_dir=str(tmp_path / "none"))
    assert "pass data_dir or run 'apt-get install dataset-fashion-mnist'" in str(caught.value)
    assert "pass --data-dir or run" in for_cli(caught.value) and "{opt:" not in for_cli(caught.value)


def test_the_cli_prints_the_flag(tmp_path, capsys):
    from labnas.cli import main

    code = main(["search", "--budget-ms", "20", "--space", "labbnn", "--accuracy", "trained", "--results", str(tmp_path),
                 "--data-dir", str(tmp_path / "none"), "--trials", "1"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--data-dir" in err and "data_dir" not in err and "{opt:" not in err


def test_thread_counts_below_one_are_refused_and_more_than_the_cpus_warned(capsys):
    import argparse
    import os

    from labnas.cli.common import thread_count

    for bad in ("0", "-2", "two"):
        with pytest.raises(argparse.ArgumentTypeError, match=">= 1"):
            thread_count(bad)
    assert thread_count("1") == 1 and capsys.readouterr().err == ""
    many = (os.cpu_count() or 1) + 1
    assert thread_count(str(many)) == many
    assert f"--threads {many} is more than this machine's" in capsys.readouterr().err


def test_a_study_name_that_is_a_path_is_refused_before_anything_is_written(tmp_path):
    from labnas.search import SearchConfig, load_space, run_search
    from labnas.search.study import SearchError

    for name in ("../../x", "a/b", "..", ""):
        with pytest.raises(SearchError, match="not a plain name"):
            run_search(load_space("bireal18_placement"), SearchConfig(budget_ms=20, accuracy="published"), name,
                       tmp_path / "results", progress=False)
    assert not (tmp_path / "results").exists() and list(tmp_path.parent.glob("x")) == []


def test_profile_refuses_an_input_whose_channels_the_network_does_not_take(tmp_path, capsys):
    from labnas.cli import main
    from labnas.models import default_spec

    spec = tmp_path / "spec.json"  # a spec fixes its channels (FAMILY alone takes them from --input)
    default_spec("bireal18", "sign", in_channels=1, stem="small", num_classes=10).save(spec)
    assert main(["profile", "--spec", str(spec), "--input", "3x32x32"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has 3 channels, the network takes 1; give --input 1x32x32" in err
