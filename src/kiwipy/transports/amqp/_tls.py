"""TLS for :mod:`kiwipy.transports.amqp`: the client's ``ssl.SSLContext`` and its errors.

The context is built once per transport from :class:`~kiwipy.settings.Settings` and handed to
aiormq; the URL aiormq sees carries no TLS query parameters (aiormq would read them itself and
print them with the URL). Failed handshakes become a :class:`~kiwipy.exceptions.TLSError` that
names the cause.
"""

from __future__ import annotations

import logging
import ssl
import urllib.parse
from typing import Any

import aiormq

from kiwipy.exceptions import TLSError
from kiwipy.settings import Settings, mask_url
from kiwipy.transports.amqp._errors import AmqpConnectionLost

__all__ = ("AmqpTLSError", "DialTarget", "describe_tls_failure", "dial_target", "dial_targets")

_LOGGER = logging.getLogger("kiwipy.transports.amqp")

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
#: Query parameters only kiwipy reads: aiormq must not see them (it reads ``certfile`` and
#: ``keyfile`` itself, and puts the whole query into its log lines).
_TLS_QUERY = frozenset(
    {"cacertfile", "certfile", "keyfile", "verify", "server_name_indication", "cafile"}
)


class AmqpTLSError(TLSError, AmqpConnectionLost):
    """A failed TLS handshake; like every lost connection also aiormq's ``ConnectionClosed``."""


class DialTarget:
    """What ``aiormq.connect`` gets for one address: the URL (no TLS parameters) and its
    keyword arguments; ``label`` names the address in messages (its password masked)."""

    __slots__ = ("_kwargs", "_url", "label")

    def __init__(self, url: str, kwargs: dict[str, Any], label: str = "") -> None:
        self._url = url
        self._kwargs = kwargs
        self.label = label or mask_url(url)

    @property
    def url(self) -> str:
        return self._url

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self._kwargs)

    @property
    def server_hostname(self) -> str | None:
        """The name the broker's certificate is checked against when it is not the URL's
        host (``None``: the URL's host)."""
        return self._kwargs.get("server_hostname")

    def __repr__(self) -> str:  # never the password
        return f"DialTarget({self.label!r}, tls={'context' in self._kwargs})"


def _strip_tls_query(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    kept = [(name, value) for name, value in query if name not in _TLS_QUERY]
    if len(kept) == len(query):
        return url
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(kept)))


def make_ssl_context(settings: Settings) -> ssl.SSLContext:
    """The client context: TLS 1.2 or later, chain and host name checked unless told not to."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.ssl_cafile)
        context.minimum_version = MINIMUM_VERSION
        if settings.ssl_certfile is not None:
            context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile)
    except (OSError, ssl.SSLError) as exc:
        # A missing or unreadable file: say which setting, not the file's content.
        raise AmqpTLSError(f"Cannot set up TLS for {settings.masked_url}: {exc}") from exc
    if not settings.ssl_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def dial_target(settings: Settings) -> DialTarget:
    """The URL and arguments to dial the first address of ``settings`` with."""
    return dial_targets(settings)[0]


def dial_targets(settings: Settings) -> list[DialTarget]:
    """The URL and arguments to dial each address of ``settings`` with, in their order.

    For ``amqps://`` this builds the one TLS context they share (and logs the one warning when
    verification is off), so call it once per transport and reuse the result for
    reconnections. The broker's certificate is checked against each address's own host, or
    its ``server_name_indication``; an address without one uses ``ssl_server_hostname``.
    """
    context = make_ssl_context(settings) if settings.scheme == "amqps" else None
    # The first URL's own server_name_indication names the first host only; the option
    # ssl_server_hostname (when it is not just that) serves every address.
    common = settings.ssl_server_hostname
    if common is not None and common == _query_value(settings.url, "server_name_indication"):
        common = None
    targets = []
    for number, address in enumerate(settings.addresses):
        url = _strip_tls_query(url_with_heartbeat(address, settings.heartbeat))
        label = mask_url(address)
        if context is None:
            targets.append(DialTarget(url, {}, label))
            continue
        kwargs: dict[str, Any] = {"context": context}
        server_hostname = settings.ssl_server_hostname if number == 0 else common
        if number > 0:  # a failover address: its own server_name_indication, if it has one
            own = _query_value(address, "server_name_indication")
            if own is not None:
                server_hostname = None if own == "disable" else own
        if server_hostname is not None:
            kwargs["server_hostname"] = server_hostname
        targets.append(DialTarget(url, kwargs, label))
    if context is not None and not settings.ssl_verify:
        _LOGGER.warning(
            "TLS certificate verification is OFF for %s (ssl_verify=False): anyone on the "
            "network path can impersonate the broker and read the password and messages",
            mask_url(";".join(settings.addresses)),
        )
    return targets


def _query_value(url: str, name: str) -> str | None:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query)).get(name)


# OpenSSL reasons (``ssl.SSLError.reason``) and what they mean to a user.
_REASONS = {
    "CERTIFICATE_VERIFY_FAILED": "the broker's certificate is not trusted",
    "TLSV1_ALERT_PROTOCOL_VERSION": (
        "no common TLS version (kiwipy requires TLS 1.2 or later; the broker offers older)"
    ),
    "UNSUPPORTED_PROTOCOL": (
        "no common TLS version (kiwipy requires TLS 1.2 or later; the broker offers older)"
    ),
    "NO_PROTOCOLS_AVAILABLE": "no TLS version is enabled on the client",
    "WRONG_VERSION_NUMBER": "the broker did not answer with TLS (a plaintext AMQP port?)",
    "RECORD_LAYER_FAILURE": "the broker did not answer with TLS (a plaintext AMQP port?)",
    "PACKET_LENGTH_TOO_LONG": "the broker did not answer with TLS (a plaintext AMQP port?)",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": (
        "handshake failure (no common cipher or TLS version, or a client certificate is required)"
    ),
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the broker requires a client certificate",
    "TLSV1_ALERT_UNKNOWN_CA": "the broker does not trust the client certificate's CA",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the broker refused the client certificate",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the broker says the client certificate has expired",
    "TLSV1_ALERT_DECRYPT_ERROR": "the broker refused the client certificate",
    "TLSV1_ALERT_INTERNAL_ERROR": "the broker aborted the handshake",
    "TLSV1_ALERT_ACCESS_DENIED": "the broker denied access (client certificate)",
}


def _verify_cause(error: ssl.SSLCertVerificationError) -> str:
    code = error.verify_code
    detail = error.verify_message or str(error)
    if code == 10:  # X509_V_ERR_CERT_HAS_EXPIRED
        return f"the broker's certificate has expired ({detail})"
    if code == 9:  # X509_V_ERR_CERT_NOT_YET_VALID
        return f"the broker's certificate is not valid yet ({detail})"
    if code in (62, 64) or "mismatch" in detail.lower():  # host name / IP address mismatch
        return f"host name mismatch: {detail}"
    if code in (2, 18, 19, 20, 21):  # no issuer, self-signed, untrusted chain
        return f"unknown certificate authority: {detail}"
    return f"certificate verification failed: {detail}"


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes (aiormq re-raises socket errors as its own, ``from`` them)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _find_ssl_error(exc: BaseException) -> ssl.SSLError | None:
    for error in _chain(exc):
        if isinstance(error, ssl.SSLError):
            return error
    return None


def describe_tls_failure(exc: BaseException, *, established: bool = False) -> str | None:
    """What went wrong in the TLS layer under ``exc``, or ``None`` if it was not TLS.

    ``established``: the handshake passed on the client's side (TLS 1.3 lets the broker refuse
    a client certificate only afterwards, by closing the connection at once).
    """
    error = _find_ssl_error(exc)
    if error is None:
        return None
    if isinstance(error, ssl.SSLCertVerificationError):
        return _verify_cause(error)
    reason = getattr(error, "reason", None) or ""
    cause = _REASONS.get(reason)
    if cause is None:
        cause = f"TLS handshake failure ({reason or type(error).__name__})"
    return f"{cause} [{reason}]" if reason and reason not in cause else cause


def tls_error(message: str, exc: BaseException) -> AmqpTLSError | None:
    """An :class:`AmqpTLSError` for ``exc`` if it is a TLS failure (``message``: the prefix)."""
    cause = describe_tls_failure(exc)
    if cause is None:
        if _closed_during_tls_login(exc):
            cause = (
                "the broker closed the TLS connection before the AMQP login (does it require "
                "a client certificate, or refuse this one?)"
            )
        else:
            return None
    return AmqpTLSError(f"{message}: TLS failed: {cause}")


def _closed_during_tls_login(exc: BaseException) -> bool:
    """With TLS 1.3 the broker checks the client certificate after the client's handshake is
    done, and then just closes: aiormq sees EOF before ``connection.start``."""
    closed = (aiormq.exceptions.IncompatibleProtocolError, ConnectionResetError, EOFError)
    return any(
        isinstance(error, closed) or "connection reset" in str(error).lower()
        for error in _chain(exc)
    )


def url_with_heartbeat(url: str, heartbeat: int) -> str:
    """Add ``heartbeat`` to the query of ``url`` unless the URL sets it already."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if any(name == "heartbeat" for name, _ in query):
        return url
    query.append(("heartbeat", str(heartbeat)))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
