"""The Ray and Optuna internals `orchestrator.execution.ray_internals` lists are still where the code reaches for them
(no Ray started: the installed sources and objects are read). A failure here means: read that module's
notes against the new version before raising the pin in pyproject.toml."""

import inspect

import optuna
from optuna.distributions import FloatDistribution
from ray.train._internal.session import _TrainSession
from ray.train._internal.storage import StorageContext
from ray.tune.search.optuna import OptunaSearch

from orchestrator.execution import OPTUNA_SEARCH_FIELDS


def test_the_train_session_still_holds_the_queue_the_last_report_waits_in():
    assert "self._inter_actor_queue" in inspect.getsource(_TrainSession)


def test_optuna_search_still_has_the_fields_the_sweep_searcher_uses(tmp_path):
    search = OptunaSearch(
        space={"a": FloatDistribution(0, 1)},
        metric="x",
        mode="max",
        storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}"),
        study_name="s",
    )
    assert all(hasattr(search, field) for field in OPTUNA_SEARCH_FIELDS)
    search.suggest("t")
    trial = search._ot_trials["t"]
    assert isinstance(trial, optuna.Trial) and isinstance(trial._trial_id, int)
    assert optuna.Trial(search._ot_study, trial._trial_id).number == trial.number


def test_a_tune_trials_storage_context_still_names_its_folders(tmp_path):
    context = StorageContext(storage_path=str(tmp_path), experiment_dir_name="e")
    assert context.storage_filesystem.type_name == "local" and context.experiment_fs_path == str(tmp_path / "e")
    # the staging folder is the Ray session's (asked only in a running driver): the property must still exist
    assert isinstance(inspect.getattr_static(StorageContext, "experiment_driver_staging_path"), property)


def test_the_worker_sides_quieted_logger_module_still_exists():
    from ray.train.v2._internal.execution import context

    assert context.__file__


def test_a_search_generators_state_still_says_whether_it_finished():
    from ray.tune.search import SearchGenerator

    assert "finished" in inspect.getsource(SearchGenerator.get_state)
    assert 'self._finished = state["finished"]' in inspect.getsource(SearchGenerator.set_state)


def test_a_lean_trainer_still_leaves_out_only_the_ray_data_callback():
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks import DatasetsCallback

    from orchestrator.execution import LeanTorchTrainer

    args = (lambda: None,)
    kwargs = {"scaling_config": ray.train.ScalingConfig(num_workers=1)}
    full = [type(c) for c in TorchTrainer(*args, **kwargs)._create_default_callbacks()]
    lean = [type(c) for c in LeanTorchTrainer(*args, **kwargs)._create_default_callbacks()]
    assert DatasetsCallback in full and lean == [c for c in full if c is not DatasetsCallback]


def test_a_lean_trainers_controller_start_is_still_the_trainers_and_tune_still_stops_through_the_event():
    from ray.train.v2._internal.execution.controller import TrainController
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer
    from ray.tune.trainable.function_trainable import FunctionTrainable

    from orchestrator.search.trial import ACTOR_HANDOVER_ENV

    copied = inspect.getsource(DataParallelTrainer._initialize_and_run_controller)
    for step in (
        "get_env_vars_to_propagate()",
        "RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_ENV_VAR",
        "ray._raylet.RAY_NODE_ID_KEY: ray.get_runtime_context().get_node_id()",
        "(TrainController)",
        "controller_actor_cls.remote(**controller_init_kwargs)",
        "ray.get(controller.run.remote())",
        "return ray.get(controller.get_result.remote())",
    ):
        assert step in copied, step
    assert len(copied.splitlines()) < 30  # nothing added that the copy would miss
    assert "exit_actor" in inspect.getsource(TrainController.abort)
    assert "self.stop_event.set()" in inspect.getsource(_TrainSession.finish)
    reset = inspect.getsource(FunctionTrainable.reset_config)
    assert ACTOR_HANDOVER_ENV in reset and "session.finish(timeout=" in reset
