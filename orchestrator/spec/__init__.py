"""A spec: what it holds, how it is read and checked, and its reference page.

- `schema`: the pydantic models (`Spec`, its sections, the search parameters) and `SpecError`, the one-line
  user mistake; `Spec.resolved` fixes paths and storage before Ray starts.
- `loading`: a YAML file with `--set` overrides -> a validated `Spec` (`load_spec`, `load_raw`,
  `validate_spec`), and a spec with dotted-key values set (`with_values`: a trial's point, the best trial).
- `messages`: pydantic's validation errors as one line per problem, in the spec's terms: the key as written,
  what it takes, the key a misspelt one meant (`format_validation_error`).
- `dotted`: dotted keys over raw spec dicts (`set_dotted`, `dotted_items`).
- `search_space`: the `search` section as Optuna distributions (`optuna_space`).
- `checks`: the pre-flight (`preflight`): data, weights, storage, the tracking server and `tune.metric`, checked
  on the driver before Ray starts and in `--dry-run`.
- `recipe`: `--from-sweep`, a comparison started from an earlier search's best trial.
- `resume_changes`: what a `--resume` finds changed in the spec, and which changes it takes.
- `reference`: the reference page generated from the models; `python -m orchestrator.spec --reference` writes
  it (`__main__`).

The bottom of the driver: it imports only `trainables` (no torch: the torch-free `trainables.methods`,
`model_names`, `metric_names`, `config`) and `orchestrator.data_tools.images`; every other package reads specs
through it.
"""

from orchestrator import lazy_face

_MODULES = {  # module -> the names it offers the other packages (imported when first used)
    "schema": (
        "Spec",
        "SpecError",
        "Resources",
        "TuneSettings",
        "CompareSettings",
        "SequentialSettings",
        "MlflowSettings",
        "FloatParam",
        "IntParam",
        "CategoricalParam",
        "STORAGE_ENV",
        "DEFAULT_STORAGE",
        "DEFAULT_REFERENCES",
    ),
    "loading": (
        "load_spec",
        "load_raw",
        "validate_spec",
        "apply_overrides",
        "with_values",
        "read_yaml",
    ),
    "messages": ("format_validation_error",),
    "dotted": ("set_dotted", "dotted_items"),
    "search_space": ("optuna_space",),
    "checks": ("preflight", "PreflightError", "data_root_problems", "tracking_problem"),
    "recipe": ("comparison_from_recipe", "recipe_keys", "Override"),
    "resume_changes": ("spec_changes", "resume_lines", "Change"),
    "reference": ("render", "PAGE"),
}
__getattr__, __dir__, __all__ = lazy_face(__name__, _MODULES)
