"""Block-level latency tables: built by timing each unique block of a search space on the target.

A table is one CSV, ``results/lut/<target>/<space>.csv``: ``#``-prefixed header lines carry what it is
valid for (space and a hash of its deploy/choice sections, target, labnas version, a hash of the
kernel code, the device facts, the reference calibration, the fit), then one row per block entry. A
table that does not match the space, target, labnas version or kernels it is used with is refused,
with the command that rebuilds it.

On this machine every block is timed paired with the reference workload (:mod:`labnas.timing.paired`):
its entry is the drift-corrected figure, ``paired_ratio x reference calibration``, so a table built
while the host ran slow holds the same numbers as one built on a quiet host. The calibration is
stored in the table; used under another calibration of the same machine the table is rescaled
explicitly (:meth:`LatencyTable.rescaled_to`). On a board (RPC) blocks are timed plainly.

Prediction is ``scale x (sum of the network's block entries) + overhead``. A block timed alone is not
the same block inside a network (its weights stay in cache between runs; the VM enters once per
network, not per block), and the difference grows with the network. ``scale`` and ``overhead`` are
fitted by least squares to whole calibration networks timed end to end: the space's all-sign and
all-LAB networks and a few seeded random candidates.
"""

from __future__ import annotations

import ast
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd
from torch import nn

from .._errors import LabnasError
from .. import __version__
from ..models import ArchSpec, LayerSpec, create_model
from .blocks import BlockUnit, block_units

__all__ = ["LatencyTable", "TableError", "build_table", "space_fingerprint", "kernels_fingerprint", "table_path", "LUT_ROOT"]

LUT_ROOT = Path("results/lut")
#: bumped when the CSV layout or the way entries are timed changes
FORMAT = 2
#: Random candidates timed end to end, besides all-sign and all-LAB, to fit the prediction's scale and overhead.
FIT_NETWORKS = 6
#: A fitted scale outside this range means the calibration networks were too alike (or too noisy) to fit one;
#: the table then keeps scale 1 and the mean difference as its overhead.
SCALE_RANGE = (0.7, 1.4)


class TableError(LabnasError, ValueError):
    """A table that is missing, malformed, or built for something else; the message says how to rebuild it."""


def table_path(space_name: str, target_name: str, root: Path | str = LUT_ROOT) -> Path:
    return Path(root) / target_name / f"{space_name}.csv"


def rebuild_hint(space_name: str, target_name: str) -> str:
    return f"rebuild it with 'labnas profile --space {space_name} --target {target_name} --lut'"


def space_fingerprint(space) -> str:
    """What of a space decides its blocks: family, deploy shape/width/classes and the choices."""
    fields = [space.family, list(space.deploy_input), space.deploy_width, space.deploy_classes,
              space.binarizers, space.lab_kernels, space.kernels, space.layers]
    return hashlib.sha1(json.dumps(fields).encode()).hexdigest()[:12]


#: The modules that decide what a block compiles to; a change to any of them makes old tables stale.
CODEGEN_MODULES = ("carry_save.py", "compute.py", "fold.py", "schedules.py", "lowering.py", "policy.py", "packed.py",
                   "pooling.py", "registry.py", "schedule_float.py", "targets.py")


def _code_without_docs(source: str) -> str:
    """The module's syntax tree without docstrings (comments never reach it): what the code does."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def kernels_fingerprint() -> str:
    """A hash of the code that decides what a block compiles to (the TVM lowering and kernels).

    Docstrings and comments are left out, so documenting a kernel does not retire the tables built with it.
    """
    tvm_dir = Path(__file__).resolve().parents[1] / "tvm"
    digest = hashlib.sha1()
    for name in CODEGEN_MODULES:
        digest.update(_code_without_docs((tvm_dir / name).read_text()).encode())
    return digest.hexdigest()[:12]


@dataclass
class LatencyTable:
    """Entries (block key -> median ms) and what they were measured on."""

    entries: dict[str, float]
    meta: dict[str, Any]
    rows: pd.DataFrame = field(default_factory=pd.DataFrame)

    # -- prediction ---------------------------------------------------------------------------
    def block_sum(self, units: list[BlockUnit]) -> float:
        missing = [u for u in units if u.key not in self.entries]
        if missing:
            raise TableError(
                f"the latency table of space {self.meta.get('space')!r} has no entry for block {missing[0].index} "
                f"({missing[0].summary}); {rebuild_hint(self.meta.get('space', 'SPACE'), self.meta.get('target', 'TARGET'))}"
            )
        return sum(self.entries[u.key] for u in units)

    def predict_units(self, units: list[BlockUnit]) -> float:
        """``scale x block sum + overhead`` (ms) for a network given as its compile units."""
        return float(self.meta.get("scale", 1.0)) * self.block_sum(units) + float(self.meta["overhead_ms"])

    def predict(self, spec: ArchSpec, input_shape: tuple[int, ...]) -> float:
        """Predicted latency (ms) of the network ``spec`` describes at ``input_shape`` (with batch)."""
        return self.predict_units(block_units(create_model(spec).eval(), input_shape))

    def rescaled_to(self, calibration: dict | None) -> "LatencyTable":
        """This table in the scale of ``calibration`` (``{"key", "ms"}`` as a study stores it).

        Entries are paired ratios times the table's reference calibration, so under another calibration of the
        same machine (same key: CPU, ISA, target, threads, versions) they are multiplied by ``ms now / ms built``
        and the table says so (``meta["rescaled_from_ms"]``). A calibration with another key belongs to another
        CPU or thread count: refused, with the command that rebuilds the table there. A table timed plainly (a
        board) or a missing calibration leaves the table as it is.
        """
        built = self.meta.get("reference_calibration")
        if not calibration or not built:
            return self
        if calibration.get("key") != built.get("key"):
            raise TableError(
                f"the latency table of space {self.meta.get('space')!r} was timed under reference calibration "
                f"{built.get('key')!r}, this search times under {calibration.get('key')!r} (another CPU, thread count or "
                f"version); {rebuild_hint(self.meta.get('space', 'SPACE'), self.meta.get('target', 'TARGET'))} with the same {{opt:threads}}"
            )
        factor = float(calibration["ms"]) / float(built["ms"])
        if abs(factor - 1) < 1e-9:
            return self
        meta = {**self.meta, "reference_calibration": dict(calibration), "rescaled_from_ms": built["ms"],
                "overhead_ms": float(self.meta["overhead_ms"]) * factor}
        return LatencyTable({k: v * factor for k, v in self.entries.items()}, meta, self.rows)

    # -- storage -------------------------------------------------------------------------------
    def save(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = "".join(f"# {k}: {json.dumps(v)}\n" for k, v in self.meta.items())
        path.write_text(header + self.rows.to_csv(index=False))
        return path

    @classmethod
    def load(cls, path: Path | str, space=None, target_name: str | None = None) -> "LatencyTable":
        """Read a table; with ``space`` / ``target_name``, refuse one built for something else."""
        path = Path(path)
        space_name = getattr(space, "name", None) or path.stem
        target_label = target_name or path.parent.name
        if not path.is_file():
            raise TableError(f"no latency table at {path}; {rebuild_hint(space_name, target_label)}")
        meta: dict[str, Any] = {}
        try:
            with path.open() as fh:
                for line in fh:
                    if not line.startswith("# "):
                        break
                    key, _, value = line[2:].partition(": ")
                    meta[key] = json.loads(value)
            rows = pd.read_csv(path, comment="#")
            entries = dict(zip(rows["key"].astype(str), rows["median_ms"].astype(float)))
        except (ValueError, KeyError, json.JSONDecodeError) as err:
            raise TableError(f"{path} is not a labnas latency table ({err}); {rebuild_hint(space_name, target_label)}") from None
        table = cls(entries, meta, rows)
        expected = {"format": FORMAT, "labnas_version": __version__, "kernels": kernels_fingerprint()}
        if space is not None:
            expected.update(space=space.name, space_fingerprint=space_fingerprint(space))
        if target_name is not None:
            expected["target"] = target_name
        for key, want in expected.items():
            if meta.get(key) != want:
                raise TableError(
                    f"{path} was built for {key} {meta.get(key)!r}, not {want!r}; {rebuild_hint(space_name, target_label)}"
                )
        _warn_if_other_cpu(path, meta, space_name, target_label)
        return table


def _warn_if_other_cpu(path: Path, meta: dict, space_name: str, target_label: str) -> None:
    """A local table timed on another CPU model predicts that CPU, not this one: say so (once, on stderr)."""
    import sys

    from ..timing import local_device_info

    built = (meta.get("device") or {})
    if built.get("remote") or not built.get("cpu"):
        return
    here = local_device_info()
    same = built.get("cpu") == here.get("cpu") and built.get("machine") == here.get("machine") and built.get("isa") == here.get("isa")
    if not same:
        was = f"{built.get('cpu')} ({'+'.join(built['isa']) if 'isa' in built else 'ISA not recorded'})"
        now = f"{here.get('cpu')} ({'+'.join(here['isa'])})"
        print(f"warning: {path} was timed on {was}, this machine is {now}: its predictions are that CPU's; "
              f"{rebuild_hint(space_name, target_label)}", file=sys.stderr)


# -- building ---------------------------------------------------------------------------------------
def space_units(space, fit_networks: int = FIT_NETWORKS, seed: int = 0) -> tuple[dict[str, BlockUnit], list[list[BlockUnit]]]:
    """Every unique block of ``space`` (one per key) and the block lists of its calibration networks: all-sign,
    all-LAB, then ``fit_networks`` random candidates (:func:`calibration_layers`)."""
    shape = (1, *space.deploy_input)
    unique: dict[str, BlockUnit] = {}
    options = []
    for binarizer in space.binarizers:
        for lab_kernel in space.lab_kernels if binarizer == "lab" else [3]:
            options.append((binarizer, lab_kernel))
    # One network per (binarizer, LAB kernel, conv kernel) choice holds every layer's version of it;
    # a layer whose slot lacks the kernel keeps its default, as sample_layers does.
    for binarizer, lab_kernel in options:
        for kernel in space.kernels:
            layers = space.default_layers()
            for i in space.layers:
                k = kernel if kernel in space.layer_kernels(i) else space.layer_kernels(i)[0]
                layers[i] = LayerSpec(binarizer=binarizer, lab_kernel=lab_kernel, kernel=k)
            for unit in block_units(create_model(space.deploy_spec(layers)).eval(), shape):
                unique.setdefault(unit.key, unit)
    calibration = [block_units(create_model(space.deploy_spec(layers)).eval(), shape)
                   for layers in calibration_layers(space, fit_networks, seed)]
    return unique, calibration


def calibration_layers(space, fit_networks: int = FIT_NETWORKS, seed: int = 0) -> list[list[LayerSpec]]:
    """The layer choices of the calibration networks: all-sign, all-LAB (first LAB kernel, default conv kernels),
    then ``fit_networks`` random candidates drawn with a fixed seed."""
    import random

    networks = []
    for binarizer in dict.fromkeys([space.binarizers[0], space.binarizers[-1]]):
        layers = space.default_layers()
        for i in space.layers:
            layers[i] = LayerSpec(binarizer=binarizer, lab_kernel=space.lab_kernels[0], kernel=space.layer_kernels(i)[0])
        networks.append(layers)
    rng = random.Random(f"latency-table-{seed}")
    networks += [space.random_layers(rng) for _ in range(fit_networks)]
    return networks


def fit_scale_overhead(block_sums: list[float], measured: list[float]) -> tuple[float, float]:
    """``(scale, overhead_ms)`` of ``measured ~ scale x block_sum + overhead`` by least squares over the calibration
    networks; scale 1 and the mean difference when there are fewer than 3 networks, their block sums are too alike
    to fit a slope, or the slope falls outside :data:`SCALE_RANGE`."""
    import numpy as np

    x, y = np.asarray(block_sums, float), np.asarray(measured, float)
    plain = (1.0, float(np.mean(y - x)))
    if len(x) < 3 or np.ptp(x) < 0.05 * np.mean(x):
        return plain
    scale, overhead = np.polyfit(x, y, 1)
    if not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
        return plain
    return float(scale), float(overhead)


def build_table(
    space,
    target,
    remote=None,
    threads: int | None = None,
    number: int = 10,
    repeat: int = 7,
    progress: Callable[[str, int, int], None] | None = None,
    recalibrate: bool = False,
    fit_networks: int = FIT_NETWORKS,
    timings: int = 3,
) -> LatencyTable:
    """Compile and time every unique block of ``space`` on ``target``, then the calibration networks, and fit the
    prediction's scale and overhead to them.

    ``target`` is a :class:`~labnas.tvm.TargetPreset`; ``remote`` a :class:`~labnas.timing.RemoteSpec` for a
    board. On this machine each timing is paired with the reference workload (``recalibrate``: its quiet time is
    measured again first). Everything is compiled first, then timed in ``timings`` passes and the lowest figure
    kept. ``progress(what, done, total)`` is called after each compile and each timing.
    """
    from ..timing import exclusive_timing, reference_for, shared_training
    from ..timing.measure import measure_in_passes
    from ..tvm.compile_pool import compile_many

    unique, calibration = space_units(space, fit_networks)
    modules = [(unit.summary, unit.module.eval(), unit.input_shape) for unit in unique.values()]
    modules += [(f"calibration network {i + 1}", nn.Sequential(*(u.module for u in units)).eval(), units[0].input_shape)
                for i, units in enumerate(calibration)]
    passes = max(1, timings)
    total = len(modules) * (1 + passes)
    started = time.time()
    reference = reference_for(target, threads, remote, recalibrate)
    # compiled side by side on this machine's cores when the target runs here (labnas.tvm.compile_pool)
    local = remote is None and not target.is_remote_only
    outcomes = compile_many([(module, shape) for _, module, shape in modules], target, threads=threads,
                            compile_lock=shared_training if local else None, timing_lock=exclusive_timing if local else None,
                            progress=(lambda done: progress(f"compiled {done} of {len(modules)} blocks and networks", done, total)) if progress else None)
    compiled = [outcome.compiled for outcome in outcomes]

    def timed(p: int, i: int) -> None:
        if progress:
            progress(f"timing pass {p + 1}/{passes}: {modules[i][0]}", len(modules) * (1 + p) + i + 1, total)

    # the lowest of the passes (see measure_in_passes: disturbances only slow a run down)
    best = [min(results, key=lambda result: result.median_ms) for results in measure_in_passes(
        compiled, passes, timed, remote=remote, number=number, repeat=repeat, threads=threads, reference=reference)]
    rows, entries = [], {}
    for unit, result in zip(unique.values(), best):
        entries[unit.key] = round(result.median_ms, 6)  # what the CSV stores, so a loaded table predicts the same
        row = {"key": unit.key, "block": unit.summary, "median_ms": entries[unit.key],
               "p10_ms": round(result.p10_ms, 6), "p90_ms": round(result.p90_ms, 6)}
        if result.paired:
            row.update(raw_median_ms=round(result.raw_median_ms, 6), paired_ratio=round(result.paired_ratio, 6))
        rows.append(row)
    device = best[0].device
    sums = [sum(entries[u.key] for u in units) for units in calibration]
    measured = [result.median_ms for result in best[len(unique):]]
    scale, overhead = fit_scale_overhead(sums, measured)
    meta = {
        "format": FORMAT, "space": space.name, "space_fingerprint": space_fingerprint(space), "target": target.name,
        "labnas_version": __version__, "kernels": kernels_fingerprint(), "device": device,
        "threads": threads, "number": number, "repeat": repeat, "timings": timings,
        "timing": "paired" if reference is not None else "plain",
        "reference_calibration": reference.record() if reference is not None else None,
        "scale": round(scale, 5), "overhead_ms": round(overhead, 5),
        # whole-network figures the fit used: block sums and end-to-end latencies, ms
        "calibration_block_sums_ms": [round(v, 5) for v in sums], "calibration_measured_ms": [round(v, 5) for v in measured],
        "calibration_differences_ms": [round(m - b, 5) for b, m in zip(sums, measured)],
        "built": time.strftime("%Y-%m-%d %H:%M:%S"), "build_s": round(time.time() - started, 1),
    }
    return LatencyTable(entries, meta, pd.DataFrame(rows))
