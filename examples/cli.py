"""What the examples' command lines share."""

from __future__ import annotations

import dataclasses
from typing import TypeVar

C = TypeVar("C")


def override_at_least(config: C, field: str, value: int | None, minimum: int, why: str = "") -> C:
    """``config`` with ``field`` set to a command-line ``value`` (None: not given, ``config`` unchanged);
    a value below ``minimum`` exits with an error naming the option ``--field`` (``why`` appended)."""
    if value is None:
        return config
    if value < minimum:
        raise SystemExit(f"error: --{field.replace('_', '-')} must be >= {minimum}{why}")
    return dataclasses.replace(config, **{field: value})

