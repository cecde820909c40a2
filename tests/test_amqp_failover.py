"""Failover addresses: the URL list, its completion from the first URL, masking, and (against
RabbitMQ) connecting to the next address when one is dead and rotating on reconnect."""

from __future__ import annotations

import pytest

from kiwipy.settings import Settings, mask_url

pytestmark = pytest.mark.timeout(60)

PASSWORD = "s3cretPW"


# -- the URL list --------------------------------------------------------------------------------


def test_missing_parts_are_taken_from_the_first_url() -> None:
    settings = Settings.from_url(
        f"amqp://alice:{PASSWORD}@h1:5673/prod?heartbeat=5;amqp://h2;amqp://bob:pw@h3:1/"
    )
    assert settings.url == f"amqp://alice:{PASSWORD}@h1:5673/prod?heartbeat=5"
    assert settings.failover_urls == (
        f"amqp://alice:{PASSWORD}@h2:5673/prod?heartbeat=5",
        # Another user: not alice's password; a path of its own ("/": the default vhost).
        "amqp://bob:pw@h3:1/?heartbeat=5",
    )
    assert settings.heartbeat == 5  # options come from the first URL
    assert settings.addresses == (settings.url, *settings.failover_urls)


def test_the_field_and_the_list_give_the_same_settings() -> None:
    listed = Settings.from_url(f"amqp://u:{PASSWORD}@h1/v;amqp://h2;amqp://h3:5999")
    fielded = Settings.from_url(
        f"amqp://u:{PASSWORD}@h1/v", failover_urls=("amqp://h2", "amqp://h3:5999")
    )
    assert listed == fielded
    assert fielded.failover_urls[1] == f"amqp://u:{PASSWORD}@h3:5999/v"
    assert listed.replace(heartbeat=7).failover_urls == listed.failover_urls  # idempotent
    # A string is a list too; spaces around ';' are allowed.
    spaced = Settings(url=f"amqp://u:{PASSWORD}@h1/v", failover_urls="amqp://h2 ; amqp://h3:5999")
    assert spaced.failover_urls == listed.failover_urls


def test_ipv6_and_per_address_server_name() -> None:
    settings = Settings.from_url(
        f"amqps://u:{PASSWORD}@[::1]:5671/?server_name_indication=node1"
        ";amqps://[fe80::2]?server_name_indication=node2;amqps://h3"
    )
    assert settings.ssl_server_hostname == "node1"
    second, third = settings.failover_urls
    assert second == f"amqps://u:{PASSWORD}@[fe80::2]:5671/?server_name_indication=node2"
    assert third == f"amqps://u:{PASSWORD}@h3:5671/"  # not node1's name


def test_no_password_in_the_repr_or_the_masked_list() -> None:
    settings = Settings.from_url(f"amqp://u:{PASSWORD}@h1/v;amqp://h2;amqp://x:{PASSWORD}2@h3")
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in str(settings)
    assert repr(settings).count("****") == 3
    masked = mask_url(f"amqp://u:{PASSWORD}@h1/v;amqp://x:{PASSWORD}@h2 ;amqps://h3")
    assert masked == "amqp://u:****@h1/v;amqp://x:****@h2;amqps://h3"
    # Malformed: masked too much rather than too little.
    assert PASSWORD not in mask_url(f"amqp://x:{PASSWORD}@h2 ;amqp:x:{PASSWORD}@h3")


MALFORMED_LISTS = [
    (f"amqp://u:{PASSWORD}@h1;h2", "';' separates the complete addresses"),
    (f"amqp://u:{PASSWORD}@h1/v;", "';' separates the complete addresses"),
    (f"amqp://u:{PASSWORD}@h1;amqp:h2", "';' separates the complete addresses"),
    (f"amqp://u:{PASSWORD}@h1;amqp://h2:99999", "address 2 of 2: Malformed communicator URL"),
    (f"amqp://u:{PASSWORD}@h1;amqp://u:{PASSWORD}@h2 ", "space"),
    (f"amqp://u:{PASSWORD}@h1;amqps://h2", "differs from the first URL's amqp://"),
    (f"amqp://u:{PASSWORD}@h1?heartbeat=5;amqp://h2?heartbeat=9", "heartbeat='9' differs"),
    (f"amqp://u:{PASSWORD}@h1;amqq://h2", "address 2 of 2: Unknown communicator URL scheme"),
    ("memory://a;memory://b", "only amqp:// and amqps:// URLs take failover"),
    (f"amqp://u:{PASSWORD}@h1;amqp://u:{PASSWORD}@/v", "no host"),
]


@pytest.mark.parametrize(("url", "problem"), MALFORMED_LISTS)
def test_malformed_list_is_a_clear_error_without_passwords(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match="URL") as caught:
        Settings.from_url(url)
    text = str(caught.value)
    assert problem in text
    assert PASSWORD not in text
    assert "\n" not in text


def test_a_matching_option_may_be_repeated() -> None:
    settings = Settings.from_url("amqp://h1?heartbeat=5;amqp://h2?heartbeat=5")
    assert settings.failover_urls == ("amqp://h2?heartbeat=5",)


def test_a_semicolon_in_a_password_is_no_separator() -> None:
    settings = Settings.from_url("amqp://u:pa;ss@h1/v;amqp://h2")
    assert settings.url == "amqp://u:pa;ss@h1/v"
    assert settings.failover_urls == ("amqp://u:pa;ss@h2/v",)
    assert "pa;ss" not in mask_url("amqp://u:pa;ss@h1/v;amqp://u:pa;ss@h2")
