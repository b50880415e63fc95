"""http: one request, judged by status, body and TLS certificate; redirects followed and shown.

Redirects are followed within the configured URL's scheme, host and port only (a 302 to another
host, an internal admin page say, is reported, not fetched), unless the probe says
`follow_redirects = "any"`.

httpx's timeouts are per operation (its read timeout restarts with every chunk, so a server that
drips its body keeps a request alive for ever); the total deadline is enforced here, between
chunks, on top of per-operation timeouts no longer than the time left.

The latency runs from the moment the request goes out (its connection starts) to the whole
answer: building the client and the TLS context is the bot's own time, tens of ms under the GIL
when several probes start at once, and would make a 1 ms endpoint look slow.
"""

from __future__ import annotations

import json
import os
import ssl
import threading
import time
from functools import cache
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from commands.probe.check import Check, Finding, host_port
from commands.probe.errors import BodyMismatch, ConnectionFailed, ProbeError, WrongStatus, from_os_error
from commands.probe.redact import public_url

MAX_REDIRECTS = 5
MAX_BODY_BYTES = 1 << 20
SNIPPET_CHARS = 120
SHOWN_VALUE_CHARS = 60


def probe(check: Check) -> Finding:
    settings = check.probe
    url, auth = _split_userinfo(settings.target)
    target = httpx.URL(url)
    tracer = _Tracer(check, host_port(target.host, target.port or (443 if target.scheme == "https" else 80)))
    check.resolve(target.host, target.port or 0)
    follow = not (settings.expect_status and 300 <= settings.expect_status < 400)
    verify = _tls_context(settings.ca_file, os.stat(settings.ca_file).st_mtime_ns if settings.ca_file else 0)
    try:
        timeout = httpx.Timeout(check.time_left(), connect=check.time_left(connecting=True))
        hooks = {"request": [_within(target)]} if settings.follow_redirects == "host" else {}
        with httpx.Client(verify=verify, timeout=timeout, follow_redirects=follow, max_redirects=MAX_REDIRECTS,
                          trust_env=False, headers=dict(settings.headers), auth=auth, event_hooks=hooks) as client:
            with client.stream(settings.method, url, extensions={"trace": tracer}) as response:
                cert_days = _certificate_days_left(response)
                body = _read_body(response, check)
    except httpx.TooManyRedirects:
        raise WrongStatus(f"more than {MAX_REDIRECTS} redirects") from None
    except httpx.TimeoutException:
        raise check.timeout() from None
    except httpx.HTTPError as error:
        raise _mapped(error, tracer.where) from None
    latency = time.monotonic() - (tracer.sent_at or check.started)
    return _judge(check, response, body, cert_days, latency)


def _within(target: httpx.URL) -> Any:
    """A request hook refusing any request (a redirect) outside the target's scheme, host and port."""
    def origin(url: httpx.URL) -> tuple[str, str, int | None]:
        return url.scheme, url.host, url.port or {"http": 80, "https": 443}.get(url.scheme)

    def check(request: httpx.Request) -> None:
        if origin(request.url) != origin(target):
            raise WrongStatus(f"redirected to {public_url(str(request.url))}, outside {target.host}: not followed "
                              '(follow_redirects = "any" allows it)')

    return check


_tls_lock = threading.Lock()


def _tls_context(ca_file: str | None, version: int) -> ssl.SSLContext:
    """Built once per CA file (and its version): loading a CA bundle costs ~15 ms of CPU under the GIL,
    so probes starting together wait for the one being built rather than each building their own."""
    with _tls_lock:
        return _built_tls_context(ca_file, version)


@cache
def _built_tls_context(ca_file: str | None, version: int) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file) if ca_file else httpx.create_ssl_context()


class _Tracer:
    """httpcore's trace events -> the probe's phase, so a timeout says where it happened."""

    def __init__(self, check: Check, where: str):
        self.check = check
        self.where = where
        self.sent_at: float | None = None   # the first event: the request going out

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if self.sent_at is None:
            self.sent_at = time.monotonic()
        if event == "connection.connect_tcp.started":
            self.where = host_port(info["host"], info["port"])
            self.check.enter("connect", f"connecting to {self.where}")
        elif event == "connection.start_tls.started":
            self.check.enter("connect", f"in the TLS handshake with {self.where}")
        elif event.endswith("receive_response_headers.started"):
            self.check.enter("read", f"waiting for the response of {self.where}")
        elif event.endswith("receive_response_body.started"):
            self.check.enter("read", f"reading the body from {self.where}")


def _read_body(response: httpx.Response, check: Check) -> bytes:
    body = bytearray()
    for chunk in response.iter_bytes():
        if check.expired():
            raise check.timeout()
        body += chunk
        if len(body) >= MAX_BODY_BYTES:
            break
    return bytes(body[:MAX_BODY_BYTES])


def _certificate_days_left(response: httpx.Response) -> float | None:
    stream = response.extensions.get("network_stream")
    ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
    certificate = ssl_object.getpeercert() if ssl_object is not None else None
    if not certificate or "notAfter" not in certificate:
        return None
    return (ssl.cert_time_to_seconds(certificate["notAfter"]) - time.time()) / 86400


def _judge(check: Check, response: httpx.Response, body: bytes, cert_days: float | None,
           latency: float) -> Finding:
    settings = check.probe
    status = response.status_code
    expected = settings.expect_status
    if (status != expected) if expected else not 200 <= status < 300:
        snippet = _snippet(response, body)
        raise WrongStatus(f"answered {status} {response.reason_phrase}, expected {expected or '2xx'}"
                          + (f": {snippet}" if snippet else ""))
    facts = [f"{status} {response.reason_phrase}"]
    if response.history:
        hops = [*response.history, response]
        facts.append("redirected " + " → ".join(
            f"{hop.status_code} {public_url(str(hops[index + 1].request.url))}"
            for index, hop in enumerate(hops[:-1])))
    if settings.expect_body is not None:
        if settings.expect_body not in body.decode("utf-8", "replace"):
            raise BodyMismatch(f"the body does not contain {settings.expect_body!r}")
        facts.append(f"body contains {settings.expect_body!r}")
    if settings.expect_json:
        facts.append(_check_json(body, settings.expect_json))
    warnings = []
    metrics: dict[str, Any] = {"status_code": status, "redirects": len(response.history), "body_bytes": len(body)}
    if cert_days is not None:
        days = int(cert_days)
        metrics["certificate_days_left"] = days
        if days < settings.tls_days:
            warnings.append(f"TLS certificate expires in {days} days (warning under {settings.tls_days})")
        else:
            facts.append(f"TLS certificate valid {days} more days")
    return Finding(latency=latency, facts=facts, warnings=warnings, metrics=metrics)


def _check_json(body: bytes, expected_fields: tuple[tuple[str, Any], ...]) -> str:
    try:
        document = json.loads(body)
    except ValueError:
        raise BodyMismatch("the body is not JSON") from None
    for path, expected in expected_fields:
        value: Any = document
        for key in path.split("."):
            if isinstance(value, dict) and key in value:
                value = value[key]
            elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
                value = value[int(key)]
            else:
                raise BodyMismatch(f"the JSON has no {path}")
        if value != expected or isinstance(value, bool) != isinstance(expected, bool):
            raise BodyMismatch(f"JSON {path} is {_shown(value)}, expected {_shown(expected)}")
    return "JSON " + ", ".join(f"{path} = {_shown(expected)}" for path, expected in expected_fields)


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= SHOWN_VALUE_CHARS else text[:SHOWN_VALUE_CHARS - 1] + "…"


def _snippet(response: httpx.Response, body: bytes) -> str:
    """The start of a short text or JSON error body ("upstream connect error"); never HTML."""
    content_type = response.headers.get("content-type", "")
    if "json" not in content_type and "text/plain" not in content_type:
        return ""
    text = " ".join(body.decode("utf-8", "replace").split())
    return text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS - 1] + "…"


def _split_userinfo(url: str) -> tuple[str, tuple[str, str] | None]:
    """The URL without `user:password@`, and those as basic auth (httpx logs URLs whole)."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return url, None
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=host)), (unquote(user), unquote(password))


def _mapped(error: httpx.HTTPError, where: str) -> ProbeError:
    if isinstance(error, httpx.RemoteProtocolError):
        return ConnectionFailed(f"{where} closed the connection without a valid answer")
    return from_os_error(error, where) or ConnectionFailed(f"request to {where} failed: {error}")
