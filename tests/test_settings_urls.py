"""One URL check: every malformed URL is a clear ``ValueError`` with the password masked, and
``mask_url`` never raises."""

from __future__ import annotations

import pytest

import kiwipy.sync
from kiwipy.settings import Settings, mask_url

pytestmark = pytest.mark.timeout(10)

PASSWORD = "s3cretPW"

MALFORMED = [
    ("amqp:alice:s3cretPW@host/v", "'//' missing"),
    ("amqps:alice:s3cretPW@host/v", "'//' missing"),
    ("amqp://alice:s3cretPW@host:99999/v", "Port out of range"),
    ("amqp://alice:s3cretPW@host:port/v", "Port could not be cast"),
    ("amqq://alice:s3cretPW@host/v", "Unknown communicator URL scheme 'amqq'"),
    ("amqp://alice:s3cretPW@host/v ", "space"),
    (" amqp://alice:s3cretPW@host/v", "space"),
    ("amqp://alice:s3cretPW@[::1/v", "Invalid IPv6 URL"),
    ("alice:s3cretPW@host", "Unknown communicator URL scheme"),
    ("memory:x", "'//' missing"),
]


@pytest.mark.parametrize(("url", "problem"), MALFORMED)
def test_malformed_url_is_a_clear_value_error_without_the_password(url: str, problem: str) -> None:
    for build in (lambda: Settings.from_url(url), lambda: Settings(url=url)):
        with pytest.raises(ValueError, match="URL") as caught:
            build()
        text = str(caught.value)
        assert problem in text
        assert PASSWORD not in text
        assert "****" in text or "@" not in url
        assert "\n" not in text


@pytest.mark.parametrize(("url", "problem"), MALFORMED)
def test_connect_rejects_malformed_url_before_connecting(url: str, problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        kiwipy.sync.connect(url)
    assert problem in str(caught.value)
    assert PASSWORD not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [url for url, _ in MALFORMED]
    + ["amqp:alice:s3/cretPW@host/v", "amqp://alice:s3cretPW@host:-1/", "", "::", "amqp:"],
)
def test_mask_url_never_raises_and_hides_the_password(url: str) -> None:
    masked = mask_url(url)
    assert PASSWORD not in masked
    assert "s3/cretPW" not in masked


def test_mask_url_falls_back_to_masking_from_the_scheme_to_the_at() -> None:
    assert mask_url("amqp:alice:s3cretPW@host/v") == "amqp:****@host/v"
    assert mask_url("amqp://alice:s3cretPW@host:99999/v") == "amqp://****@host:99999/v"


def test_well_formed_urls_still_pass_and_mask_as_before() -> None:
    for url in (
        "amqp://guest:guest@127.0.0.1:5672/",
        "amqp://h/",
        "amqps://u:p@host:5671/vh?heartbeat=5",
        "memory://x",
        "local://",
        "local:///tmp/x",
        "amqp://[::1]:5672/",
    ):
        Settings.from_url(url)
    assert mask_url("amqp://alice:s3cretPW@host:5672/v") == "amqp://alice:****@host:5672/v"
    assert mask_url("amqp://h/") == "amqp://h/"
