"""How one `abp serve` is set up: where it listens, its token, where REST-created jobs run, how
often live views poll. One frozen object, built by the `serve` command or by tests."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3847
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
#: Shortest token accepted for a bind other than loopback (a token_urlsafe(32) is 43).
MIN_TOKEN_CHARS = 16
TOKEN_RECIPE = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and `localhost`: the only binds allowed without a token."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def token_problem(token: str | None, host: str) -> str | None:
    """What is wrong with this token for a server bound to `host` ("is blank", ...), or None.

    A token must be sendable as `Authorization: Bearer TOKEN` (printable, no spaces: a blank one
    could never match) and, off loopback where anyone on the network may guess, long enough that
    guessing is hopeless. No token at all is fine on loopback only ("is missing").
    """
    if token is None:
        return None if is_loopback(host) else "is missing"
    if not token.strip():
        return "is blank"
    if any(ch.isspace() or not ch.isprintable() for ch in token):
        return "contains spaces or control characters (it could not be sent in a header)"
    if not is_loopback(host) and len(token) < MIN_TOKEN_CHARS:
        plural = "s" if len(token) != 1 else ""
        return f"is {len(token)} character{plural} long; off loopback it needs at least {MIN_TOKEN_CHARS}"
    return None


@dataclass(frozen=True)
class WebConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    #: Bearer token every request must carry (or a session cookie from /login); None on loopback.
    token: str | None = None
    #: Directory a job created through the API runs in when its spec gives no `workdir`.
    cwd: Path = field(default_factory=Path.cwd)
    #: Seconds between two polls of the store by a live (SSE) stream.
    poll_interval: float = 1.0
    #: Seconds of silence after which a stream sends a keep-alive comment.
    keepalive_s: float = 15.0

    @property
    def loopback_only(self) -> bool:
        """Bound to loopback without a token: only loopback Host headers are served (DNS rebinding)."""
        return self.token is None and is_loopback(self.host)
