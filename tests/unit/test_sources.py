"""Unit tests of the sources layer: files, csv, json, jsonl, python, keys and priorities.

SQL sources are tested in test_sources_sql.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentic_batch.errors import SourceError
from agentic_batch.sources import Item, describe_source, iter_items, json_stream, resolve_spec, tabular
from agentic_batch.sources import reading as sources_reading
from agentic_batch.sources.files import GlobMatcher
from agentic_batch.spec import SourceSpec


def items(cwd: Path, **spec: Any) -> list[Item]:
    return list(iter_items(SourceSpec(**spec), cwd=cwd))


def error(cwd: Path, **spec: Any) -> str:
    with pytest.raises(SourceError) as info:
        items(cwd, **spec)
    return info.value.one_line()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------- files


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for rel in [
        "top.py",
        "notes.txt",
        "src/test_a.py",
        "src/util.py",
        "src/pkg/test_b.py",
        "src/pkg/deep/test_c.py",
        "src/pkg/deep/data.txt",
        "src/.hidden_dir/test_h.py",
        "src/.test_hidden.py",
        ".git/config.py",
        ".github/workflows/ci.yml",
        ".env",
        "docs/a1.md",
        "docs/b2.md",
        "docs/c3.md",
    ]:
        write(tmp_path / rel, f"content of {rel}\n")
    return tmp_path


def rels(found: list[Item]) -> list[str]:
    return [item.key for item in found]


def test_files_payload_key_and_order(tree: Path) -> None:
    found = items(tree, kind="files", glob="**/*.py")
    assert rels(found) == [
        "src/pkg/deep/test_c.py",
        "src/pkg/test_b.py",
        "src/test_a.py",
        "src/util.py",
        "top.py",
    ]
    first = found[-1]
    assert first.payload == {
        "path": str(tree / "top.py"),
        "relative_path": "top.py",
        "name": "top.py",
        "suffix": ".py",
        "size": len("content of top.py\n"),
    }
    assert first.priority is None
    assert rels(items(tree, kind="files", glob="**/*.py")) == rels(found)  # deterministic


def test_double_star_matches_zero_directories(tree: Path) -> None:
    assert rels(items(tree, kind="files", glob="src/**/test_*.py")) == [
        "src/pkg/deep/test_c.py",
        "src/pkg/test_b.py",
        "src/test_a.py",
    ]


def test_single_star_question_mark_and_classes_stay_in_one_segment(tree: Path) -> None:
    assert rels(items(tree, kind="files", glob="*.txt")) == ["notes.txt"]
    assert rels(items(tree, kind="files", glob="src/*.py")) == ["src/test_a.py", "src/util.py"]
    assert rels(items(tree, kind="files", glob="docs/?1.md")) == ["docs/a1.md"]
    assert rels(items(tree, kind="files", glob="docs/[ab]*.md")) == ["docs/a1.md", "docs/b2.md"]
    assert rels(items(tree, kind="files", glob="docs/[!ab]*.md")) == ["docs/c3.md"]
    assert rels(items(tree, kind="files", glob="src/**")) == [
        "src/pkg/deep/data.txt",
        "src/pkg/deep/test_c.py",
        "src/pkg/test_b.py",
        "src/test_a.py",
        "src/util.py",
    ]


def test_hidden_files_and_directories_only_when_the_pattern_names_them(tree: Path) -> None:
    assert ".env" not in rels(items(tree, kind="files", glob="*"))
    assert rels(items(tree, kind="files", glob=".env")) == [".env"]
    assert rels(items(tree, kind="files", glob=".github/**/*.yml")) == [".github/workflows/ci.yml"]
    assert rels(items(tree, kind="files", glob="src/.*.py")) == ["src/.test_hidden.py"]
    assert rels(items(tree, kind="files", glob="src/.hidden_dir/*.py")) == ["src/.hidden_dir/test_h.py"]
    assert rels(items(tree, kind="files", glob="**/.env")) == [".env"]


def test_glob_matcher_prunes_directories_the_pattern_cannot_enter() -> None:
    matcher = GlobMatcher("src/**/test_*.py")
    start = matcher.start()
    assert matcher.enter(start, "docs") == frozenset()
    inside = matcher.enter(start, "src")
    assert matcher.enter(inside, "pkg") and matcher.enter(inside, ".venv") == frozenset()
    assert GlobMatcher("*.py").enter(GlobMatcher("*.py").start(), "src") == frozenset()


def test_symlinked_directories_are_not_followed_symlinked_files_are(tmp_path: Path) -> None:
    write(tmp_path / "real/a.txt", "a")
    (tmp_path / "real/loop").symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "real/link.txt").symlink_to(tmp_path / "real/a.txt")
    (tmp_path / "real/broken.txt").symlink_to(tmp_path / "missing.txt")
    assert rels(items(tmp_path, kind="files", glob="**/*.txt")) == ["real/a.txt", "real/link.txt"]


def test_absolute_glob_uses_its_static_prefix_as_root(tree: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    found = items(elsewhere, kind="files", glob=f"{tree}/src/**/test_*.py")
    assert rels(found) == ["pkg/deep/test_c.py", "pkg/test_b.py", "test_a.py"]
    assert found[0].payload["path"] == str(tree / "src/pkg/deep/test_c.py")
    assert rels(items(elsewhere, kind="files", glob="../notes.txt")) == ["notes.txt"]


def test_files_key_may_name_a_payload_field(tree: Path) -> None:
    found = items(tree, kind="files", glob="src/*.py", key="name")
    assert rels(found) == ["test_a.py", "util.py"]


def test_glob_matching_nothing_names_pattern_and_root(tree: Path) -> None:
    message = error(tree, kind="files", glob="**/*.rs")
    assert f"no files match '**/*.rs' under {tree}" in message


def test_files_root_missing(tmp_path: Path) -> None:
    assert "does not exist" in error(tmp_path, kind="files", glob="*.py", root="nope")


NOBODY = 65534


def outcome_as_nobody(func: Any) -> str:
    """`ok: <result>` or `error: <one line>` of func() run without root's power to read anything.

    Root bypasses permission bits, so as root the call runs in a forked child that has become
    `nobody` (modules are already imported; the child only reads the test's own directory).
    """
    if os.geteuid() != 0:
        try:
            return f"ok: {func()!r}"
        except SourceError as exc:
            return f"error: {exc.one_line()}"
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                text = f"ok: {func()!r}"
            except SourceError as exc:
                text = f"error: {exc.one_line()}"
            except BaseException as exc:
                text = f"crash: {exc!r}"
            os.write(write_end, text.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        text = pipe.read().decode()
    os.waitpid(pid, 0)
    return text


@pytest.fixture
def closed_tree() -> Iterator[Path]:
    """open/b.md readable by all; closed/a.txt inside a directory nobody but its owner (root) can list."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="abp-closed-"))  # not under pytest's 0700 tmp dir
    base.chmod(0o755)
    write(base / "open" / "b.md", "readable")
    write(base / "closed" / "a.txt", "secret")
    (base / "open").chmod(0o755)
    (base / "open" / "b.md").chmod(0o644)
    (base / "closed").chmod(0o000)
    if os.geteuid() != 0 and os.access(base / "closed", os.R_OK):
        pytest.skip("this user can read a mode-000 directory")
    yield base
    (base / "closed").chmod(0o755)
    shutil.rmtree(base)


@pytest.mark.parametrize("glob", ["closed/*", "**/*.txt"])
def test_files_unreadable_directory_is_named(closed_tree: Path, glob: str) -> None:
    """Not 'no files match': the glob was right, the directory could not be listed."""
    outcome = outcome_as_nobody(lambda: len(items(closed_tree, kind="files", glob=glob)))
    assert outcome.startswith("error: "), outcome
    assert f"no files match {glob!r}" in outcome
    assert "cannot read directory closed (Permission denied)" in outcome and "ls -ld" in outcome


def test_files_an_unreadable_directory_beside_matches_is_skipped(closed_tree: Path) -> None:
    assert outcome_as_nobody(lambda: rels(items(closed_tree, kind="files", glob="**/*"))) == "ok: ['open/b.md']"


# ----------------------------------------------------------------------------------------------- csv


def test_csv_rows_become_items(tmp_path: Path) -> None:
    write(tmp_path / "d.csv", '\ufeffid;title\n1;"semi;colon"\n\n2;"two\nlines"\n3;plain\n')
    found = items(tmp_path, kind="csv", path="d.csv", delimiter=";", key="id")
    assert [i.key for i in found] == ["1", "2", "3"]
    assert found[0].payload == {"id": "1", "title": "semi;colon"}
    assert found[1].payload == {"id": "2", "title": "two\nlines"}


def test_csv_header_only_gives_no_items(tmp_path: Path) -> None:
    write(tmp_path / "d.csv", "a,b\n")
    assert items(tmp_path, kind="csv", path="d.csv") == []


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("a,b\n1,2\n3,4,5\n", "line 3 of"),
        ("a,b\n1,2\n3\n", "line 3 of"),
        ('a,b\n1,2\n3,4\n5,"six\n7,8\n', "line 4 of"),
        ('a,b\n1,2\n3,"4"x\n', "line 3 of"),
    ],
    ids=["too-many-fields", "too-few-fields", "unterminated-quote", "text-after-quote"],
)
def test_csv_malformed_rows_name_file_and_line(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path / "bad.csv", text)
    message = error(tmp_path, kind="csv", path="bad.csv")
    assert needle in message and str(path) in message


def test_csv_empty_file_and_bad_headers(tmp_path: Path) -> None:
    write(tmp_path / "empty.csv", "")
    assert "empty" in error(tmp_path, kind="csv", path="empty.csv")
    write(tmp_path / "dup.csv", "id,name,id\n1,2,3\n")
    assert "'id' twice" in error(tmp_path, kind="csv", path="dup.csv")
    write(tmp_path / "blank.csv", "id,,x\n1,2,3\n")
    assert "column 2" in error(tmp_path, kind="csv", path="blank.csv")


def test_missing_and_non_utf8_files(tmp_path: Path) -> None:
    for kind in ("csv", "json", "jsonl"):
        assert "does not exist" in error(tmp_path, kind=kind, path=f"missing.{kind}")
    (tmp_path / "latin.csv").write_bytes(b"a,b\n1,caf\xe9\n")
    assert "UTF-8" in error(tmp_path, kind="csv", path="latin.csv")


class CountingReader:
    """Wraps a text handle and counts what the source pulled from it."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.chars = 0
        self.lines = 0

    def read(self, size: int = -1) -> str:
        text = self.handle.read(size)
        self.chars += len(text)
        return text

    def readline(self) -> str:
        line = self.handle.readline()
        self.lines += 1 if line else 0
        return line

    def __iter__(self) -> CountingReader:
        return self

    def __next__(self) -> str:
        line = next(self.handle)
        self.lines += 1
        return line


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> list[CountingReader]:
    """Every file a csv/json/jsonl source opens is wrapped in a CountingReader (listed here)."""
    opened: list[CountingReader] = []

    @contextlib.contextmanager
    def open_counted(path: str, kind: str) -> Iterator[CountingReader]:
        with sources_reading.open_source_file(path, kind) as handle:
            opened.append(CountingReader(handle))
            yield opened[-1]

    monkeypatch.setattr(tabular, "open_source_file", open_counted)
    monkeypatch.setattr(json_stream, "open_source_file", open_counted)
    return opened


def test_csv_streams(tmp_path: Path, counting: list[CountingReader]) -> None:
    with (tmp_path / "big.csv").open("w") as out:
        out.write("n,text\n")
        out.writelines(f"{n},row {n}\n" for n in range(200_000))
    stream = iter_items(SourceSpec(kind="csv", path="big.csv"), cwd=tmp_path)
    assert next(stream).payload == {"n": "0", "text": "row 0"}
    assert counting[0].lines <= 3
    stream.close()


# ---------------------------------------------------------------------------------------------- json


NESTED = {
    "meta": {"note": 'brackets ] } [ { and "quotes" in a string', "n": [1, [2, {"x": []}]]},
    "data": {
        "skip": [{"a": "]"}, 1e5, -0.5, True, None],
        "items": [{"id": 1, "text": "caf\u00e9 \\ \u2603"}, {"id": 2, "nested": {"k": [1, 2]}}],
        "after": "ignored",
    },
}


def test_json_top_level_array(tmp_path: Path) -> None:
    write(tmp_path / "d.json", ' \n[ {"id": 1}, {"id": 2, "v": [1.5, "x"]} ]\n ')
    found = items(tmp_path, kind="json", path="d.json", key="id")
    assert [(i.key, i.payload) for i in found] == [("1", {"id": 1}), ("2", {"id": 2, "v": [1.5, "x"]})]
    write(tmp_path / "empty.json", "[]")
    assert items(tmp_path, kind="json", path="empty.json") == []


@pytest.mark.parametrize("json_path", ["data.items", "$.data.items"])
def test_json_path_walks_nested_objects(tmp_path: Path, json_path: str) -> None:
    write(tmp_path / "d.json", json.dumps(NESTED, indent=2))
    found = items(tmp_path, kind="json", path="d.json", json_path=json_path)
    assert [i.payload for i in found] == NESTED["data"]["items"]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64])
def test_json_elements_cut_at_any_chunk_boundary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(json_stream, "CHUNK_CHARS", chunk)
    elements = [{"n": 12345678901234567890, "f": -1.25e-7, "s": 'a"b\\c\u00e9\U0001f600', "t": True}] * 3
    write(tmp_path / "d.json", json.dumps({"x": {"y": elements}}))
    assert [i.payload for i in items(tmp_path, kind="json", path="d.json", json_path="x.y")] == elements
    write(tmp_path / "top.json", json.dumps(elements, ensure_ascii=False))
    assert [i.payload for i in items(tmp_path, kind="json", path="top.json")] == elements


def test_json_streams_a_large_array(tmp_path: Path, counting: list[CountingReader]) -> None:
    path = tmp_path / "big.json"
    with path.open("w") as out:
        out.write("[")
        out.write(",".join(f'{{"n": {n}, "text": "element number {n}"}}' for n in range(200_000)))
        out.write("]")
    stream = iter_items(SourceSpec(kind="json", path=str(path)), cwd=tmp_path)
    assert next(stream).payload == {"n": 0, "text": "element number 0"}
    assert counting[0].chars <= 2 * json_stream.CHUNK_CHARS < path.stat().st_size // 20
    stream.close()


def test_json_malformed_reports_line_and_column(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(json_stream, "CHUNK_CHARS", 5)  # errors after many dropped chunks
    write(tmp_path / "bad.json", '[\n  {"a": 1},\n  {"a": 2,, "b": 3}\n]\n')
    message = error(tmp_path, kind="json", path="bad.json")
    assert "line 3 column 11" in message and "bad.json" in message


@pytest.mark.parametrize(
    ("text", "json_path", "needle"),
    [
        ('{"a": 1}', None, "holds an object, not an array"),
        ('{"a": {"b": 1}}', "a.b", "holds a number, not an array"),
        ('{"a": {"c": []}}', "a.b", "key 'b' not found in 'a'"),
        ('{"a": [1]}', "a.b", "'a' is an array, not an object"),
        ('[{"a": 1}, 2]', None, "element [1]"),
        ('{"x": [{"a": 1}, "s"]}', "x", "element x[1]"),
        ('[{"a": 1},]', None, "trailing comma"),
        ('[{"a": NaN}]', None, "NaN is not valid JSON"),
        ('[{"a": 1}] [', None, "extra data"),
        ('[{"a": 1}', None, "ends inside the array"),
        ("", None, "is empty"),
    ],
)
def test_json_structure_errors(tmp_path: Path, text: str, json_path: str | None, needle: str) -> None:
    write(tmp_path / "d.json", text)
    assert needle in error(tmp_path, kind="json", path="d.json", json_path=json_path)


# --------------------------------------------------------------------------------------------- jsonl


def test_jsonl_lines_become_items(tmp_path: Path, counting: list[CountingReader]) -> None:
    write(tmp_path / "d.jsonl", '{"id": "a"}\n\n   \n{"id": "b", "n": 2}\n')
    found = items(tmp_path, kind="jsonl", path="d.jsonl", key="id")
    assert [(i.key, i.payload) for i in found] == [("a", {"id": "a"}), ("b", {"id": "b", "n": 2})]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('{"a": 1}\n\n{"a": 2\n', "line 3 of"),
        ('{"a": 1}\n[1, 2]\n', "line 2 of"),
        ('{"a": 1}\n"text"\n', "line 2 of"),
    ],
)
def test_jsonl_errors_name_the_line(tmp_path: Path, text: str, needle: str) -> None:
    write(tmp_path / "d.jsonl", text)
    assert needle in error(tmp_path, kind="jsonl", path="d.jsonl")


# ---------------------------------------------------------------------------------------------- keys


def test_content_keys_are_stable_and_order_independent(tmp_path: Path) -> None:
    write(tmp_path / "a.jsonl", '{"x": 1, "y": "z"}\n{"y": "z", "x": 1}\n{"x": 2}\n')
    keys = [i.key for i in items(tmp_path, kind="jsonl", path="a.jsonl")]
    expected = hashlib.sha256(b'{"x":1,"y":"z"}').hexdigest()[:32]
    assert keys[0] == keys[1] == expected and keys[2] != expected and len(keys[2]) == 32
    assert [i.key for i in items(tmp_path, kind="jsonl", path="a.jsonl")] == keys


def test_key_field_missing_or_empty(tmp_path: Path) -> None:
    write(tmp_path / "d.csv", "id,name\n1,a\n,b\n")
    message = error(tmp_path, kind="csv", path="d.csv", key="ident")
    assert "line 2 of" in message and "'id', 'name'" in message
    assert "line 3 of" in error(tmp_path, kind="csv", path="d.csv", key="id")


def test_priority_field(tmp_path: Path) -> None:
    write(tmp_path / "d.jsonl", '{"p": "high"}\n{"p": 7}\n{"p": "low"}\n')
    found = items(tmp_path, kind="jsonl", path="d.jsonl", priority_field="p")
    assert [i.priority for i in found] == [2, 7, 0]
    assert "line 1 of" in error(tmp_path, kind="jsonl", path="d.jsonl", priority_field="q")
    write(tmp_path / "bad.jsonl", '{"p": "urgent"}\n')
    assert "not one of low" in error(tmp_path, kind="jsonl", path="bad.jsonl", priority_field="p")


# -------------------------------------------------------------------------------------------- python


@pytest.fixture
def module_name(tmp_path: Path) -> Iterator[str]:
    """A uniquely named module in tmp_path with a few source functions."""
    name = f"src_{uuid.uuid4().hex[:8]}"
    write(
        tmp_path / f"{name}.py",
        "import asyncio\n"
        "def gen(count='2', prefix='x'):\n"
        "    for n in range(int(count)):\n"
        "        yield {'id': f'{prefix}{n}', 'n': n}\n"
        "def listed():\n    return [{'a': 1}, {'a': 2}]\n"
        "async def agen():\n"
        "    for n in range(3):\n        await asyncio.sleep(0)\n        yield {'n': n}\n"
        "async def coro():\n    await asyncio.sleep(0)\n    return [{'c': 1}]\n"
        "def boom():\n    raise ValueError('msg')\n"
        "def late_boom():\n    yield {'a': 1}\n    raise KeyError('k')\n"
        "def scalars():\n    return [{'a': 1}, 'oops']\n"
        "def nothing():\n    return None\n"
        "def odd():\n    return [{'when': object()}]\n"
        "def needs_lib():\n    import not_a_real_lib_xyz\n",
    )
    yield name
    sys.modules.pop(name, None)


def test_python_generator_with_args(tmp_path: Path, module_name: str) -> None:
    path_before = list(sys.path)
    found = items(tmp_path, kind="python", function=f"{module_name}:gen", args={"count": "3"}, key="id")
    assert [(i.key, i.payload) for i in found] == [
        ("x0", {"id": "x0", "n": 0}),
        ("x1", {"id": "x1", "n": 1}),
        ("x2", {"id": "x2", "n": 2}),
    ]
    assert sys.path == path_before


def test_python_list_file_path_async_and_coroutine(tmp_path: Path, module_name: str) -> None:
    assert [i.payload for i in items(tmp_path, kind="python", function=f"{module_name}:listed")] == [
        {"a": 1},
        {"a": 2},
    ]
    by_file = items(tmp_path, kind="python", function=f"./{module_name}.py:gen", args={"prefix": "f"})
    assert [i.payload["id"] for i in by_file] == ["f0", "f1"]
    assert [i.payload for i in items(tmp_path, kind="python", function=f"{module_name}:agen")] == [
        {"n": 0},
        {"n": 1},
        {"n": 2},
    ]
    assert [i.payload for i in items(tmp_path, kind="python", function=f"{module_name}:coro")] == [{"c": 1}]


@pytest.mark.parametrize(
    ("func", "needle"),
    [
        ("boom", ":boom raised ValueError: msg"),
        ("late_boom", ":late_boom raised KeyError: 'k'"),
        ("scalars", "item [1]"),
        ("nothing", "returned None"),
        ("odd", "not JSON-able"),
        ("needs_lib", "raised ModuleNotFoundError"),
        ("missing_fn", "has no function 'missing_fn'"),
    ],
)
def test_python_source_errors(tmp_path: Path, module_name: str, func: str, needle: str) -> None:
    message = error(tmp_path, kind="python", function=f"{module_name}:{func}")
    assert needle in message
    if func == "boom":
        assert message.startswith(f"python source {module_name}:boom raised ValueError: msg")


def test_python_unknown_module_and_file(tmp_path: Path) -> None:
    assert "no python module named 'no_such_module_abc'" in error(
        tmp_path, kind="python", function="no_such_module_abc:f"
    )
    assert "not found" in error(tmp_path, kind="python", function="nope/x.py:f")
    assert "not module:function" in error(tmp_path, kind="python", function="justamodule")


def test_async_python_source_inside_a_running_loop_is_refused(tmp_path: Path, module_name: str) -> None:
    async def main() -> str:
        with pytest.raises(SourceError) as info:
            items(tmp_path, kind="python", function=f"{module_name}:agen")
        return info.value.one_line()

    assert "event loop is already running" in asyncio.run(main())


# ----------------------------------------------------------------------------------- resolve/describe


def test_resolve_spec_makes_paths_absolute_and_is_idempotent(tmp_path: Path) -> None:
    files = resolve_spec(SourceSpec(kind="files", glob="./src/**/*.py"), tmp_path)
    assert (files.root, files.glob) == (str(tmp_path), "src/**/*.py")
    assert resolve_spec(files, Path("/elsewhere")) == files
    csv_spec = resolve_spec(SourceSpec(kind="csv", path="data/x.csv"), tmp_path)
    assert csv_spec.path == str(tmp_path / "data/x.csv")
    sql = resolve_spec(SourceSpec(kind="sql", query="select 1", db_url="sqlite:///db/x.db"), tmp_path)
    assert sql.db_url == f"sqlite:///{tmp_path}/db/x.db"
    pg = "postgresql+psycopg://u:pw@h/db"
    assert resolve_spec(SourceSpec(kind="sql", query="select 1", db_url=pg), tmp_path).db_url == pg
    py = resolve_spec(SourceSpec(kind="python", function="mod:f"), tmp_path)
    assert py.function == "mod:f" and py.root is None
    absolute = resolve_spec(SourceSpec(kind="files", glob="/data/in/**/*.md"), tmp_path)
    assert (absolute.root, absolute.glob) == ("/data/in", "**/*.md")


def test_describe_source(tmp_path: Path) -> None:
    spec = resolve_spec(SourceSpec(kind="files", glob="**/*.py"), tmp_path)
    assert describe_source(spec) == f"files **/*.py under {tmp_path}"
    assert describe_source(SourceSpec(kind="json", path="/x.json", json_path="a.b")) == "json /x.json at a.b"
    sql = SourceSpec(kind="sql", query="SELECT *\n FROM t", db_url="postgresql+psycopg://u:secret@h/db")
    assert describe_source(sql) == "sql 'SELECT * FROM t' on postgresql+psycopg://u:***@h/db"
    py = SourceSpec(kind="python", function="m:f", args={"n": "1"})
    assert describe_source(py) == "python m:f(n='1')"


def test_cwd_defaults_to_the_process_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "a.txt", "a")
    monkeypatch.chdir(tmp_path)
    assert [i.payload["path"] for i in iter_items(SourceSpec(kind="files", glob="*.txt"))] == [
        os.path.join(str(tmp_path), "a.txt")
    ]
