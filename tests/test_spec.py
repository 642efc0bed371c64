"""The spec: YAML -> validated Spec, `--set` overrides, the search space, and one-line SpecErrors.

Fast and without Ray: every test here validates dicts or small YAML files (the one CLI test runs
`python -m orchestrator.train` on a bad spec, which fails before Ray starts).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.spec import (
    FloatParam,
    Spec,
    SpecError,
    apply_overrides,
    load_spec,
    optuna_space,
    read_yaml,
    spec_changes,
    validate_spec,
    with_values,
)
from trainables.config import DRIVER_KEYS, ConfigError, RunConfig

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT / "search_spaces" / "peer.yaml"


@pytest.fixture(scope="module")
def peer_raw() -> dict:
    return read_yaml(PEER)


def _raw(peer_raw: dict, **sections) -> dict:
    """peer.yaml with `sections` merged in (a dict merges into its section; `search` and non-dicts replace)."""
    raw = copy.deepcopy(peer_raw)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict) and key != "search":
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return raw


def _write(tmp_path: Path, raw, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


def assert_one_line(err: BaseException, *names: str) -> str:
    """The error is a SpecError (a ConfigError), on one line, naming every one of `names`."""
    assert isinstance(err, SpecError) and isinstance(err, ConfigError)
    msg = str(err)
    assert msg, "empty error message"
    assert "\n" not in msg and "\r" not in msg, f"error spans several lines: {msg!r}"
    for name in names:
        assert name in msg, f"{name!r} not named in {msg!r}"
    return msg


def spec_error(raw: dict, *names: str) -> str:
    with pytest.raises(SpecError) as info:
        validate_spec(raw)
    return assert_one_line(info.value, *names)


# --------------------------------------------------------------------------- the shipped spec


def test_peer_yaml_loads():
    spec = load_spec(PEER)
    assert isinstance(spec, Spec)
    assert spec.name == "peer"
    assert spec.loss.method == "ua_dual"
    assert spec.loss.weighting == "entropy+threshold"
    assert spec.loss.threshold == pytest.approx(0.8)
    assert spec.students.archs == ["resnet18", "mobilenet_v2"]
    assert spec.teacher.arch == "resnet34"
    assert spec.teacher_resources is not None and spec.teacher_resources.cpus_per_worker == 2
    assert set(spec.search) == {"loss.threshold", "loss.temperature", "loss.alpha", "loss.beta"}
    assert isinstance(spec.search["loss.temperature"], FloatParam) and spec.search["loss.temperature"].log


def test_peer_yaml_optuna_space():
    import optuna.distributions as d

    space = optuna_space(load_spec(PEER))
    assert set(space) == {"loss.threshold", "loss.temperature", "loss.alpha", "loss.beta"}
    assert all(isinstance(v, d.FloatDistribution) for v in space.values())
    assert space["loss.temperature"].log and (space["loss.temperature"].low, space["loss.temperature"].high) == (
        1.0,
        6.0,
    )
    assert not space["loss.alpha"].log


def test_optuna_space_int_and_categorical(peer_raw):
    import optuna.distributions as d

    raw = _raw(
        peer_raw,
        search={
            "students.warmup_epochs": {"type": "int", "low": 0, "high": 4, "step": 2},
            "students.batch_size": {"type": "int", "low": 16, "high": 128, "log": True},
            "loss.weighting": {"type": "categorical", "choices": ["entropy", "threshold", "entropy+threshold"]},
            "students.lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
        },
    )
    space = optuna_space(validate_spec(raw))
    assert space["students.warmup_epochs"] == d.IntDistribution(0, 4, step=2)
    assert space["students.batch_size"] == d.IntDistribution(16, 128, log=True)
    assert space["loss.weighting"] == d.CategoricalDistribution(["entropy", "threshold", "entropy+threshold"])
    assert space["students.lr"] == d.FloatDistribution(1e-3, 1e-1, log=True)


def test_run_config_of_peer_yaml():
    spec = load_spec(PEER)
    cfg = spec.run_config()
    assert type(cfg) is RunConfig
    assert not hasattr(cfg, "search") and not hasattr(cfg, "resources")
    assert cfg.data.root is None and cfg.teacher.checkpoint is None and cfg.teacher.init_weights is None
    assert cfg.students.init_weights == {}
    assert cfg.loss.model_dump() == spec.loss.model_dump()
    assert cfg.students.model_dump() == spec.students.model_dump()
    # the plain dict the driver sends to workers validates again as a RunConfig
    assert RunConfig.model_validate(cfg.model_dump()) == cfg


def test_run_config_makes_paths_absolute(peer_raw, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPEC_TEST_WEIGHTS", str(tmp_path / "w"))
    raw = _raw(
        peer_raw,
        data={"name": "imagefolder", "root": "images"},
        teacher={"checkpoint": "~/teacher.pt", "init_weights": "$SPEC_TEST_WEIGHTS/t.pt"},
        students={"init_weights": {"resnet18": "r18.pt"}},
    )
    spec = validate_spec(raw)
    assert spec.data.root == "images"  # the spec itself keeps what the user wrote
    cfg = spec.run_config()
    for path in (
        cfg.data.root,
        cfg.teacher.checkpoint,
        cfg.teacher.init_weights,
        cfg.students.init_weights["resnet18"],
    ):
        assert path is not None and os.path.isabs(path), path
    assert cfg.data.root == str((tmp_path / "images").resolve())
    assert cfg.teacher.checkpoint == str((Path.home() / "teacher.pt").resolve())
    assert cfg.teacher.init_weights == str((tmp_path / "w" / "t.pt").resolve())
    assert cfg.students.init_weights == {"resnet18": str((tmp_path / "r18.pt").resolve())}


def test_run_config_unset_variable_is_a_spec_error(peer_raw, monkeypatch):
    monkeypatch.delenv("SOME_UNSET_VAR", raising=False)
    spec = validate_spec(_raw(peer_raw, data={"name": "imagefolder", "root": "$SOME_UNSET_VAR/x"}))
    with pytest.raises(SpecError) as info:
        spec.run_config()
    assert_one_line(info.value, "data.root", "SOME_UNSET_VAR")


def test_run_config_unset_variable_in_student_weights(peer_raw, monkeypatch):
    monkeypatch.delenv("SOME_UNSET_VAR", raising=False)
    spec = validate_spec(_raw(peer_raw, students={"init_weights": {"resnet18": "${SOME_UNSET_VAR}/r18.pt"}}))
    with pytest.raises(SpecError) as info:
        spec.run_config()
    assert_one_line(info.value, "students.init_weights.resnet18")


# --------------------------------------------------------------------------- --set overrides


def test_overrides_parse_values_as_yaml():
    spec = load_spec(
        PEER,
        [
            "loss.alpha=0.25",  # float
            "students.epochs=3",  # int
            "students.amp=false",  # bool
            "data.augment=true",
            "students.archs=[resnet34, resnet18]",  # list
            "loss.threshold=null",  # null
            "tune.num_trials=3",  # nested sections the driver alone reads
            "resources.use_gpu=yes",
            "mlflow.experiment=other",
            "name=peer-2",
        ],
    )
    assert spec.loss.alpha == 0.25
    assert spec.students.epochs == 3 and type(spec.students.epochs) is int
    assert spec.students.amp is False
    assert spec.data.augment is True
    assert spec.students.archs == ["resnet34", "resnet18"]
    assert spec.loss.threshold is None
    assert spec.tune.num_trials == 3
    assert spec.resources.use_gpu is True
    assert spec.mlflow.experiment == "other"
    assert spec.name == "peer-2"
    # what was not overridden is peer.yaml's
    base = load_spec(PEER)
    assert spec.loss.temperature == base.loss.temperature and spec.teacher == base.teacher


def test_overrides_later_wins_and_raw_untouched(peer_raw):
    before = copy.deepcopy(peer_raw)
    out = apply_overrides(peer_raw, ["loss.alpha=0.1", "loss.alpha=0.7", "students.lr=0.001", "seed=4"])
    assert peer_raw == before, "apply_overrides changed its input"
    assert out["loss"]["alpha"] == 0.7
    assert out["students"]["lr"] == pytest.approx(1e-3)
    assert out["seed"] == 4
    assert out["loss"]["beta"] == peer_raw["loss"]["beta"]


def test_override_exponent_float():
    """YAML 1.1 reads `1e-3` as a string; validation still makes it the float 0.001."""
    spec = load_spec(PEER, ["students.lr=1e-3", "loss.temperature=2e0"])
    assert spec.students.lr == pytest.approx(1e-3) and isinstance(spec.students.lr, float)
    assert spec.loss.temperature == 2.0


def test_override_creates_missing_section(peer_raw):
    raw = copy.deepcopy(peer_raw)
    del raw["mlflow"]
    out = apply_overrides(raw, ["mlflow.tracking_uri=sqlite:///x.db"])
    assert out["mlflow"] == {"tracking_uri": "sqlite:///x.db"}
    assert validate_spec(out).mlflow.tracking_uri == "sqlite:///x.db"


def test_override_value_with_equals_sign(peer_raw):
    out = apply_overrides(peer_raw, ["mlflow.tracking_uri=http://host:5000/?a=b"])
    assert out["mlflow"]["tracking_uri"] == "http://host:5000/?a=b"


@pytest.mark.parametrize("item", ["loss.alpha", "=3", " =0.5", ""])
def test_malformed_override(peer_raw, item):
    with pytest.raises(SpecError) as info:
        apply_overrides(peer_raw, [item])
    assert_one_line(info.value, "key=value", repr(item))


def test_malformed_override_through_load_spec():
    with pytest.raises(SpecError) as info:
        load_spec(PEER, ["loss.alpha"])
    assert_one_line(info.value, "loss.alpha", "key=value")


def test_override_unknown_key_is_named():
    with pytest.raises(SpecError) as info:
        load_spec(PEER, ["loss.alpah=0.3"])
    assert_one_line(info.value, "loss.alpah")


def test_override_out_of_range_is_named():
    with pytest.raises(SpecError) as info:
        load_spec(PEER, ["students.epochs=0"])
    assert_one_line(info.value, "students.epochs")


def test_override_below_a_value_is_a_spec_error():
    with pytest.raises(SpecError) as info:
        load_spec(PEER, ["seed.x=1"])
    assert_one_line(info.value, "seed")


def test_override_inside_a_dotted_search_key():
    spec = load_spec(PEER, ["search.loss.alpha.low=0.2"])
    assert spec.search["loss.alpha"].low == 0.2
    assert set(spec.search) == {"loss.threshold", "loss.temperature", "loss.alpha", "loss.beta"}


def test_override_can_replace_search():
    spec = load_spec(PEER, ["search={students.lr: {type: float, low: 0.001, high: 0.1, log: true}}"])
    assert set(spec.search) == {"students.lr"}
    assert spec.search["students.lr"].log


def test_override_inside_a_null_section(peer_raw, tmp_path):
    raw = _raw(peer_raw, teacher_resources=None)
    spec = load_spec(_write(tmp_path, raw), ["teacher_resources.cpus_per_worker=2"])
    assert spec.teacher_resources is not None and spec.teacher_resources.cpus_per_worker == 2


# --------------------------------------------------------------------------- one-line errors naming the key


def test_unknown_top_level_key(peer_raw):
    spec_error(_raw(peer_raw, searchh={}), "searchh")


def test_unknown_nested_key(peer_raw):
    msg = spec_error(_raw(peer_raw, loss={"alpah": 0.3}), "loss.alpah")
    assert "unknown key" in msg


def test_unknown_key_in_driver_section(peer_raw):
    spec_error(_raw(peer_raw, resources={"num_worker": 2}), "resources.num_worker")


def test_wrong_type(peer_raw):
    spec_error(_raw(peer_raw, students={"epochs": "many"}), "students.epochs")


def test_wrong_type_section_is_not_a_mapping(peer_raw):
    spec_error(_raw(peer_raw, loss=3), "loss")


@pytest.mark.parametrize(
    "section,key,value",
    [
        ("loss", "alpha", 2),
        ("loss", "alpha", -0.1),
        ("loss", "threshold", 0),
        ("loss", "threshold", 1.5),
        ("loss", "temperature", 0),
        ("data", "image_size", 4),
        ("data", "val_fraction", 1.0),
        ("students", "lr", 0),
        ("students", "momentum", 1.0),
        ("teacher", "epochs", 0),
        ("resources", "num_workers", 0),
        ("tune", "reduction_factor", 1),
    ],
)
def test_out_of_range(peer_raw, section, key, value):
    spec_error(_raw(peer_raw, **{section: {key: value}}), f"{section}.{key}")


def test_bad_name(peer_raw):
    spec_error(_raw(peer_raw, name="has space"), "name")


def test_unknown_method(peer_raw):
    spec_error(_raw(peer_raw, loss={"method": "hinton"}), "loss.method")


def test_unknown_student_architecture(peer_raw):
    msg = spec_error(_raw(peer_raw, students={"archs": ["resnet18", "resnet999"]}), "students.archs")
    assert "resnet999" in msg


def test_unknown_architecture_is_an_error(peer_raw):
    """The part of the above that holds today: it is a one-line SpecError naming the bad name."""
    spec_error(_raw(peer_raw, students={"archs": ["resnet18", "resnet999"]}), "resnet999")
    spec_error(_raw(peer_raw, teacher={"arch": "vit_h"}), "vit_h")


def test_unknown_teacher_architecture(peer_raw):
    spec_error(_raw(peer_raw, teacher={"arch": "vit_h"}), "teacher.arch", "vit_h")


def test_too_many_students(peer_raw):
    spec_error(_raw(peer_raw, students={"archs": ["resnet18", "resnet34", "mobilenet_v2"]}), "students.archs")


@pytest.mark.parametrize("method", ["ua_dual", "dml", "dual_kd"])
def test_two_student_method_with_one_student(peer_raw, method):
    raw = _raw(peer_raw, students={"archs": ["resnet18"]}, loss={"method": method}, search={})
    spec_error(raw, "students.archs", method)


@pytest.mark.parametrize("method", ["ce", "kd", "ua_kd"])
def test_one_student_methods_accept_one_student(peer_raw, method):
    raw = _raw(peer_raw, students={"archs": ["resnet18"]}, loss={"method": method}, search={})
    assert validate_spec(raw).students.archs == ["resnet18"]


@pytest.mark.parametrize("method", ["ua_dual", "ua_kd"])
def test_uncertainty_method_without_weighting(peer_raw, method):
    raw = _raw(peer_raw, loss={"method": method, "weighting": "none"}, search={})
    spec_error(raw, "loss.weighting")


def test_dml_without_peer_term(peer_raw):
    raw = _raw(peer_raw, loss={"method": "dml", "beta": 0}, search={})
    spec_error(raw, "loss.beta")


def test_data_imagefolder_needs_root(peer_raw):
    spec_error(_raw(peer_raw, data={"name": "imagefolder"}), "data.root")


# --------------------------------------------------------------------------- the search section


@pytest.mark.parametrize(
    "key",
    [
        "loss.nope",
        "resources.num_workers",
        "tune.num_trials",
        "nope",
        "students.lr.x",
        "students.init_weights.resnet18",
    ],
)
def test_search_key_not_a_setting(peer_raw, key):
    raw = _raw(peer_raw, search={key: {"type": "float", "low": 0.1, "high": 0.9}})
    msg = spec_error(raw, key)
    assert "not a training setting" in msg


@pytest.mark.parametrize("key", ["loss", "students"])
def test_search_key_naming_a_section(peer_raw, key):
    raw = _raw(peer_raw, search={key: {"type": "float", "low": 0.1, "high": 0.9}})
    spec_error(raw, key)


@pytest.mark.parametrize("key", ["data.image_size", "teacher.lr", "students.optimizer", "loss.peer_weighting"])
def test_search_key_any_training_setting(peer_raw, key):
    raw = _raw(peer_raw, search={key: {"type": "categorical", "choices": [0]}})
    assert key in validate_spec(raw).search


def test_epochs_are_not_searched(peer_raw):
    """ASHA's max_t, the trial states and the tables read every trial as students.epochs long."""
    raw = _raw(peer_raw, search={"students.epochs": {"type": "int", "low": 2, "high": 8}})
    spec_error(raw, "students.epochs", "ASHA", "longest")


def test_seed_is_compared_not_searched(peer_raw):
    spec_error(_raw(peer_raw, search={"seed": {"type": "int", "low": 0, "high": 3}}), "seed", "compare")


def test_sync_bn_needs_gpu_workers_when_there_are_several(peer_raw):
    spec_error(_raw(peer_raw, students={"sync_bn": True}, resources={"num_workers": 2}), "students.sync_bn", "use_gpu")
    assert validate_spec(_raw(peer_raw, students={"sync_bn": True}, resources={"num_workers": 2, "use_gpu": True}))


@pytest.mark.parametrize(
    "method,key",
    [
        ("kd", "loss.beta"),
        ("kd", "loss.weighting"),
        ("ce", "loss.alpha"),
        ("dml", "loss.alpha"),
        ("ua_kd", "loss.beta"),
    ],
)
def test_search_key_fixed_by_method(peer_raw, method, key):
    students = {"archs": ["resnet18", "mobilenet_v2"]}
    loss = {"method": method, "weighting": "none" if method in ("kd", "ce", "dml") else "entropy"}
    raw = _raw(peer_raw, students=students, loss=loss, search={key: {"type": "float", "low": 0.1, "high": 0.9}})
    spec_error(raw, key, method)


def test_search_key_not_fixed_by_method(peer_raw):
    raw = _raw(
        peer_raw,
        loss={"method": "kd", "weighting": "none"},
        search={"loss.alpha": {"type": "float", "low": 0.1, "high": 0.9}},
    )
    assert "loss.alpha" in validate_spec(raw).search


@pytest.mark.parametrize(
    "param",
    [
        {"type": "float", "low": 0.9, "high": 0.1},
        {"type": "float", "low": 0.5, "high": 0.5},
        {"type": "int", "low": 4, "high": 2},
    ],
)
def test_search_low_not_below_high(peer_raw, param):
    key = "students.epochs" if param["type"] == "int" else "loss.alpha"
    msg = spec_error(_raw(peer_raw, search={key: param}), f"search.{key}")
    assert "must be below high" in msg


def test_search_error_is_only_about_the_mistake(peer_raw):
    msg = spec_error(_raw(peer_raw, search={"loss.alpha": {"type": "float", "low": 0.9, "high": 0.1}}), "loss.alpha")
    assert ";" not in msg and "CategoricalParam" not in msg and "choices" not in msg, msg


@pytest.mark.parametrize("low", [0, -1.0])
def test_search_float_log_needs_positive_low(peer_raw, low):
    raw = _raw(peer_raw, search={"loss.temperature": {"type": "float", "low": low, "high": 6, "log": True}})
    msg = spec_error(raw, "search.loss.temperature")
    assert "low > 0" in msg


def test_search_int_log_needs_positive_low(peer_raw):
    raw = _raw(peer_raw, search={"students.epochs": {"type": "int", "low": 0, "high": 4, "log": True}})
    spec_error(raw, "search.students.epochs")


def test_search_int_log_with_step(peer_raw):
    raw = _raw(peer_raw, search={"students.epochs": {"type": "int", "low": 1, "high": 8, "log": True, "step": 2}})
    spec_error(raw, "search.students.epochs")


def test_search_categorical_without_choices(peer_raw):
    raw = _raw(peer_raw, search={"loss.weighting": {"type": "categorical", "choices": []}})
    msg = spec_error(raw, "search.loss.weighting")
    assert "choices" in msg


def test_search_unknown_type(peer_raw):
    raw = _raw(peer_raw, search={"loss.alpha": {"type": "uniform", "low": 0.1, "high": 0.9}})
    msg = spec_error(raw, "search.loss.alpha")
    assert "type" in msg


def test_search_unknown_param_key(peer_raw):
    raw = _raw(peer_raw, search={"loss.alpha": {"type": "float", "low": 0.1, "high": 0.9, "lo": 0}})
    spec_error(raw, "search.loss.alpha", "lo")


# --------------------------------------------------------------------------- errors that name their source and the fix


def test_a_misspelt_set_key_names_the_set_and_the_key_meant():
    with pytest.raises(SpecError) as info:
        load_spec(PEER, ["loss.temprature=3"])
    msg = assert_one_line(info.value)
    assert msg == "--set loss.temprature=3: unknown key: did you mean loss.temperature?"


def test_a_misspelt_file_key_names_the_file_and_the_key_meant(peer_raw, tmp_path):
    path = _write(tmp_path, _raw(peer_raw, loss={"temprature": 3}))
    with pytest.raises(SpecError) as info:
        load_spec(path, ["students.epochs=2"])  # an override elsewhere is not blamed
    msg = assert_one_line(info.value)
    assert msg == f"{path}: loss.temprature: unknown key: did you mean loss.temperature?"


@pytest.mark.parametrize(
    "item,meant",
    [
        ("temperature=3", "loss.temperature"),
        ("students.temperature=3", "loss.temperature"),
        ("tune.metrc=x", "tune.metric"),
    ],
)
def test_a_key_in_the_wrong_place_suggests_where_it_lives(item, meant):
    with pytest.raises(SpecError) as info:
        load_spec(PEER, [item])
    assert_one_line(info.value, f"--set {item}:", f"did you mean {meant}?")


def test_a_union_error_says_what_the_key_takes():
    with pytest.raises(SpecError) as info:
        load_spec(PEER, ["tune.mode=maximize"])
    msg = assert_one_line(info.value)
    assert msg == "--set tune.mode=maximize: 'maximize' is not valid: it takes max or min, or a list of max or min"


def test_a_missing_key_is_a_sentence(peer_raw, tmp_path):
    raw = copy.deepcopy(peer_raw)
    del raw["name"]
    path = _write(tmp_path, raw)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    msg = assert_one_line(info.value, f"{path}: name is missing: add it, it takes text")
    assert "Field required" not in msg


def test_a_field_of_a_search_entry_the_spec_lacks_names_the_entry_meant():
    with pytest.raises(SpecError) as info:
        load_spec(PEER, ["search.loss.temprature.low=1"])
    msg = assert_one_line(info.value, "--set search.loss.temprature.low", "did you mean search.loss.temperature.low?")
    assert "dictionary" not in msg


def test_a_search_entry_that_is_no_mapping_says_what_an_entry_is(peer_raw):
    msg = spec_error(_raw(peer_raw, search={"loss.alpha": 0.5}), "search.loss.alpha: a search entry is a mapping")
    assert "dictionary" not in msg


def test_a_teacher_view_error_names_its_key_once():
    with pytest.raises(SpecError) as info:
        load_spec(PEER, ["teacher.data.rare_classes=[3, 12]"])
    msg = assert_one_line(info.value)
    assert msg == "--set teacher.data.rare_classes=[3, 12]: class 12 does not exist: this data has classes 0 to 9"


def test_a_data_error_names_its_key_once(peer_raw):
    msg = spec_error(_raw(peer_raw, data={"rare_classes": [12]}), "data.rare_classes: class 12 does not exist")
    assert "data: data" not in msg


@pytest.mark.parametrize("key", DRIVER_KEYS)
def test_the_drivers_keys_are_refused_in_a_spec_and_in_set(peer_raw, key):
    spec_error(_raw(peer_raw, **{key: "/somewhere"}), f"spec: {key} is set by the driver")
    with pytest.raises(SpecError) as info:
        load_spec(PEER, [f"{key}=/somewhere"])
    assert_one_line(info.value, f"--set {key}=/somewhere: {key} is set by the driver")


def test_the_drivers_keys_left_empty_by_older_dumps_are_dropped(peer_raw):
    """A sweep's saved spec (and its MLflow config) from before held them as null."""
    spec = validate_spec(_raw(peer_raw, teacher_dir=None, bank_dir=None, failure_file=None))
    assert not set(DRIVER_KEYS) & set(spec.model_dump())


def test_the_drivers_keys_are_not_on_the_reference_page():
    from orchestrator.spec import render

    page = render()
    assert not [key for key in DRIVER_KEYS if f"`{key}`" in page]


# --------------------------------------------------------------------------- reading files


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert_one_line(info.value, str(path), "not found")


def test_directory_is_not_a_spec(tmp_path):
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path)
    assert_one_line(info.value, str(tmp_path))


def test_invalid_yaml(tmp_path):
    path = _write(tmp_path, "name: x\nloss: {alpha: [1, 2\nseed: 0\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    msg = assert_one_line(info.value, str(path), "YAML")
    assert "line" in msg


def test_invalid_yaml_tab_indent(tmp_path):
    path = _write(tmp_path, "name: x\nloss:\n\talpha: 0.5\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert_one_line(info.value, str(path), "YAML")


@pytest.mark.parametrize("text", ["- name: peer\n- seed: 0\n", "just a string\n", "", "42\n"])
def test_yaml_not_a_mapping(tmp_path, text):
    path = _write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert_one_line(info.value, str(path), "mapping")


def test_file_errors_name_the_key(peer_raw, tmp_path):
    path = _write(tmp_path, _raw(peer_raw, loss={"alpha": 2}))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert_one_line(info.value, str(path), "loss.alpha")


def test_missing_name(peer_raw):
    raw = copy.deepcopy(peer_raw)
    del raw["name"]
    spec_error(raw, "name")


def test_minimal_spec_gets_defaults(tmp_path):
    spec = load_spec(_write(tmp_path, {"name": "mini"}))
    assert spec.loss.method == "ua_dual" and spec.students.archs == ["resnet18", "mobilenet_v2"]
    assert spec.search == {} and spec.teacher_resources is None


# --------------------------------------------------------------------------- with_values


def test_with_values_sets_and_keeps_the_rest():
    spec = load_spec(PEER)
    before = spec.model_dump()
    out = with_values(spec, {"loss.threshold": 0.5})
    assert isinstance(out, Spec)
    assert out.loss.threshold == 0.5
    after = out.model_dump()
    assert after["loss"].pop("threshold") == 0.5
    expected = copy.deepcopy(before)
    expected["loss"].pop("threshold")
    assert after == expected
    assert spec.model_dump() == before, "with_values changed its input"


def test_with_values_several_keys():
    spec = load_spec(PEER)
    out = with_values(spec, {"loss.alpha": 0.3, "loss.temperature": 2.5, "students.lr": 0.01, "seed": 7})
    assert (out.loss.alpha, out.loss.temperature, out.students.lr, out.seed) == (0.3, 2.5, 0.01, 7)
    assert out.search.keys() == spec.search.keys() and out.tune == spec.tune and out.resources == spec.resources


def test_with_values_every_search_point_validates():
    """Each bound of peer.yaml's ranges is a valid trial config (the ranges fit the settings' limits)."""
    spec = load_spec(PEER)
    for key, p in spec.search.items():
        for value in (p.low, p.high):
            assert with_values(spec, {key: value}).run_config() is not None


@pytest.mark.parametrize(
    "values,key",
    [
        ({"loss.threshold": 5}, "loss.threshold"),
        ({"loss.threshold": 0.0}, "loss.threshold"),
        ({"students.epochs": "many"}, "students.epochs"),
        ({"loss.thresh": 0.5}, "loss.thresh"),
        ({"loss.weighting": "none"}, "loss.weighting"),
    ],
)
def test_with_values_invalid(values, key):
    with pytest.raises(SpecError) as info:
        with_values(load_spec(PEER), values)
    assert_one_line(info.value, key)


# --------------------------------------------------------------------------- the command line


def test_cli_bad_spec_one_line_exit_2(peer_raw, tmp_path):
    path = _write(tmp_path, _raw(peer_raw, loss={"alpah": 0.3}), "bad.yaml")
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.train", str(path)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:") and "loss.alpah" in lines[0]


def test_cli_a_misspelt_set_key_is_one_line_exit_2():
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.sweep", str(PEER), "--set", "loss.temprature=3", "--dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == "error: --set loss.temprature=3: unknown key: did you mean loss.temperature?\n"


def test_the_committed_spec_reference_is_the_generated_one():
    """docs/spec-reference.md is generated from the models: a changed key or description regenerates it."""
    from orchestrator.spec import PAGE, render

    committed = (Path(__file__).resolve().parents[1] / PAGE).read_text()
    assert committed == render(), "docs/spec-reference.md is stale: run python -m orchestrator.spec --reference"
    for key in ("loss.threshold", "tune.scheduler_metric", "compare.sequential.max_seeds", "data.decode"):
        assert f"| `{key}` |" in committed


@pytest.mark.parametrize(
    "compare, message",
    [
        ({"methods": ["kd", "ua_dual"], "references": ["kd", "kd"]}, "name each once"),
        ({"methods": ["kd", "ua_dual"], "references": []}, "references"),
        (
            {
                "methods": ["ce", "kd", "ua_dual"],
                "references": ["kd"],
                "sequential": {"against": "ce", "methods": ["kd"]},
            },
            "is not among compare.references ['kd']: add it there",
        ),
    ],
)
def test_references_named_twice_or_a_sequential_reference_not_listed_are_refused_in_one_line(compare, message):
    with pytest.raises(SpecError) as err:
        validate_spec({"name": "c", "compare": {"seeds": [0, 1], **compare}})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_references_default_to_kd_and_ce_whatever_the_methods():
    """The default lets methods without kd or ce through (their columns stay empty), also from a spec's own dump;
    a sequential comparison may stop on any reference, and a resume takes a changed list (no trial changes)."""
    spec = validate_spec({"name": "c", "compare": {"methods": ["kd", "ua_dual"]}})
    assert spec.compare.references == ["kd", "ce"]
    assert spec.compare.uncompared_references() == ["ce"]
    assert validate_spec(spec.model_dump()).compare.references == ["kd", "ce"]
    plan = {"against": "dual_kd", "methods": ["ua_dual"]}
    compare = {"methods": ["dual_kd", "ua_dual"], "references": ["dual_kd"], "seeds": [0, 1], "sequential": plan}
    assert validate_spec({"name": "c", "compare": compare}).compare.sequential.against == "dual_kd"
    assert spec_changes({"compare": {"references": ["kd", "ce"]}}, {"compare": {"references": ["kd"]}})[0].taken


def test_references_that_are_not_compared_are_allowed_and_keep_empty_columns():
    """Narrowing a shipped spec's methods (`--set compare.methods=[kd,ua_dual]`) leaves its references [kd, ce,
    dual_kd] valid: ce and dual_kd are not compared, so their columns stay empty; a list of none compared too."""
    compare = {"methods": ["kd", "ua_dual"], "references": ["kd", "ce", "dual_kd"]}
    spec = validate_spec({"name": "c", "compare": compare})
    assert spec.compare.references == ["kd", "ce", "dual_kd"]
    assert spec.compare.uncompared_references() == ["ce", "dual_kd"]
    assert validate_spec(spec.model_dump()).compare.references == ["kd", "ce", "dual_kd"]
    only_absent = validate_spec({"name": "c", "compare": {"methods": ["ua_dual"], "references": ["dml"]}})
    assert only_absent.compare.uncompared_references() == ["dml"]
