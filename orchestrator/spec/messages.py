"""Pydantic's validation errors as the one line a user reads: each names the key as the user writes it, where it
came from (the spec file or the `--set` that set it) and what the key takes, or the key that was meant.

Pydantic's own words name its internals (a union's members, `Field required`, `a valid dictionary`): this module
walks the `Spec` models along each error's location to say the same in terms of the spec.
"""

from __future__ import annotations

import difflib
import re
import typing
from dataclasses import dataclass
from typing import Any, Literal, Optional

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from orchestrator.spec.schema import Spec, closest_key, field_section, setting_keys
from trainables.config import DRIVER_KEYS

SEARCH_EXAMPLE = "{type: float, low: 0.1, high: 0.9}"


@dataclass
class Place:
    """Where an error's location leads in the models: the key as the user writes it, the section that holds its
    last part, that part's field (None for an unknown key), and whether a union's member was named past it."""

    key: str
    section: Optional[type[BaseModel]]
    field: Optional[FieldInfo]
    in_union: bool = False


def _unwrap(annotation: Any) -> tuple[Any, Optional[str]]:
    """(the annotation without Annotated and Optional, its discriminator if it has one)."""
    discriminator = None
    while True:
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if origin is typing.Annotated:
            discriminator = next((getattr(m, "discriminator", None) for m in args[1:]), None) or discriminator
            annotation = args[0]
        elif origin is typing.Union and len([a for a in args if a is not type(None)]) == 1:
            annotation = next(a for a in args if a is not type(None))
        else:
            return annotation, discriminator


def place(loc: tuple) -> Place:
    """Walk `Spec` along a pydantic error location (its `function-...` wrappers already dropped)."""
    parts: list[str] = []
    section: Optional[type[BaseModel]] = Spec
    annotation: Any = Spec
    field: Optional[FieldInfo] = None
    items = list(loc)
    while items:
        item = items.pop(0)
        annotation, discriminator = _unwrap(annotation)
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if model is not None:
            parts.append(str(item))
            section, field = model, model.model_fields.get(str(item))
            if field is None:  # an unknown key: what follows is inside what it holds
                parts += [str(i) for i in items]
                break
            annotation = field.annotation
        elif origin is typing.Union and discriminator:  # a search entry: the loc names its type (float, int, ...)
            annotation = next(
                (a for a in args if item in typing.get_args(a.model_fields[discriminator].annotation)), args[0]
            )
        elif origin is typing.Union:  # pydantic tried each member: the rest of the loc is inside one of them
            return Place(".".join(parts), section, field, in_union=True)
        elif origin in (dict, list):
            parts.append(str(item))
            annotation = args[-1]
        else:
            parts += [str(item), *map(str, items)]
            break
    return Place(".".join(parts), section, field)


def takes(annotation: Any) -> str:
    """What a field takes, in words: `max or min, or a list of max or min`."""
    annotation, _ = _unwrap(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        words = [str(a) for a in args]
        return ", ".join(words[:-1]) + f" or {words[-1]}" if len(words) > 1 else words[0]
    if origin is typing.Union:
        return ", or ".join(takes(a) for a in args if a is not type(None))
    if origin is list:
        return f"a list of {takes(args[0])}"
    if origin is dict:
        return "a mapping of keys to values"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "a section of keys"
    return {str: "text", int: "a whole number", float: "a number", bool: "true or false"}.get(annotation, "a value")


def _unknown_key(where: Place) -> str:
    key = where.key
    leaf = key.rpartition(".")[2]
    if key in DRIVER_KEYS:
        return f"{key} is set by the driver for each run, not by a spec: remove it"
    siblings = list(where.section.model_fields) if where.section else []
    near = difflib.get_close_matches(leaf, siblings, n=1, cutoff=0.6)
    prefix = key.rpartition(".")[0]
    meant = f"{prefix}.{near[0]}" if near and prefix else near[0] if near else None
    if meant is None and not key.startswith("search."):
        meant = closest_key(key, setting_keys(Spec))
    if meant:
        return f"{key}: unknown key: did you mean {meant}?"
    return f"{key}: unknown key: remove it or check its spelling (every key: docs/spec-reference.md)"


def _input(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe(error: dict) -> str:
    """One pydantic error as `key: the problem: the fix`."""
    loc = tuple(p for p in error["loc"] if not str(p).startswith("function-"))
    where = place(loc)
    key, kind = where.key, error["type"]
    msg = error["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        return _unknown_key(where)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return f"{key}: type must be float, int or categorical"
    described = f" ({where.field.description})" if where.field is not None and where.field.description else ""
    if kind == "missing":
        what = takes(where.field.annotation) if where.field is not None else "a value"
        return f"{key} is missing: add it, it takes {what}{described}"
    if where.in_union and where.field is not None:
        return f"{key}: {_input(error['input'])} is not valid: it takes {takes(where.field.annotation)}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        if re.fullmatch(r"search\.[^.].*", key) and where.section is Spec:
            return f"{key}: a search entry is a mapping such as {SEARCH_EXAMPLE}, not {_input(error['input'])}"
        inner = field_section(where.field.annotation) if where.field is not None else None
        example = f" (e.g. {key}.{next(iter(inner.model_fields))})" if inner else ""
        return f"{key} is a section of keys, not {_input(error['input'])}: set the keys under it{example}"
    if not key or msg.startswith((f"{key}.", f"{key}:")):  # the model's own validator named its keys
        return msg
    return f"{key}: {msg}"


def format_validation_error(err: ValidationError) -> list[str]:
    """Each distinct problem of `err` as one line's part (`key: problem: fix`), in pydantic's order."""
    return list(dict.fromkeys(describe(e) for e in err.errors()))
