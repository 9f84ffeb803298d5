"""One-shot accuracy: a weight-sharing supernet over a space's per-layer choices (the NAS-BNN /
once-for-all recipe).

The supernet is the family's network in which every binary convolution holds all of its layer's choices
at once: one weight tensor of the largest kernel (a smaller kernel is its centre crop), the family's sign
binarizer and any other listed binarizer, and one LAB of the largest LAB kernel (a smaller LAB kernel is
its centre crop; biases and beta are shared). Every training step samples each layer's choice uniformly.
A candidate is scored with the inherited weights after its BatchNorm statistics are re-estimated on
training images, since a shared BatchNorm's running averages mix every sampled sub-network.

Trained supernets are cached by a key of (family, choices, proxy settings, dataset, seed), so studies of
the same space reuse them; a cache file made for other choices is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import __version__
from ..data import Dataset
from ..models import ArchSpec, LayerSpec, create_model
from ..models.families import get_family
from ..nn import LAB, BinaryConv2d, binarize_weight, centre_crop, get_binarizer
from ..train import TrainingFailed, chance_floor, evaluate, recalibrate_batchnorm, train_model
from .estimator import AccuracyEstimate, EstimatorError, ProgressFn
from .settings import ProxySettings
from .registry import register_estimator

__all__ = ["LayerChoices", "SuperBinaryConv2d", "Supernet", "SupernetEstimator", "load_supernet", "save_supernet"]


@dataclass(frozen=True)
class LayerChoices:
    """What each binary layer of a space may take.

    Attributes:
        binarizers: binarizer names every layer may take (``sign`` = the family's own).
        lab_kernels: LAB depthwise kernels (only used where a layer takes ``lab``).
        kernels: per layer, the binary-conv kernels it may take (one tuple per layer, in slot order).
    """

    binarizers: tuple[str, ...]
    lab_kernels: tuple[int, ...]
    kernels: tuple[tuple[int, ...], ...]

    @classmethod
    def uniform(cls, n_layers: int, binarizers, lab_kernels, kernels) -> "LayerChoices":
        return cls(tuple(binarizers), tuple(lab_kernels), tuple(tuple(kernels) for _ in range(n_layers)))

    def key(self) -> str:
        """A stable hash of the choices (what a cached supernet must match)."""
        text = json.dumps([list(self.binarizers), list(self.lab_kernels), [list(k) for k in self.kernels]])
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    def sample(self, rng: np.random.Generator) -> list[LayerSpec]:
        """One uniformly random choice per layer (the LAB kernel only matters on LAB layers)."""
        layers = []
        for kernels in self.kernels:
            binarizer = self.binarizers[rng.integers(len(self.binarizers))]
            lab_kernel = self.lab_kernels[rng.integers(len(self.lab_kernels))]
            layers.append(LayerSpec(binarizer=binarizer, lab_kernel=int(lab_kernel), kernel=int(kernels[rng.integers(len(kernels))])))
        return layers

    def check(self, layers: list[LayerSpec]) -> None:
        """Raise :class:`EstimatorError` when ``layers`` takes a choice the supernet was not trained on."""
        if len(layers) != len(self.kernels):
            raise EstimatorError(f"the supernet has {len(self.kernels)} binary layers, the candidate {len(layers)}")
        for i, (layer, kernels) in enumerate(zip(layers, self.kernels)):
            if layer.binarizer not in self.binarizers or layer.kernel not in kernels or (
                layer.binarizer == "lab" and layer.lab_kernel not in self.lab_kernels
            ):
                raise EstimatorError(f"layer {i} ({layer}) is outside the supernet's choices; retrain it for this space")


class SuperBinaryConv2d(nn.Module):
    """A binary convolution holding every choice of its layer; ``active`` (a LayerSpec) selects one.

    With ``active`` set, the forward pass equals a :class:`BinaryConv2d` built for that choice whose
    weight is the centre crop of ``weight`` and whose binarizer holds the shared binarizer weights.
    """

    def __init__(self, base: BinaryConv2d, binarizers: dict[str, nn.Module], lab: LAB | None, same_padding: bool):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = base.in_channels, base.out_channels, base.stride
        self.weight_scale, self.pad_value, self.same_padding = base.weight_scale, base.pad_value, same_padding
        self.weight = base.weight
        self.binarizers = nn.ModuleDict(binarizers)
        self.lab = lab
        self.active = LayerSpec(kernel=base.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.active
        if layer.binarizer == "lab":
            xb = self.lab.cropped_forward(x, layer.lab_kernel)
        else:
            xb = self.binarizers[layer.binarizer](x)
        k = layer.kernel
        padding = k // 2 if self.same_padding else 0
        if padding:
            xb = F.pad(xb, [padding] * 4, value=self.pad_value)
        return F.conv2d(xb, binarize_weight(centre_crop(self.weight, k), self.weight_scale), stride=self.stride)


class Supernet(nn.Module):
    """The family's network with a :class:`SuperBinaryConv2d` in every binary slot.

    Arguments:
        family: a family name.
        choices: the per-layer choices.
        width_mult, in_channels, num_classes, stem, lab_pairing: as in :class:`ArchSpec`.
    """

    def __init__(self, family: str, choices: LayerChoices, width_mult: float, in_channels: int, num_classes: int,
                 stem: str = "small", lab_pairing: str = "official"):
        super().__init__()
        fam = get_family(family)
        if len(choices.kernels) != len(fam.slots):
            raise EstimatorError(f"{family} has {len(fam.slots)} binary layers, the choices list {len(choices.kernels)}")
        self.family, self.choices = family, choices
        self.arch = dict(width_mult=width_mult, in_channels=in_channels, num_classes=num_classes, stem=stem, lab_pairing=lab_pairing)
        largest = [LayerSpec("sign", kernel=max(k)) for k in choices.kernels]
        self.net = create_model(ArchSpec(family, largest, **self.arch))
        self.slot_paths: list[str] = []
        for i, (path, conv) in enumerate(self._binary_convs(self.net)):
            binarizers = {}
            for name in choices.binarizers:
                if name == "lab":
                    continue
                own = fam.sign if name == "sign" else name
                kwargs = dict(fam.sign_kwargs) if own == fam.sign else {}
                binarizers[name] = conv.binarizer if name == "sign" else get_binarizer(own, conv.in_channels, **kwargs)
            lab = LAB(conv.in_channels, max(choices.lab_kernels), lab_pairing) if "lab" in choices.binarizers else None
            super_conv = SuperBinaryConv2d(conv, binarizers, lab, fam.slots[i].same_padding)
            parent, _, attr = path.rpartition(".")
            setattr(self.net.get_submodule(parent) if parent else self.net, attr, super_conv)
            self.slot_paths.append(path)

    @staticmethod
    def _binary_convs(model: nn.Module) -> list[tuple[str, BinaryConv2d]]:
        return [(n, m) for n, m in model.named_modules() if isinstance(m, BinaryConv2d)]

    def super_convs(self) -> list[SuperBinaryConv2d]:
        return [self.net.get_submodule(p) for p in self.slot_paths]

    def set_active(self, layers: list[LayerSpec]) -> None:
        """Select one sub-network (validated against the choices)."""
        self.choices.check(layers)
        for conv, layer in zip(self.super_convs(), layers):
            conv.active = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def extract(self, layers: list[LayerSpec]) -> nn.Module:
        """A standalone network (``create_model``) for ``layers`` carrying the inherited weights."""
        self.choices.check(layers)
        model = create_model(ArchSpec(self.family, list(layers), **self.arch))
        mine = self.net.state_dict()
        state = {}
        convs = dict(zip(self.slot_paths, zip(self.super_convs(), layers)))
        for name, tensor in model.state_dict().items():
            path = next((p for p in self.slot_paths if name.startswith(p + ".")), None)
            if path is None:
                state[name] = mine[name]
                continue
            conv, layer = convs[path]
            rest = name[len(path) + 1 :]
            if rest == "weight":
                state[name] = centre_crop(conv.weight, layer.kernel).detach().clone()
            elif layer.binarizer == "lab":
                source = conv.lab.state_dict()[rest.removeprefix("binarizer.")]
                state[name] = centre_crop(source, layer.lab_kernel).clone() if rest.endswith("dw.weight") else source.clone()
            else:
                state[name] = conv.binarizers[layer.binarizer].state_dict()[rest.removeprefix("binarizer.")].clone()
        model.load_state_dict(state)
        return model

    def recalibrate_bn(self, x: np.ndarray, batch_size: int = 256) -> None:
        """Re-estimate every BatchNorm's statistics for the active sub-network from images ``x``, then eval mode."""
        recalibrate_batchnorm(self, x, batch_size=batch_size)
        self.eval()


def save_supernet(net: Supernet, path: Path, key: str) -> None:
    """Write the weights with the cache key they were trained for (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"key": key, "choices": net.choices.key(), "state_dict": net.state_dict()}, tmp)
    os.replace(tmp, path)


def load_supernet(net: Supernet, path: Path, key: str) -> None:
    """Load cached weights into ``net``; a file made for other choices or settings is refused."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if blob.get("choices") != net.choices.key() or blob.get("key") != key:
        raise EstimatorError(f"supernet cache {path} was trained for another space or settings; delete it or pick another {{opt:cache_dir}}")
    net.load_state_dict(blob["state_dict"])


def default_cache_dir() -> Path:
    from .._cache import cache_dir

    return cache_dir() / "supernets"


class SupernetEstimator:
    """Accuracy = test accuracy of the candidate's sub-network of a trained supernet, after BatchNorm
    recalibration; the mean over ``settings.seeds`` supernets (seeds ``seed, seed + 1, ...``)."""

    name = "supernet"

    def __init__(self, family: str, settings: ProxySettings, data: Dataset, choices: LayerChoices,
                 device: str = "cpu", cache_dir: str | Path | None = None, lab_pairing: str = "official"):
        self.family, self.settings, self.data, self.choices = family, settings, data, choices
        self.device, self.lab_pairing = device, lab_pairing
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self._nets: dict[int, Supernet] = {}

    def describe(self) -> str:
        s, h = self.settings, self.data.shape[1]
        return (f"supernet (weight sharing): {self.data.name} {h}x{h}, width x{s.width_mult:g}, supernet trained "
                f"{s.epochs} epochs, BN recalibrated on {s.recalib_images} images, mean of {s.seeds} supernet(s)")

    def cache_key(self, seed: int) -> str:
        s = self.settings.to_dict()
        s.pop("seeds"), s.pop("recalib_images"), s.pop("precise_bn_images")
        text = json.dumps([self.family, self.choices.key(), s, self.data.name, list(self.data.shape), seed,
                           self.lab_pairing, __version__], sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def cache_path(self, seed: int) -> Path:
        return self.cache_dir / f"{self.family}-{self.choices.key()}-{self.cache_key(seed)}.pt"

    def new_supernet(self) -> Supernet:
        return Supernet(self.family, self.choices, self.settings.width_mult, self.data.shape[0], self.data.num_classes,
                        "small", self.lab_pairing)

    def supernet(self, seed: int, progress: ProgressFn | None = None) -> Supernet:
        """The trained supernet of ``seed``: from memory, from the cache, or trained now (and cached)."""
        if seed in self._nets:
            return self._nets[seed]
        torch.manual_seed(seed)
        net = self.new_supernet()
        path, key = self.cache_path(seed), self.cache_key(seed)
        if path.exists():
            load_supernet(net, path, key)
        else:
            s = self.settings
            config = s.train_config(seed, self.device, precise_bn=False)
            report = (lambda epoch, loss: progress("supernet", epoch, s.epochs)) if progress else None
            # a supernet at 28x28 trains for CPU hours: checkpointed every epoch, resumed after an interruption
            partial = path.with_name(path.name + ".partial")
            path.parent.mkdir(parents=True, exist_ok=True)
            train_model(net.to(self.device), self.data, config, report,
                        before_step=lambda rng: net.set_active(self.choices.sample(rng)), checkpoint=partial)
            save_supernet(net.cpu(), path, key)
            partial.unlink(missing_ok=True)
        self._nets[seed] = net
        return net

    def estimate(self, layers: list[LayerSpec], seed: int = 0, progress: ProgressFn | None = None) -> AccuracyEstimate:
        start = time.perf_counter()
        self.choices.check(layers)
        runs = []
        rng = np.random.default_rng(seed)
        for k in range(self.settings.seeds):
            net = self.supernet(seed + k, progress)
            net.set_active(layers)
            n = min(self.settings.recalib_images, len(self.data.x_train))
            net.recalibrate_bn(self.data.x_train[rng.choice(len(self.data.x_train), n, replace=False)])
            runs.append(evaluate(net, self.data.x_test, self.data.y_test))
        acc = float(np.mean(runs))
        floor = chance_floor(self.data.num_classes)
        if acc < floor:
            raise TrainingFailed("chance", f"sub-network accuracy {acc:.3f} is below twice chance ({floor:.2f})")
        return AccuracyEstimate(acc, runs, self.name, float(self.settings.epochs), time.perf_counter() - start,
                                {"supernets": [str(self.cache_path(seed + k)) for k in range(len(runs))],
                                 "basis": self.describe()})


@register_estimator("supernet", "one weight-sharing supernet, candidates scored with inherited weights",
                    "proxy accuracy (weight-sharing supernet)")
def _build_supernet(family, settings, data, choices, device, cache_dir) -> SupernetEstimator:
    if choices is None:
        raise EstimatorError("the supernet estimator needs the space's per-layer choices")
    return SupernetEstimator(family, settings, data, choices, device=device, cache_dir=cache_dir)
