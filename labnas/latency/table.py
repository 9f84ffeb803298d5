"""Block-level latency tables: built by timing each unique block of a search space on the target.

A table is one CSV, ``results/lut/<target>/<space>.csv``: ``#``-prefixed header lines carry what it is
valid for (space and a hash of its deploy/choice sections, target, labnas version, a hash of the
kernel code, the device facts, the fixed overhead), then one row per block entry. A table that does
not match the space, target, labnas version or kernels it is used with is refused, with the command
that rebuilds it.

Prediction is ``sum of the network's block entries + overhead``. The overhead is measured, not
guessed: end-to-end latencies of calibration networks (the space's all-sign and all-LAB defaults)
minus their block sums, averaged. It absorbs what a block-by-block run has and a whole run lacks
(per-call VM entry, the input copy), and the reverse.
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

from .. import __version__
from ..models import ArchSpec, LayerSpec, create_model
from .blocks import BlockUnit, block_units

__all__ = ["LatencyTable", "TableError", "build_table", "space_fingerprint", "kernels_fingerprint", "table_path", "LUT_ROOT"]

LUT_ROOT = Path("results/lut")
#: bumped when the CSV layout changes
FORMAT = 1


class TableError(ValueError):
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
CODEGEN_MODULES = ("carry_save.py", "kernels.py", "lowering.py", "packed.py", "pooling.py", "registry.py", "schedule_float.py", "targets.py")


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
        return self.block_sum(units) + float(self.meta["overhead_ms"])

    def predict(self, spec: ArchSpec, input_shape: tuple[int, ...]) -> float:
        """Predicted latency (ms) of the network ``spec`` describes at ``input_shape`` (with batch)."""
        return self.predict_units(block_units(create_model(spec).eval(), input_shape))

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
def space_units(space) -> tuple[dict[str, BlockUnit], list[list[BlockUnit]]]:
    """Every unique block of ``space`` (one per key) and the block lists of its calibration networks."""
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
    calibration = []
    for binarizer in dict.fromkeys([space.binarizers[0], space.binarizers[-1]]):
        layers = space.default_layers()
        for i in space.layers:
            layers[i] = LayerSpec(binarizer=binarizer, lab_kernel=space.lab_kernels[0], kernel=space.layer_kernels(i)[0])
        calibration.append(block_units(create_model(space.deploy_spec(layers)).eval(), shape))
    return unique, calibration


def build_table(
    space,
    target,
    remote=None,
    threads: int | None = None,
    number: int = 10,
    repeat: int = 7,
    progress: Callable[[str, int, int], None] | None = None,
) -> LatencyTable:
    """Compile and time every unique block of ``space`` on ``target``, then the calibration networks.

    ``target`` is a :class:`~labnas.tvm.TargetPreset`; ``remote`` a :class:`~labnas.tvm.RemoteSpec` for
    a board. ``progress(what, done, total)`` is called after each compile-and-time.
    """
    from ..timing import measure
    from ..tvm import compile_model

    unique, calibration = space_units(space)
    total = len(unique) + len(calibration)
    rows, entries, device = [], {}, {}
    started = time.time()
    reference = _reference_timer(target, remote, threads)
    references = [reference.time_ms()] if reference else []

    def timed(module, shape):
        compiled = compile_model(module, shape, target)
        return measure(compiled, remote=remote, number=number, repeat=repeat, threads=threads)

    for done, unit in enumerate(unique.values(), 1):
        result = timed(unit.module.eval(), unit.input_shape)
        device = result.device
        entries[unit.key] = round(result.median_ms, 6)  # what the CSV stores, so a loaded table predicts the same
        rows.append({"key": unit.key, "block": unit.summary, "median_ms": entries[unit.key],
                     "p10_ms": round(result.p10_ms, 6), "p90_ms": round(result.p90_ms, 6)})
        if progress:
            progress(unit.summary, done, total)
    differences = []
    for i, units in enumerate(calibration):
        result = timed(nn.Sequential(*(u.module for u in units)).eval(), units[0].input_shape)
        differences.append(result.median_ms - sum(entries[u.key] for u in units))
        if progress:
            progress(f"calibration network {i + 1}", len(unique) + i + 1, total)
    if reference:
        references.append(reference.time_ms())
    meta = {
        "format": FORMAT, "space": space.name, "space_fingerprint": space_fingerprint(space), "target": target.name,
        "labnas_version": __version__, "kernels": kernels_fingerprint(), "device": device,
        "threads": threads, "number": number, "repeat": repeat,
        "overhead_ms": round(sum(differences) / len(differences), 5), "calibration_differences_ms": [round(d, 5) for d in differences],
        # the drift probe of labnas.timing.reference, timed before and after the build (local targets)
        "reference_ms": [round(r, 5) for r in references],
        "built": time.strftime("%Y-%m-%d %H:%M:%S"), "build_s": round(time.time() - started, 1),
    }
    return LatencyTable(entries, meta, pd.DataFrame(rows))


def _reference_timer(target, remote, threads):
    if remote is not None or target.is_remote_only:
        return None
    from ..timing import ReferenceTimer

    return ReferenceTimer(target, threads)

