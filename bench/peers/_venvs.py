"""Each peer in a throwaway virtual environment of its own under /tmp (never the project's venv).

The first call for a peer creates `/tmp/abp-peers/NAME` with `python -m venv` and installs the peer's
pinned packages from the package index with pip; later calls reuse it. Delete the folder to start
over (`rm -rf /tmp/abp-peers`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path("/tmp/abp-peers")

#: The packages each peer's scripts need, pinned so a re-run measures the same thing.
PEERS: dict[str, list[str]] = {
    "huey": ["huey==3.5.4", "gevent==26.9.0"],
    # the floor of bench/peers/api.py: a raw aiohttp loop
    "aiohttp": ["aiohttp==3.14.5"],
    # Bespoke Labs Curator with the versions of what it posts and counts with (its aiohttp is older
    # than the floor's, hence a venv of its own; litellm bundles the tiktoken files it needs offline)
    "curator": ["bespokelabs-curator==0.1.31", "litellm==1.83.7", "aiohttp==3.13.5", "openai==2.30.0",
                "tiktoken==0.12.0", "datasets==3.6.0"],
    # pgqueuer's fastest driver is asyncpg; uvloop as its examples run it
    "pgqueuer": ["pgqueuer==1.6.0", "asyncpg==0.32.0", "uvloop==0.23.0"],
}


def peer_python(name: str) -> Path:
    """The interpreter of peer NAME's venv, created and filled on first use."""
    venv = ROOT / name
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    wanted = " ".join(PEERS[name])
    if not python.exists():
        ROOT.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    if not marker.exists() or marker.read_text() != wanted:
        print(f"installing {wanted} into {venv} ...", flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEERS[name]], check=True)
        marker.write_text(wanted)
    return python
