"""What a spec holds, as pydantic models: every key, its type, its default and what it means.

A spec is the `TrainingSettings` of one run (sent to the workers as a `RunConfig`, with the keys the driver sets)
plus what the driver alone uses: the search space, Tune settings, resources per trial, MLflow and where outputs go.
Every mistake becomes a `SpecError` with one line that names the key and the fix (`orchestrator.spec.loading`
reads and validates the files).
"""

from __future__ import annotations

import difflib
import os
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, Field, model_validator

from trainables import storage
from trainables.config import DRIVER_KEYS, ConfigError, Method, RunConfig, Strict, TrainingSettings
from trainables.methods import PRESETS, needs_two_students, resolve_method
from trainables.model_names import ARCHITECTURES

STORAGE_ENV = "DUALKD_STORAGE"  # the storage of specs that set none: clusters set it to their shared storage
DEFAULT_STORAGE = "runs"


class SpecError(ConfigError):
    """A user mistake in a spec or an override: printed as one line, exit status 2."""


class FloatParam(Strict):
    """A real number drawn between low and high."""

    type: Literal["float"] = Field(description="float: a real number")
    low: float = Field(description="the smallest value drawn")
    high: float = Field(description="the largest value drawn; above low")
    log: bool = Field(False, description="draw on a log scale (low > 0)")

    @model_validator(mode="after")
    def _order(self):
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log-scale range needs low > 0")
        return self


class IntParam(Strict):
    """A whole number drawn from low to high, both included."""

    type: Literal["int"] = Field(description="int: a whole number")
    low: int = Field(description="the smallest value drawn")
    high: int = Field(description="the largest value drawn; above low")
    log: bool = Field(False, description="draw on a log scale (low >= 1, no step)")
    step: int = Field(1, ge=1, description="draw low, low + step, ... up to high")

    @model_validator(mode="after")
    def _order(self):
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low < 1:
            raise ValueError("a log-scale int range needs low >= 1")
        if self.log and self.step != 1:
            raise ValueError("a log-scale int range takes no step: drop step or log")
        return self


class CategoricalParam(Strict):
    """One of the listed values."""

    type: Literal["categorical"] = Field(description="categorical: one of a list")
    choices: list[Union[str, int, float, bool, None]] = Field(
        min_length=1, description="the values drawn from, e.g. [entropy, threshold]"
    )


SearchParam = Annotated[Union[FloatParam, IntParam, CategoricalParam], Field(discriminator="type")]
SEARCH_FIELDS = tuple(dict.fromkeys(f for m in (FloatParam, IntParam, CategoricalParam) for f in m.model_fields))


class Resources(Strict):
    """Per trial: a TorchTrainer of `num_workers` workers."""

    num_workers: int = Field(1, ge=1, le=1024, description="DDP workers per trial (the paper: 4)")
    use_gpu: bool = Field(False, description="one GPU share per worker (gpus_per_worker)")
    cpus_per_worker: float = Field(1, gt=0, description="CPUs Ray reserves per worker")
    gpus_per_worker: float = Field(1, ge=0, description="used only with use_gpu")
    max_failures: int = Field(
        2,
        ge=0,
        description="worker-group restarts per run, from its last checkpoint, after a lost worker or node "
        "(a preemptible machine); Tune restarts a trial once more (a loss while the workers start)",
    )

    @property
    def units(self) -> float:
        """What a trial's hour costs in a budget: its GPUs, or its CPUs when it uses none."""
        return self.num_workers * (self.gpus_per_worker if self.use_gpu else self.cpus_per_worker)


Mode = Literal["max", "min"]


class TuneSettings(Strict):
    """The search: what Optuna optimises, how many trials, and which of them ASHA stops early."""

    metric: Union[str, list[str]] = Field(
        "val_top1_mean", description="a reported metric, or a list of them: a Pareto search over several objectives"
    )
    mode: Union[Mode, list[Mode]] = Field("max", description="max or min, or one per metric of a list")
    scheduler_metric: Optional[str] = Field(
        None, description="the one metric ASHA stops trials on in a Pareto search; default: tune.metric when it is one"
    )
    scheduler_mode: Optional[Mode] = Field(None, description="default: its mode in tune.metric, else max")
    num_trials: int = Field(8, ge=1, description="trials Optuna proposes (unless budget_hours ends it first)")
    budget_hours: Optional[float] = Field(
        None,
        gt=0,
        description="no trial starts once the trials used this many "
        "resource-hours (GPUs, else CPUs, x wall time); running ones finish",
    )
    scheduler: Literal["asha", "fifo"] = Field(
        "asha",
        description="asha stops weak trials early (told to Optuna as pruned); fifo runs every trial to its last epoch",
    )
    grace_period: int = Field(2, ge=1, description="epochs every trial runs before ASHA may stop it")
    reduction_factor: float = Field(2, gt=1, description="ASHA keeps 1 in this many trials at each rung")
    max_concurrent_trials: int = Field(2, ge=1, description="trials that run at once")
    seed: int = Field(0, ge=0, description="the Optuna sampler's seed")

    @model_validator(mode="after")
    def _objectives(self) -> "TuneSettings":
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        modes = self.mode if isinstance(self.mode, list) else [self.mode]
        if len(metrics) != len(set(metrics)) or not metrics:
            raise ValueError(f"metric {self.metric}: list each metric once")
        if isinstance(self.metric, list) != isinstance(self.mode, list) or len(modes) != len(metrics):
            raise ValueError(
                f"mode {self.mode} does not match metric {self.metric}: give one mode (max or min) per "
                "metric, as a list when tune.metric is a list"
            )
        if self.pareto and self.scheduler == "asha" and self.scheduler_metric is None:
            raise ValueError(
                f"metric lists {len(metrics)} objectives and ASHA stops trials on one: set "
                "tune.scheduler_metric (e.g. val_top1_mean), or tune.scheduler: fifo"
            )
        return self

    @property
    def objectives(self) -> list[tuple[str, str]]:
        """(metric, mode) of each objective: one for a plain search, several for a Pareto search."""
        if isinstance(self.metric, list):
            return list(zip(self.metric, self.mode))
        return [(self.metric, self.mode)]

    @property
    def pareto(self) -> bool:
        return isinstance(self.metric, list) and len(self.metric) > 1

    @property
    def rank_metric(self) -> tuple[str, str]:
        """The one (metric, mode) that ASHA stops on and that orders tables and Tune's progress."""
        modes = dict(self.objectives)
        if self.scheduler_metric:
            return self.scheduler_metric, self.scheduler_mode or modes.get(self.scheduler_metric, "max")
        return self.objectives[0]


DEFAULT_REFERENCES = ("kd", "ce")  # compare.references when a spec names none


class SequentialSettings(Strict):
    """Seeds added one at a time (for every method) until each named method's paired difference against the
    reference is decided (≠ 0) for every student, or `max_seeds` or `compare.budget_hours` is reached."""

    against: Method = Field(description="the reference: one of compare.references, the table's paired columns")
    methods: list[Method] = Field(min_length=1, description="the methods that must be told apart from it")
    max_seeds: int = Field(10, ge=3, description="stop adding seeds here, decided or not")


class CompareSettings(Strict):
    """A comparison: every listed method for every seed, as fixed Tune trials (no search)."""

    methods: list[Method] = Field(
        default_factory=lambda: ["ce", "kd", "dml", "dual_kd", "ua_kd", "ua_dual"],
        min_length=1,
        description="the methods compared, each on every seed",
    )
    seeds: list[int] = Field(
        default_factory=lambda: [0, 1, 2],
        min_length=1,
        description="run seeds; the intervals pair methods seed by seed",
    )
    references: list[Method] = Field(
        default_factory=lambda: list(DEFAULT_REFERENCES),
        min_length=1,
        description="each method's top-1 is paired seed by seed with these: one vs_<ref> column set each, in the "
        "tables and the parent run's metrics; one not among compare.methods keeps its columns empty",
    )
    from_sweep: Optional[str] = Field(
        None, description="start from the recipe of this earlier sweep's best trial (as --from-sweep)"
    )
    interval: Literal["t", "bootstrap"] = Field(
        "t", description="the paired differences' interval over seeds (95 %, or per look)"
    )
    sequential: Optional[SequentialSettings] = Field(None, description="add seeds until the intervals decide")
    budget_hours: Optional[float] = Field(
        None,
        gt=0,
        description="no seed is added once the trials used this many resource-hours (GPUs, else CPUs, x wall time)",
    )

    @model_validator(mode="after")
    def _references(self) -> "CompareSettings":
        """References are named once each. One that is not among the compared methods is allowed (its columns stay
        empty; the plan says so), so `--set compare.methods=[...]` narrows a shipped spec without touching them."""
        if len(set(self.references)) < len(self.references):
            raise ValueError(f"compare.references {self.references} names a method twice: name each once")
        return self

    def uncompared_references(self) -> list[str]:
        """The references that are not among `methods`: their paired columns stay empty."""
        return [m for m in self.references if m not in self.methods]

    @model_validator(mode="after")
    def _sequential(self) -> "CompareSettings":
        plan = self.sequential
        if plan is None:
            return self
        if plan.against not in self.methods:
            raise ValueError(f"sequential.against {plan.against!r} is not among methods {self.methods}: add it")
        if plan.against not in self.references:
            raise ValueError(
                f"sequential.against {plan.against!r} is not among compare.references {self.references}: add it there"
            )
        strangers = [m for m in plan.methods if m not in self.methods or m == plan.against]
        if strangers:
            raise ValueError(
                f"sequential.methods {strangers}: name methods of compare.methods other than {plan.against}"
            )
        if len(self.seeds) < 2 or plan.max_seeds < len(self.seeds):
            raise ValueError(
                f"sequential.max_seeds {plan.max_seeds} and seeds {self.seeds}: start with at least 2 "
                "seeds and at most max_seeds"
            )
        if self.interval != "t":
            raise ValueError(
                "sequential seeds use t intervals (the bootstrap's is too coarse on a few seeds to "
                "split its error over looks): set compare.interval: t"
            )
        return self


class MlflowSettings(Strict):
    """Where runs are tracked; every write goes through the sweep's journal first."""

    experiment: Optional[str] = Field(None, description="default: the spec's name")
    tracking_uri: Optional[str] = Field(None, description="default: sqlite:///mlflow.db in the working folder")
    tags: dict[str, str] = Field(default_factory=dict, description="set on every run this spec makes")
    send_timeout_s: float = Field(
        60.0,
        ge=0,
        description="at the end, how long to wait for MLflow to take the "
        "writes it has not yet; the rest stay in the sweep's journal for orchestrator.sync",
    )


class Spec(TrainingSettings):
    """What `orchestrator.sweep` and `orchestrator.train` read."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="names the sweep folder (NAME-DATE-TIME) and, by default, the MLflow experiment",
    )
    storage: Optional[str] = Field(
        None,
        description=f"sweeps, runs and the teacher cache: a folder every node reads, "
        f"or s3://bucket/prefix; default ${STORAGE_ENV}, else ./{DEFAULT_STORAGE}",
    )
    resources: Resources = Field(default_factory=Resources, description="per trial")
    teacher_resources: Optional[Resources] = Field(None, description="for training the teacher; default: resources")
    tune: TuneSettings = Field(default_factory=TuneSettings, description="the search: objective, trials, scheduler")
    search: dict[str, SearchParam] = Field(
        default_factory=dict,
        description="dotted key (e.g. loss.threshold) -> {type: float|int|categorical, ...}: the keys Optuna searches",
    )
    compare: Optional[CompareSettings] = Field(
        None, description="set it to compare methods over seeds instead of searching"
    )
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings, description="where runs are tracked")

    @model_validator(mode="before")
    @classmethod
    def _older_dumps(cls, data: Any) -> Any:
        """Specs saved by earlier versions (a sweep's spec.yaml, its MLflow config) hold the driver's keys, empty:
        those are dropped; a value in one stays an unknown key, refused."""
        if isinstance(data, dict) and any(key in data and data[key] is None for key in DRIVER_KEYS):
            data = {k: v for k, v in data.items() if not (k in DRIVER_KEYS and v is None)}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "Spec":
        known = sorted(ARCHITECTURES)
        unknown = [arch for arch in self.students.archs if arch not in ARCHITECTURES]
        if unknown:
            raise ValueError(f"students.archs: unknown architectures {unknown}: use one of {known}")
        if self.teacher.arch not in ARCHITECTURES:
            raise ValueError(f"teacher.arch: unknown architecture {self.teacher.arch!r}: use one of {known}")
        if needs_two_students(self.loss.method) and len(self.students.archs) != 2:
            raise ValueError(f"method {self.loss.method!r} trains two students: list two in students.archs")
        resolve_method(self.loss.settings())
        for key in self.search:
            _check_search_key(key, self.loss.method)
        if self.compare and self.search:
            raise ValueError("a spec has either search (a sweep) or compare (fixed trials): remove one of them")
        if self.compare and isinstance(self.tune.metric, list):
            raise ValueError("tune.metric lists objectives, which a comparison does not search: give it one metric")
        if "seed" in self.search:
            raise ValueError(
                "search key 'seed' is not searched (a seed is no setting to tune): compare seeds with a "
                "compare section instead"
            )
        if self.students.sync_bn and self.resources.num_workers > 1 and not self.resources.use_gpu:
            raise ValueError(
                "students.sync_bn needs GPU workers (SyncBatchNorm has no CPU kernel): set "
                "resources.use_gpu: true or students.sync_bn: false"
            )
        for method in self.compare.methods if self.compare else []:
            try:
                resolve_method({**self.loss.settings(), "method": method})
            except ValueError as err:
                raise ValueError(f"compare.methods: {method}: {err}") from None
            if needs_two_students(method) and len(self.students.archs) != 2:
                raise ValueError(f"compare.methods: {method!r} trains two students: list two in students.archs")
        return self

    def variants(self) -> list[dict[str, Any]]:
        """The trials of a comparison (method x seed), or of nothing for a sweep."""
        if not self.compare:
            return []
        return [{"loss.method": m, "seed": s} for m in self.compare.methods for s in self.compare.seeds]

    def resolved(self) -> "Spec":
        """The spec with every path absolute and the storage fixed, as the driver sees them: what trials get."""
        raw = self.model_dump()
        raw.update(self.run_config().model_dump(include={"data", "teacher", "students"}))
        raw["storage"] = self.storage_location
        return Spec.model_validate(raw)

    def run_config(self) -> RunConfig:
        """The workers' config, with file paths made absolute (Tune runs trials in their own folders)."""
        raw = self.model_dump(include=set(RunConfig.model_fields))
        root = raw["data"]["root"]
        raw["data"]["root"] = root if root and storage.is_uri(root) else _absolute(root, "data.root")
        for key in ("checkpoint", "init_weights"):
            raw["teacher"][key] = _absolute(raw["teacher"][key], f"teacher.{key}")
        raw["students"]["init_weights"] = {
            arch: _absolute(path, f"students.init_weights.{arch}")
            for arch, path in raw["students"]["init_weights"].items()
        }
        return RunConfig.model_validate(raw)

    @property
    def storage_origin(self) -> str:
        """Where the storage setting comes from: the spec (or --set), $DUALKD_STORAGE, or the default."""
        return "the spec" if self.storage else f"${STORAGE_ENV}" if os.environ.get(STORAGE_ENV) else "the default"

    @property
    def storage_setting(self) -> str:
        """The storage as configured: the spec's, else $DUALKD_STORAGE, else `runs`."""
        return self.storage or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE

    @property
    def storage_location(self) -> str:
        """The storage as an absolute folder or a bucket URI."""
        setting = self.storage_setting
        return setting if storage.is_uri(setting) else _absolute(setting, "storage")


def _absolute(path: Optional[str], key: str) -> Optional[str]:
    """Expand ~ and $VARS and make a path absolute; an unset variable is a spec error."""
    if not path:
        return path
    expanded = os.path.expandvars(os.path.expanduser(path))
    if "$" in expanded:
        raise SpecError(f"{key} = {path!r} names an unset environment variable: export it or --set {key}=PATH")
    return str(Path(expanded).resolve())


def field_section(annotation: Any) -> Optional[type[BaseModel]]:
    """The model a field holds (directly or as Optional): a section of keys, else None."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def setting_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key `model` holds, its sections walked: what a misspelt key is matched against."""
    keys = []
    for name, field in model.model_fields.items():
        section = field_section(field.annotation)
        keys += setting_keys(section, f"{prefix}{name}.") if section else [f"{prefix}{name}"]
    return keys


def closest_key(key: str, candidates: list[str]) -> Optional[str]:
    """The key a misspelt one most likely meant: the closest spelling (loss.temprature -> loss.temperature), else
    the one key with the same last part (students.temperature -> loss.temperature); None when nothing is close."""
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.75)
    if match:
        return match[0]
    leaf = key.rpartition(".")[2]
    same = [c for c in candidates if c.rpartition(".")[2] == leaf]
    return same[0] if len(same) == 1 else None


def _check_search_key(key: str, method: str) -> None:
    if key == "students.epochs":
        raise ValueError(
            "search key 'students.epochs' is not searched: ASHA, the trial states and the tables read every trial "
            "as students.epochs long, and ASHA already stops weak trials early: set students.epochs to the "
            "longest a trial may train"
        )
    path = key.split(".")
    fields: Any = TrainingSettings.model_fields
    for depth, part in enumerate(path):
        if part not in fields:
            meant = closest_key(key, setting_keys(TrainingSettings))
            hint = f": did you mean {meant}?" if meant else " (e.g. loss.temperature, students.lr)"
            raise ValueError(f"search key {key!r} is not a training setting{hint}")
        annotation = fields[part].annotation
        fields = getattr(annotation, "model_fields", None) if depth < len(path) - 1 else None
        if depth < len(path) - 1 and fields is None:
            raise ValueError(f"search key {key!r} is not a training setting (e.g. loss.temperature, students.lr)")
    if getattr(annotation, "model_fields", None) is not None:
        raise ValueError(
            f"search key {key!r} is a section, not a setting: search one of its keys, "
            f"e.g. {key}.{next(iter(annotation.model_fields))}"
        )
    if path[0] == "loss" and path[-1] in PRESETS[method]:
        raise ValueError(f"search key {key!r} is fixed by method {method!r}: drop it from search or change the method")
