"""The driver: it decides what to run; `trainables` (the workers) knows how to train, and a plain config dict is
all that crosses.

The commands users type are the top-level modules, each a door (its arguments, then one call into a package):

- `sweep`: `python -m orchestrator.sweep SPEC.yaml`, a search or a comparison (`search.launch_sweep`).
- `train`: one run of a spec's fixed values (`search.train_once`).
- `report`: a finished sweep's tables and plots rebuilt from MLflow (`results.rebuild_report`).
- `sync`: the MLflow writes a journal kept while the server was away, sent (`tracking.send_kept`).
- `teacher_check`: whether the spec's teacher is unsure where it errs (`teacher.check_teacher`).
- `prepare_imagenet100`, `verify_images`: ImageNet-100 from ImageNet-1k, unreadable images listed
  (`data_tools`).
- `python -m orchestrator.spec --reference`: the spec reference page (`spec/__main__.py`).
- `cli`: what every door shares (its spec arguments, one-line errors); not a command.

The libraries, each a package whose `__init__` maps its modules and offers its public names (imported when first
used, so importing a package loads nothing heavy); arrows point down, and no package imports one above it:

- `search`: the drivers: a sweep through Ray Tune (Optuna or a comparison's fixed trials), one run.
- `results`: tables, figures, Pareto fronts, comparisons and their statistics, the report.
- `tracking`: MLflow: URIs, runs, the Ray callbacks that write them, the journal and its sender.
- `teacher`: the teacher prepared once, its uncertainty and quality, what `loss.threshold` gates.
- `execution`: where the driver meets Ray: starting it, one run's TorchTrainer, sweep folders, storage faults.
- `spec`: a spec's schema, loading, search space, pre-flight and reference page.
- `data_tools`: image data on disk: ImageNet-100, resized copies, image checks.

`tests/test_layout.py` holds the code to this layout. Each package's face is `lazy_face` over its `_MODULES` table.

For Python users, `orchestrator.run`, `orchestrator.open_sweep` and `orchestrator.SweepResult` are `search`'s
(docs/python-api.md): found on first use by name, so importing `orchestrator` loads no package below it.
"""

import importlib
import sys


def lazy_face(package: str, modules: dict[str, tuple[str, ...]]):
    """A package's `__getattr__`, `__dir__` and `__all__` from its table (module -> the names it offers the
    other packages): a name is imported from its module on first use, so importing the package imports nothing.
    """
    home = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str):
        if name not in home:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{home[name]}"), name)
        setattr(sys.modules[package], name, value)  # the next use finds it without this function
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *home})

    return __getattr__, __dir__, sorted(home)


_API = ("run", "open_sweep", "SweepResult")  # the Python API, offered here for users (`orchestrator.search.api`)


def __getattr__(name: str):
    """`orchestrator.run` and the rest of `_API`, from `orchestrator.search` on first use: by name, not by an import
    statement, so no package below imports this one back in a circle."""
    if name not in _API:
        raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
    return getattr(importlib.import_module("orchestrator.search"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
