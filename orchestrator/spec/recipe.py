"""One recipe from search to comparison: what a comparison takes from the best trial of an earlier sweep.

A comparison with `--from-sweep` trains what the search's best trial trained: its data, teacher, students
and loss (the searched values included), not the comparison spec's own copy of them, which may lag behind
the search spec (fewer epochs, no peer warm-up). The comparison spec keeps what is its own: `compare`,
resources, storage, Tune, MLflow, name and seed. A recipe setting that the comparison spec (or `--set`) writes
to another value overrides the recipe and is named, one line each; a setting it does not write keeps the
recipe's value, never a default. A searched key stays the search's value unless `--set` gives another.
Pure functions on raw spec dicts.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterable

from orchestrator.spec.dotted import dotted_items, set_dotted
from orchestrator.spec.loading import validate_spec
from orchestrator.spec.schema import Spec, SpecError

RECIPE_SECTIONS = ("deterministic", "data", "teacher", "students", "loss")
PER_TRIAL = {"loss.method"}  # each comparison trial sets its own method


@dataclass(frozen=True)
class Override:
    key: str
    searched: Any  # the best trial's value
    here: Any  # the comparison's

    def line(self) -> str:
        return f"{self.key}: {self.searched} in the search -> {self.here} here"


def recipe_keys(raw: dict) -> dict[str, Any]:
    """The recipe settings (dotted keys) that a raw spec writes."""
    return {k: v for k, v in dotted_items(raw).items() if k.split(".")[0] in RECIPE_SECTIONS}


def run_settings(spec: Spec) -> dict[str, Any]:
    """A spec's recipe settings as the trials get them (paths absolute where they can be resolved)."""
    try:
        dump = spec.run_config().model_dump()
    except SpecError:  # an unset variable in a path: the dry run names it elsewhere
        dump = spec.model_dump()
    return recipe_keys(dump)


def comparison_from_recipe(
    comparison: dict, recipe: Spec, searched: Iterable[str], command_line: dict
) -> tuple[Spec, list[Override]]:
    """The comparison spec `comparison` (raw, `--set` applied) started from `recipe` (the best trial's spec),
    and the recipe settings it overrides. `command_line`: the raw `--set` overrides alone."""
    searched, forced = set(searched), set(recipe_keys(command_line))
    raw = copy.deepcopy(comparison)
    dump = recipe.model_dump()
    for section in RECIPE_SECTIONS:
        raw[section] = copy.deepcopy(dump[section])
    own = recipe_keys(comparison)
    written = [k for k in own if k not in searched or k in forced]
    for key in written:
        set_dotted(raw, key, own[key])
    spec = validate_spec(raw, "comparison from the search's recipe")
    before, after = run_settings(recipe), run_settings(spec)
    overrides = [
        Override(key, before.get(key), after.get(key))
        for key in written
        if key not in PER_TRIAL and before.get(key) != after.get(key)
    ]
    return spec, overrides
