"""``kiwipy worker MODULE:FUNCTION``: finding the task function (the worker is
:class:`kiwipy.Worker`)."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

__all__ = ("load_function",)

TaskFunction = Callable[..., Any]


def load_function(spec: str) -> TaskFunction:
    """Import ``MODULE:FUNCTION`` (``FUNCTION`` may be dotted); the current directory is on
    the path, as for ``python -m``."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"Expected MODULE:FUNCTION, got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except SyntaxError as exc:
        where = f"{exc.filename}:{exc.lineno}" if exc.filename else module_name
        raise ValueError(
            f"Cannot import module {module_name!r}: {where}: {type(exc).__name__}: {exc.msg}"
        ) from None
    except Exception as exc:
        raise ValueError(
            f"Cannot import module {module_name!r}: {_where(exc)}{type(exc).__name__}: {exc}"
        ) from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"Module {module_name!r} has no attribute {attribute!r}") from None
    if not callable(target):
        raise ValueError(f"{spec} is not callable")
    return target  # type: ignore[no-any-return]


def _where(exc: BaseException) -> str:
    """``file:line: `` of the innermost frame outside importlib that raised ``exc``."""
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith("<frozen ")
        and frame.filename != __file__
        and "importlib" not in frame.filename
    ]
    if not frames:
        return ""
    return f"{frames[-1].filename}:{frames[-1].lineno}: "
