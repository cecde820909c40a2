"""Tests for kiwipy.codecs: built-in codecs, safe YAML, size cap, content type dispatch."""

from __future__ import annotations

import contextlib
import datetime
import json
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest
import yaml
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from kiwipy.codecs import JSON, MSGPACK, YAML_SAFE, Codec, MessageCodec, custom_codec
from kiwipy.exceptions import DecodeError, EncodeError, KiwipyError, MessageTooLarge
from kiwipy.settings import Settings

SAMPLE = {"name": "task", "args": [1, 2.5, None, True], "nested": {"é": "ü", "n": -3}}
ALL_CONTENT_TYPES = [
    None,
    "",
    "application/json",
    "text/json",
    "application/msgpack",
    "application/x-msgpack",
    "application/x-yaml",
    "application/yaml",
    "text/yaml",
]
UNSAFE_YAML_TEMPLATES = [
    '!!python/object/apply:os.system ["touch {marker}"]',
    "!!python/object/apply:subprocess.check_call [[touch, {marker}]]",
    "!!python/object/new:subprocess.Popen [[touch, {marker}]]",
    "!!python/name:os.system",
    "!!python/module:os",
    "!!python/object:argparse.Namespace {{marker: {marker}}}",
    "- !!python/tuple [1, !!python/object/apply:os.system ['touch {marker}']]",
]


def message_codec(**options: Any) -> MessageCodec:
    return MessageCodec(Settings(**options))


# --- JSON ----------------------------------------------------------------------------------------


def test_json_round_trips_plain_data() -> None:
    assert JSON.decode(JSON.encode(SAMPLE)) == SAMPLE


def test_json_announces_its_content_type() -> None:
    assert JSON.content_type == "application/json"
    body, content_type = message_codec(codec="json").encode(SAMPLE)
    assert content_type == "application/json"
    assert json.loads(body) == SAMPLE


def test_json_is_the_default_codec() -> None:
    assert MessageCodec(Settings()).codec is JSON


def test_json_uses_compact_separators() -> None:
    assert JSON.encode({"a": [1, 2]}) == b'{"a":[1,2]}'


def test_json_body_is_ascii_and_round_trips_non_ascii_text() -> None:
    body = JSON.encode("é\ud800")
    assert body.isascii()
    assert JSON.decode(body) == "é\ud800"


@pytest.mark.parametrize("codec", [JSON, MSGPACK, YAML_SAFE], ids=lambda codec: codec.name)
def test_tuples_come_back_as_lists(codec: Codec) -> None:
    assert codec.decode(codec.encode({"t": (1, (2, 3))})) == {"t": [1, [2, 3]]}


@pytest.mark.parametrize("value", [object(), {"a": {1, 2}}, [b"bytes"], {(1, 2): "tuple key"}])
def test_json_encode_of_unserialisable_value_raises_encode_error(value: object) -> None:
    with pytest.raises(EncodeError):
        JSON.encode(value)


def test_json_encode_error_names_the_offending_type() -> None:
    class Widget:
        pass

    with pytest.raises(EncodeError, match="Widget"):
        JSON.encode({"nested": [Widget()]})


def test_json_encode_of_circular_value_raises_encode_error() -> None:
    value: list[Any] = []
    value.append(value)
    with pytest.raises(EncodeError):
        JSON.encode(value)


def test_json_decode_rejects_invalid_utf8() -> None:
    with pytest.raises(DecodeError) as info:
        JSON.decode(b'"\xff\xfe"')
    assert isinstance(info.value.__cause__, UnicodeDecodeError)


def test_json_decode_rejects_utf16_even_though_json_loads_would_guess_it() -> None:
    with pytest.raises(DecodeError):
        JSON.decode('{"a": 1}'.encode("utf-16"))


def test_json_decode_rejects_truncated_json() -> None:
    body = JSON.encode(SAMPLE)[:-3]
    with pytest.raises(DecodeError):
        JSON.decode(body)


@pytest.mark.parametrize("content_type", ["application/json", "application/x-yaml", None])
def test_deep_nesting_raises_decode_error(content_type: str | None) -> None:
    with pytest.raises(DecodeError):
        message_codec().decode(b"[" * 100_000, content_type)


def test_deeply_nested_msgpack_raises_decode_error() -> None:
    with pytest.raises(DecodeError):
        MSGPACK.decode(b"\x91" * 100_000)


@pytest.mark.parametrize("content_type", ["application/json", "application/msgpack"])
def test_empty_body_raises_decode_error(content_type: str) -> None:
    with pytest.raises(DecodeError):
        message_codec().decode(b"", content_type)


def test_empty_body_without_content_type_is_yaml_null() -> None:
    assert message_codec().decode(b"", None) is None


# --- YAML and kiwipy 0.9 peers -------------------------------------------------------------------


def test_kiwipy_09_yaml_body_without_content_type_decodes_to_tuple() -> None:
    body = yaml.dump(({"a": 1}, False)).encode()
    assert body.startswith(b"!!python/tuple")
    assert message_codec().decode(body, None) == ({"a": 1}, False)
    assert message_codec().decode(body, "") == ({"a": 1}, False)


def test_nested_python_tuples_decode_to_tuples() -> None:
    body = yaml.dump({"outer": (1, (2, 3))}).encode()
    assert YAML_SAFE.decode(body) == {"outer": (1, (2, 3))}


def test_python_tuple_tag_on_a_scalar_raises_decode_error() -> None:
    with pytest.raises(DecodeError):
        YAML_SAFE.decode(b"!!python/tuple 3")


def test_json_body_without_content_type_decodes_as_yaml() -> None:
    assert message_codec().decode(JSON.encode(SAMPLE), None) == SAMPLE


@pytest.mark.parametrize("template", UNSAFE_YAML_TEMPLATES)
@pytest.mark.parametrize("content_type", [None, "application/x-yaml"])
def test_unsafe_yaml_raises_decode_error_without_side_effect(
    template: str, content_type: str | None, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    body = template.format(marker=marker).encode()
    with pytest.raises(DecodeError):
        message_codec().decode(body, content_type)
    assert not marker.exists()


def test_yaml_round_trips_safe_types() -> None:
    value = {"when": datetime.date(2020, 1, 2), "raw": b"\x00\xff", "set": {1, 2}, **SAMPLE}
    assert YAML_SAFE.decode(YAML_SAFE.encode(value)) == value


def test_yaml_encode_never_emits_python_tags() -> None:
    body = YAML_SAFE.encode({"t": (1, 2)})
    assert b"python" not in body


def test_yaml_encode_of_unserialisable_value_raises_encode_error_naming_type() -> None:
    with pytest.raises(EncodeError, match="complex"):
        YAML_SAFE.encode({"a": [complex(1, 2)]})


def test_yaml_multiple_documents_raise_decode_error() -> None:
    with pytest.raises(DecodeError):
        YAML_SAFE.decode(b"a: 1\n---\nb: 2\n")


# --- msgpack -------------------------------------------------------------------------------------


def test_msgpack_round_trips_plain_data_and_bytes() -> None:
    value = {**SAMPLE, "raw": b"\x00\xff"}
    body, content_type = message_codec(codec="msgpack").encode(value)
    assert content_type == "application/msgpack"
    assert msgpack.unpackb(body, raw=False) == value
    assert message_codec().decode(body, "application/msgpack") == value


def test_msgpack_encode_of_unserialisable_value_raises_encode_error_naming_type() -> None:
    with pytest.raises(EncodeError, match="object"):
        MSGPACK.encode({"a": object()})


def test_msgpack_decode_keeps_strict_map_keys() -> None:
    with pytest.raises(DecodeError):
        MSGPACK.decode(msgpack.packb({1: "a"}))


def test_msgpack_decode_rejects_extra_data() -> None:
    with pytest.raises(DecodeError):
        MSGPACK.decode(MSGPACK.encode(1) + b"\x01")


def test_missing_msgpack_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "msgpack", None)  # makes ``import msgpack`` fail
    with pytest.raises(KiwipyError, match=r"pip install kiwipy\[msgpack\]"):
        MSGPACK.encode(1)
    with pytest.raises(DecodeError, match=r"pip install kiwipy\[msgpack\]"):
        message_codec().decode(b"\x01", "application/msgpack")
    with pytest.raises(KiwipyError, match=r"pip install kiwipy\[msgpack\]"):
        message_codec(codec="msgpack")


# --- custom codecs -------------------------------------------------------------------------------


def test_custom_codec_wraps_user_pair_without_content_type() -> None:
    codec = custom_codec(lambda value: repr(value).encode(), lambda body: body.decode()[::-1])
    assert codec.content_type is None
    assert codec.encode([1]) == b"[1]"
    assert codec.decode(b"abc") == "cba"


def test_custom_encoder_returning_str_is_sent_as_utf8() -> None:
    def encoder(value: Any) -> Any:
        return f"é{value}"

    codec = custom_codec(encoder, bytes)
    assert codec.encode(1) == "é1".encode()


def test_custom_encoder_returning_other_type_raises_encode_error() -> None:
    def encoder(value: Any) -> Any:
        return 42

    codec = custom_codec(encoder, bytes)
    with pytest.raises(EncodeError, match="int"):
        codec.encode(1)


def test_custom_codec_errors_are_wrapped_and_chained() -> None:
    def encoder(value: Any) -> bytes:
        raise RuntimeError("encoder broke")

    def decoder(body: bytes) -> Any:
        raise KeyError("decoder broke")

    codec = custom_codec(encoder, decoder)
    with pytest.raises(EncodeError, match="encoder broke") as encode_info:
        codec.encode(1)
    assert isinstance(encode_info.value.__cause__, RuntimeError)
    with pytest.raises(DecodeError, match="decoder broke") as decode_info:
        codec.decode(b"x")
    assert isinstance(decode_info.value.__cause__, KeyError)


def test_settings_encoder_decoder_are_sending_codec_and_untyped_decoder() -> None:
    def encoder(value: Any) -> bytes:
        return str(value).encode()

    def decoder(body: bytes) -> Any:
        return ("user", body)

    codec = message_codec(encoder=encoder, decoder=decoder)
    assert codec.encode(5) == (b"5", None)
    assert codec.decode(b"5", None) == ("user", b"5")
    assert codec.decode(b"[5]", "application/json") == [5]


# --- MessageCodec dispatch and size cap ----------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b'{"a":1}'),
        ("application/json; charset=utf-8", b'{"a":1}'),
        ("Application/JSON ; charset=UTF-8", b'{"a":1}'),
        ("text/json", b'{"a":1}'),
        ("application/msgpack", msgpack.packb({"a": 1})),
        ("application/x-msgpack", msgpack.packb({"a": 1})),
        ("application/x-yaml", b"a: 1\n"),
        ("application/yaml", b"a: 1\n"),
        ("text/yaml", b"a: 1\n"),
        (None, b"a: 1\n"),
    ],
)
def test_decode_picks_codec_by_content_type(content_type: str | None, body: bytes) -> None:
    assert message_codec().decode(body, content_type) == {"a": 1}


@pytest.mark.parametrize("content_type", ["application/octet-stream", "text/plain", "json"])
def test_unknown_content_type_raises_decode_error(content_type: str) -> None:
    with pytest.raises(DecodeError, match="content type"):
        message_codec().decode(b'{"a":1}', content_type)


def test_unknown_codec_name_is_refused() -> None:
    with pytest.raises(ValueError, match="pickle"):
        message_codec(codec="pickle")


@pytest.mark.parametrize("codec_name", ["json", "msgpack", "yaml"])
def test_message_codec_round_trips_with_each_codec(codec_name: str) -> None:
    codec = message_codec(codec=codec_name)
    body, content_type = codec.encode(SAMPLE)
    assert codec.decode(body, content_type) == SAMPLE


def test_encode_over_size_cap_raises_message_too_large_naming_size_and_cap() -> None:
    codec = message_codec(max_message_bytes=10)
    with pytest.raises(MessageTooLarge, match=r"12 bytes.*10 bytes"):
        codec.encode("x" * 10)  # '"xxxxxxxxxx"' is 12 bytes


def test_body_exactly_at_size_cap_is_accepted() -> None:
    codec = message_codec(max_message_bytes=12)
    body, content_type = codec.encode("x" * 10)
    assert codec.decode(body, content_type) == "x" * 10


@pytest.mark.parametrize("content_type", ["application/json", "application/msgpack", None])
def test_size_cap_is_checked_before_any_parser_runs(
    content_type: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def spy(name: str) -> Any:
        def parser(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            raise AssertionError(f"{name} must not be called")

        return parser

    monkeypatch.setattr(json, "loads", spy("json.loads"))
    monkeypatch.setattr(yaml, "load", spy("yaml.load"))
    monkeypatch.setattr(msgpack, "unpackb", spy("msgpack.unpackb"))
    codec = message_codec(max_message_bytes=4)
    with pytest.raises(MessageTooLarge):
        codec.decode(b'"too long"', content_type)
    assert calls == []


def test_size_cap_is_checked_before_the_user_decoder_runs() -> None:
    calls: list[bytes] = []

    def decoder(body: bytes) -> Any:
        calls.append(body)
        return body

    codec = message_codec(encoder=bytes, decoder=decoder, max_message_bytes=2)
    with pytest.raises(MessageTooLarge):
        codec.decode(b"abc", None)
    assert calls == []


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    body=st.one_of(st.binary(max_size=512), st.text(max_size=256).map(str.encode)),
    content_type=st.sampled_from(ALL_CONTENT_TYPES),
)
def test_random_bytes_only_ever_raise_decode_error(body: bytes, content_type: str | None) -> None:
    codec = message_codec()
    with contextlib.suppress(DecodeError):
        codec.decode(body, content_type)


def test_json_floats_keep_a_dot_so_yaml_1_1_readers_see_floats() -> None:
    import yaml

    body = JSON.encode([1e20, -1e-05, 2.5e-300, "1e+5 in a string"])
    assert b"1.0e+20" in body and b"-1.0e-05" in body and b'"1e+5 in a string"' in body
    assert yaml.safe_load(body) == [1e20, -1e-05, 2.5e-300, "1e+5 in a string"]


def test_json_writes_characters_beyond_the_bmp_as_utf8() -> None:
    import yaml

    body = JSON.encode("smile \U0001f600")
    assert body == '"smile \U0001f600"'.encode()
    assert yaml.safe_load(body) == "smile \U0001f600"
