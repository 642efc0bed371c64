"""Dotted keys over raw spec dicts: `loss.alpha` for `{"loss": {"alpha": ...}}`, both ways.

`--set`, a trial's sampled values, `--resume`'s comparison of two specs and the `--from-sweep` recipe all name
settings by their dotted key. Pure functions on dicts.
"""

from __future__ import annotations

import difflib
import typing
from typing import Any, Optional

from pydantic import BaseModel

from orchestrator.spec.schema import SEARCH_FIELDS, Spec, SpecError


def set_dotted(tree: dict, key: str, value: Any) -> None:
    """tree[a][b][c] = value for key 'a.b.c', creating the intermediate dicts."""
    parts = key.split(".")
    search = tree.get("search") or {}
    if parts[0] == "search" and len(parts) > 2 and isinstance(search, dict):
        # search keys hold dots themselves: search.loss.alpha.low -> search["loss.alpha"]["low"]
        rest = parts[1:]
        n = next((n for n in range(len(rest), 0, -1) if ".".join(rest[:n]) in search), None)
        if n is None and rest[-1] in SEARCH_FIELDS:
            _no_search_entry(key, ".".join(rest[:-1]), rest[-1], list(search))
        n = n or len(rest)
        parts = ["search", ".".join(rest[:n]), *rest[n:]]
    *parents, leaf = parts
    node = tree
    for part in parents:
        child = node.get(part)
        if child is None:  # a missing or null section (teacher_resources: null)
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SpecError(f"--set {key}: {part!r} is not a section: use a key under a section, e.g. loss.alpha")
        node = child
    node[leaf] = value


def _no_search_entry(key: str, entry: str, field: str, entries: list[str]) -> None:
    """A `--set` of one field of a search entry the spec does not have: the entry meant, or how to add one."""
    meant = difflib.get_close_matches(entry, entries, n=1, cutoff=0.6)
    fix = f"did you mean search.{meant[0]}.{field}?" if meant else f"it searches {', '.join(entries) or 'nothing'}"
    raise SpecError(
        f"--set {key}: the spec has no search entry {entry!r} to set {field} in: {fix} (a new entry is set whole, "
        f"e.g. --set 'search.{entry}={{type: float, low: 0.1, high: 0.9}}')"
    )


def _section(model: Optional[type[BaseModel]], key: str) -> Optional[type[BaseModel]]:
    """The model of section `key` of `model` (unwrapping Optional), or None where `key` holds a setting."""
    field = model.model_fields.get(key) if model is not None else None
    if field is None:
        return None
    for candidate in (field.annotation, *typing.get_args(field.annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def dotted_items(tree: dict, model: Optional[type[BaseModel]] = None, prefix: str = "") -> dict[str, Any]:
    """Every setting of a raw spec (or of its dump) as dotted key -> value: sections are walked, a setting
    that holds a dict or list (students.init_weights, search, mlflow.tags) is one value."""
    model = Spec if model is None and not prefix else model
    out: dict[str, Any] = {}
    for key, value in tree.items():
        section = _section(model, key)
        if section is not None and isinstance(value, dict):
            out.update(dotted_items(value, section, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
