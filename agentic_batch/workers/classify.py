"""Turning provider failures into the three error classes the engine understands, and the kind of
failure (`FailureKind`) the engine acts on beyond retrying (a 429 lowers the pool's in-flight limit).

Shared by every agent worker so that a 429 from OpenAI, Anthropic or the Claude CLI is treated the
same way: retryable with the server's `retry-after`, and a "usage limit reached, resets at ..."
message pauses the whole job instead of burning every unit's retries.

The kind comes from structured signals where there are any: the HTTP status (`status_kind`). Only an
error with no status at all (the Claude CLI's result for a request that never got a proper answer, an
SDK error that is not an HTTP one) is read from its text (`message_kind`): that is the one place text
is matched, and a worker uses it only when it has nothing better.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from datetime import datetime, UTC

from agentic_batch.workers.base import ErrorClass, FailureKind

RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
PERMANENT_STATUSES = frozenset({400, 401, 402, 403, 404, 405, 413, 415, 422})

_QUOTA_PATTERNS = (
    re.compile(r"usage limit (?:reached|exceeded)", re.I),
    re.compile(r"quota (?:exceeded|reached)", re.I),
    re.compile(r"insufficient_quota", re.I),
    re.compile(r"rate[_ ]limit[_ ]reached.*resets?", re.I),
)
_SPEND_PATTERNS = (
    re.compile(r"spend(?:ing)? (?:cap|limit)", re.I),
    re.compile(r"credit balance is too low", re.I),
    re.compile(r"budget (?:exceeded|reached)", re.I),
)
_RESET_EPOCH = re.compile(r"(?:resets? (?:at )?|\|)(\d{10})(?!\d)")  # "... reached|1700000000" (Claude CLI)
_RESET_ISO = re.compile(r"resets? (?:at )?"
                        r"(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2})?(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?)")
_RESET_IN = re.compile(r"(?:resets?|try again) in (\d+(?:\.\d+)?)\s*(s|sec|seconds|m|min|minutes|h|hours)\b", re.I)


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    raw_ms = lower.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = lower.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def quota_reset_in(message: str, now: float | None = None) -> float | None:
    """If `message` says a usage quota is exhausted, seconds until it resets (0.0 if it doesn't say).

    Returns None when the message is not a quota message at all.
    """
    if not any(p.search(message) for p in _QUOTA_PATTERNS):
        return None
    now = now if now is not None else time.time()
    if m := _RESET_EPOCH.search(message):
        return max(0.0, float(m.group(1)) - now)
    if m := _RESET_ISO.search(message):
        text = m.group(1).replace(" ", "T").replace("Z", "+00:00")
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            return 0.0
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - now)
    if m := _RESET_IN.search(message):
        amount, unit = float(m.group(1)), m.group(2).lower()
        scale = 3600.0 if unit.startswith("h") else 60.0 if unit.startswith("m") else 1.0
        return amount * scale
    return 0.0


def classify_message(message: str) -> ErrorClass | None:
    """Classify from error text alone (CLI output, SDK messages); None when nothing matches."""
    if quota_reset_in(message) is not None:
        return ErrorClass.quota
    if any(p.search(message) for p in _SPEND_PATTERNS):
        return ErrorClass.permanent
    lowered = message.lower()
    if any(word in lowered for word in ("overloaded", "rate limit", "rate_limit", "timed out", "timeout",
                                          "connection reset", "connection refused", "connection error",
                                          "temporarily unavailable", "529", "503", "502", "500 ")):
        return ErrorClass.retryable
    if any(word in lowered for word in ("invalid api key", "authentication", "unauthorized",
                                          "permission denied", "forbidden", "invalid_request")):
        return ErrorClass.permanent
    return None


def classify_status(status: int | None, message: str = "") -> ErrorClass:
    """Classify an HTTP failure; the message can turn a 429 into a quota error."""
    by_text = classify_message(message) if message else None
    if by_text is ErrorClass.quota:
        return ErrorClass.quota
    if status is None:
        return by_text or ErrorClass.retryable  # no response at all: a connection problem
    if status in PERMANENT_STATUSES:
        return ErrorClass.permanent
    if status in RETRYABLE_STATUSES or status >= 500:
        return ErrorClass.retryable
    return by_text or ErrorClass.permanent


def status_kind(status: int | None, message: str = "") -> FailureKind:
    """The kind of an HTTP failure (None: no response at all); the message can only tell a quota or
    a spending cap apart from other refusals with the same status."""
    if quota_reset_in(message) is not None:
        return FailureKind.quota
    if any(p.search(message) for p in _SPEND_PATTERNS) or status == 402:
        return FailureKind.spend_cap
    if status is None:
        return FailureKind.connection
    if status == 429:
        return FailureKind.rate_limited
    if status == 529:
        return FailureKind.overloaded
    if status in (408, 504, 524):
        return FailureKind.timeout
    if status in (401, 403):
        return FailureKind.auth
    if status in RETRYABLE_STATUSES or status >= 500:
        return FailureKind.server_error
    return FailureKind.bad_request


def message_kind(message: str) -> FailureKind | None:
    """The kind from error text alone: only for errors that carry no status (see the module doc)."""
    if quota_reset_in(message) is not None:
        return FailureKind.quota
    if any(p.search(message) for p in _SPEND_PATTERNS):
        return FailureKind.spend_cap
    lowered = message.lower()
    for kind, words in _KIND_WORDS:
        if any(word in lowered for word in words):
            return kind
    return None


_KIND_WORDS = (
    (FailureKind.rate_limited, ("429", "rate limit", "rate_limit", "too many requests")),
    (FailureKind.overloaded, ("overloaded", "529")),
    (FailureKind.timeout, ("timed out", "timeout")),
    (FailureKind.connection, ("connection reset", "connection refused", "connection error")),
    (FailureKind.server_error, ("temporarily unavailable", "503", "502", "500 ")),
    (FailureKind.auth, ("invalid api key", "authentication", "unauthorized", "permission denied", "forbidden")),
    (FailureKind.bad_request, ("invalid_request",)),
)
