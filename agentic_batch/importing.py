"""Resolving `module:function` and `path/to/file.py:function` references to callables.

Used by the python source and the python worker. Lookups happen with the job's directory on
sys.path, because the executor runs later, from another process, in that directory.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from agentic_batch.errors import AbpError, InvalidSpec


@contextlib.contextmanager
def on_sys_path(entries: list[str]) -> Iterator[None]:
    added = [e for e in entries if e and e not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for entry in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(entry)


def split_ref(ref: str, what: str, error: type[AbpError] = InvalidSpec) -> tuple[str, str]:
    module_ref, sep, func_name = ref.rpartition(":")
    if not sep or not module_ref or not func_name:
        raise error(f"{what} {ref!r} is not of the form module:function",
                    hint="e.g. mypkg.items:generate or ./make_items.py:generate")
    return module_ref, func_name


def _load_file(path: Path) -> ModuleType:
    name = f"_abp_user_{abs(hash(str(path)))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def load_callable(ref: str, search_dirs: list[Path], what: str,
                  error: type[AbpError] = InvalidSpec) -> Callable[..., Any]:
    """Import `ref` and return the callable it names, or raise `error` with one clear line."""
    module_ref, func_name = split_ref(ref, what, error)
    try:
        with on_sys_path([str(d) for d in search_dirs]):
            if module_ref.endswith(".py") or "/" in module_ref:
                candidates = [Path(module_ref)] + [d / module_ref for d in search_dirs]
                path = next((p for p in candidates if p.is_file()), None)
                if path is None:
                    raise error(f"{what} {ref!r}: no file {module_ref}",
                                hint=f"looked in {', '.join(str(d) for d in search_dirs)}")
                module = _load_file(path.resolve())
            else:
                module = importlib.import_module(module_ref)
    except AbpError:
        raise
    except ModuleNotFoundError as exc:
        raise error(f"{what} {ref!r}: no module named {exc.name!r}",
                    hint="check the spelling, or run abp from the directory that contains it") from None
    except Exception as exc:
        raise error(f"{what} {ref!r}: importing {module_ref} raised {type(exc).__name__}: {exc}") from None
    func = getattr(module, func_name, None)
    if func is None:
        raise error(f"{what} {ref!r}: {module_ref} has no attribute {func_name!r}")
    if not callable(func):
        raise error(f"{what} {ref!r}: {func_name} is not callable")
    return func
