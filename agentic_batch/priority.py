"""Priorities: a job's (`--priority`) and a unit's (from an item field, see a source's `priority_field`)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class Priority(StrEnum):
    low = "low"
    normal = "normal"
    high = "high"
    critical = "critical"

    @property
    def rank(self) -> int:
        """Higher runs first; stored as an integer so the claim can ORDER BY it."""
        return {"low": 0, "normal": 1, "high": 2, "critical": 3}[self.value]

    @classmethod
    def parse_rank(cls, value: Any) -> int:
        """A unit priority taken from an item field: a name (low..critical) or an integer."""
        if isinstance(value, bool):
            raise ValueError(f"priority {value!r} is not a name or a number")
        if isinstance(value, int):
            return value
        text = str(value).strip().lower()
        if text in cls.__members__:
            return cls[text].rank
        try:
            return int(text)
        except ValueError:
            raise ValueError(
                f"priority {value!r} is not one of low, normal, high, critical or an integer"
            ) from None
