"""The spec reference page, generated from the pydantic models so that it cannot drift from what is validated.

`python -m orchestrator.spec --reference [PATH]` writes it (default: docs/spec-reference.md); a test fails
when the committed page differs from what this module generates.
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from orchestrator.spec.schema import CategoricalParam, FloatParam, IntParam, Spec

PAGE = Path("docs/spec-reference.md")
HEADER = """# Spec reference

Every key a spec (`search_spaces/*.yaml`, `--set key=value`) may hold, generated from the models that validate
it by `python -m orchestrator.spec --reference`: edit the models' descriptions, not this page. A key that is
not listed is an error; a key left out takes its default.
"""


def section_model(annotation: Any) -> Optional[type[BaseModel]]:
    """The model a field holds (directly or as Optional), if it is a section of its own."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if inspect.isclass(candidate) and issubclass(candidate, BaseModel):
            return candidate
    return None


def type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin is typing.Union:
        if set(section_model(a) for a in args if a is not type(None)) - {None}:
            return "search parameter" if len(args) > 2 else "section"
        names = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"list of {type_name(args[0])}"
    if origin is dict:
        return f"map of {type_name(args[0])} to {type_name(args[1])}"
    if section_model(annotation):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def default_text(field) -> str:
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, BaseModel):
        return "(its keys' defaults)"
    return "`" + yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip() + "`"


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def sections(model: type[BaseModel], prefix: str = "") -> list[tuple[str, type[BaseModel]]]:
    """(dotted name, model) of `model` and every section inside it, depth first."""
    found = [(prefix, model)]
    for name, field in model.model_fields.items():
        sub = section_model(field.annotation)
        if sub is not None and type_name(field.annotation) == "section":
            found += sections(sub, f"{prefix}{name}.")
    return found


SEARCH_ENTRIES = """
## search entries

Each entry of `search` maps a dotted training setting to how Optuna draws it, by its `type`, e.g.
`loss.temperature: {type: float, low: 1.0, high: 6.0, log: true}`.
"""


def field_rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        rows.append(
            f"| `{prefix}{name}` | {type_name(field.annotation)} | {default_text(field)} | "
            f"{cell(field.description or '')} |"
        )
    return rows


def render() -> str:
    lines, seen = [HEADER], {}
    for prefix, model in sections(Spec):
        title = prefix.rstrip(".") or "top level"
        lines.append(f"\n## {title}\n")
        if model in seen:
            lines.append(f"The same keys as `{seen[model]}`.\n")
            continue
        seen[model] = title
        doc = inspect.cleandoc(model.__dict__.get("__doc__") or "")  # its own, not one inherited from pydantic
        if doc and model is not Spec:
            lines.append(cell(doc) + "\n")
        lines += field_rows(model, prefix)
    lines.append(SEARCH_ENTRIES)
    for model in (FloatParam, IntParam, CategoricalParam):
        kind = model.model_fields["type"].annotation.__args__[0]
        lines += [f"### {kind}\n", cell(inspect.cleandoc(model.__doc__ or "")) + "\n", *field_rows(model, "")]
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def write(path: Path = PAGE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render())
    return path
