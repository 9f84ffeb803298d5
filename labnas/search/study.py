"""Running a search: the Optuna study, its storage, worker processes, progress, and the result files."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna

from .._errors import LabnasError
from ..results import StudySettings
from .objective import OBJECTIVES, Objective, SearchConfig, study_settings, watch_interrupts
from .results import best_key, write_results
from .side_by_side import ROUNDS_RESERVE_S, retime_side_by_side
from ..space import PRUNERS, SearchSpace

__all__ = ["SearchError", "SearchRun", "open_storage", "create_or_load_study", "run_search", "FINISHED"]

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)


class SearchError(LabnasError, RuntimeError):
    """A search that cannot start (storage, study mismatch); the message says what to change."""


@dataclass
class SearchRun:
    """What :func:`run_search` returns: the Optuna study (live, in its storage), the results directory, and its
    result files read back (:class:`labnas.results.StudyResults`; ``.summary()`` is what the CLI prints)."""

    study: optuna.Study
    path: Path

    @property
    def results(self):
        from ..results import load_results

        return load_results(self.path)


def open_storage(url: str | None, study_dir: Path):
    """An Optuna storage from a URL: ``sqlite:///...``, ``postgresql://...``, or a journal file
    (``*.log`` / ``journal:PATH``). ``None`` is ``sqlite:///<study_dir>/study.db``."""
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    if url is None:
        study_dir.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{(study_dir / 'study.db').resolve()}"
    if url.startswith("journal:") or url.endswith(".log"):
        path = Path(url.removeprefix("journal:"))
        if not path.parent.is_dir():
            raise SearchError(f"journal storage directory {path.parent} does not exist; create it or pick another path")
        return JournalStorage(JournalFileBackend(str(path)))
    if not url.split(":", 1)[0].startswith(("sqlite", "postgresql", "mysql")):
        raise SearchError(f"storage {url!r} is not a sqlite:///, postgresql:// URL or a journal file (*.log)")
    kwargs = {} if url.startswith("sqlite") else {"heartbeat_interval": 30, "grace_period": 90}
    engine_kwargs = {"pool_pre_ping": True} if not url.startswith("sqlite") else None
    for attempt in range(_SCHEMA_ATTEMPTS):
        try:
            return RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
        except Exception as err:  # noqa: BLE001 - sqlalchemy raises many types
            if attempt + 1 < _SCHEMA_ATTEMPTS and _lost_schema_race(err):
                time.sleep(0.2 * (attempt + 1))
                continue
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise SearchError(f"cannot open storage {url.split('@')[-1]}: {first[:160]}") from None
    raise AssertionError("unreachable")


_SCHEMA_ATTEMPTS = 4


def _lost_schema_race(err: Exception) -> bool:
    """True when another process created the same fresh database's schema at the same moment.

    Optuna's RDBStorage creates its tables and writes one alembic version row on first open; two
    processes opening a new SQLite file together (a second worker, ``labnas report`` on a starting
    search) race on that row and one gets ``UNIQUE constraint failed: alembic_version`` or ``table ...
    already exists``. Opening again once the winner has finished succeeds, so these are retried.
    """
    text = str(err)
    return "alembic_version" in text or "already exists" in text or "database is locked" in text


def create_or_load_study(name: str, storage, space: SearchSpace, config: SearchConfig) -> optuna.Study:
    """Create the study, or load it to resume; a study made with other settings is refused."""
    sampler = _sampler(config)
    try:
        study = optuna.create_study(
            study_name=name, storage=storage, directions=list(OBJECTIVES[config.objectives]), sampler=sampler,
            pruner=_pruner(config), load_if_exists=True,
        )
    except ValueError as err:
        raise SearchError(f"study {name!r}: {err}; use a new {{opt:study_name|--study}}") from None
    settings = study_settings(space, config)
    stored = study.user_attrs.get("labnas")
    if stored is None:
        study.set_user_attr("labnas", settings.to_dict())
    elif StudySettings.from_dict(stored) != settings:
        raise SearchError(f"study {name!r} was made with other settings ({StudySettings.from_dict(stored).differences(settings)}); "
                          "resume with the same ones or use a new {opt:study_name|--study}")
    _check_threads(study, name, config.threads)
    return study


def _threads_text(threads: int | None) -> str:
    return "all cores" if threads is None else f"{threads}"


def _check_threads(study: optuna.Study, name: str, threads: int | None) -> None:
    """A study's latencies are on the scale of the TVM thread count they were timed with. Resuming with another one
    is refused once the study holds a timed candidate; before that (every trial so far failed, e.g. on a busy
    machine) the new count is taken, said, and the study's calibration, which belongs to the old count, dropped."""
    if "timing_threads" not in study.user_attrs:
        study.set_user_attr("timing_threads", threads)
        return
    before = study.user_attrs["timing_threads"]
    if before == threads:
        return
    timed = [t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
             if t.user_attrs.get("latency_source") in ("measured", "simulated") and "duplicate_of" not in t.user_attrs]
    if timed:
        flag = "leave --threads out" if before is None else f"pass --threads {before}"
        raise SearchError(f"study {name!r} timed {len(timed)} candidate(s) with {_threads_text(before)} TVM threads; "
                          f"{_threads_text(threads)} would put latencies of another scale beside them: {flag} to resume it, "
                          "or use a new {opt:study_name|--study}")
    study.set_user_attr("timing_threads", threads)
    study.set_user_attr("reference_calibration", None)  # it belonged to the old thread count
    print(f"study {name!r} holds no timed candidate yet: it now times with {_threads_text(threads)} TVM threads "
          f"(was {_threads_text(before)})", file=sys.stderr)


def _sampler(config: SearchConfig) -> optuna.samplers.BaseSampler:
    if config.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=config.seed, population_size=config.population)
    if config.sampler not in ("tpe", "front"):  # front: the trials are enqueued (labnas.search.front); TPE for any other
        raise SearchError(f"unknown sampler {config.sampler!r}; choose one of tpe, nsga2, front")
    return optuna.samplers.TPESampler(seed=config.seed, n_startup_trials=config.startup_trials)


def _pruner(config: SearchConfig) -> optuna.pruners.BasePruner:
    kind = config.pruner
    if kind not in PRUNERS:
        raise SearchError(f"unknown pruner {kind!r}; choose one of {', '.join(PRUNERS)}")
    if kind != "none" and config.objectives != "accuracy":
        raise SearchError(f"{{opt:pruner}} {kind} needs {{opt:objectives}} accuracy: Optuna prunes only single-objective studies")
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)
    if kind == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


def _refuse_foreign_results(study_dir: Path, storage_url: str | None) -> None:
    """Refuse to overwrite result files that the storage cannot resume (e.g. a committed example without its
    ``study.db``): a new run would replace them with its own few trials."""
    csv = study_dir / "trials.csv"
    if storage_url is None and csv.exists() and not (study_dir / "study.db").exists():
        rows = max(0, sum(1 for _ in csv.open()) - 1)
        raise SearchError(f"{study_dir} holds the results of a study ({rows} trials) whose storage (study.db) is not there, so "
                          "it cannot be resumed and would be overwritten; pass {opt:results_root|--results} DIR or {opt:study_name|--study} NAME for a new study")


def estimator_name(space: SearchSpace, config: SearchConfig) -> str:
    """The accuracy estimator a search uses: ``config.accuracy`` (``--accuracy``), else the space's."""
    return study_settings(space, config).accuracy


def make_estimator(space: SearchSpace, config: SearchConfig, data_dir: str | None):
    """The space's accuracy estimator (``[proxy]``), of the kind :func:`estimator_name` says."""
    from ..accuracy import build_estimator

    settings = space.proxy.replace(estimator=estimator_name(space, config))
    return build_estimator(space.family, settings, choices=space.layer_choices(), data_dir=data_dir, device=config.device,
                           cache_dir=config.cache_dir)


def _counts(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a finished trial counts toward ``n_trials``: a repeat of an earlier spec (``duplicate_of``) reuses that
    spec's values and costs nothing; a trial stopped by Ctrl-C or by a machine too busy to time on (``stopped_by``)
    has no answer of its own, and its candidate is run again (:func:`rerun_stopped`). A failure of the candidate's
    own (it does not compile, its training diverges) is its answer and counts."""
    return trial.state in FINISHED and "duplicate_of" not in trial.user_attrs and "stopped_by" not in trial.user_attrs


def _finished(study: optuna.Study) -> int:
    """Finished trials that count toward ``n_trials`` (:func:`_counts`)."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=FINISHED) if _counts(t))


def _waiting(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))


def _specs_answered_or_pending(study: optuna.Study) -> set:
    """Spec keys of the trials that count, are running or are queued: a spec among them needs no new trial."""
    return {t.user_attrs.get("spec_key") for t in study.get_trials(deepcopy=False) if _counts(t) or not t.state.is_finished()}


def rerun_stopped(study: optuna.Study) -> int:
    """Queue again the candidate of every trial that Ctrl-C or a disturbed machine stopped (``stopped_by``), unless
    a counted trial, a queued one or one in flight already has its spec; return how many were queued. A resumed
    search then ends with the trials it was asked for, each with its own answer."""
    answered = _specs_answered_or_pending(study)
    queued = 0
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
        key = trial.user_attrs.get("spec_key")
        if "stopped_by" not in trial.user_attrs or key is None or key in answered or not trial.params:
            continue
        attrs = {name: trial.user_attrs[name] for name in ("spec_key", "latency_predicted_ms") if name in trial.user_attrs}
        study.enqueue_trial(dict(trial.params), user_attrs=attrs)
        answered.add(key)
        queued += 1
    return queued


#: A sampler that proposes only repeats this many times in a row has nothing new to propose: the search stops.
MAX_REPEATS_IN_A_ROW = 30
#: This many trials in a row refused as disturbed (the machine too busy to time on) stop the search: the next ones
#: would be refused too; none of them counts, so running the command again later loses nothing.
MAX_DISTURBED_IN_A_ROW = 3


class _StopWhenDone:
    """Optuna callback: stop once the study holds ``n_trials`` distinct finished specs, once every architecture of
    the space has been seen, or after :data:`MAX_REPEATS_IN_A_ROW` repeats in a row (then ``exhausted`` says why)."""

    def __init__(self, n_trials: int, space_size: int, then=None, own_share: int | None = None):
        self.n_trials, self.space_size, self.then = n_trials, space_size, then
        #: a worker process of several: stop after this many distinct trials of its own, so that workers finishing
        #: at once do not overshoot the study's target (each runs its share, as before repeats stopped counting)
        self.own_share, self.own = own_share, 0
        self.repeats, self.disturbed, self.exhausted = 0, 0, ""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.then:
            self.then(study, trial)
        repeat = "duplicate_of" in trial.user_attrs
        self.repeats = self.repeats + 1 if repeat else 0
        disturbed = trial.user_attrs.get("stopped_by") == "disturbed"
        self.disturbed = self.disturbed + 1 if disturbed else self.disturbed if repeat else 0  # a repeat times nothing
        self.own += 1 if _counts(trial) else 0
        distinct = _finished(study)
        if distinct >= self.n_trials or (self.own_share is not None and self.own >= self.own_share):
            study.stop()
        elif self.disturbed >= MAX_DISTURBED_IN_A_ROW:
            self.exhausted = (f"{self.disturbed} trials in a row could not be timed because the machine was too busy (none of them "
                              "counts): wait until the other work ends, or time with --threads 1 (one core, no barrier to stall "
                              "at), then run the same command again")
            study.stop()
        elif distinct >= self.space_size:
            self.exhausted = f"every one of the space's {self.space_size} architectures has been tried"
            study.stop()
        elif self.repeats >= MAX_REPEATS_IN_A_ROW:
            self.exhausted = f"the sampler proposed only repeats of earlier specs {self.repeats} times in a row"
            study.stop()


@dataclass
class _WorkerArgs:
    study_name: str
    storage_url: str | None
    study_dir: str
    space_path: str
    config: SearchConfig
    n_trials: int
    timeout: float | None
    data_dir: str | None
    worker: int
    #: the study's target of distinct finished specs: every worker stops when the study holds it
    study_trials: int = 0


def _set_worker_threads(threads: int) -> None:
    import torch

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch.set_num_threads(threads)


def _run_worker(args: _WorkerArgs) -> None:
    """Body of a worker process: its own storage connection, data and objective."""
    from ..space import load_space

    _set_worker_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the parent's summary lists failed trials
    space = load_space(args.space_path)
    config = args.config
    storage = open_storage(args.storage_url, Path(args.study_dir))
    study = optuna.load_study(study_name=args.study_name, storage=storage, sampler=_sampler(config), pruner=_pruner(config))
    objective = Objective(space, make_estimator(space, config, args.data_dir), config, study=study)
    # every worker stops once the study holds its target of distinct finished specs (repeats do not count)
    stop = _StopWhenDone(args.study_trials, space.size(), own_share=args.n_trials)
    study.optimize(objective, n_trials=None, timeout=args.timeout, catch=(Exception,), callbacks=[stop], gc_after_trial=True)


def run_search(
    space: SearchSpace,
    config: SearchConfig,
    study_name: str,
    results_root: Path = Path("results"),
    *,
    storage_url: str | None = None,
    n_trials: int | None = 16,
    timeout: float | None = None,
    workers: int = 1,
    data_dir: str | None = None,
    progress: bool = True,
) -> SearchRun:
    """Run (or resume) a search until the study holds ``n_trials`` distinct finished trials; write the results.

    With ``config.sampler == "front"`` the trials are the predicted front's members (:func:`plan_front`), at most
    ``n_trials`` of them; ``None`` (and no ``timeout``): all of them, the front up to noise first, within the command's
    time allowance (:data:`FRONT_ALLOWANCE_S` from the start, the table build included); a re-run measures what is
    left. With TPE or NSGA-II ``None`` means 16.

    Returns the study and its results directory (:class:`SearchRun`). Ctrl-C stops after writing what is stored.
    """
    started = time.monotonic()
    _pruner(config)  # a pruner the objectives cannot use fails before any file is written
    _check_study_name(study_name)
    if n_trials is None and config.sampler != "front":
        n_trials = 16
    estimator = make_estimator(space, config, data_dir)  # and so do a missing dataset and an unused data_dir
    study_dir = results_root / study_name
    _refuse_foreign_results(study_dir, storage_url)
    storage = open_storage(storage_url, study_dir)
    study = create_or_load_study(study_name, storage, space, config)
    study.set_user_attr("accuracy_description", estimator.describe())  # what the accuracy column means
    queued_layers, ahead = [], 0
    requeued = rerun_stopped(study)
    if requeued:
        print(f"running again the {requeued} candidate(s) that Ctrl-C or a busy machine stopped last time", file=sys.stderr)
    if config.sampler == "front":  # n_trials caps the measured front members (None: the whole predicted front)
        asked = n_trials
        n_trials, queued_layers, ahead = plan_front(study, space, config, estimator, progress, limit=n_trials)
        if asked is None and timeout is None:  # the whole front, within the command's own time allowance
            timeout = max(FRONT_MIN_TRIAL_S, FRONT_ALLOWANCE_S - ROUNDS_RESERVE_S - (time.monotonic() - started))
    remaining = max(0, n_trials - _finished(study))
    study_dir.mkdir(parents=True, exist_ok=True)
    bar = _Bar(n_trials, _finished(study), plain=not progress)
    previous_handler = watch_interrupts()
    try:
        if remaining and workers <= 1:
            _set_worker_threads(1)
            objective = Objective(space, estimator, config, on_phase=bar.phase, study=study)
            # a front search times its measured networks again side by side at the end (labnas.search.side_by_side)
            objective.keep_compiled = config.sampler == "front" and config.latency == "measure" and objective._times_here
            # the networks sure to be timed (the front up to noise), on every core at once; the rest compile in turn
            objective.compile_ahead(queued_layers[:max(ahead, 2)], progress)
            stop = _StopWhenDone(n_trials, space.size(), bar.finished)
            # n_trials=None: trials go on until the callback stops them (repeats do not count) or the timeout
            study.optimize(objective, n_trials=None, timeout=timeout, catch=(Exception,), callbacks=[stop], gc_after_trial=True)
            if objective.keep_compiled:
                try:
                    retime_side_by_side(study, objective.compiled_by_trial, config.threads, progress=progress)
                except Exception as err:  # noqa: BLE001 - the trials' own timings stand; the search's answer is kept
                    print(f"the side-by-side timing failed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                          "the front uses each trial's own timing", file=sys.stderr)
                objective.compiled_by_trial.clear()
            if stop.exhausted:
                print(f"the search stopped with {_finished(study)} distinct candidates: {stop.exhausted}", file=sys.stderr)
            left = n_trials - _finished(study)
            if config.sampler == "front" and left > 0:
                print(f"{left} of the predicted front's members are not measured yet (the time allowance, {timeout or 0:.0f} s of "
                      "trials, ran out): run the same command again to measure them, or pass --trials / --timeout",
                      file=sys.stderr)
        elif remaining:
            _run_workers(study, space, config, study_name, storage_url, study_dir, remaining, timeout, workers, data_dir, bar,
                         n_trials)
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)
        if bar:
            bar.close()
        write_results(study, study_dir)
    if config.latency == "lut":
        remeasure_front(study, space, config)
        write_results(study, study_dir)
    return SearchRun(study, study_dir)


def _check_study_name(name: str) -> None:
    """A study name becomes a folder under the results root: a path (``../x``, ``a/b``) would write elsewhere."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name or ""):
        raise SearchError(f"study name {name!r} is not a plain name (letters, digits, '.', '_', '-'; no '/' or '..'): it "
                          "becomes a folder under the results root; choose another {opt:study_name|--study}, or move the "
                          "root with {opt:results_root|--results}")


def front_possible(space: SearchSpace, latency: str, estimator_name_: str) -> str:
    """Why the front strategy cannot search ``space`` with the ``latency`` source (empty when it can): it needs a closed-form
    accuracy (the published estimator), a space small enough to enumerate, and latencies that are timed (a block
    table is timed on this machine or on the board)."""
    from .front import MAX_EXHAUSTIVE

    if estimator_name_ != "published":
        return f"the {estimator_name_} estimator has no closed form to score every candidate"
    if space.size() > MAX_EXHAUSTIVE:
        return f"the space holds {space.size():,} candidates, more than {MAX_EXHAUSTIVE:,} to enumerate"
    if latency != "measure":
        return f"latency {latency}: the front strategy times a block table and then the front"
    return ""


#: The main command's own time allowance (s, from the start of run_search; the trial in flight, the result files and
#: the process start add 20-30 s) when neither ``--trials`` nor ``--timeout`` is given: a
#: front search stops starting trials then, having timed the front up to noise first; a re-run measures the rest.
FRONT_ALLOWANCE_S = 240.0
#: Trials always get at least this long (s), however long the table took to build.
FRONT_MIN_TRIAL_S = 60.0

#: Random calibration networks of a front search's table, besides all-sign and all-LAB (:func:`front_table`).
FRONT_FIT_NETWORKS = 2


def front_table(space: SearchSpace, config: SearchConfig, progress: bool = True):
    """The space's block latency table for the config's target and threads: loaded from labnas' cache folder, or
    built (every unique block and :data:`FRONT_FIT_NETWORKS` + 2 calibration networks timed, a minute or two) and
    cached there. A table built for other kernel code, threads or another CPU is refused by the loader and rebuilt.

    Fewer calibration networks than ``labnas profile --lut`` fits its tables with: the front is chosen by the
    table's relative block costs, which the fit (a scale and an offset) does not reorder, and the front's members
    are then timed end to end; the fit only places the budget line among the predictions."""
    from .._cache import cache_dir
    from ..latency import LatencyTable, TableError, build_table, table_path

    target = config.target
    path = table_path(space.name, f"{target.name}-{config.threads or 'all'}threads", cache_dir() / "lut")
    try:
        table = LatencyTable.load(path, space, target.name)
        if (table.meta.get("threads") or None) == (config.threads or None):
            return table, path
    except TableError:
        pass
    print(f"building the block latency table of {space.name} on {target.name} (once; cached in {path})", file=sys.stderr, flush=True)

    def say(what: str, done: int, total: int) -> None:
        if progress and (done == total or done % 5 == 0):
            print(f"  table {done}/{total}: {what[:70]}", file=sys.stderr, flush=True)

    from ..timing import TimingDisturbed

    try:
        table = build_table(space, target, config.remote, config.threads, progress=say, recalibrate=config.recalibrate,
                            fit_networks=FRONT_FIT_NETWORKS)
    except TimingDisturbed as err:
        # A reference slower than its cached calibration with no other load seen is a calibration this host no longer
        # reproduces (a VM's slow spell outlasting a fast one): measure it again, once, and build on that scale.
        print(f"the table's timing was refused ({str(err).split(':')[0]}); measuring the reference's quiet time again "
              "and building once more", file=sys.stderr, flush=True)
        time.sleep(5)
        try:
            table = build_table(space, target, config.remote, config.threads, progress=say, recalibrate=True,
                                fit_networks=FRONT_FIT_NETWORKS)
        except TimingDisturbed as again:
            raise SearchError(f"the block latency table of {space.name} could not be timed: {again}") from None
    table.save(path)
    return table, path


def plan_front(study: optuna.Study, space: SearchSpace, config: SearchConfig, estimator, progress: bool = True,
               limit: int | None = None) -> tuple[int, list, int]:
    """Enqueue the predicted Pareto front of the whole space (:mod:`labnas.search.front`) as the study's next trials;
    return the number of distinct finished trials the study should hold once they are all measured, the layer choices
    (``list[LayerSpec]``) of the trials it enqueued, in the order they run, and how many of those come first as the
    front up to noise.

    Order: first the members that differ beyond timing noise (:func:`labnas.search.front.thin_within_noise`: every
    other member has one of them at least as accurate and at most 3 % slower by prediction), then the rest of the
    predicted front in an order whose every prefix is spread along it (:func:`spread_order`). So a search cut short
    (its time allowance, Ctrl-C) has timed what matters most and covers the front evenly, and a re-run measures the
    rest. ``limit``: measure this many members: fewer are spread evenly along the front up to noise (its two ends
    included), more add members of the full front; ``None``: all of it. The prediction and its quality figures go to
    the study's user attr ``front_search``."""
    from .front import hypervolume, predict_space
    from .objective import layer_params, spec_key

    table, path = front_table(space, config, progress)
    predicted = predict_space(space, table, estimator)
    full = predicted.front()
    beyond_noise = predicted.front_beyond_noise()
    chosen = full if limit is None else _spread(beyond_noise, full, limit)
    in_chosen = set(chosen.tolist())
    first = [n for n in beyond_noise if n in in_chosen]
    in_first = set(first)
    rest = [int(n) for n in spread_order(np.array([n for n in chosen if n not in in_first], dtype=full.dtype))]
    ref_acc, ref_lat = float(predicted.accuracy.min()), float(predicted.latency_ms.max())
    seen = _specs_answered_or_pending(study)  # a trial stopped by Ctrl-C or a busy machine is queued by rerun_stopped
    queued_layers, queued_first = [], 0
    for position, n in enumerate([*first, *rest]):
        layers = predicted.layers(int(n))
        key = spec_key(layers)
        if key in seen:
            continue
        study.enqueue_trial(layer_params(space, layers),
                            user_attrs={"latency_predicted_ms": round(float(predicted.latency_ms[n]), 4), "spec_key": key})
        queued_layers.append(layers)
        queued_first += position < len(first)
    queued = len(queued_layers)
    study.set_user_attr("front_search", {
        "space_size": len(predicted.accuracy), "predicted_front": len(full), "predicted_front_beyond_noise": len(beyond_noise),
        "front_measured_at_most": len(chosen),
        "predict_s": round(predicted.seconds, 2),
        "reference_point": [ref_acc, ref_lat],
        "predicted_hypervolume": hypervolume(predicted.accuracy, predicted.latency_ms, ref_acc, ref_lat),
        "table": str(path), "table_fit": {"scale": table.meta.get("scale"), "overhead_ms": table.meta.get("overhead_ms")},
    })
    print(f"predicted all {len(predicted.accuracy):,} candidates in {predicted.seconds:.1f} s: the predicted front has "
          f"{len(full)}, {len(beyond_noise)} of them apart beyond noise (measured first); {queued} to measure, "
          f"{len(chosen) - queued} measured before{f', {limit} asked' if limit is not None else ''}", file=sys.stderr, flush=True)
    return _finished(study) + _waiting(study), queued_layers, queued_first


def spread_order(members: np.ndarray) -> np.ndarray:
    """``members`` reordered so that every prefix is spread along them: both ends, the middle, the quarter points, ...
    (the bit-reversed order of their positions)."""
    n = len(members)
    if n <= 2:
        return members
    order, taken = [0, n - 1], {0, n - 1}
    step = n - 1
    while len(order) < n:
        step = max(1, step // 2)
        for i in range(step, n, step):
            if i not in taken:
                order.append(i)
                taken.add(i)
    return members[np.array(order)]


def _spread(preferred: np.ndarray, full: np.ndarray, count: int) -> np.ndarray:
    """``count`` members: spread evenly over ``preferred`` when it holds more, else all of it and the rest spread over
    the members of ``full`` it lacks; in ``full``'s order."""
    def even(members: np.ndarray, k: int) -> np.ndarray:
        if k >= len(members):
            return members
        return members[np.unique(np.round(np.linspace(0, len(members) - 1, max(k, 1))).astype(int))]

    if count <= len(preferred):
        return even(preferred, count)
    chosen = set(preferred.tolist()) | set(even(np.setdiff1d(full, preferred, assume_unique=True), count - len(preferred)).tolist())
    return np.array([n for n in full if n in chosen], dtype=full.dtype)


def remeasure_front(study: optuna.Study, space: SearchSpace, config: SearchConfig) -> dict[str, float]:
    """Time the Pareto set of a LUT-driven search end to end on the target, when it is reachable.

    The measurements go to the study's user attr ``remeasured_ms`` (trial number -> ms), so both the
    predicted (``latency_ms``) and the measured latency stay in the study and in trials.csv. An
    unreachable board leaves the predictions alone and says so.
    """
    import contextlib
    import sys

    from ..models import ArchSpec, create_model
    from ..timing import RemoteError, TimingDisturbed, exclusive_timing, reference_for, shared_training
    from .objective import measure_deploy_latency, reference_workload
    from .results import pareto_front, trials_frame

    df = trials_frame(study)
    front = pareto_front(df) if not df.empty else df
    done = dict(study.user_attrs.get("remeasured_ms", {}))
    target = config.target
    if config.remote is None and target.is_remote_only:
        print(f"the Pareto set keeps its predicted latencies: no board for {target.name}", file=sys.stderr)
        return done
    reference = None
    for row in front.itertuples():
        if str(row.trial) in done:
            continue
        if reference is None:  # paired and corrected in the study's scale, as the trials and the table are
            stored = study.user_attrs.get("reference_calibration")
            reference = reference_for(target, config.threads, config.remote, stored=stored,
                                      workload=reference_workload(space, stored))
        model = create_model(ArchSpec.from_json(row.spec)).eval()
        local = config.remote is None  # as a trial: the host lock shared while compiling, exclusive while timing
        try:
            with (shared_training() if local else contextlib.nullcontext()):
                result, _, _ = measure_deploy_latency(model, space, target, config,
                                                      exclusive_timing if local else contextlib.nullcontext, reference)
        except (RemoteError, TimingDisturbed) as err:
            print(f"the Pareto set keeps its predicted latencies: {err}", file=sys.stderr)
            break
        done[str(row.trial)] = round(result.median_ms, 4)
        study.set_user_attr("remeasured_ms", done)
    return done


def _run_workers(study, space, config, study_name, storage_url, study_dir, remaining, timeout, workers, data_dir, bar,
                 study_trials):
    per = [remaining // workers + (1 if i < remaining % workers else 0) for i in range(workers)]
    ctx = mp.get_context("spawn")
    procs = []
    for i, n in enumerate(per):
        if n == 0:
            continue
        args = _WorkerArgs(study_name, storage_url, str(study_dir), space.path, config, n, timeout, data_dir, i, study_trials)
        proc = ctx.Process(target=_run_worker, args=(args,), daemon=False)
        proc.start()
        procs.append(proc)
    seen = {t.number for t in study.get_trials(deepcopy=False, states=FINISHED)}
    try:
        while any(p.is_alive() for p in procs):
            time.sleep(2)
            for t in study.get_trials(deepcopy=False, states=FINISHED):
                if t.number not in seen:
                    seen.add(t.number)
                    bar.finished(study, t)
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        raise
    finally:
        for p in procs:
            p.join(timeout=30)
    failed = [p.exitcode for p in procs if p.exitcode not in (0, None)]
    if failed:
        raise SearchError(f"{len(failed)} worker process(es) exited with codes {failed}; see their output above")


def trial_line(trial: optuna.trial.FrozenTrial) -> str:
    """One line about a finished trial: state, accuracy, latency, OPs, LAB layers, or its error."""
    a = trial.user_attrs
    if trial.state == optuna.trial.TrialState.PRUNED:
        return f"trial {trial.number}: pruned after {a.get('fidelity_epochs', '?')} epoch(s), latency {a.get('latency_ms', float('nan')):.2f} ms"
    if trial.state != optuna.trial.TrialState.COMPLETE:
        return f"trial {trial.number}: {trial.state.name.lower()}: {a.get('error', 'no reason recorded')}"
    interpolated = ", interpolated" if a.get("accuracy_interpolated") else ""
    acc = (f"accuracy {100 * a['accuracy']:.2f} % ({a.get('estimator', '?')}{interpolated})" if "accuracy" in a else
           "over budget, not estimated")
    dup = f" (same spec as trial {a['duplicate_of']})" if "duplicate_of" in a else ""
    return (f"trial {trial.number}: {acc}, latency {a.get('latency_ms', float('nan')):.2f} ms, "
            f"{a.get('ops', float('nan')) / 1e6:.1f} MOPs, {a.get('n_lab', '?')} LAB layers{dup}")


class _Bar:
    """Progress of a search: finished trials with elapsed time and ETA, the running trial's phase, the last
    trial and the best so far. ``plain=True`` prints one line per finished trial instead (for logs)."""

    def __init__(self, total: int, done: int, plain: bool = False):
        self.plain, self.best = plain, None
        if plain:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("search"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[phase]}"))
        self.task = self.progress.add_task("trials", total=total, completed=done, phase="")
        self.progress.start()

    def phase(self, text: str) -> None:
        if not self.plain:
            self.progress.update(self.task, phase=text)

    def finished(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        acc, lat = trial.user_attrs.get("accuracy"), trial.user_attrs.get("latency_ms", float("inf"))
        feasible = trial.user_attrs.get("feasible", True) and trial.state == optuna.trial.TrialState.COMPLETE
        if acc is not None and feasible and (self.best is None or best_key(acc, lat, trial.number) < best_key(self.best[1], self.best[2], self.best[0])):
            self.best = (trial.number, acc, lat)  # the trial best_spec.json names (best_key)
        best = f"; best: trial {self.best[0]}, {100 * self.best[1]:.2f} % at {self.best[2]:.2f} ms" if self.best else ""
        if self.plain:
            print(trial_line(trial) + best, flush=True)
        else:
            self.progress.console.print(trial_line(trial), markup=False)
            self.update(_finished(study))
            self.progress.update(self.task, phase=best.removeprefix("; "))

    def update(self, done: int) -> None:
        if not self.plain:
            self.progress.update(self.task, completed=done)

    def close(self) -> None:
        if not self.plain:
            self.progress.stop()
