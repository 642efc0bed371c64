"""A spec file read, `--set` overrides applied, and the result validated: a `Spec`, or one line that names the
key and the fix (`SpecError`).
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import ValidationError

from orchestrator.spec.dotted import set_dotted
from orchestrator.spec.messages import format_validation_error
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


def override_key(item: str) -> str:
    return item.partition("=")[0].strip()


def blamed(part: str, source: str, overrides: list[str]) -> str:
    """`part` (`key: problem`) with where it came from: the last `--set` that set its key, a section above it or a
    key inside it (or, for a problem the spec's checks name by key, a `--set` of a key it names), else `source`."""
    key = part.partition(": ")[0].partition(" ")[0]
    for item in reversed(overrides):
        set_key = override_key(item)
        if key == set_key or key.startswith(f"{set_key}.") or set_key.startswith(f"{key}."):
            rest = part.removeprefix(f"{set_key}: ") if key == set_key and part.startswith(f"{key}: ") else part
            return f"--set {item}: {rest}"
    for item in reversed(overrides):
        if re.search(rf"(?<![\w.]){re.escape(override_key(item))}(?![\w])", part):
            return f"--set {item}: {part}"
    return f"{source}: {part}"


def validate_spec(raw: dict, source: str = "spec", overrides: Optional[list[str]] = None) -> Spec:
    """`raw` as a `Spec`, or a SpecError whose one line names each problem's key and where it was written:
    `source` (the spec file), or the `--set` of `overrides` that set it."""
    try:
        return Spec.model_validate(raw)
    except ValidationError as err:
        parts = format_validation_error(err)
    except ValueError as err:
        parts = [str(err)]
    raise SpecError("; ".join(blamed(part, source, overrides or []) for part in parts))


def load_raw(path: str | os.PathLike, overrides: Optional[list[str]] = None) -> dict:
    """A spec file with its `--set` overrides, as written: only the keys it sets (no defaults)."""
    return apply_overrides(read_yaml(path), overrides or [])


def load_spec(path: str | os.PathLike, overrides: Optional[list[str]] = None) -> Spec:
    """Read, override and validate a spec; relative data and weight paths stay relative to the working folder."""
    return validate_spec(load_raw(path, overrides), str(path), overrides)


def with_values(spec: Spec, values: dict[str, Any]) -> Spec:
    """The spec with dotted-key values set (a trial's sampled point, or the best trial)."""
    raw = spec.model_dump()
    for key, value in values.items():
        set_dotted(raw, key, value)
    return validate_spec(raw, "trial config")
