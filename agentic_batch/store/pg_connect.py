"""The libpq options every abp PostgreSQL connection carries: a connect timeout and the dead-peer keepalives.

The pool's connections (`db.make_engine`), the LISTEN thread's (`notify.Listener`) and the direct
reads' (`direct.open_direct`, on libpq without psycopg) all take them from here, which imports
nothing heavier than the standard library; whatever the URL sets itself wins.

connect_timeout: an unreachable host (no answer at all) fails a call in seconds rather than after
the kernel's TCP retries, so the executor's outage window keeps time.

A connection whose other end vanished without a word (a host cut off or powered off mid-transaction:
no FIN, no RST) is found dead in about 15 s by each side. The server's side matters most: a session
cut off inside a transaction keeps its row locks (the job row a claim locks) until the server drops
it, and every other executor's claim waits on them. Keepalives only probe an idle connection and a
live peer's kernel answers them, so a slow reader (a long export) is never cut. libpq parameters for
the client's socket; GUCs (`options`) for the server's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

CLIENT_DEAD_PEER = {"keepalives": "1", "keepalives_idle": "5", "keepalives_interval": "2",
                    "keepalives_count": "3", "tcp_user_timeout": "15000"}
SERVER_DEAD_PEER = {"tcp_keepalives_idle": "5", "tcp_keepalives_interval": "2", "tcp_keepalives_count": "3",
                    "tcp_user_timeout": "15000"}


def connect_args(query: Mapping[str, str | Sequence[str]]) -> dict[str, str]:
    """The libpq parameters to add to a connection whose URL has these query parameters: those of the
    timeout and the client's keepalives it does not set, and `options` (its own, then the server's
    GUCs it does not set)."""
    args = {} if "connect_timeout" in query else {"connect_timeout": "10"}
    args.update({key: value for key, value in CLIENT_DEAD_PEER.items() if key not in query})
    given = query.get("options", "")
    given = given if isinstance(given, str) else " ".join(given)
    server = " ".join(f"-c {key}={value}" for key, value in SERVER_DEAD_PEER.items() if key not in given)
    if server:
        args["options"] = f"{given} {server}".strip()
    return args
