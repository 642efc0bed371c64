"""Tables for reading: numbers as the terminal and the Markdown files show them.

Floats get 4 decimals, but learning rates and other small values keep their digits; numpy scalars and pandas' NaN
(how a `null` choice reads back) become plain values.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd


def format_float(value: float) -> str:
    """4 decimals, but learning rates and other small values keep their digits."""
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.3e}"
    return f"{value:.4f}"


def plain_value(value: Any) -> Any:
    """Numpy scalars as Python values; NaN (how pandas shows a `null` choice) as None."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and math.isnan(value) else value


def format_table(df: pd.DataFrame) -> str:
    """A fixed-width table for the terminal."""
    return df.to_string(index=False, float_format=format_float)


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub Markdown table of `df`: floats as in `format_table`, gaps empty, numbers right-aligned."""

    def cell(value: Any) -> str:
        value = plain_value(value)
        if value is None:
            return ""
        return format_float(value) if isinstance(value, float) else str(value).replace("|", "\\|")

    # Cells go in as strings, so tabulate must not parse them back into numbers (it would reformat 1.000e-04).
    shown = pd.DataFrame(
        [[cell(v) for v in row] for row in df.itertuples(index=False)], columns=[cell(c) for c in df.columns]
    )
    align = ["right" if pd.api.types.is_numeric_dtype(df[c]) else "left" for c in df.columns]
    return shown.to_markdown(index=False, tablefmt="pipe", colalign=align, disable_numparse=True) + "\n"


def percent_cell(value: Any, spec: str = ".2f") -> str:
    """A figure in percent or points as the tables show it: 2 decimals, `-` for none, never `-0.00`."""
    return "-" if pd.isna(value) else format(round(value, 2) + 0.0, spec)


def paired_cell(ref: str):
    """A row's paired difference against `ref` with its interval, `+1.23 [+0.45, +2.01]`, for `DataFrame.apply`."""

    def cell(row) -> str:
        mean, low, high = (row[f"vs_{ref}_{k}_%"] for k in ("mean", "ci_low", "ci_high"))
        if pd.isna(mean):
            return "-"
        interval = "" if pd.isna(low) else f" [{percent_cell(low, '+.2f')}, {percent_cell(high, '+.2f')}]"
        return percent_cell(mean, "+.2f") + interval

    return cell


def decided_cell(value: Any) -> str:
    """Whether a paired difference is decided (its `_excludes_0`): yes, no, or `-` where there is no interval."""
    return "-" if value is None or pd.isna(value) else ("yes" if value else "no")
