"""One search trial: sample a spec, measure its latency on the target, and train it only if it fits.

Order matters: latency first (a compile and a timing, seconds), training last (the expensive part),
so an over-budget candidate costs no training at all. Everything a trial learns is stored on the
trial (user attrs), so results are readable with ``optuna.load_study`` and ``optuna-dashboard``.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

import optuna

from ..accuracy import AccuracyEstimator, validation_of
from ..results import StudySettings
from ..models import LayerSpec, create_model
from ..ops import count_ops
from ..train import TrainingFailed
from ..space import SearchSpace
from ..timing import TimingDisturbed, exclusive_timing, shared_training
from ..timing.remote import RemoteSpec
from ..tvm.targets import TARGETS, TargetPreset
from .record import store
from .side_by_side import SIDE_BY_SIDE_MAX

__all__ = ["SearchConfig", "Objective", "measure_deploy_latency", "sample_layers", "layer_params", "spec_key", "OBJECTIVES", "watch_interrupts"]

#: Set when Ctrl-C arrives during a search. TVM turns a KeyboardInterrupt raised while it compiles or
#: times into a RuntimeError with an empty message; this flag tells the objective it was an interrupt.
INTERRUPTED = threading.Event()


def watch_interrupts():
    """Install the SIGINT handler that sets :data:`INTERRUPTED` before raising KeyboardInterrupt (main thread);
    return the handler it replaced (None off the main thread)."""
    INTERRUPTED.clear()
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        INTERRUPTED.set()
        raise KeyboardInterrupt

    return signal.signal(signal.SIGINT, handler)


def _reraise_interrupt(trial: optuna.Trial, err: BaseException) -> None:
    if INTERRUPTED.is_set() or isinstance(err, KeyboardInterrupt):
        store(trial, stopped_by="interrupted",
              error="interrupted (Ctrl-C): not counted; the resumed search runs this candidate again")
        raise KeyboardInterrupt from err

OBJECTIVES = {
    "accuracy": ("maximize",),
    "accuracy,latency": ("maximize", "minimize"),
    "accuracy,latency,ops": ("maximize", "minimize", "minimize"),
}


@dataclass
class SearchConfig:
    """How a search measures and decides. The target is resolved once, where the search starts (the CLI's
    ``--target`` goes through :func:`labnas.tvm.resolve_target`); everything below uses this object."""

    budget_ms: float
    objectives: str = "accuracy"
    target: TargetPreset = field(default_factory=lambda: TARGETS["host"])
    #: the board over RPC; None times on this machine
    remote: RemoteSpec | None = None
    threads: int | None = None
    seed: int = 0
    device: str = "cpu"
    timing_number: int = 3
    timing_repeat: int = 5
    #: "measure": compile and time every candidate; "simulate": compile it and simulate it on the target's CPU model
    #: (a board target without its board, :mod:`labnas.simulation`); "lut": predict from the space's block latency table
    latency: str = "measure"
    lut_root: str = "results/lut"
    #: A measured latency from this fraction of the budget below it to ``retime_margin_above`` above it is timed
    #: again before the verdict, and the lowest median kept: a verdict should not flip with the host's disturbances.
    retime_margin: float = 0.10
    #: The window reaches further above the budget than below: a host's disturbances mostly slow a run down (runs
    #: of one candidate measured 11-30 % above its lowest figure on a shared VM), rarely speed it up.
    retime_margin_above: float = 0.30
    #: Seconds to wait before each re-timing of a near-budget candidate (one re-timing per pause; the lowest of all
    #: its timings is kept). Disturbances the paired correction misses last seconds; back-to-back re-timings share them.
    retime_pauses_s: tuple[float, ...] = (1.0, 3.0)
    #: Optuna's sampler: "tpe" (``startup_trials`` random trials first) or "nsga2" (``population`` per generation)
    sampler: str = "tpe"
    startup_trials: int = 6
    population: int = 12
    #: early stopping of trained-proxy runs (labnas.space.PRUNERS); "none" trains every run to its last epoch
    pruner: str = "none"
    #: the accuracy estimator ("trained", "supernet", "published"); None: the space's ``[proxy] estimator``
    accuracy: str | None = None
    #: measure the reference workload's quiet time again instead of using the cached calibration
    recalibrate: bool = False
    #: where trained supernets are cached; None: labnas' cache folder (LABNAS_CACHE)
    cache_dir: str | None = None


def simulated_cpu(target, remote=None):
    """The CPU model a simulated search of ``target`` runs on; a SimulationError when the target has none (only
    board targets without their board are simulated: the host and x86 targets are measured here)."""
    from ..latency.source import SimulationError, simulation_model

    cpu = simulation_model(target, remote)
    if cpu is None:
        boards = ", ".join(name for name, t in TARGETS.items() if t.cpu_model)
        raise SimulationError(f"simulated latency needs a board target without a board ({boards}); target "
                                       f"{target.name}{' with a board' if remote else ''} is measured: drop {{opt:latency|--latency simulate}}")
    return cpu


def sample_layers(trial: optuna.Trial, space: SearchSpace) -> list[LayerSpec]:
    """Per-layer choices; the LAB kernel is only sampled where the layer takes LAB (a conditional)."""
    layers = space.default_layers()
    for i in space.layers:
        binarizer = trial.suggest_categorical(f"L{i:02d}_binarizer", space.binarizers)
        lab_kernel = 3
        if binarizer == "lab" and len(space.lab_kernels) > 1:
            lab_kernel = trial.suggest_categorical(f"L{i:02d}_lab_kernel", space.lab_kernels)
        elif binarizer == "lab":
            lab_kernel = space.lab_kernels[0]
        kernels = space.layer_kernels(i)
        kernel = trial.suggest_categorical(f"L{i:02d}_kernel", kernels) if len(kernels) > 1 else kernels[0]
        layers[i] = LayerSpec(binarizer=binarizer, lab_kernel=lab_kernel, kernel=kernel)
    return layers


def layer_params(space: SearchSpace, layers: list[LayerSpec]) -> dict:
    """The Optuna parameters :func:`sample_layers` suggests for ``layers`` (to enqueue a chosen spec as a trial)."""
    params = {}
    for i in space.layers:
        params[f"L{i:02d}_binarizer"] = layers[i].binarizer
        if layers[i].binarizer == "lab" and len(space.lab_kernels) > 1:
            params[f"L{i:02d}_lab_kernel"] = layers[i].lab_kernel
        if len(space.layer_kernels(i)) > 1:
            params[f"L{i:02d}_kernel"] = layers[i].kernel
    return params


def spec_key(layers: list[LayerSpec]) -> str:
    """A canonical string of the architecture choices (LAB kernels only count on LAB layers)."""
    return json.dumps(
        [[l.binarizer, l.lab_kernel if l.binarizer == "lab" else 0, l.kernel] for l in layers], separators=(",", ":")
    )


def reference_workload(space: SearchSpace, stored: dict | None):
    """The reference workload a search of ``space`` times its candidates with: the one its stored calibration
    names (a resumed study keeps its workload and scale; a study that adopted a latency table's calibration takes
    the table's), else the space's all-sign network (:func:`labnas.timing.baseline_workload`), the like-for-like
    reference that follows the host's slowdowns best."""
    from ..timing import baseline_workload, workload_named

    baseline = space.deploy_spec(space.default_layers())
    if stored:
        return workload_named(stored.get("workload"), baseline, space.deploy_input)
    return baseline_workload(baseline, space.deploy_input)


def measure_deploy_latency(model, space: SearchSpace, target, config: SearchConfig, lock=contextlib.nullcontext,
                           reference=None) -> tuple:
    """Compile ``model`` at the space's deploy shape for ``target`` (a TargetPreset) and time it with the
    config's timing settings: (LatencyResult, compile seconds, the compiled network). ``lock()`` is held
    while timing (the network, and any kernel strategy its compile measures); the caller holds the host lock
    shared around the whole unit of work (a trial, a re-timing of the front), compile included. Trials and the
    LUT search's front use it."""
    from ..tvm import compile_model

    start = time.perf_counter()
    compiled = compile_model(model, (1, *space.deploy_input), target, timing_lock=lock, threads=config.threads)
    compile_s = time.perf_counter() - start
    return time_compiled(compiled, config, lock, reference), compile_s, compiled


def time_compiled(compiled, config: SearchConfig, lock=contextlib.nullcontext, reference=None):
    """One timing series of a compiled network with the config's settings, ``lock()`` held meanwhile; paired
    with ``reference`` (a :class:`labnas.timing.CalibratedReference`) when given."""
    from ..timing import measure

    with lock():
        return measure(compiled, remote=config.remote, number=config.timing_number, repeat=config.timing_repeat,
                       threads=config.threads, reference=reference)


def study_settings(space: SearchSpace, config: SearchConfig) -> StudySettings:
    """The typed settings of a search of ``space`` with ``config``, made by this one function: the study stores them and must be resumed
    with them, the objective judges every trial by their :meth:`~labnas.results.StudySettings.verdict`, the results,
    report and plots read them back. The estimator is ``config.accuracy`` (``--accuracy``), else the space's."""
    return StudySettings(space=space.name, family=space.family, budget_ms=float(config.budget_ms), target=config.target.name,
                         objectives=config.objectives, latency=config.latency, accuracy=config.accuracy or space.proxy.estimator)


def near_budget(latency_ms: float, budget_ms: float, margin: float, margin_above: float | None = None) -> bool:
    """Whether a measured latency is close enough to the budget that a disturbance could flip the verdict: from
    ``margin`` x budget below it to ``margin_above`` x budget above it (default: ``margin`` both ways)."""
    above = margin if margin_above is None else margin_above
    if margin <= 0 and above <= 0:
        return False
    return budget_ms * (1 - margin) <= latency_ms <= budget_ms * (1 + above)


def table_in_study_scale(table, study: optuna.Study):
    """The latency table in the study's drift-correction scale: a study without a calibration adopts the table's
    (so the Pareto set, timed end to end later, is corrected to the same scale); a study with one gets the table
    rescaled to it (:meth:`labnas.latency.LatencyTable.rescaled_to`; TableError for another CPU or thread count)."""
    stored = study.user_attrs.get("reference_calibration")
    built = table.meta.get("reference_calibration")
    if stored:
        return table.rescaled_to(stored)
    if built:
        study.set_user_attr("reference_calibration", built)
    return table


class Objective:
    """Callable objective for ``study.optimize``; holds the accuracy estimator, the resolved target and the
    calibrated reference workload of paired timing (identical specs are found in the study itself, so workers
    share that knowledge)."""

    def __init__(self, space: SearchSpace, estimator: AccuracyEstimator, config: SearchConfig, on_phase=None,
                 study: optuna.Study | None = None):
        self.space, self.estimator, self.config = space, estimator, config
        #: the study's typed settings (:func:`study_settings`); their verdict is every trial's feasibility
        self.settings = study_settings(space, config)
        self.on_phase = on_phase or (lambda text: None)  # told "trial N: compile and time", "trial N: train"
        self.directions = OBJECTIVES[config.objectives]
        self.target = config.target
        self._reference = None  # labnas.timing.CalibratedReference, made on first use
        self.table = None
        self._ahead: dict = {}  # spec key -> labnas.tvm.compile_pool.CompileOutcome (compile_ahead)
        #: keep every network this objective timed (trial number -> CompiledModel) for the side-by-side timing of a
        #: front search (labnas.search.side_by_side); off by default: a long search would hold hundreds
        self.keep_compiled = False
        self.compiled_by_trial: dict[int, object] = {}
        self.cpu = None  # the CPU model of a simulated search (labnas.simulation.CpuModel)
        if config.latency == "simulate":
            self.cpu = simulated_cpu(self.target, config.remote)
        if config.latency == "lut":
            from ..latency import load_table

            self.table = load_table(space, self.target.name, config.lut_root)  # TableError says how to build it
            if study is not None:
                self.table = table_in_study_scale(self.table, study)

    def reference(self, study: optuna.Study):
        """The calibrated reference workload (:class:`labnas.timing.CalibratedReference`) for paired timing, on this
        machine or on the board the search times on. The calibration is the study's own (``reference_calibration``)
        once it has one, so a resumed search keeps its scale; else the cached one for this machine or board
        (``--recalibrate``: measured again), which is then stored in the study."""
        from ..timing import reference_for

        if self._reference is None:
            stored = study.user_attrs.get("reference_calibration")
            with self._lock():
                self._reference = reference_for(self.target, self.config.threads, self.config.remote,
                                                recalibrate=self.config.recalibrate, stored=stored,
                                                workload=reference_workload(self.space, stored))
                if self._reference.how != "stored":
                    study.set_user_attr("reference_calibration", self._reference.record())
        return self._reference

    def compile_ahead(self, layer_choices: list[list[LayerSpec]], progress: bool = True) -> int:
        """Compile the deployment networks of trials already planned (a front search's queue) side by side on this
        machine's cores (:mod:`labnas.tvm.compile_pool`); their trials then only time them. Only for latency
        measured on this machine with more than one core; returns how many were compiled. A network that fails
        here is compiled again by its trial, which records the error as a failed trial."""
        from ..tvm.compile_pool import can_compile_in_parallel, compile_many

        if self.config.latency != "measure" or not self._times_here or len(layer_choices) < 2 or not can_compile_in_parallel(self.target):
            return 0
        started = time.perf_counter()
        specs = [self.space.deploy_spec(layers) for layers in layer_choices]
        if progress:
            print(f"compiling the {len(specs)} planned networks on every core", file=sys.stderr, flush=True)
        outcomes = compile_many([(create_model(spec).eval(), (1, *self.space.deploy_input)) for spec in specs], self.target,
                                threads=self.config.threads, keep_going=True, compile_lock=shared_training, timing_lock=exclusive_timing)
        self._ahead = {spec_key(layers): outcome for layers, outcome in zip(layer_choices, outcomes) if outcome.compiled is not None}
        if progress:
            print(f"compiled {len(self._ahead)} of {len(specs)} in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        return len(self._ahead)

    # -- pieces --------------------------------------------------------------------------------
    @property
    def _times_here(self) -> bool:
        return self.config.remote is None and not self.target.is_remote_only

    def measure_latency(self, model, study: optuna.Study, key: str | None = None) -> tuple:
        """Compile the deployment network for the target and time it there: (LatencyResult, compile seconds,
        the compiled network). A network compiled ahead (:meth:`compile_ahead`, by spec ``key``) is only timed.

        On this machine the timing holds the host lock exclusively (no worker trains or times meanwhile)."""
        ahead = self._ahead.pop(key, None) if key is not None else None
        if ahead is not None:
            return time_compiled(ahead.compiled, self.config, self._lock, self.reference(study)), ahead.seconds, ahead.compiled
        return measure_deploy_latency(model, self.space, self.target, self.config, self._lock, self.reference(study))

    @property
    def _lock(self):
        return exclusive_timing if self._times_here else contextlib.nullcontext

    def _latency(self, trial: optuna.Trial, model, key: str) -> float:
        """The trial's latency in ms: predicted from the table, or compiled and timed on the target (``key``: the
        spec's :func:`spec_key`, which finds a network compiled ahead)."""
        if self.table is not None:
            from ..latency import block_units

            lat = self.table.predict_units(block_units(model, (1, *self.space.deploy_input)))
            store(trial, latency_ms=lat, latency_source="lut")
            return lat
        if self.cpu is not None:
            from ..latency.source import simulated_latency
            from ..tvm import compile_model

            start = time.perf_counter()
            compiled = compile_model(model, (1, *self.space.deploy_input), self.target, threads=self.config.threads)
            compile_s = time.perf_counter() - start
            result = simulated_latency(compiled, self.cpu, self.config.threads)
            store(trial, latency_ms=result.median_ms, latency_source="simulated", cpu_model=self.cpu.name,
                  threads=result.threads, compile_s=round(compile_s, 2))
            return result.median_ms
        latency, compile_s, compiled = self.measure_latency(model, trial.study, key)
        if self.keep_compiled and len(self.compiled_by_trial) < SIDE_BY_SIDE_MAX:
            self.compiled_by_trial[trial.number] = compiled
        if near_budget(latency.median_ms, self.config.budget_ms, self.config.retime_margin, self.config.retime_margin_above):
            self.on_phase(f"trial {trial.number}: {latency.median_ms:.2f} ms is near the {self.config.budget_ms:g} ms budget: timing again")
            retimed = []
            for pause in self.config.retime_pauses_s or (0.0,):
                time.sleep(pause)
                retimed.append(time_compiled(compiled, self.config, self._lock, self.reference(trial.study)))
            again = min(retimed, key=lambda result: result.median_ms)
            store(trial, latency_first_ms=latency.median_ms, latency_retimed_ms=again.median_ms,
                  latency_timings=len(retimed) + 1)
            latency = min(latency, again, key=lambda result: result.median_ms)
        store(trial, latency_ms=latency.median_ms, latency_source="measured", latency_p10_ms=latency.p10_ms,
              latency_p90_ms=latency.p90_ms, threads=latency.threads, timing_attempts=latency.attempts)
        if latency.host_slowdown is not None:
            store(trial, host_slowdown=round(latency.host_slowdown, 3))
        if latency.core_round_trip_ns is not None:
            store(trial, core_round_trip_ns=round(latency.core_round_trip_ns, 1), cpus_apart=latency.cpus_apart)
        if latency.paired:
            store(trial, latency_raw_ms=round(latency.raw_median_ms, 4), latency_ratio=round(latency.paired_ratio, 5),
                  reference_ms=round(latency.reference_ms, 4), reference_calibrated_ms=round(latency.reference_calibrated_ms, 4))
        store(trial, compile_s=round(compile_s, 2))
        return latency.median_ms

    def _pruning(self, trial: optuna.Trial) -> dict:
        """With a pruner (``--pruner``, single-objective studies), the estimator reports each epoch's accuracy and
        the trial stops early when the pruner says so, recording the epochs it reached."""
        if self.config.pruner == "none" or self.estimator.name != "trained":
            return {}

        def intermediate(epoch: int, accuracy: float) -> None:
            trial.report(accuracy, epoch)
            store(trial, fidelity_epochs=float(epoch))
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch} at accuracy {accuracy:.3f}")

        return {"intermediate": intermediate}

    def _values(self, accuracy: float, latency: float, ops: float):
        full = (accuracy, latency, ops)
        return full[0] if len(self.directions) == 1 else full[: len(self.directions)]

    def _reuse(self, trial: optuna.Trial, key: str):
        """Values of an identical, already finished spec in this study (never train a spec twice)."""
        for other in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if other.user_attrs.get("spec_key") == key and other.number != trial.number:
                return other
        return None

    # -- the trial -----------------------------------------------------------------------------
    def __call__(self, trial: optuna.Trial):
        """One trial. On this machine it holds the host lock shared from start to end (sampling, compiling,
        counting OPs, estimating accuracy all load a core) and exclusive while it times, so that no other worker
        of the machine runs anything while a candidate is timed."""
        with (shared_training() if self._times_here else contextlib.nullcontext()):
            return self._trial(trial)

    def _trial(self, trial: optuna.Trial):
        layers = sample_layers(trial, self.space)
        key = spec_key(layers)
        deploy = self.space.deploy_spec(layers)
        store(trial, spec_key=key, spec=deploy.to_json(), n_lab=deploy.n_lab)
        twin = self._reuse(trial, key)
        if twin is not None:
            store(trial, **{name: value for name, value in twin.user_attrs.items() if name not in ("spec_key", "spec")})
            store(trial, duplicate_of=twin.number)
            trial.set_constraint("latency_ms", self.settings.verdict(twin.user_attrs["latency_ms"])[0])
            values = twin.values
            return values[0] if len(values) == 1 else tuple(values)
        try:
            self.on_phase(f"trial {trial.number}: {'predict latency' if self.table is not None else 'compile and time'}")
            model = create_model(deploy).eval()
            lat = self._latency(trial, model, key)
        except BaseException as err:  # noqa: BLE001 - recorded on the trial, which then FAILs
            _reraise_interrupt(trial, err)
            if isinstance(err, TimingDisturbed):  # the machine's fault, not the candidate's: it is timed again later
                store(trial, stopped_by="disturbed")
            store(trial, error=f"latency: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:500])
            raise
        constraint, feasible = self.settings.verdict(lat)
        trial.set_constraint("latency_ms", constraint)
        counted = count_ops(model, (1, *self.space.deploy_input))
        store(trial, bops=int(counted.bops), flops=int(counted.flops), params=int(counted.params), ops=float(counted.ops))
        store(trial, feasible=feasible, estimator=self.estimator.name)
        if not feasible:  # never trained: no accuracy attr (unknown, not 0); the sampler sees 0 (Optuna refuses NaN)
            store(trial, trained=False)
            return self._values(0.0, lat, counted.ops)
        try:
            self.on_phase(f"trial {trial.number}: accuracy ({self.estimator.name})")
            with shared_training():
                result = self.estimator.estimate(layers, seed=self.config.seed, **self._pruning(trial))
        except KeyboardInterrupt as err:
            _reraise_interrupt(trial, err)
        except optuna.TrialPruned:
            raise  # fidelity_epochs holds the epochs it reached
        except TrainingFailed as err:
            store(trial, failure=err.reason, error=f"training: {err.reason}: {err}"[:500])
            raise
        except Exception as err:  # noqa: BLE001
            _reraise_interrupt(trial, err)
            store(trial, error=f"accuracy: {type(err).__name__}: {err}"[:500])
            raise
        store(trial, trained=result.fidelity > 0, fidelity_epochs=result.fidelity, train_s=round(result.seconds, 2),
              accuracy=result.accuracy)
        if "basis" in result.detail:
            store(trial, accuracy_basis=result.detail["basis"], accuracy_interpolated=bool(result.detail.get("interpolated")))
        store(trial, accuracy_validated=validation_of(self.space.proxy.replace(estimator=self.estimator.name), layers))
        if len(result.per_seed) > 1:
            store(trial, accuracy_per_seed=[round(a, 5) for a in result.per_seed])
        return self._values(result.accuracy, lat, counted.ops)
