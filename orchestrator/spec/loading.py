"""A spec file read, `--set` overrides applied, and the result validated: a `Spec`, or one line that names the
key and the fix (`SpecError`).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import ValidationError

from orchestrator.spec.dotted import set_dotted
from orchestrator.spec.schema import Spec, SpecError


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """`key=value` pairs (value parsed as YAML, so 0.5, true, [a, b] and null work) over a raw spec."""
    out = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"--set {item!r}: write it as key=value, e.g. --set loss.alpha=0.5")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        set_dotted(out, key.strip(), value)
    return out


def format_validation_error(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"] if not str(p).startswith("function-")]
        if loc[:1] == ["search"] and len(loc) > 2 and loc[2] in ("float", "int", "categorical"):
            del loc[2]  # the discriminator's tag
        loc = ".".join(loc)
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] in ("union_tag_invalid", "union_tag_not_found"):
            msg = "type must be float, int or categorical"
        if e["type"] == "extra_forbidden":
            msg = "unknown key: remove it or check its spelling"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(dict.fromkeys(parts))


def read_yaml(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"spec file {str(p)!r} not found: give the path of a YAML spec, e.g. search_spaces/peer.yaml")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(f"{p}: not valid YAML{where}: fix the syntax") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{p}: a spec is a YAML mapping of sections (name, data, students, ...)")
    return raw


def validate_spec(raw: dict, source: str = "spec") -> Spec:
    try:
        return Spec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(f"{source}: {format_validation_error(err)}") from None
    except ValueError as err:
        raise SpecError(f"{source}: {err}") from None


def load_raw(path: str | os.PathLike, overrides: Optional[list[str]] = None) -> dict:
    """A spec file with its `--set` overrides, as written: only the keys it sets (no defaults)."""
    return apply_overrides(read_yaml(path), overrides or [])


def load_spec(path: str | os.PathLike, overrides: Optional[list[str]] = None) -> Spec:
    """Read, override and validate a spec; relative data and weight paths stay relative to the working folder."""
    return validate_spec(load_raw(path, overrides), str(path))


def with_values(spec: Spec, values: dict[str, Any]) -> Spec:
    """The spec with dotted-key values set (a trial's sampled point, or the best trial)."""
    raw = spec.model_dump()
    for key, value in values.items():
        set_dotted(raw, key, value)
    return validate_spec(raw, "trial config")
