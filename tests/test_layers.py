"""The layers of docs/design.md, checked on the source: an import against them fails here.

Every module of the package is parsed with ``ast`` (nothing is imported), and each import is
recorded, at module level or inside a function alike: a lazy import is still a dependency, so
it is bound by the layers and can close a circle. Imports under ``if TYPE_CHECKING:`` are
annotations only and are left out.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(30)

SOURCE = Path(__file__).resolve().parents[1] / "src"

#: The pure layer: no event loop, no threads, no other layer of kiwipy.
PURE = (
    "kiwipy.exceptions",
    "kiwipy.codecs",
    "kiwipy.filters",
    "kiwipy.messages",
    "kiwipy.settings",
)
#: The only modules that may import an AMQP client library.
AMQP_MODULES = ("kiwipy.transports.amqp",)
AMQP_LIBRARIES = ("aiormq", "pamqp", "aio_pika")


@dataclasses.dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    at_module_level: bool
    line: int

    def __str__(self) -> str:
        return f"{self.importer}:{self.line} imports {self.imported}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(importer: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join([*base, node.module] if node.module else base)


def _targets(importer: str, node: ast.stmt, is_package: bool, modules: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    assert isinstance(node, ast.ImportFrom)
    module = _resolve(importer, node, is_package)
    # ``from kiwipy.aio import _replies`` imports the submodule itself.
    submodules = [f"{module}.{alias.name}" for alias in node.names]
    found = [name for name in submodules if name in modules]
    return found or [module]


def _walk(
    body: list[ast.stmt], at_module_level: bool
) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    for node in body:
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from _walk(node.orelse, at_module_level)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, at_module_level
            continue
        nested = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for field in ("body", "orelse", "finalbody", "handlers"):
            children = getattr(node, field, None)
            if isinstance(children, list):
                statements = [child for child in children if isinstance(child, ast.stmt)]
                handlers = [child for child in children if isinstance(child, ast.ExceptHandler)]
                yield from _walk(statements, at_module_level and not nested)
                for handler in handlers:
                    yield from _walk(handler.body, at_module_level and not nested)


def collect_imports() -> list[Import]:
    paths = sorted(SOURCE.rglob("*.py"))
    modules = {_module_name(path) for path in paths}
    imports = []
    for path in paths:
        importer = _module_name(path)
        tree = ast.parse(path.read_text(), str(path))
        for node, at_module_level in _walk(tree.body, True):
            for imported in _targets(importer, node, path.name == "__init__.py", modules):
                imports.append(Import(importer, imported, at_module_level, node.lineno))
    return imports


IMPORTS = collect_imports()


def _within(name: str, *packages: str) -> bool:
    return any(name == package or name.startswith(package + ".") for package in packages)


def _violations(
    importers: tuple[str, ...],
    forbidden: tuple[str, ...],
    allowed: frozenset[tuple[str, str]] = frozenset(),
) -> list[str]:
    return [
        str(edge)
        for edge in IMPORTS
        if _within(edge.importer, *importers)
        and _within(edge.imported, *forbidden)
        and (edge.importer, edge.imported) not in allowed
    ]


def test_the_source_was_found() -> None:
    importers = {edge.importer for edge in IMPORTS}
    assert {"kiwipy", "kiwipy.aio", "kiwipy.sync", "kiwipy.transports.base"} <= importers


def test_the_pure_layer_has_no_loop_threads_or_upper_layers() -> None:
    forbidden = (
        "asyncio",
        "threading",
        "kiwipy.aio",
        "kiwipy.sync",
        "kiwipy.transports",
        "kiwipy.rmq",
        "kiwipy.cli",
    )
    # exceptions subclasses asyncio's error types, so that ``except asyncio.TimeoutError``
    # catches ours; it runs nothing of asyncio.
    allowed = frozenset({("kiwipy.exceptions", "asyncio")})
    assert _violations(PURE, forbidden, allowed) == []


def test_the_asyncio_core_never_imports_the_blocking_side() -> None:
    assert _violations(("kiwipy.aio",), ("kiwipy.sync", "kiwipy.rmq", "kiwipy.cli")) == []


def test_transports_know_nothing_of_communicators() -> None:
    forbidden = ("kiwipy.aio", "kiwipy.sync", "kiwipy.rmq", "kiwipy.cli", "kiwipy.testing")
    assert _violations(("kiwipy.transports",), forbidden) == []


def test_the_local_broker_is_standard_library_only() -> None:
    offenders = [
        str(edge)
        for edge in IMPORTS
        if _within(edge.importer, "kiwipy.broker")
        and _within(edge.imported, "kiwipy")
        and not _within(edge.imported, "kiwipy.broker")
    ]
    assert offenders == []


def test_only_the_amqp_transport_imports_the_amqp_client() -> None:
    offenders = [
        str(edge)
        for edge in IMPORTS
        if _within(edge.imported, *AMQP_LIBRARIES)
        and not any(edge.importer.startswith(prefix) for prefix in AMQP_MODULES)
    ]
    assert offenders == []


def test_nothing_in_the_library_imports_the_cli_or_the_test_support() -> None:
    library = [
        edge for edge in IMPORTS if not _within(edge.importer, "kiwipy.cli", "kiwipy.testing")
    ]
    offenders = [
        str(edge) for edge in library if _within(edge.imported, "kiwipy.cli", "kiwipy.testing")
    ]
    assert offenders == []


def _import_graph() -> dict[str, set[str]]:
    """Who imports whom inside kiwipy, lazy imports included: a lazy import only hides a
    circle until the function runs."""
    graph: dict[str, set[str]] = {}
    for edge in IMPORTS:
        if _within(edge.imported, "kiwipy") and edge.imported != edge.importer:
            graph.setdefault(edge.importer, set()).add(edge.imported)
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> list[str] | None:
        if node in visiting:
            return [*visiting[visiting.index(node) :], node]
        if node in done:
            return None
        visiting.append(node)
        for following in sorted(graph.get(node, ())):
            cycle = visit(following)
            if cycle:
                return cycle
        visiting.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start)
        if cycle:
            return cycle
    return None


def test_no_import_circles() -> None:
    cycle = _find_cycle(_import_graph())
    assert cycle is None, " -> ".join(cycle or ())


def test_the_circle_finder_finds_a_circle() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}}) is None
