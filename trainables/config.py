"""Validated settings of one training run: the plain dict that crosses from driver to workers.

The driver (orchestrator.spec) composes these models with the search, Tune, resources and MLflow
sections; the workers re-validate the dict they receive, so a typo can never train silently with a
default. Unknown keys are errors everywhere.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trainables.model_names import ARCHITECTURES

Weighting = Literal["none", "entropy", "threshold", "entropy+threshold"]
PeerWeighting = Literal["uniform", "inverse"]
Method = Literal["ce", "kd", "dml", "dual_kd", "ua_kd", "ua_dual"]


class ConfigError(ValueError):
    """A user mistake in the settings: the commands print it as one line, without a traceback."""


class MissingInput(ConfigError, FileNotFoundError):
    """An input the user named (a data root, a weights file, a bank) is not there: a user mistake, unlike any
    other FileNotFoundError, which the commands report as an internal error with its traceback."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


DIGITS_CLASSES = 10  # scikit-learn's handwritten digits
LABEL_VIEWS = ("label_noise", "confused_classes", "rare_classes")  # the embedded data's altered training labels


class DataConfig(Strict):
    """Where the images come from and how they are shaped."""

    name: Literal["digits", "imagefolder", "synthetic"] = Field(
        "digits",
        description="digits: the 8x8 handwritten digits that ship with scikit-learn, upscaled; "
        "imagefolder: train/ and val/ folders of class folders (ImageNet-100); "
        "synthetic: Gaussian-noise images with random labels (no files)",
    )
    root: Optional[str] = Field(None, description="imagefolder: folder holding train/ and val/")
    image_size: int = Field(16, ge=8, le=1024, description="side in pixels of the images the models see")
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="digits: share held out for validation")
    train_subset: Optional[int] = Field(None, ge=10, description="use only this many training images")
    augment: bool = Field(False, description="digits/synthetic: random shifts; imagefolder always augments")
    label_noise: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="digits/synthetic: share of training labels "
        "replaced by another class, fixed by split_seed (validation stays clean)",
    )
    confused_classes: list[list[int]] = Field(
        default_factory=list,
        description="digits/synthetic: groups of classes whose training labels are drawn anew, uniformly within "
        "the group, fixed by split_seed: labels that cannot tell those classes apart (validation stays clean)",
    )
    rare_classes: list[int] = Field(
        default_factory=list,
        description="digits/synthetic: classes of which only rare_keep of the training images stay",
    )
    rare_keep: float = Field(0.1, gt=0.0, le=1.0, description="share of each rare class's training images kept")
    num_classes: int = Field(10, ge=2, description="synthetic only; the others read it from the data")
    synthetic_train_size: int = Field(512, ge=10, description="synthetic only: training images")
    synthetic_val_size: int = Field(128, ge=10, description="synthetic only: validation images")
    loader_workers: int = Field(
        0, ge=0, le=64, description="DataLoader processes per training worker (0: load in the worker itself)"
    )
    split_seed: int = Field(0, ge=0, description="fixes the train/val split (and synthetic data) across run seeds")
    skip_bad_images: bool = Field(
        False, description="imagefolder: skip unreadable images (counted as bad_images) instead of stopping the run"
    )
    decode: Literal["cpu", "gpu", "auto"] = Field(
        "cpu",
        description="imagefolder training images: decoded and "
        "augmented by PIL in the loader workers (cpu), or on the worker's "
        "device (gpu; auto: gpu when the worker has one)",
    )

    @model_validator(mode="after")
    def _root_needed(self) -> "DataConfig":
        if self.name == "imagefolder" and not self.root:
            raise ValueError("data.root is required for imagefolder: set it to the folder holding train/ and val/")
        for key in LABEL_VIEWS:
            if self.name == "imagefolder" and getattr(self, key):
                raise ValueError(f"data.{key} is for the embedded data (digits, synthetic): remove it for imagefolder")
        seen: set[int] = set()
        for group in self.confused_classes:
            if len(set(group)) < 2 or seen & set(group) or min(group) < 0:
                raise ValueError(
                    f"data.confused_classes: {group} is not a group of 2 or more distinct class ids in no other "
                    "group: give disjoint lists such as [[3, 5, 8]]"
                )
            seen |= set(group)
        if min(self.rare_classes, default=0) < 0 or len(set(self.rare_classes)) < len(self.rare_classes):
            raise ValueError(f"data.rare_classes: {self.rare_classes} must be distinct class ids >= 0")
        classes = DIGITS_CLASSES if self.name == "digits" else self.num_classes  # imagefolder has no views
        for key, named in (("confused_classes", seen), ("rare_classes", set(self.rare_classes))):
            if named and max(named) >= classes:
                raise ValueError(
                    f"data.{key}: class {max(named)} does not exist: this data has classes 0 to {classes - 1}"
                )
        return self

    def identity(self) -> dict:
        """What the data are, for cache keys: how they are read is left out, and so are label views not in use
        (a cache made before those keys existed keeps its key)."""
        unused = {key for key in ("confused_classes", "rare_classes") if not getattr(self, key)}
        if "rare_classes" in unused:
            unused.add("rare_keep")
        return self.model_dump(exclude={"loader_workers", "skip_bad_images", "decode"} | unused)


class TeacherDataConfig(Strict):
    """The teacher's own view of the training data, for a teacher with blind spots or more labelled images than
    the students; unset keys are the students'.

    Only the teacher trains on it: the students' images, labels and the teacher's cached soft labels (its
    logits on the students' training images) are those of `data`. The validation split is the students' for
    every view (it does not depend on these keys), so the teacher is measured where the students are.
    """

    train_subset: Optional[Annotated[int, Field(ge=10)] | Literal["all"]] = Field(
        None,
        description="replaces data.train_subset: this many training images, or all: the whole training split "
        "(a teacher that saw more labelled images than the students)",
    )
    label_noise: Optional[float] = Field(None, ge=0.0, lt=1.0, description="replaces data.label_noise")
    confused_classes: Optional[list[list[int]]] = Field(None, description="replaces data.confused_classes")
    rare_classes: Optional[list[int]] = Field(None, description="replaces data.rare_classes")
    rare_keep: Optional[float] = Field(None, gt=0.0, le=1.0, description="replaces data.rare_keep")

    def applied_to(self, data: DataConfig) -> DataConfig:
        """`data` with this view's keys replaced: the data the teacher trains on (validated like `data`)."""
        view = self.model_dump(exclude_none=True)
        if view.get("train_subset") == "all":
            view["train_subset"] = None
        return DataConfig.model_validate({**data.model_dump(), **view})

    def identity(self) -> dict:
        """The view for cache keys: train_subset only when set, so entries made before it existed keep theirs."""
        return self.model_dump(exclude=set() if self.train_subset is not None else {"train_subset"})

    def blind_classes(self) -> list[int]:
        """The classes this view alters (confused or rare): the blind-spot classes a comparison reports apart."""
        return sorted({c for group in self.confused_classes or [] for c in group} | set(self.rare_classes or []))


class OptimConfig(Strict):
    """A training schedule; the teacher and the students each have one."""

    epochs: int = Field(10, ge=1, le=1000, description="passes over the training set")
    batch_size: int = Field(64, ge=1, le=8192, description="per worker: a run of N workers takes N x this per step")
    optimizer: Literal["sgd", "adamw"] = Field("sgd", description="sgd (Nesterov momentum when momentum > 0) or adamw")
    lr: float = Field(0.05, gt=0.0, le=10.0, description="peak learning rate")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="sgd only")
    weight_decay: float = Field(5e-4, ge=0.0, le=1.0, description="L2 penalty (decoupled for adamw)")
    schedule: Literal["cosine", "step", "constant"] = Field(
        "cosine", description="after warm-up: cosine to 0, step (x0.1 at 50 % and 75 % of the steps) or constant"
    )
    warmup_epochs: int = Field(0, ge=0, description="linear warm-up of the learning rate over this many epochs")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="on the cross-entropy with the labels")


class TeacherConfig(OptimConfig):
    """The frozen teacher: trained once per setting and cached, or loaded from a checkpoint."""

    arch: str = Field(
        "resnet50", description=f"one of {', '.join(ARCHITECTURES)} (torchvision's, see trainables.models)"
    )
    checkpoint: Optional[str] = Field(None, description="a state_dict file to load instead of training")
    init_weights: Optional[str] = Field(None, description="local weights file to start training from")
    seed: int = Field(0, ge=0, description="the teacher's own seed: student seeds share one teacher")
    data: Optional[TeacherDataConfig] = Field(
        None,
        description="the teacher's own training data (a teacher with blind spots, or with more labelled images); "
        "default: the students'",
    )
    cache_soft_labels: bool = Field(
        True,
        description="store its train-split logits when the data are deterministic, "
        "else (imagefolder) a soft-label bank of recorded augmented views",
    )
    bank_epochs: Optional[int] = Field(
        None,
        ge=1,
        le=1000,
        description="epochs of views in the bank (default: students.epochs); longer runs reuse them cyclically",
    )
    bank_seed: Optional[int] = Field(
        None,
        ge=0,
        description="the seed of the bank's augmentation draws (default: "
        "the run's seed, one bank per seed; set it to share one bank across seeds)",
    )

    def blind_classes(self) -> list[int]:
        """The classes its own view of the labels alters (none without `data`)."""
        return self.data.blind_classes() if self.data else []

    @model_validator(mode="after")
    def _data_is_for_training(self) -> "TeacherConfig":
        if self.data is not None and self.checkpoint:
            raise ValueError(
                "teacher.data is what a teacher trains on, and teacher.checkpoint is not trained: remove one"
            )
        return self


class StudentsConfig(OptimConfig):
    """The students and their shared schedule."""

    archs: list[str] = Field(
        default_factory=lambda: ["resnet18", "mobilenet_v2"],
        min_length=1,
        max_length=2,
        description="one student (ce, kd, ua_kd) or two (dml, dual_kd, ua_dual), "
        f"each one of {', '.join(ARCHITECTURES)}",
    )
    init_weights: dict[str, str] = Field(default_factory=dict, description="arch -> local weights file")
    channels_last: bool = Field(
        True,
        description="channels-last memory format: every student's on GPU, on CPU MobileNetV2's alone "
        "(its depthwise convolutions run faster so; trainables.models.CPU_CHANNELS_LAST)",
    )
    amp: bool = Field(True, description="bf16 autocast on GPU (ignored on CPU)")
    compile: bool = Field(False, description="torch.compile both students (after the DDP wrap)")
    sync_bn: bool = Field(
        False,
        description="BatchNorm statistics over all workers of a run (SyncBatchNorm; "
        "GPU workers only); the paper does not say, so off",
    )

    @property
    def names(self) -> list[str]:
        """Metric prefixes: the arch name, numbered when both students share it (e.g. DML of two ResNet-18)."""
        if len(self.archs) == 2 and self.archs[0] == self.archs[1]:
            return [f"{self.archs[0]}_1", f"{self.archs[1]}_2"]
        return list(self.archs)


class LossConfig(Strict):
    """The one loss every method is a setting of (see trainables.losses)."""

    method: Method = Field(
        "ua_dual",
        description="a preset of the terms below: ce, kd, dml, dual_kd, ua_kd, ua_dual (see trainables.losses)",
    )
    temperature: float = Field(4.0, gt=0.0, le=100.0, description="softens teacher and peer distributions")
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="weight of the teacher term; 1 - alpha on CE")
    beta: float = Field(1.0, ge=0.0, le=100.0, description="weight of the peer term")
    weighting: Weighting = Field(
        "entropy",
        description="the teacher's weight per sample: none (1), entropy "
        "(1 - u, u = H/log C), threshold (1 where u <= threshold, else 0) or "
        "entropy+threshold",
    )
    threshold: Optional[float] = Field(None, gt=0.0, le=1.0, description="ignore the teacher where H/logC > it")
    peer_weighting: PeerWeighting = Field(
        "uniform",
        description="the peer term's weight per sample: uniform (1) "
        "or inverse (1 - the teacher's weight: peers teach where the teacher "
        "is unsure)",
    )
    peer_warmup_epochs: float = Field(
        0.0,
        ge=0.0,
        le=1000.0,
        description="ramp beta linearly from 0 over this "
        "many epochs (0: off), so the peer term cannot dominate untrained students",
    )

    def settings(self) -> dict:
        """What `trainables.methods.resolve_method` takes: the loss itself, without its schedule."""
        return self.model_dump(exclude={"peer_warmup_epochs"})


DRIVER_KEYS = ("teacher_dir", "bank_dir", "failure_file")  # RunConfig's keys that the driver sets, never a spec


class TrainingSettings(Strict):
    """What a user sets for one training run: a spec's training sections (`RunConfig` adds what the driver sets)."""

    seed: int = Field(0, ge=0, description="the run's seed: initial weights, data order, augmentation")
    deterministic: bool = Field(
        False, description="torch's deterministic algorithms (GPU: slower; the CPU loop is deterministic without it)"
    )
    data: DataConfig = Field(default_factory=DataConfig, description="the dataset")
    teacher: TeacherConfig = Field(default_factory=TeacherConfig, description="the frozen teacher")
    students: StudentsConfig = Field(default_factory=StudentsConfig, description="the students")
    loss: LossConfig = Field(default_factory=LossConfig, description="the distillation loss")

    @model_validator(mode="after")
    def _teacher_data_valid(self) -> "TrainingSettings":
        if self.teacher.data is not None:
            try:
                self.teacher.data.applied_to(self.data)
            except ValidationError as err:
                raise ValueError(teacher_view_problem(err, self.teacher.data)) from None
        return self


def teacher_view_problem(err: ValidationError, view: TeacherDataConfig) -> str:
    """The data's complaint about the teacher's view, naming the view's key: `data.rare_classes: ...` is
    `teacher.data.rare_classes: ...` when the view set rare_classes (the data's own keys passed already)."""
    msg = err.errors()[0]["msg"].removeprefix("Value error, ")
    named = re.match(r"data\.(\w+)", msg)
    if named and named.group(1) in view.model_fields_set:
        return f"teacher.{msg}"
    return f"teacher.data: {msg}"


class RunConfig(TrainingSettings):
    """Everything one training run needs: what the driver sends to every worker."""

    teacher_dir: Optional[str] = Field(None, description="set by the driver: the prepared teacher's cache folder")
    bank_dir: Optional[str] = Field(None, description="set by the driver: the teacher's soft-label bank, if any")
    failure_file: Optional[str] = Field(
        None,
        description="set by the driver: where a worker records a failure that "
        "a restart cannot fix, so that restarts stop at once",
    )
