"""Decoding is safe by construction.

* A static check of ``src/kiwipy``: no ``pickle``/``marshal``/``shelve``, no ``eval``/``exec``,
  ``yaml.load`` only with the codec's safe loader; and ruff's security rules (``S``) stay on.
* A hypothesis fuzz of :meth:`kiwipy.codecs.MessageCodec.decode`: 10,000 examples in all of random
  bytes and near-valid JSON / YAML / msgpack. It only ever raises ``DecodeError`` (or
  ``MessageTooLarge`` over the cap), and returns only plain data.
"""

from __future__ import annotations

import ast
import datetime
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest
import yaml
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from kiwipy import _yaml
from kiwipy.codecs import MessageCodec
from kiwipy.exceptions import DecodeError, MessageTooLarge
from kiwipy.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "kiwipy"

# -- static check ------------------------------------------------------------------------------

_FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle"}
_FORBIDDEN_BUILTINS = {"eval", "exec", "__import__"}
_UNSAFE_YAML = {"unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}
_UNSAFE_YAML_LOADERS = {"Loader", "FullLoader", "UnsafeLoader", "CLoader", "CFullLoader"}
_YAML_LOADS = {"load", "load_all"}
#: The one safe loader the codec uses (a ``yaml.SafeLoader`` subclass; checked below).
_SAFE_LOADERS = {"_TupleSafeLoader", "SafeLoader", "CSafeLoader"}


def _name_of(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _violations(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: list[str] = []
    where = path.relative_to(root)
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in _FORBIDDEN_MODULES:
                    found.append(f"{where}:{line}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".")[0]
            if module in _FORBIDDEN_MODULES:
                found.append(f"{where}:{line}: from {node.module} import ...")
            if module == "yaml":
                unsafe = {alias.name for alias in node.names} & (
                    _UNSAFE_YAML | _UNSAFE_YAML_LOADERS | _YAML_LOADS
                )
                if unsafe:
                    found.append(f"{where}:{line}: from yaml import {', '.join(sorted(unsafe))}")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in _FORBIDDEN_BUILTINS:
                found.append(f"{where}:{line}: {func.id}()")
            if isinstance(func, ast.Attribute) and _name_of(func.value) == "yaml":
                if func.attr in _UNSAFE_YAML:
                    found.append(f"{where}:{line}: yaml.{func.attr}()")
                if func.attr in _YAML_LOADS:
                    loader = [kw.value for kw in node.keywords if kw.arg == "Loader"]
                    loader += node.args[1:2]
                    if not loader or _name_of(loader[0]) not in _SAFE_LOADERS:
                        found.append(f"{where}:{line}: yaml.{func.attr}() without a safe Loader")
        elif (
            isinstance(node, ast.Attribute)
            and _name_of(node.value) == "yaml"
            and node.attr in _UNSAFE_YAML_LOADERS
        ):
            found.append(f"{where}:{line}: yaml.{node.attr}")
    return found


def test_no_unsafe_deserialisation_in_the_package() -> None:
    files = sorted(SOURCE.rglob("*.py"))
    assert len(files) > 20
    violations = [violation for path in files for violation in _violations(path)]
    assert violations == []


def test_the_static_check_catches_what_it_should(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle\nfrom yaml import FullLoader\nimport yaml\n"
        "yaml.load(b, Loader=yaml.FullLoader)\nyaml.load(b)\nyaml.unsafe_load(b)\n"
        "eval('1')\nexec('x=1')\n",
        encoding="utf-8",
    )
    assert len(_violations(bad, tmp_path)) == 8


def test_the_only_yaml_load_is_the_codecs_safe_one() -> None:
    calls = [
        f"{path.relative_to(ROOT)}"
        for path in sorted(SOURCE.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in _YAML_LOADS | _UNSAFE_YAML
        and _name_of(node.func.value) == "yaml"
    ]
    assert calls == ["src/kiwipy/_yaml.py"]
    assert issubclass(_yaml._TupleSafeLoader, yaml.SafeLoader | yaml.CSafeLoader)


def test_ruff_security_rules_are_on_and_pass() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    lint = config["tool"]["ruff"]["lint"]
    assert "S" in lint["select"]
    for rule in ("S301", "S307", "S506", "S102"):  # pickle, eval, unsafe yaml, exec
        assert not any(rule.startswith(ignored) for ignored in lint.get("ignore", []))
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists():
        pytest.skip("ruff is not installed next to this Python")
    completed = subprocess.run(
        [str(ruff), "check", "--select", "S301,S302,S307,S102,S506", "--no-cache", str(SOURCE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


# -- fuzz --------------------------------------------------------------------------------------

CONTENT_TYPES = [
    None,
    "",
    "application/json",
    "application/json; charset=utf-8",
    "text/json",
    "application/x-yaml",
    "application/yaml",
    "text/yaml",
    "application/msgpack",
    "application/x-msgpack",
    "application/x-python-serialize",
    "text/plain",
    "APPLICATION/JSON",
]
CODEC = MessageCodec(Settings())
SMALL_CAP = MessageCodec(Settings(max_message_bytes=64))

_PLAIN_TYPES = (type(None), bool, int, float, str, bytes, datetime.date, datetime.datetime)
# msgpack's extension values are inert data records, never code.
_MSGPACK_RECORDS = (msgpack.ExtType, msgpack.Timestamp)


def assert_plain(value: Any) -> None:
    """Only allow-listed types, however deep (YAML aliases may even make cycles)."""
    seen: set[int] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _MSGPACK_RECORDS):
            continue
        if isinstance(item, dict | list | tuple | set | frozenset):
            if id(item) in seen:
                continue
            seen.add(id(item))
            if isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            else:
                stack.extend(item)
        else:
            assert type(item) in _PLAIN_TYPES, type(item)


def decode_only_raises_our_errors(body: bytes, content_type: str | None) -> None:
    if len(body) > SMALL_CAP.max_message_bytes:  # refused before any parser runs
        try:
            SMALL_CAP.decode(body, content_type)
        except MessageTooLarge:
            pass
        else:
            raise AssertionError("a body over the cap was decoded")
    try:
        value = CODEC.decode(body, content_type)
    except DecodeError:
        return
    assert_plain(value)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)  # what msgpack can pack
    | st.floats()
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=10,
)


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[bytes]) -> bytes:
    """A valid body, then a few edits: truncate, flip, insert, duplicate, splice in a tag."""
    body = bytearray(draw(valid))
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "dup", "tag", "nest"]))
        at = draw(st.integers(0, len(body)))
        if kind == "truncate":
            del body[at:]
        elif kind == "flip" and body:
            at = min(at, len(body) - 1)
            body[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            body[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "dup":
            body[at:at] = body[: draw(st.integers(0, 16))]
        elif kind == "tag":
            body[at:at] = draw(
                st.sampled_from(
                    [
                        b"!!python/object/apply:os.system ['true']",
                        b"!!python/name:os.system",
                        b"!!python/tuple [1]",
                        b"&a [*a]",
                        b"*a",
                        b"\xc7\x01\x05x",  # msgpack ext
                        b"\xd6\xff\x00\x00\x00\x01",  # msgpack timestamp
                        b"cos\nsystem\n(S'true'\ntR.",  # a pickle
                        b"\xef\xbb\xbf",
                        b"\x00",
                        b"1e999999",
                        b"NaN",
                    ]
                )
            )
        else:
            body[at:at] = b"[" * draw(st.integers(1, 200))  # deeper: tests/test_codecs.py
    return bytes(body)


json_bodies = mutated(json_values.map(lambda v: json.dumps(v).encode()))
yaml_bodies = mutated(
    st.tuples(json_values, st.booleans()).map(
        lambda pair: yaml.safe_dump(pair[0], default_flow_style=pair[1]).encode()
    )
)
msgpack_bodies = mutated(json_values.map(lambda v: msgpack.packb(v, use_bin_type=True)))


def fuzz(examples: int) -> hypothesis_settings:
    return hypothesis_settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@fuzz(4_000)
@given(body=st.binary(max_size=1024), content_type=st.sampled_from(CONTENT_TYPES))
def test_fuzz_random_bytes(body: bytes, content_type: str | None) -> None:
    decode_only_raises_our_errors(body, content_type)


@fuzz(2_000)
@given(body=json_bodies, content_type=st.sampled_from(CONTENT_TYPES))
def test_fuzz_near_valid_json(body: bytes, content_type: str | None) -> None:
    decode_only_raises_our_errors(body, content_type)


@fuzz(2_000)
@given(body=yaml_bodies, content_type=st.sampled_from([None, "application/x-yaml", "text/yaml"]))
def test_fuzz_near_valid_yaml(body: bytes, content_type: str | None) -> None:
    decode_only_raises_our_errors(body, content_type)


@fuzz(2_000)
@given(body=msgpack_bodies, content_type=st.sampled_from(CONTENT_TYPES))
def test_fuzz_near_valid_msgpack(body: bytes, content_type: str | None) -> None:
    decode_only_raises_our_errors(body, content_type)
