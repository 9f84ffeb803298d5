"""Search spaces: TOML files naming a family, the per-layer choices, the deployment shape and the proxy.

A space file::

    [space]
    name = "labbnn"
    family = "labbnn"
    description = "..."
    objectives = "accuracy"   # default --objectives: accuracy | accuracy,latency | accuracy,latency,ops

    [deploy]            # what latency and OPs are measured at
    input = [3, 224, 224]
    num_classes = 1000
    width_mult = 1.0

    [choices]           # per binary layer
    binarizer = ["sign", "lab"]
    lab_kernel = [3, 5]
    kernel = [3]        # binary conv kernels; a layer only offers those its slot allows
    layers = []         # optional: indices of the searched layers (default: all); others keep the defaults

    [proxy]             # the accuracy estimator (labnas.accuracy.ProxySettings documents every key)
    estimator = "trained"   # trained | supernet | published
    dataset = "digits"
    resolution = 0      # 0: the dataset's own size
    width_mult = 0.25
    epochs = 2
    batch_size = 64
    subset = 0          # 0: every training image
    lr = 0.0025
    schedule = "linear"
    seeds = 1
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ._errors import LabnasError
from .accuracy import EstimatorError, ProxySettings
from .accuracy.supernet import LayerChoices
from .data import DATASETS
from .models import FAMILIES, ArchSpec, LayerSpec, default_spec
from .nn import BINARIZERS

__all__ = ["SearchSpace", "SpaceError", "load_space", "space_paths", "SPACE_DIRS"]

def _installed_spaces() -> Path:
    """The default spaces shipped with labnas (the top-level ``search_spaces/``, installed as ``labnas.search_spaces``)."""
    import importlib.util

    try:  # a namespace package (TOML files only): its one search location is the folder
        spec = importlib.util.find_spec("labnas.search_spaces")
    except ModuleNotFoundError:  # pragma: no cover
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(__file__).resolve().parents[1] / "search_spaces"  # pragma: no cover - a source tree never installed


#: Where ``--space NAME`` is looked up: ./search_spaces, then the spaces installed with labnas.
SPACE_DIRS = (Path("search_spaces"), _installed_spaces())


#: What a search can optimise (``--objectives``); the first is always maximised accuracy.
OBJECTIVE_SETS = ("accuracy", "accuracy,latency", "accuracy,latency,ops")

#: How a search may stop trained-proxy runs early (``--pruner``): Hyperband or successive halving on epochs, or the
#: median rule; single-objective studies only.
PRUNERS = ("none", "hyperband", "sha", "median")


class SpaceError(LabnasError, ValueError):
    """A space file that cannot be used; the message names the file, the key and the problem."""


@dataclass
class SearchSpace:
    name: str
    family: str
    description: str
    deploy_input: tuple[int, int, int]
    deploy_classes: int
    deploy_width: float
    binarizers: list[str]
    lab_kernels: list[int]
    kernels: list[int]
    layers: list[int]
    proxy: ProxySettings
    path: str = ""
    objectives: str = "accuracy"

    def layer_kernels(self, index: int) -> list[int]:
        """The binary-conv kernels layer ``index`` may take: the space's choices its slot allows."""
        slot = FAMILIES[self.family].slots[index]
        allowed = [k for k in self.kernels if k in slot.kernels]
        return allowed or [slot.kernel]

    def deploy_spec(self, layers: list[LayerSpec]) -> ArchSpec:
        c, h, _ = self.deploy_input
        return ArchSpec(
            self.family,
            layers,
            width_mult=self.deploy_width,
            in_channels=c,
            num_classes=self.deploy_classes,
            stem="imagenet" if h >= 100 else "small",
        )

    def layer_choices(self) -> LayerChoices:
        """Every binary layer's choices (unsearched layers keep their one default), for the supernet."""
        defaults = self.default_layers()
        kernels = tuple(tuple(self.layer_kernels(i)) if i in self.layers else (defaults[i].kernel,) for i in range(len(defaults)))
        return LayerChoices(tuple(self.binarizers), tuple(self.lab_kernels), kernels)

    def default_layers(self) -> list[LayerSpec]:
        return default_spec(self.family, "sign").layers

    def layer_options(self, index: int) -> list[LayerSpec]:
        """Every distinct choice of searched layer ``index`` (a LAB kernel only on LAB layers)."""
        options = []
        for binarizer in self.binarizers:
            for lab_kernel in (self.lab_kernels if binarizer == "lab" else [3]):
                options += [LayerSpec(binarizer=binarizer, lab_kernel=lab_kernel, kernel=k) for k in self.layer_kernels(index)]
        return options

    def size(self) -> int:
        """How many distinct architectures the space holds (the product of every searched layer's options)."""
        n = 1
        for i in self.layers:
            n *= len(self.layer_options(i))
        return n

    def random_distinct(self, rng, count: int, exclude: set[str] = frozenset()):
        """Yield ``count`` distinct random candidates (:meth:`random_layers`), none whose key (a canonical string of
        the choices) is in ``exclude``; fewer when the space holds fewer."""
        seen, limit = set(exclude), min(count, self.size())
        produced = 0
        while produced < limit:
            layers = self.random_layers(rng)
            key = repr([(l.binarizer, l.lab_kernel if l.binarizer == "lab" else 0, l.kernel) for l in layers])
            if key in seen:
                continue
            seen.add(key)
            produced += 1
            yield layers

    def random_layers(self, rng) -> list[LayerSpec]:
        """One candidate drawn uniformly: every searched layer's binarizer, LAB kernel (on LAB layers) and conv
        kernel; other layers keep their defaults. ``rng`` is a :class:`random.Random` (seeded by the caller)."""
        layers = self.default_layers()
        for i in self.layers:
            binarizer = rng.choice(self.binarizers)
            layers[i] = LayerSpec(binarizer=binarizer, lab_kernel=rng.choice(self.lab_kernels) if binarizer == "lab" else 3,
                                  kernel=rng.choice(self.layer_kernels(i)))
        return layers


def space_paths() -> dict[str, Path]:
    """Every space file that ``--space NAME`` can find, by name."""
    found: dict[str, Path] = {}
    for directory in reversed(SPACE_DIRS):
        if directory.is_dir():
            found.update({p.stem: p for p in sorted(directory.glob("*.toml"))})
    return found


def _get(table: dict, key: str, kind, where: str, default=None):
    if key not in table:
        if default is not None:
            return default
        raise SpaceError(f"{where}: missing key '{key}'")
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise SpaceError(f"{where}.{key}: expected {kind.__name__}, got {value!r}")
    return value


def _int_list(table: dict, key: str, where: str, allowed: tuple[int, ...], default: list[int] | None = None) -> list[int]:
    values = _get(table, key, list, where, default)
    if not values and default is None:
        raise SpaceError(f"{where}.{key}: must list at least one value")
    for v in values:
        if not isinstance(v, int) or v not in allowed:
            raise SpaceError(f"{where}.{key}: {v!r} is not one of {list(allowed)}")
    return list(values)


def load_space(name_or_path: str) -> SearchSpace:
    """Load and validate a space by name (see :data:`SPACE_DIRS`) or by path to a TOML file."""
    path = Path(name_or_path)
    if not (path.suffix == ".toml" and path.is_file()):
        known = space_paths()
        if name_or_path not in known:
            raise SpaceError(f"unknown search space {name_or_path!r}; choose one of {', '.join(known) or '(none found)'} or give a .toml path")
        path = known[name_or_path]
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise SpaceError(f"{path}: malformed TOML: {err}") from None
    f = str(path)
    for section in ("space", "deploy", "choices", "proxy"):
        if not isinstance(data.get(section), dict):
            raise SpaceError(f"{f}: missing section [{section}]")
    space, deploy, choices, proxy = data["space"], data["deploy"], data["choices"], data["proxy"]
    family = _get(space, "family", str, f"{f} [space]")
    if family not in FAMILIES:
        raise SpaceError(f"{f} [space].family: unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    n_layers = len(FAMILIES[family].slots)
    shape = _get(deploy, "input", list, f"{f} [deploy]")
    if len(shape) != 3 or not all(isinstance(v, int) and v > 0 for v in shape):
        raise SpaceError(f"{f} [deploy].input: expected [C, H, W] of positive integers, got {shape!r}")
    binarizers = _get(choices, "binarizer", list, f"{f} [choices]")
    known_bins = {"sign", *BINARIZERS}  # "sign" = the family's own sign binarizer
    if not binarizers or any(b not in known_bins for b in binarizers):
        raise SpaceError(f"{f} [choices].binarizer: {binarizers!r} must be a non-empty list from {sorted(known_bins)}")
    layers = _int_list(choices, "layers", f"{f} [choices]", tuple(range(n_layers)), default=list(range(n_layers)))
    try:
        settings = ProxySettings.from_table(proxy, f"{f} [proxy]")
    except EstimatorError as err:
        raise SpaceError(str(err)) from None
    if settings.dataset not in DATASETS:
        raise SpaceError(f"{f} [proxy].dataset: unknown dataset {settings.dataset!r}; choose one of {', '.join(DATASETS)}")
    result = SearchSpace(
        name=_get(space, "name", str, f"{f} [space]", path.stem),
        family=family,
        description=_get(space, "description", str, f"{f} [space]", ""),
        deploy_input=tuple(shape),  # type: ignore[arg-type]
        deploy_classes=_get(deploy, "num_classes", int, f"{f} [deploy]", 1000),
        deploy_width=_get(deploy, "width_mult", float, f"{f} [deploy]", 1.0),
        binarizers=list(binarizers),
        lab_kernels=_int_list(choices, "lab_kernel", f"{f} [choices]", (1, 3, 5, 7), default=[3]),
        kernels=_int_list(choices, "kernel", f"{f} [choices]", (1, 3, 5, 6, 7), default=[3]),
        layers=layers,
        proxy=settings,
        objectives=_get(space, "objectives", str, f"{f} [space]", "accuracy"),
        path=f,
    )
    if result.objectives not in OBJECTIVE_SETS:
        raise SpaceError(f"{f} [space].objectives: {result.objectives!r} is not one of {', '.join(OBJECTIVE_SETS)}")
    if not 0 < result.deploy_width <= 4:
        raise SpaceError(f"{f}: width_mult must be in (0, 4]")
    return result
