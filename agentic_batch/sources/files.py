"""A `files` source: every regular file under a root whose relative path matches a glob.

We walk the tree ourselves instead of using `glob.glob`/`Path.glob` because we need all of: a
deterministic order (name-sorted, depth first), streaming (no list of a million paths), pruning of
directories the pattern can never enter, no symlinked-directory loops, and one hidden-file rule:
a name starting with '.' matches only a pattern segment that starts with '.' (so `**/*.py` skips
`.venv/` and `.git/`, while `.github/**/*.yml` finds workflows).

Glob syntax: `*` and `?` stay within one path segment, `[abc]`/`[!abc]`/`[a-z]` are classes, and a
segment that is exactly `**` matches zero or more directories (`src/**/test_*.py` also matches
`src/test_a.py`; a trailing `**` matches every file below).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import PurePosixPath

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from agentic_batch.errors import SourceError, field_ref
from agentic_batch.flags import SOURCE_PANEL, Flag
from agentic_batch.sources.kind import RawItem, SourceKind, absolute

#: Regex text for one directory matched by `**`: any name not starting with '.'.
_ANY_DIR = r"(?:(?!\.)[^/]+/)*"


def _class_regex(body: str) -> str:
    """`[!a-z]` body -> regex class; '/' never matches and regex metacharacters stay literal."""
    negate = body[:1] in ("!", "^")
    if negate:
        body = body[1:]
    escaped = "".join("\\" + ch if ch in "\\[]&~|^" else ch for ch in body)
    return f"[^/{escaped}]" if negate else f"[{escaped}]"


def segment_regex(segment: str) -> str:
    """Regex text for one path segment. A segment not starting with '.' never matches a hidden name."""
    out = [] if segment.startswith(".") else [r"(?!\.)"]
    i = 0
    while i < len(segment):
        ch = segment[i]
        if ch == "*":
            while i + 1 < len(segment) and segment[i + 1] == "*":
                i += 1  # '**' inside a segment ('a**b') acts like '*'
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            j = i + 1
            if j < len(segment) and segment[j] in "!^":
                j += 1
            if j < len(segment) and segment[j] == "]":
                j += 1  # ']' first in a class is literal
            while j < len(segment) and segment[j] != "]":
                j += 1
            if j >= len(segment):
                out.append(re.escape(ch))  # no closing ']': a literal '['
            else:
                out.append(_class_regex(segment[i + 1 : j]))
                i = j
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


def glob_to_regex(glob: str) -> re.Pattern[str]:
    """The whole glob as one regex over relative POSIX paths (use `fullmatch`)."""
    segments = glob.split("/")
    parts: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            parts.append(_ANY_DIR + (r"(?!\.)[^/]+" if last else ""))
        else:
            parts.append(segment_regex(segment) + ("" if last else "/"))
    try:
        return re.compile("".join(parts))
    except re.error as exc:
        raise SourceError(f"invalid glob {glob!r}: {exc}", hint="check the [...] classes") from None


class GlobMatcher:
    """Matches file paths with the full regex, and prunes directories the glob can never enter.

    Pruning runs the pattern segment by segment as a small NFA: a state is the index of the next
    pattern segment to match; `**` can consume a directory and stay, or be skipped.
    """

    def __init__(self, glob: str) -> None:
        self.glob = glob
        self.full = glob_to_regex(glob)
        self._segments = glob.split("/")
        self._segment_res = [None if s == "**" else re.compile(segment_regex(s)) for s in self._segments]

    def start(self) -> frozenset[int]:
        return self._closure({0})

    def _closure(self, states: set[int]) -> frozenset[int]:
        todo = list(states)
        while todo:
            i = todo.pop()
            if i < len(self._segments) - 1 and self._segments[i] == "**" and i + 1 not in states:
                states.add(i + 1)
                todo.append(i + 1)
        return frozenset(states)

    def enter(self, states: frozenset[int], name: str) -> frozenset[int]:
        """The states after descending into directory `name`; empty means prune it."""
        nxt: set[int] = set()
        last = len(self._segments) - 1
        for i in states:
            pattern = self._segment_res[i]
            if pattern is None:
                if not name.startswith("."):
                    nxt.add(i)
            elif i < last and pattern.fullmatch(name):
                nxt.add(i + 1)
        return self._closure(nxt) if nxt else frozenset()

    def matches(self, relative_path: str) -> bool:
        return self.full.fullmatch(relative_path) is not None


class FilesOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    glob: Annotated[str, Flag(SOURCE_PANEL, name="--files", help="Glob of files, relative to --root: "
                                                                  "`'**/*.py'`, `'docs/*.md'`.")] = Field(
        description="glob of files relative to root: '**/*.py' (recursive), 'docs/*.md'; hidden files are "
                    "skipped unless the pattern names them")
    root: Annotated[str | None, Flag(SOURCE_PANEL, help="Directory the --files glob starts from (default: "
                                                        "current directory).")] = Field(
        default=None, description="directory the glob starts from (default: the job's workdir)")


def iter_files(options: FilesOptions, cwd: Path | None = None) -> Iterator[RawItem]:
    """Yield one payload per matching regular file; raise if the root is missing or nothing matches."""
    root = options.root or os.getcwd()
    glob = options.glob
    if not os.path.exists(root):
        raise SourceError(f"files root {root} does not exist",
                          hint=f"check {field_ref('source.root')} or the glob's directory")
    if not os.path.isdir(root):
        raise SourceError(f"files root {root} is not a directory",
                          hint=f"{field_ref('source.root')} must be a directory")
    matcher = GlobMatcher(glob)
    try:
        with os.scandir(root):
            pass
    except OSError as exc:
        raise SourceError(f"cannot read files root {root}: {exc.strerror}") from None
    found = 0
    unreadable: list[tuple[str, str]] = []
    for entry, relative_path in _walk(root, "", matcher.start(), matcher, unreadable):
        try:
            size = entry.stat().st_size
        except OSError:
            continue  # vanished (or a symlink that broke) since the listing
        name = entry.name
        found += 1
        yield (
            f"file {relative_path}",
            {
                "path": os.path.join(root, relative_path),
                "relative_path": relative_path,
                "name": name,
                "suffix": PurePosixPath(name).suffix,
                "size": size,
            },
        )
    if not found and unreadable:
        raise _unreadable_error(glob, root, unreadable)
    if not found:
        raise SourceError(
            f"no files match {glob!r} under {root}",
            hint="'**/' matches any depth; names starting with '.' match only a pattern part that "
            f"starts with '.'; check {field_ref('source.root')}",
        )


def _unreadable_error(glob: str, root: str, unreadable: list[tuple[str, str]]) -> SourceError:
    """'no files match' would blame the glob; say which directories could not be listed and why."""
    first, reason = unreadable[0]
    more = f" and {len(unreadable) - 1} more" if len(unreadable) > 1 else ""
    return SourceError(
        f"no files match {glob!r} under {root}: cannot read directory {first} ({reason}){more}",
        hint=f"give your user read and search permission on it (ls -ld {os.path.join(root, first)}), "
        "or point the glob elsewhere",
    )


def _walk(
    directory: str,
    prefix: str,
    states: frozenset[int],
    matcher: GlobMatcher,
    unreadable: list[tuple[str, str]],
) -> Iterator[tuple[os.DirEntry[str], str]]:
    """Depth first, entries sorted by name; symlinked directories are not entered (no loops).

    An unreadable subdirectory the glob could enter is skipped and noted in `unreadable` (with the
    reason), so that a glob that finds nothing can say why; one that vanished is just skipped.
    """
    try:
        with os.scandir(directory) as listing:
            entries = sorted(listing, key=lambda e: e.name)
    except FileNotFoundError:
        return
    except OSError as exc:
        unreadable.append((prefix.rstrip("/") or ".", exc.strerror or type(exc).__name__))
        return
    for entry in entries:
        relative_path = prefix + entry.name
        try:
            if entry.is_dir(follow_symlinks=False):
                inner = matcher.enter(states, entry.name)
                if inner:
                    yield from _walk(entry.path, relative_path + "/", inner, matcher, unreadable)
                continue
            if matcher.matches(relative_path) and entry.is_file():
                yield entry, relative_path
        except OSError:
            continue


_MAGIC = re.compile(r"[*?\[]")


def resolve_files(options: FilesOptions, cwd: Path) -> FilesOptions:
    """root defaults to `cwd`; an absolute glob moves its non-glob prefix into root, and leading `..`
    segments of a relative glob move into root too. Idempotent."""
    root = absolute(options.root, cwd) if options.root else os.path.abspath(cwd)
    glob = os.path.expanduser(options.glob)
    if glob.startswith("/"):
        root, glob = _split_static_prefix(glob)
    else:
        parts = [p for p in glob.split("/") if p not in ("", ".")]
        while parts and parts[0] == "..":
            root = os.path.dirname(root)
            parts.pop(0)
        glob = "/".join(parts)
    return options.model_copy(update={"root": root, "glob": glob})


def _split_static_prefix(glob: str) -> tuple[str, str]:
    """'/data/**/*.py' -> ('/data', '**/*.py'); a glob without wildcards -> (parent, name)."""
    parts = glob.split("/")
    first_magic = next((i for i, p in enumerate(parts) if _MAGIC.search(p)), len(parts) - 1)
    root = os.path.normpath("/".join(parts[:first_magic]) or "/")
    return root, "/".join(p for p in parts[first_magic:] if p not in ("", "."))


KIND = SourceKind(
    name="files", items="one item per matching file; fields path, relative_path, name, suffix, size",
    options_model=FilesOptions, iterate=iter_files, resolve=resolve_files, natural_key="relative_path",
    describe=lambda o: f"files {o.glob} under {o.root or 'the working directory'}",
)
