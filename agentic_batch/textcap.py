"""Capping a unit's output: keep the head and the tail, say what was cut and where the rest went.

Used by the engine on every attempt's outcome (whatever the worker kind), and available to workers
that want to bound what they hold in memory while an agent writes (`UnitContext.max_output_bytes`).
"""

from __future__ import annotations

from pathlib import Path

#: Default cap on a unit's stored output (JobSpec.max_output_bytes).
DEFAULT_MAX_OUTPUT_BYTES = 4 * 1024 * 1024
MIN_MAX_OUTPUT_BYTES = 1024
MAX_MAX_OUTPUT_BYTES = 256 * 1024 * 1024
#: Room kept for the marker line inside the cap.
_MARKER_ROOM = 512


def utf8_size(text: str) -> int:
    """Bytes of `text` in UTF-8, without encoding it when the length alone decides."""
    if not text.isascii():
        return len(text.encode("utf-8", "surrogatepass"))
    return len(text)


def cut_marker(cut_bytes: int, spilled_to: Path | None) -> str:
    where = f"; full output in {spilled_to}" if spilled_to is not None else ""
    return f"\n… [{cut_bytes} bytes cut{where}] …\n"


def keep_head_and_tail(text: str, limit: int, spilled_to: Path | None = None) -> tuple[str, int]:
    """`text` cut to at most `limit` UTF-8 bytes (marker included): its head and tail around a marker.

    Returns (text, bytes cut); (text, 0) when it already fits.
    """
    if len(text) <= limit // 4 or utf8_size(text) <= limit:  # 4 bytes per character at most
        return text, 0
    data = text.encode("utf-8", "surrogatepass")
    keep = max(0, limit - _MARKER_ROOM)
    head_n = keep // 2
    tail_n = keep - head_n
    head = data[:head_n].decode("utf-8", "ignore")
    tail = data[len(data) - tail_n:].decode("utf-8", "ignore") if tail_n else ""
    cut = len(data) - head_n - tail_n
    return head + cut_marker(cut, spilled_to) + tail, cut


def spill_and_cap(text: str, limit: int, path: Path) -> tuple[str, int]:
    """Cap `text` to `limit` bytes; when it is cut, write the whole text to `path` first.

    If the file cannot be written the text is still capped, and the marker says no copy was kept.
    """
    if len(text) <= limit // 4 or utf8_size(text) <= limit:
        return text, 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", errors="surrogatepass") as handle:
            for start in range(0, len(text), 1 << 20):  # in slices: no second full-size copy in memory
                handle.write(text[start:start + (1 << 20)])
    except (OSError, UnicodeEncodeError):
        return keep_head_and_tail(text, limit, None)
    return keep_head_and_tail(text, limit, path)
