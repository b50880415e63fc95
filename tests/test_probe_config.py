"""The probe keys of oncall.toml: every one read, typed and checked, each problem one line."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.config import ConfigError
from commands.probe.settings import ProbeConfig, ProbeSettings


def test_every_probe_key(make_config, monkeypatch, tmp_path):
    monkeypatch.setenv("ONCALL_TEST_TOKEN", "Bearer abc-123-xyz")
    (tmp_path / "ca.pem").write_text("not read until a probe runs")
    config = make_config(f"""
        [services.api.probes.health]
        kind = "http"
        url = "https://api.internal/healthz"
        method = "POST"
        expect_status = 204
        expect_body = "ok"
        expect_json = {{ status = "ok", checks = {{ db = "up", replicas = 2 }}, "build.green" = true }}
        headers = {{ Authorization = "${{ONCALL_TEST_TOKEN}}", Accept = "application/json" }}
        ca_file = "{tmp_path / "ca.pem"}"
        degraded_ms = 800
        tls_days = 30
        timeout = "3s"
        connect_timeout = "1s"

        [services.api.probes.db]
        kind = "postgres"
        dsn = "host=10.0.0.5 dbname=app user=app"
        connections_pct = 70
        query_age = "2m"
        replica_lag = "10s"

        [services.api.probes.cache]
        kind = "redis"
        url = "unix:///run/redis.sock"
        memory_pct = 85

        [services.api.probes.machine]
        kind = "host"
        load_per_cpu = 1.5
        memory_pct = 95
        disk_pct = 80
        files_pct = 60
        mounts = ["/", "/var/lib/postgresql"]
    """)
    probes = ProbeSettings.of(config.services["api"]).probes
    health = probes["health"]
    assert (health.method, health.expect_status, health.expect_body) == ("POST", 204, "ok")
    assert health.expect_json == (("status", "ok"), ("checks.db", "up"), ("checks.replicas", 2), ("build.green", True))
    assert health.headers == (("Authorization", "Bearer abc-123-xyz"), ("Accept", "application/json"))
    assert (health.degraded_ms, health.tls_days, health.timeout) == (800, 30, timedelta(seconds=3))
    assert health.connect_timeout == timedelta(seconds=1)
    db = probes["db"]
    assert (db.connections_pct, db.query_age, db.replica_lag) == (70, timedelta(minutes=2), timedelta(seconds=10))
    assert probes["cache"].memory_pct == 85
    machine = probes["machine"]
    assert (machine.load_per_cpu, machine.memory_pct, machine.disk_pct, machine.files_pct) == (1.5, 95, 80, 60)
    assert machine.mounts == ("/", "/var/lib/postgresql")


def test_defaults(make_config):
    probe = ProbeSettings.of(make_config('[services.api.probes.db]\nkind = "postgres"\ndsn = "postgresql:///app"').services["api"]).probes["db"]
    assert (probe.timeout, probe.degraded_ms, probe.connections_pct, probe.query_age, probe.replica_lag) == (
        timedelta(seconds=2), None, 80, timedelta(minutes=5), timedelta(seconds=30))


def test_secrets_are_not_in_the_repr(make_config):
    probe = ProbeSettings.of(make_config('[services.api.probes.h]\nkind = "http"\nurl = "https://u:pw-123@x/"\n'
                        'headers = { X-Key = "key-456" }').services["api"]).probes["h"]
    assert "pw-123" not in repr(probe) and "key-456" not in repr(probe)
    assert hash(probe) == hash(ProbeConfig(**{f: getattr(probe, f) for f in ProbeConfig.__dataclass_fields__}))


H = '[services.api.probes.h]\nkind = "http"\nurl = "http://x/"\n'
P = '[services.api.probes.db]\nkind = "postgres"\ndsn = "postgresql://x/app"\n'


@pytest.mark.parametrize("text, message", [
    (H + 'method = "DELETE"', "services.api.probes.h.method: 'DELETE' is not one of GET, HEAD, POST, OPTIONS"),
    (H + "expect_body = 3", "services.api.probes.h.expect_body: must be a string, not a number"),
    (H + "expect_json = {}", "services.api.probes.h.expect_json: must name at least one field"),
    (H + "expect_json = { ids = [1, 2] }", "services.api.probes.h.expect_json: ids: expected a string, number or boolean"),
    (H + 'headers = { "Bad Name" = "x" }', r'services.api.probes.h.headers."Bad Name": is not a valid HTTP header name'),
    (H + 'headers = { X-Key = "${ONCALL_TEST_UNSET}" }',
     "services.api.probes.h.headers.X-Key: environment variable ONCALL_TEST_UNSET is not set"),
    (H + "headers = { X-Key = 5 }", "services.api.probes.h.headers.X-Key: must be a string, not a number"),
    (H + 'ca_file = "/no/such/ca.pem"', "services.api.probes.h.ca_file: '/no/such/ca.pem' is not a file"),
    (H + "degraded_ms = 2000", "services.api.probes.h.degraded_ms: must be a whole number from 1 to 1999, not 2000"),
    (H + 'timeout = "1m"', "services.api.probes.h.timeout: at most 20s"),
    (H + 'connect_timeout = "3s"', r"services.api.probes.h.connect_timeout: longer than the timeout \(2s\)"),
    ('[services.api.probes.m]\nkind = "host"\nconnect_timeout = "1s"',
     "services.api.probes.m.connect_timeout: only http, postgres, mysql, redis and tcp probes take connect_timeout"),
    (H + "tls_days = 0", "services.api.probes.h.tls_days: must be a whole number from 1 to 365"),
    (P + "connections_pct = 120", "services.api.probes.db.connections_pct: must be a whole number from 1 to 100"),
    (P + 'query_age = "soon"', "services.api.probes.db.query_age: 'soon' is not a duration"),
    (P + 'replica_lag = "0s"', "services.api.probes.db.replica_lag: must be longer than zero"),
    ('[services.api.probes.m]\nkind = "host"\nload_per_cpu = "high"',
     "services.api.probes.m.load_per_cpu: must be a number from 0.01 to 1000, not 'high'"),
    ('[services.api.probes.m]\nkind = "host"\nmounts = ["data"]', "services.api.probes.m.mounts: 'data' is not an absolute path"),
    (P + "tls_days = 7", "services.api.probes.db.tls_days: only http probes take tls_days, not postgres"),
    (P + "memory_pct = 7", "services.api.probes.db.memory_pct: only redis and host probes take memory_pct, not postgres"),
    ('[services.api.probes.m]\nkind = "host"\ndegraded_ms = 5',
     "services.api.probes.m.degraded_ms: only http, postgres, mysql, redis and tcp probes take degraded_ms, not host"),
    (H + "expect_stauts = 200", r"services.api.probes.h.expect_stauts: unknown key \(did you mean 'expect_status'\?\)"),
    ('[services.api.probes.h]\nkind = "http"\nurl = "ftp://x/"', "services.api.probes.h.url: must be a http:// or https:// URL"),
    ('[services.api.probes.h]\nkind = "http"\nurl = "https:///healthz"', "services.api.probes.h.url: the https:// URL names no host"),
    ('[services.api.probes.c]\nkind = "redis"\nurl = "127.0.0.1:6379"',
     "services.api.probes.c.url: must be a redis:// or rediss:// or unix:// URL"),
    ('[services.api.probes.db]\nkind = "mysql"\ndsn = "postgresql://x/app"', "services.api.probes.db.dsn: must be a mysql:// URL"),
    (H + 'method = "HEAD"\nexpect_body = "ok"',
     "services.api.probes.h.expect_body: a HEAD response has no body; use GET to check it"),
    (H + 'method = "HEAD"\nexpect_json = { status = "ok" }',
     "services.api.probes.h.expect_json: a HEAD response has no body; use GET to check it"),
    ('[services.api.probes.t]\nkind = "tcp"\naddress = "127.0.0.1:99999"',
     "services.api.probes.t.address: port 99999 is not from 1 to 65535"),
    ('[services.api.probes.t]\nkind = "tcp"\naddress = "[::1]:0"', "services.api.probes.t.address: port 0 is not from 1 to 65535"),
    ('[services.api.probes.h]\nkind = "http"\nurl = "http://x:99999/"', "services.api.probes.h.url: the port is not from 1 to 65535"),
    ('[services.api.probes.h]\nkind = "http"\nurl = "http://x:0/"', "services.api.probes.h.url: the port is not from 1 to 65535"),
    ('[services.api.probes.h]\nkind = "http"\nurl = "http://x:http/"', "services.api.probes.h.url: the port is not from 1 to 65535"),
    ('[services.api.probes.c]\nkind = "redis"\nurl = "redis://[::1]:70000/0"', "services.api.probes.c.url: the port is not from 1 to 65535"),
    ('[services.api.probes.db]\nkind = "mysql"\ndsn = "mysql://root@db:65536/app"', "services.api.probes.db.dsn: the port is not from 1 to 65535"),
    ('[services.api.probes.db]\nkind = "postgres"\ndsn = "postgresql://db:99999/app"', "services.api.probes.db.dsn: the port is not from 1 to 65535"),
    ('[services.api.probes.db]\nkind = "postgres"\ndsn = "host=a,b port=5432,99999 dbname=app"',
     "services.api.probes.db.dsn: the port is not from 1 to 65535"),
    (P.replace("/app", "/app?sslmode=bogus"),
     "services.api.probes.db.dsn: the DSN is invalid: sslmode must be one of disable, allow, prefer, require, "
     "verify-ca, verify-full"),
    (P.replace("/app", "/app?sslmod=require"),
     'services.api.probes.db.dsn: the DSN is invalid: invalid URI query parameter: "sslmod"'),
    ('[services.api.probes.db]\nkind = "postgres"\ndsn = "host=db target_session_attrs=primry"',
     "services.api.probes.db.dsn: the DSN is invalid: target_session_attrs must be one of any, read-write, "
     "read-only, primary, standby, prefer-standby"),
])
def test_each_problem_is_one_line(make_config, text, message):
    with pytest.raises(ConfigError, match=message) as raised:
        make_config(text)
    assert "\n" not in str(raised.value)


def test_a_bad_target_is_not_echoed_since_it_may_hold_a_password(make_config, monkeypatch):
    monkeypatch.setenv("ONCALL_TEST_DSN", "mysql:/root:hunter2@db/app")
    with pytest.raises(ConfigError) as raised:
        make_config('[services.api.probes.db]\nkind = "mysql"\ndsn = "${ONCALL_TEST_DSN}"')
    assert "dsn: must be a mysql:// URL" in str(raised.value) and "hunter2" not in str(raised.value)


@pytest.mark.parametrize("dsn", [
    "postgresql://app:hunter2@db/app?sslmode=hunter2",
    "host=db password=hunter2 sslmode=hunter2",
    "host=db password=correct hunter2",                    # libpq: missing "=" after "hunter2"
    "postgresql://app:hunter2@db/app?%zz",                 # libpq echoes the whole URI
    "postgresql://app:hunter2@[::1/app",
])
def test_an_invalid_dsn_is_named_without_its_password(make_config, monkeypatch, dsn):
    monkeypatch.setenv("ONCALL_TEST_DSN", dsn)
    with pytest.raises(ConfigError) as raised:
        make_config('[services.api.probes.db]\nkind = "postgres"\ndsn = "${ONCALL_TEST_DSN}"')
    assert "services.api.probes.db.dsn: the DSN is invalid" in str(raised.value), raised.value
    assert "hunter2" not in str(raised.value) and "\n" not in str(raised.value)


def test_a_ca_file_needs_a_tls_url(make_config, tmp_path):
    (tmp_path / "ca.pem").write_text("-")
    with pytest.raises(ConfigError, match="services.api.probes.c.ca_file: a CA is for TLS: the url must be https:// or rediss://"):
        make_config(f'[services.api.probes.c]\nkind = "redis"\nurl = "redis://cache:6379"\nca_file = "{tmp_path / "ca.pem"}"')
