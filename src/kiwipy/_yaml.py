"""kiwipy's YAML: safe loading (plus kiwipy 0.9's ``!!python/tuple``) and safe dumping.

Imported by :mod:`kiwipy.codecs` on first use of the YAML codec.
"""

from __future__ import annotations

from typing import Any, NoReturn

import yaml

from kiwipy.exceptions import EncodeError

_TUPLE_TAG = "tag:yaml.org,2002:python/tuple"

try:  # libyaml's C loader and dumper are much faster; same behaviour
    from yaml import CSafeDumper as _SafeDumperBase
    from yaml import CSafeLoader as _SafeLoaderBase
except ImportError:  # pragma: no cover (PyYAML built without libyaml)
    from yaml import SafeDumper as _SafeDumperBase  # type: ignore[assignment]
    from yaml import SafeLoader as _SafeLoaderBase  # type: ignore[assignment]


class _TupleSafeLoader(_SafeLoaderBase):
    """A safe loader that also reads ``!!python/tuple`` (kiwipy 0.9 messages), nothing else."""


def _construct_tuple(loader: yaml.SafeLoader, node: yaml.Node) -> tuple[Any, ...]:
    if not isinstance(node, yaml.SequenceNode):
        raise yaml.constructor.ConstructorError(
            None, None, f"expected a sequence for {_TUPLE_TAG}", node.start_mark
        )
    return tuple(loader.construct_sequence(node, deep=True))


_TupleSafeLoader.add_constructor(_TUPLE_TAG, _construct_tuple)


class _SafeDumper(_SafeDumperBase):
    """The safe dumper, with an error naming the type it cannot represent."""


def _yaml_refuse(_dumper: object, value: object) -> NoReturn:
    raise EncodeError.unsupported(value, "YAML")


# Reached only by values no safe representer handles (the safe dumper's "undefined" case).
_SafeDumper.add_multi_representer(object, _yaml_refuse)


def dumps(value: Any) -> bytes:
    body: bytes = yaml.dump(
        value, Dumper=_SafeDumper, encoding="utf-8", allow_unicode=True, sort_keys=False
    )
    return body


def loads(body: bytes) -> Any:
    return yaml.load(body, Loader=_TupleSafeLoader)  # noqa: S506 (a SafeLoader subclass)
