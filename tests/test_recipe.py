"""The optimiser recipe is declared once (labnas.train.AdamRecipe) and shared by the proxy settings, a proxy run
and `labnas train`: the same fields, the same checks, the same message, each raised as its caller's error."""

import dataclasses

import pytest
import torch

from labnas._errors import for_cli
from labnas.accuracy import EstimatorError, ProxySettings
from labnas.deploy.training import TrainError, TrainSettings
from labnas.train import AdamRecipe, RecipeError, TrainConfig

RECIPE = {f.name for f in dataclasses.fields(AdamRecipe)}


@pytest.mark.parametrize("cls", [ProxySettings, TrainSettings, TrainConfig])
def test_every_training_settings_class_carries_the_whole_recipe(cls):
    assert RECIPE <= {f.name for f in dataclasses.fields(cls)}
    assert issubclass(cls, AdamRecipe)


@pytest.mark.parametrize("cls, error", [(ProxySettings, EstimatorError), (TrainSettings, TrainError), (TrainConfig, RecipeError)])
@pytest.mark.parametrize("bad, words", [
    ({"schedule": "step"}, "unknown schedule 'step'; choose one of linear, cosine, constant"),
    ({"epochs": 0}, "epochs must be >= 1, batch_size >= 2 and lr > 0 (got 0,"),
    ({"batch_size": 1}, "batch_size >= 2"),
    ({"lr": 0.0}, "lr > 0"),
    ({"warmup_epochs": 99.0}, "warmup_epochs must be in [0, epochs)"),
    ({"grad_clip": -1.0}, "grad_clip >= 0"),
])
def test_a_bad_recipe_is_refused_with_the_same_words_by_every_caller(cls, error, bad, words):
    with pytest.raises(error) as info:
        cls(**bad)
    assert words in str(info.value)


def test_the_command_line_reads_the_recipe_problem_as_flags():
    with pytest.raises(TrainError) as info:
        TrainSettings(warmup_epochs=20.0)
    assert "--warmup-epochs must be in [0, epochs)" in for_cli(info.value)


def test_a_proxy_run_gets_every_recipe_field_of_its_settings():
    settings = ProxySettings(epochs=2, batch_size=48, lr=1e-3, schedule="cosine", warmup_epochs=0.25, grad_clip=5.0,
                             subset=300, precise_bn_images=64)
    config = settings.train_config(seed=7)
    assert config.recipe_fields() == settings.recipe_fields() == {
        "epochs": 2, "batch_size": 48, "lr": 1e-3, "schedule": "cosine", "warmup_epochs": 0.25, "grad_clip": 5.0}
    assert (config.subset, config.seed, config.precise_bn_images) == (300, 7, 64)
    assert settings.train_config(seed=7, precise_bn=False).precise_bn_images == 0


def test_each_caller_keeps_its_own_defaults():
    assert (ProxySettings().epochs, ProxySettings().batch_size) == (4, 32)
    assert (TrainSettings().epochs, TrainSettings().batch_size) == (10, 64)
    assert (TrainConfig().epochs, TrainConfig().batch_size) == (3, 64)


def test_the_optimizer_follows_warm_up_then_the_schedule():
    model = torch.nn.Linear(2, 2)
    opt, sched = AdamRecipe(epochs=2, lr=0.01, schedule="linear", warmup_epochs=0.5).optimizer(model, steps_per_epoch=4)
    rates = []
    for _ in range(8):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # 2 warm-up steps (0.5 of 4), then linear from the peak to 0 over the remaining 6 of 8 steps.
    assert rates[0] < rates[1] <= 0.01
    assert rates[2] == pytest.approx(0.01)
    assert rates[2] > rates[5] > rates[7] > 0


def test_resuming_labnas_train_compares_the_whole_recipe():
    recipe = TrainSettings(grad_clip=1.0).recipe()
    assert recipe["grad_clip"] == 1.0 and RECIPE <= set(recipe)
    assert "data_dir" not in recipe and "device" not in recipe
