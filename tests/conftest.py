import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")

# what a test may need beyond pip (pyproject.toml's markers); such a test must be slow
NEEDS_MORE_THAN_PIP = ("root", "needs_compose", "needs_cxx", "needs_git")


def pytest_collection_modifyitems(config, items):
    """The quick tier must pass on a machine with nothing but Python and the pip dependencies, from a clone or
    an exported tree: a test marked with a need beyond pip but not `slow` is refused before anything runs."""
    loose = [
        item.nodeid
        for item in items
        if any(item.get_closest_marker(m) for m in NEEDS_MORE_THAN_PIP) and not item.get_closest_marker("slow")
    ]
    if loose:
        raise pytest.UsageError("marked with a need beyond pip but not slow: " + ", ".join(loose))


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray for the whole session: starting it costs seconds, so the tests share it.

    With its dashboard on a pinned port (`pin_state_api`), as the commands start theirs: Ray Train removes a
    finished or stopped trial's placement group through the state API, and without one that answers for this
    Ray (none, or another instance's on the machine) the group keeps its CPUs, and the next fit waits forever."""
    import ray

    from orchestrator.execution import pin_state_api

    port = pin_state_api()
    ray.init(
        num_cpus=2, resources={"TRAIN_DRIVER": 4}, include_dashboard=True, dashboard_port=port, log_to_driver=False
    )
    os.environ.pop("RAY_API_SERVER_ADDRESS")  # its processes have it; the sweeps and clusters tests start must not
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def teacher_cache(tmp_path_factory):
    """One teacher cache for the session's sweeps: a tiny teacher with the same settings is trained once, not once
    per test (each costs a TorchTrainer start here). Tests that check the cache itself keep their own."""
    return tmp_path_factory.mktemp("teachers")


def share_teachers(storage: Path, cache: Path) -> Path:
    """Point `storage`'s teacher cache at the session's (`teacher_cache`); `storage` itself."""
    storage.mkdir(parents=True, exist_ok=True)
    (storage / "teachers").symlink_to(cache, target_is_directory=True)
    return storage


def tiny_spec_dict(tmp_path, **sections):
    """A spec small enough for a 2-core machine: 240 digits at 8 px, one epoch."""
    spec = {
        "name": "tiny",
        "storage": str(tmp_path / "runs"),
        "data": {"name": "digits", "image_size": 8, "train_subset": 240},
        "teacher": {"arch": "resnet18", "epochs": 1, "batch_size": 32, "lr": 0.02},
        "students": {"archs": ["resnet18", "mobilenet_v2"], "epochs": 1, "batch_size": 32, "lr": 0.02},
        "loss": {"method": "ua_dual", "weighting": "entropy"},
    }
    for key, value in sections.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    return spec
