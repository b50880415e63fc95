"""Each probe kind against the real thing: PostgreSQL, MariaDB and Redis on this machine, HTTP(S)
servers started here, a TCP server that accepts and never answers, a full backlog, a closed port.

Every failure mode has its line, and every kind of timeout has its own test: a 1 s timeout
holds (well under 1.5 s) whatever the driver would have done on its own.
"""

from __future__ import annotations

import datetime as dt
import functools
import socket
import ssl
import threading
import time

import psycopg
import pymysql
import pytest
import trustme

from bot.redact import redact as frame_redact
from commands.probe import errors
from commands.probe.kinds import host as host_kind
from commands.probe.kinds import http as http_kind
from commands.probe.kinds import mysql as mysql_kind
from commands.probe.kinds import postgres as postgres_kind
from commands.probe.kinds import redis as redis_kind
from commands.probe.runner import Target, flights_in_the_air, run_probes
from commands.probe.settings import ProbeSettings
from probe_servers import TOKEN, FullBacklogServer, WebServer, closed_port
from slack_double import eventually

PG = "postgresql://postgres:s3cret-pg-pw@127.0.0.1:5432/test"
MY = "mysql://root@127.0.0.1:3306/test"
REDIS = "redis://127.0.0.1:6379/0"
# A healthy server is ok however loaded this machine is: a probe is slow from half its timeout.
UNHURRIED = 'timeout = "20s"'
BOUND = 2.5     # seconds a 1 s timeout may take, all told, on a busy machine (below the 3 s a hung call takes)


@pytest.fixture
def probe(make_config):
    """probe('kind = "tcp"\\naddress = …') -> (ProbeResult, seconds it took, Target)."""

    def run(settings: str):
        config = make_config(f"[services.t.probes.p]\n{settings}")
        target = Target("t", ProbeSettings.of(config.services["t"]).probes["p"])
        started = time.monotonic()
        (result,) = run_probes([target], time.monotonic() + 30)
        return result, time.monotonic() - started, target

    return run


@pytest.fixture
def full_backlog():
    server = FullBacklogServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def _tls_server(ca: trustme.CA, days: int) -> WebServer:
    now = dt.datetime.now(dt.UTC)
    cert = ca.issue_cert("127.0.0.1", not_before=now - dt.timedelta(days=1), not_after=now + dt.timedelta(days=days))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    return WebServer(tls=context)


def assert_timed_out(result, seconds: float, error: str, phase: str) -> None:
    assert result.status == "down" and result.error == error, result
    assert f"timed out after 1 s while {phase}" in result.detail
    assert 1.0 <= seconds < BOUND and 1000 <= result.latency_ms < BOUND * 1000


def assert_abandoned_thread_ends(target: Target) -> None:
    """The driver's own timeouts end the thread the runner gave up on, soon after the deadline."""
    eventually(lambda: target not in flights_in_the_air(), timeout=1.5)


# -- tcp ------------------------------------------------------------------------------------------


def test_tcp_ok_when_the_port_accepts(probe, hanging):
    result, *_ = probe(f'kind = "tcp"\naddress = "{hanging.address}"')
    assert (result.status, result.kind, result.detail) == ("ok", "tcp", f"{hanging.address} accepts connections")


def test_tcp_refused_on_a_closed_port(probe):
    port = closed_port()
    result, *_ = probe(f'kind = "tcp"\naddress = "127.0.0.1:{port}"')
    assert (result.status, result.error) == ("down", "ConnectionRefused")
    assert f"127.0.0.1:{port} refused the connection" in result.detail


def test_tcp_dns_failure(probe):
    result, *_ = probe('kind = "tcp"\naddress = "no-such-host.invalid:5432"')
    assert (result.status, result.error) == ("down", "DnsFailure")
    assert result.detail.startswith("cannot resolve no-such-host.invalid")


def test_timeout_connecting(probe, full_backlog):
    result, seconds, target = probe(f'kind = "tcp"\naddress = "{full_backlog.address}"\ntimeout = "1s"')
    assert_timed_out(result, seconds, "ConnectTimeout", f"connecting to {full_backlog.address}")
    assert_abandoned_thread_ends(target)


def test_connect_timeout_is_shorter_than_the_total(probe, full_backlog):
    result, seconds, target = probe(f'kind = "tcp"\naddress = "{full_backlog.address}"\n'
                                    'timeout = "5s"\nconnect_timeout = "1s"')
    assert_timed_out(result, seconds, "ConnectTimeout", f"connecting to {full_backlog.address}")
    assert_abandoned_thread_ends(target)


def test_connect_timeout_does_not_cut_the_wait_for_the_answer(probe, web):
    result, seconds, _ = probe(f'kind = "http"\nurl = "{web.url}/slow"\ntimeout = "2s"\nconnect_timeout = "1s"')
    assert (result.error, result.latency_ms) == ("ReadTimeout", 2000)
    assert result.detail.startswith("timed out after 2 s while waiting for the response") and 2 <= seconds < 3.5


def test_timeout_resolving_a_name(probe, monkeypatch):
    def hanging_resolver(*args, **kwargs):
        time.sleep(3)
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr("commands.probe.check.socket.getaddrinfo", hanging_resolver)
    result, seconds, _ = probe('kind = "tcp"\naddress = "slow-dns.example:5432"\ntimeout = "1s"')
    assert_timed_out(result, seconds, "ConnectTimeout", "resolving slow-dns.example")


@pytest.mark.parametrize("kind, target", [
    ("tcp", 'address = "[::1]:{port}"'),
    ("http", 'url = "http://[::1]:{port}/healthz"'),
    ("postgres", 'dsn = "postgresql://postgres@[::1]:{port}/test"'),
    ("mysql", 'dsn = "mysql://root@[::1]:{port}/test"'),
    ("redis", 'url = "redis://[::1]:{port}/0"'),
])
def test_ipv6_targets_are_shown_in_brackets(probe, kind, target):
    port = closed_port()
    result, *_ = probe(f'kind = "{kind}"\n' + target.format(port=port))
    assert result.status == "down" and result.detail.startswith(f"[::1]:{port}"), result
    assert f"::1:{port}" not in result.detail.replace(f"[::1]:{port}", "")


# -- http -----------------------------------------------------------------------------------------


def test_http_ok_with_body_and_json_checks(probe, web):
    result, *_ = probe(f'kind = "http"\nurl = "{web.url}/ok"\nexpect_body = "status"\n'
                      'expect_json = { status = "ok", checks = { db = "up" } }')
    assert result.status == "ok", result
    assert result.detail == '200 OK · body contains \'status\' · JSON status = "ok", checks.db = "up"'
    assert result.metrics["status_code"] == 200


def test_http_head(probe, web):
    result, *_ = probe(f'kind = "http"\nurl = "{web.url}/anything"\nmethod = "HEAD"')
    assert (result.status, result.detail) == ("ok", "200 OK")


def test_http_wrong_status_shows_a_short_text_body(probe, web):
    result, *_ = probe(f'kind = "http"\nurl = "{web.url}/fail"')
    assert (result.status, result.error) == ("down", "WrongStatus")
    assert result.detail == ("answered 500 Internal Server Error, expected 2xx: "
                             "upstream connect error or disconnect/reset before headers")


def test_http_wrong_status_never_shows_html(probe, web):
    result, *_ = probe(f'kind = "http"\nurl = "{web.url}/html-fail"')
    assert result.detail == "answered 503 Service Unavailable, expected 2xx"


def test_http_expected_status(probe, web):
    result, *_ = probe(f'kind = "http"\nurl = "{web.url}/nope"\nexpect_status = 404')
    assert (result.status, result.detail) == ("ok", "404 Not Found")


def test_http_redirects_are_followed_and_shown(probe, web):
    result, *_ = probe(f'kind = "http"\nurl = "{web.url}/redirect"')
    assert result.status == "ok"
    assert result.detail == f"200 OK · redirected 301 {web.url}/ok"
    assert result.metrics["redirects"] == 1


def test_http_an_expected_redirect_is_not_followed(probe, web):
    result, *_ = probe(f'kind = "http"\nurl = "{web.url}/redirect"\nexpect_status = 301')
    assert (result.status, result.detail) == ("ok", "301 Moved Permanently")


def test_http_redirect_loop(probe, web):
    result, *_ = probe(f'kind = "http"\nurl = "{web.url}/loop"')
    assert (result.error, result.detail) == ("WrongStatus", "more than 5 redirects")


@pytest.mark.parametrize("check, message", [
    ('expect_body = "banana"', "the body does not contain 'banana'"),
    ('expect_json = { "checks.db" = "down" }', 'JSON checks.db is "up", expected "down"'),
    ("expect_json = { version = 3 }", "the JSON has no version"),
    ("expect_json = { status = true }", 'JSON status is "ok", expected true'),
])
def test_http_body_mismatch(probe, web, check, message):
    result, *_ = probe(f'kind = "http"\nurl = "{web.url}/ok"\n{check}')
    assert (result.status, result.error, result.detail) == ("down", "BodyMismatch", message)


def test_http_body_that_is_not_json(probe, web):
    result, *_ = probe(f'kind = "http"\nurl = "{web.url}/fail"\nexpect_status = 500\nexpect_json = {{ status = "ok" }}')
    assert (result.error, result.detail) == ("BodyMismatch", "the body is not JSON")


def test_http_headers_come_from_the_environment_and_stay_secret(probe, web, monkeypatch):
    monkeypatch.setenv("ONCALL_TEST_API_TOKEN", TOKEN)
    result, *_ = probe(f'kind = "http"\nurl = "{web.url}/auth"\nheaders = {{ Authorization = "${{ONCALL_TEST_API_TOKEN}}" }}')
    assert (result.status, result.detail) == ("ok", "200 OK")
    without, *_ = probe(f'kind = "http"\nurl = "{web.url}/auth"')
    assert without.detail == "answered 401 Unauthorized, expected 2xx: who are you"


def test_http_userinfo_is_sent_as_basic_auth_and_never_shown(probe, web):
    result, *_ = probe(f'kind = "http"\nurl = "http://ops:hunter2-pw@{web.url.removeprefix("http://")}/fail?token=abc123"')
    assert result.error == "WrongStatus" and "hunter2" not in str(result) and "abc123" not in str(result)


def test_http_slow_answer_is_degraded(probe, web):
    result, *_ = probe(f'kind = "http"\nurl = "{web.url}/slowish"\ndegraded_ms = 100')
    assert result.status == "degraded"
    assert result.detail.startswith("slow: ") and result.detail.endswith("ms (warning at 100 ms) · 200 OK")
    assert result.latency_ms >= 300


def test_http_latency_is_the_request_not_the_bot_setting_up_even_with_ten_at_once(make_config, web, monkeypatch):
    # The bot's own setup is slow here on purpose (a TLS context that takes SETUP seconds to build, as
    # a CA bundle does for ten probes at once under the GIL), so that counting it cannot pass
    # unseen, whatever the machine's load: each probe waits for it, and none may count it.
    setup = 2.0
    build = http_kind._built_tls_context

    @functools.cache
    def slow_build(ca_file: str | None, version: int) -> ssl.SSLContext:
        time.sleep(setup)
        return build(ca_file, version)

    monkeypatch.setattr(http_kind, "_built_tls_context", slow_build)
    config = make_config("".join(f'[services.t.probes.p{n}]\nkind = "http"\nurl = "{web.url}/ok"\ntimeout = "10s"\n'
                                 for n in range(10)))
    started = time.monotonic()
    results = run_probes([Target("t", probe) for probe in ProbeSettings.of(config.services["t"]).probes.values()],
                         time.monotonic() + 30)
    assert time.monotonic() - started >= setup     # every probe waited for the setup
    assert [r.status for r in results] == ["ok"] * 10, results
    assert max(r.latency_ms for r in results) < setup * 1000 / 2, [r.latency_ms for r in results]


def test_http_refused(probe):
    result, *_ = probe(f'kind = "http"\nurl = "http://127.0.0.1:{closed_port()}/healthz"')
    assert (result.status, result.error) == ("down", "ConnectionRefused")


def test_http_dns_failure(probe):
    result, *_ = probe('kind = "http"\nurl = "https://api.invalid/healthz"')
    assert (result.error, result.detail) == ("DnsFailure", "cannot resolve api.invalid: Name or service not known")


def test_http_self_signed_certificate_is_a_tls_error(probe):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)   # a CA nobody trusts
    server = WebServer(tls=context)
    try:
        result, *_ = probe(f'kind = "http"\nurl = "{server.url}/ok"')
    finally:
        server.close()
    assert (result.status, result.error) == ("down", "TlsError")
    assert "TLS certificate of 127.0.0.1" in result.detail and "not accepted" in result.detail


def test_http_certificate_close_to_expiry_is_degraded(probe, ca, tmp_path):
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    soon, later = _tls_server(ca, days=5), _tls_server(ca, days=200)
    try:
        expiring, *_ = probe(f'kind = "http"\nurl = "{soon.url}/ok"\nca_file = "{tmp_path / "ca.pem"}"')
        fine, *_ = probe(f'kind = "http"\nurl = "{later.url}/ok"\nca_file = "{tmp_path / "ca.pem"}"\ntls_days = 30')
    finally:
        soon.close()
        later.close()
    assert expiring.status == "degraded" and expiring.metrics["certificate_days_left"] == 4
    assert expiring.detail == "TLS certificate expires in 4 days (warning under 14) · 200 OK"
    assert fine.status == "ok" and fine.detail == "200 OK · TLS certificate valid 199 more days"


def test_timeout_waiting_for_http_headers(probe, web):
    result, seconds, target = probe(f'kind = "http"\nurl = "{web.url}/slow"\ntimeout = "1s"')
    assert_timed_out(result, seconds, "ReadTimeout", f"waiting for the response of {web.url.removeprefix('http://')}")
    assert_abandoned_thread_ends(target)


def test_timeout_of_a_slow_drip_body_is_total_not_per_chunk(probe, web):
    # A byte every 0.1 s: httpx's per-chunk read timeout alone would keep this alive for 5 s.
    result, seconds, target = probe(f'kind = "http"\nurl = "{web.url}/drip"\ntimeout = "1s"')
    assert_timed_out(result, seconds, "ReadTimeout", "reading the body from 127.0.0.1")
    assert_abandoned_thread_ends(target)


def test_timeout_in_the_tls_handshake(probe, hanging):
    result, seconds, target = probe(f'kind = "http"\nurl = "https://{hanging.address}/"\ntimeout = "1s"')
    assert_timed_out(result, seconds, "ConnectTimeout", f"in the TLS handshake with {hanging.address}")
    assert_abandoned_thread_ends(target)


def test_timeout_http_against_a_server_that_never_answers(probe, hanging):
    result, seconds, target = probe(f'kind = "http"\nurl = "http://{hanging.address}/"\ntimeout = "1s"')
    assert_timed_out(result, seconds, "ReadTimeout", f"waiting for the response of {hanging.address}")
    assert_abandoned_thread_ends(target)


# -- postgres -------------------------------------------------------------------------------------


def test_postgres_ok(probe):
    result, *_ = probe(f'kind = "postgres"\ndsn = "{PG}"\n{UNHURRIED}')
    assert result.status == "ok", result
    assert result.detail.startswith("SELECT 1 ok · ") and result.detail.endswith(" · primary")
    assert result.metrics["connections"] >= 1 and result.metrics["max_connections"] > 1


def test_postgres_connections_over_the_threshold_are_degraded(probe):
    result, *_ = probe(f'kind = "postgres"\ndsn = "{PG}"\nconnections_pct = 1')
    assert result.status == "degraded" and "connections in use" in result.detail
    assert "the pool is nearly exhausted" in result.detail


def test_postgres_long_running_query_is_degraded(probe):
    started = threading.Event()

    def sleeper():
        with psycopg.connect(PG, autocommit=True) as conn:
            started.set()
            conn.execute("SELECT pg_sleep(2.5)")

    thread = threading.Thread(target=sleeper)
    thread.start()
    started.wait(5)
    time.sleep(1.2)
    result, *_ = probe(f'kind = "postgres"\ndsn = "{PG}"\nquery_age = "1s"')
    thread.join()
    assert result.status == "degraded"
    assert "a query has been running for" in result.detail
    assert result.metrics["longest_query_seconds"] >= 1


def test_postgres_login_refused_and_the_password_stays_secret(probe):
    # Local PostgreSQL trusts 127.0.0.1, so a wrong password passes; an unknown role does not.
    result, *_ = probe('kind = "postgres"\ndsn = "postgresql://nobody:s3cret-pg-pw@127.0.0.1:5432/test"')
    assert (result.status, result.error) == ("down", "AuthenticationFailed")
    assert result.detail == '127.0.0.1:5432: login refused: role "nobody" does not exist'
    assert "s3cret" not in str(result)


def test_postgres_unknown_database(probe):
    result, *_ = probe('kind = "postgres"\ndsn = "postgresql://postgres:s3cret-pg-pw@127.0.0.1:5432/nope"')
    assert (result.error, result.detail) == (
        "ServerError", '127.0.0.1:5432: the server refused: database "nope" does not exist')


def test_postgres_refused(probe):
    result, *_ = probe(f'kind = "postgres"\ndsn = "postgresql://postgres@127.0.0.1:{closed_port()}/test"')
    assert result.error == "ConnectionRefused" and "refused the connection" in result.detail


def test_postgres_dns_failure(probe):
    result, *_ = probe('kind = "postgres"\ndsn = "postgresql://postgres:pw@db.invalid/test"')
    assert result.error == "DnsFailure"


def test_timeout_postgres_under_libpq_two_second_minimum(probe, hanging):
    result, seconds, target = probe(f'kind = "postgres"\ndsn = "postgresql://postgres@{hanging.address}/test"\ntimeout = "1s"')
    assert_timed_out(result, seconds, "ConnectTimeout", f"connecting and logging in to {hanging.address}")
    assert_abandoned_thread_ends(target)


def test_postgres_dsn_option_libpq_refuses_is_an_invalid_dsn_not_tls():
    # The config refuses a bad sslmode at load; libpq may still refuse an option value it alone knows.
    for text, words in (('connection is bad: invalid sslmode value: "bogus"', 'invalid sslmode value: "bogus"'),
                        ('connection is bad: invalid port number: "99999"', 'invalid port number: "99999"')):
        mapped = postgres_kind._mapped(psycopg.OperationalError(text), "db:5432")
        assert isinstance(mapped, errors.InvalidTarget) and str(mapped) == f"the DSN is invalid: {words}"


def test_postgres_pool_exhaustion_has_its_own_name():
    for error in (psycopg.errors.lookup("53300")("sorry, too many clients already"),
                  psycopg.OperationalError('connection failed: connection to server at "10.0.0.5", port 5432 '
                                           "failed: FATAL:  sorry, too many clients already")):
        mapped = postgres_kind._mapped(error, "db:5432")
        assert isinstance(mapped, errors.TooManyConnections) and "pool is exhausted" in str(mapped)


# -- mysql ----------------------------------------------------------------------------------------


def test_mysql_ok(probe):
    result, *_ = probe(f'kind = "mysql"\ndsn = "{MY}"\n{UNHURRIED}')
    assert result.status == "ok", result
    assert result.detail.startswith("SELECT 1 ok · ") and result.metrics["max_connections"] > 1


def test_mysql_connections_over_the_threshold_are_degraded(probe):
    result, *_ = probe(f'kind = "mysql"\ndsn = "{MY}"\nconnections_pct = 1')
    assert result.status == "degraded" and "connections in use" in result.detail


def test_mysql_wrong_password_and_it_stays_secret(probe):
    result, *_ = probe('kind = "mysql"\ndsn = "mysql://root:wr0ng-my-pw@127.0.0.1:3306/test"')
    assert (result.status, result.error) == ("down", "AuthenticationFailed")
    assert result.detail.startswith("127.0.0.1:3306: login refused: Access denied for user 'root'")
    assert "wr0ng" not in str(result)
    assert result.detail.endswith("(using password: YES)") and frame_redact(result.detail) == result.detail


def test_mysql_unknown_database(probe):
    result, *_ = probe('kind = "mysql"\ndsn = "mysql://root@127.0.0.1:3306/no_such_db"')
    assert (result.error, result.detail) == ("ServerError", "127.0.0.1:3306: Unknown database 'no_such_db'")


def test_mysql_refused(probe):
    result, *_ = probe(f'kind = "mysql"\ndsn = "mysql://root@127.0.0.1:{closed_port()}/test"')
    assert result.error == "ConnectionRefused"


def test_timeout_mysql_greeting_that_never_comes(probe, hanging):
    result, seconds, target = probe(f'kind = "mysql"\ndsn = "mysql://root:pw@{hanging.address}/test"\ntimeout = "1s"')
    assert_timed_out(result, seconds, "ReadTimeout", f"waiting for the greeting and login of {hanging.address}")
    assert_abandoned_thread_ends(target)


def test_mysql_pool_exhaustion_has_its_own_name():
    mapped = mysql_kind._mapped(pymysql.err.OperationalError(1040, "Too many connections"), None, "db:3306")
    assert isinstance(mapped, errors.TooManyConnections)


# -- redis ----------------------------------------------------------------------------------------


def test_redis_ok(probe):
    result, *_ = probe(f'kind = "redis"\nurl = "{REDIS}"\n{UNHURRIED}')
    assert result.status == "ok", result
    assert result.detail.startswith("PING ok · memory ") and "evicted keys since start" in result.detail
    assert result.metrics["role"] == "master" and result.metrics["maxclients"] > 0


def test_redis_wrong_password_and_it_stays_secret(probe):
    result, *_ = probe('kind = "redis"\nurl = "redis://nobody:wr0ng-redis-pw@127.0.0.1:6379/0"')
    assert (result.status, result.error) == ("down", "AuthenticationFailed")
    assert "login refused" in result.detail and "wr0ng" not in str(result)


def test_redis_refused(probe):
    result, *_ = probe(f'kind = "redis"\nurl = "redis://127.0.0.1:{closed_port()}/0"')
    assert result.error == "ConnectionRefused"


def test_timeout_redis_is_not_multiplied_by_retries(probe, hanging):
    # redis-py retries timeouts by default (3 times, with backoff); the URL may not bring it back either.
    result, seconds, target = probe(f'kind = "redis"\nurl = "redis://{hanging.address}/0?socket_timeout=30"\ntimeout = "1s"')
    assert_timed_out(result, seconds, "ConnectTimeout", f"connecting and logging in to {hanging.address}")
    assert_abandoned_thread_ends(target)


def test_redis_memory_clients_and_replication_judged(make_config):
    config = make_config('[services.t.probes.p]\nkind = "redis"\nurl = "redis://x:6379"\nreplica_lag = "10s"')
    check = type("Check", (), {"probe": ProbeSettings.of(config.services["t"]).probes["p"]})()
    finding = redis_kind._judge(check, 0.01, {
        "used_memory": 950, "maxmemory": 1000, "maxmemory_policy": "noeviction", "connected_clients": 90,
        "maxclients": 100, "evicted_keys": 12, "role": "slave", "master_host": "10.0.0.1", "master_port": 6379,
        "master_link_status": "up", "master_last_io_seconds_ago": 45})
    assert finding.warnings == ["memory 95% of maxmemory (noeviction)", "90/100 clients connected (90%)",
                                "replica: no word from its master for 45 s"]


# -- host -----------------------------------------------------------------------------------------


def test_host_ok(probe):
    result, *_ = probe('kind = "host"\nload_per_cpu = 1000\nmemory_pct = 100\ndisk_pct = 100\nfiles_pct = 100')
    assert result.status == "ok", result
    assert result.detail.startswith("load ") and "memory " in result.detail and "disk / " in result.detail
    assert "open files" in result.detail and result.metrics["cpus"] >= 1


def test_host_thresholds_make_it_degraded(probe):
    result, *_ = probe('kind = "host"\nmounts = ["/"]\nload_per_cpu = 0.01\nmemory_pct = 1\ndisk_pct = 1\nfiles_pct = 1')
    assert result.status == "degraded"
    for warning in ("warning at 0.01)", "memory ", "disk / ", "open files "):
        assert warning in result.detail


def test_host_says_each_figure_once(probe, monkeypatch, tmp_path):
    monkeypatch.setattr(host_kind.psutil, "getloadavg", lambda: (9.0, 8.0, 7.0))
    monkeypatch.setattr(host_kind.psutil, "cpu_count", lambda: 2)
    strained, *_ = probe(f'kind = "host"\nmounts = ["/", "{tmp_path}"]\nload_per_cpu = 1\nmemory_pct = 1\n'
                         'disk_pct = 1\nfiles_pct = 1')
    calm, *_ = probe(f'kind = "host"\nmounts = ["/", "{tmp_path}"]\nload_per_cpu = 1000\nmemory_pct = 100\n'
                     'disk_pct = 100\nfiles_pct = 100')
    for result in (strained, calm):
        parts = result.detail.split(" · ")
        for figure in ("load ", "memory ", "(system)", "(this process)"):
            assert sum(figure in part for part in parts) == 1, (figure, result.detail)
        assert sum(f"{tmp_path} " in part for part in parts) == 1, result.detail
    assert strained.detail.startswith("load 4.50 per CPU of 2 (warning at 1)")
    assert calm.detail.startswith("load 4.50/CPU (2 CPUs)")


def test_host_a_missing_or_unreadable_mount_is_a_warning_and_the_rest_is_reported(probe, monkeypatch):
    real = host_kind.psutil.disk_usage

    def guarded(path):
        if path == "/guarded":
            raise PermissionError(13, "Permission denied", path)
        return real(path)

    monkeypatch.setattr(host_kind.psutil, "disk_usage", guarded)
    result, *_ = probe('kind = "host"\nmounts = ["/", "/nope", "/guarded"]\n'
                       'load_per_cpu = 1000\nmemory_pct = 100\ndisk_pct = 100\nfiles_pct = 100')
    assert (result.status, result.error) == ("degraded", None), result
    assert result.detail.startswith("mount /nope not found · mount /guarded not readable: Permission denied · load ")
    assert "memory " in result.detail and "disk / " in result.detail and "open files" in result.detail
    assert list(result.metrics["disk_pct"]) == ["/"] and result.metrics["cpus"] >= 1


def test_timeout_reading_a_hung_mount(probe, monkeypatch):
    real = host_kind.psutil.disk_usage

    def hung(path):
        if path == "/":
            time.sleep(3)
        return real(path)

    monkeypatch.setattr(host_kind.psutil, "disk_usage", hung)
    result, seconds, _ = probe('kind = "host"\nmounts = ["/"]\ntimeout = "1s"')
    assert_timed_out(result, seconds, "ReadTimeout", "reading disk usage of /")


def test_http_a_redirect_to_another_host_is_not_followed_unless_allowed(probe, web):
    result, *_ = probe(f'kind = "http"\nurl = "{web.url}/elsewhere"')
    port = web.url.rsplit(":", 1)[1]
    assert (result.status, result.error) == ("down", "WrongStatus")
    assert result.detail == (f"redirected to http://localhost:{port}/ok, outside 127.0.0.1: not followed "
                             '(follow_redirects = "any" allows it)')
    allowed, *_ = probe(f'kind = "http"\nurl = "{web.url}/elsewhere"\nfollow_redirects = "any"')
    assert allowed.status == "ok" and allowed.detail == f"200 OK · redirected 302 http://localhost:{port}/ok"
    same_host, *_ = probe(f'kind = "http"\nurl = "{web.url}/redirect"\nfollow_redirects = "host"')
    assert same_host.status == "ok"
