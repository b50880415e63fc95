"""/logs end to end: the command's options, incidents, the timeline, JSON, the CLI, and safety."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.command import Audience, Outcome
from bot.config import ConfigError
from bot.render import Renderer
from commands.logs import report
from commands.logs.query import parse
from commands.logs.reading import BLOCK

DATA = Path(__file__).parent / "data" / "logs"
NOW = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)


def stamp(minutes_ago: float) -> str:
    return (NOW - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%d %H:%M:%S,000")


def python_error(minutes_ago: float, exception: str = "KeyError: 'id'", path: str = "/api/orders/1") -> str:
    return (f"{stamp(minutes_ago)} ERROR django.request Internal Server Error: {path}\n"
            "Traceback (most recent call last):\n"
            '  File "/srv/api/.venv/lib/python3.11/site-packages/django/core/handlers/base.py", line 197, '
            'in _get_response\n'
            "    response = wrapped_callback(request, *callback_args, **callback_kwargs)\n"
            '  File "/srv/api/src/acme/views.py", line 12, in show\n'
            '    return JsonResponse(load(request.GET["id"]))\n'
            f"{exception}\n")


def info(minutes_ago: float, text: str = "GET /api/orders 200") -> str:
    return f"{stamp(minutes_ago)} INFO app.server {text}\n"


@pytest.fixture
def logs_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "logs"
    directory.mkdir()
    return directory


@pytest.fixture
def api(make_config, logs_dir: Path):
    """A config whose service api reads logs_dir/*.log (more TOML may follow)."""

    def make(extra: str = "", service_extra: str = "") -> object:
        return make_config(f"""
            [services.api]
            logs = ["{logs_dir}/*.log"]
            app_paths = ["src/acme/"]
            {service_extra}

            [services.api.probes.db]
            kind = "postgres"
            dsn = "postgres://api@db.internal/api"
            {extra}
        """)

    return make


def open_incident(runner, text="/incident open checkout is down --service api --started 20m ago") -> int:
    return runner.invoke(text).incident_id


def test_parse_reads_every_option():
    args = parse('api --since 15m --grep "connection refused" --level warn --last 3')
    assert (args.service, args.since, args.grep, args.level, args.last) == ("api", "15m", "connection refused", 30, 3)
    args = parse("api --grep /timeout after \\d+ms/i")
    assert args.grep is None and args.regex.text == "timeout after \\d+ms" and args.regex.ignore_case
    assert parse("#12 --status 5xx").status == (500, 599) and parse("--status 502").status == (502, 502)
    assert parse("api --request-id req-7f").request_id == "req-7f"


@pytest.mark.parametrize("text, problem", [
    ("api web", "One service at a time"),
    ("api --last 0", "--last takes a number from 1 to 20"),
    ("api --level loud", "--level loud: one of debug"),
    ("api --grep /(unclosed/", "not a valid regular expression"),
    ("api --status 5x", "write a class like 5xx"),
    ("api --status 5xx --request-id r1", "two different views"),
    ("api --tail 5", "unknown option --tail"),
])
def test_bad_text_gets_the_usage(local, api, text, problem):
    reply = local(api()).invoke(f"/logs {text}")
    assert reply.outcome is Outcome.USAGE
    assert problem in reply.data["message"]


def test_the_last_errors_newest_first_folded_with_counts(local, api, logs_dir):
    (logs_dir / "app.log").write_text(
        info(30) + python_error(25) + info(24) + python_error(20, path="/api/orders/2")
        + python_error(15, "ValueError: bad quantity -3") + info(14) + info(10, "WARNING ignored")
        + f"{stamp(9)} WARNING django.request Not Found: /favicon.ico\n" + info(5))
    reply = local(api()).invoke("/logs api")
    assert reply.outcome is Outcome.OK and reply.audience is Audience.CALLER
    events = reply.data["events"]
    assert [(e.exception, e.count) for e in events] == [("ValueError: bad quantity -3", 1), ("KeyError: 'id'", 2)]
    assert events[1].first_seen == NOW - timedelta(minutes=25) and events[1].last_seen == NOW - timedelta(minutes=20)
    assert "/api/orders/2" in events[1].text                  # the newest occurrence is shown
    assert events[0].cause.id == events[1].cause.id == "python.uncaught_exception"
    assert events[1].frame == "/srv/api/src/acme/views.py:12 in show"


def test_errors_past_the_kinds_kept_are_counted_and_said(local, api, logs_dir, monkeypatch):
    monkeypatch.setattr(report, "MAX_SIGNATURES", 2)
    (logs_dir / "app.log").write_text("".join(python_error(30 - n, f"ValueError: kind {'abcde'[n]}") for n in range(5)))
    runner = local(api())
    reply = runner.invoke("/logs api")
    assert reply.data["distinct"] == 2 and reply.data["ungrouped"] == 3
    assert "3 more occurrences of still other errors were counted" in runner.renderer.text(reply.template, reply.data)


def test_json_keys_are_the_contract(local, api, logs_dir):
    (logs_dir / "app.log").write_text(python_error(5) + python_error(4))
    out, err = io.StringIO(), io.StringIO()
    assert local(api()).run("/logs api", as_json=True, out=out, err=err) == 0
    data = json.loads(out.getvalue())
    event = data["events"][0]
    assert {"text", "count", "first_seen", "last_seen", "cause"} <= set(event)
    assert event["count"] == 2 and event["first_seen"] == "2026-11-24T13:55:00Z"
    assert event["last_seen"] == "2026-11-24T13:56:00Z"
    assert {"id", "title", "evidence", "next_step"} <= set(event["cause"])
    assert event["cause"]["id"] == "python.uncaught_exception"


def test_the_real_cli_returns_events(tmp_path, logs_dir):
    shutil.copy(DATA / "node" / "headers_sent.log", logs_dir / "app.log")
    config = tmp_path / "cli.toml"
    config.write_text(f'[services.api]\nlogs = ["{logs_dir}/*.log"]\n')
    result = subprocess.run(
        [sys.executable, "-m", "bot", "run", "--json", "/logs api"], capture_output=True, text=True, timeout=60,
        env={**os.environ, "ONCALL_CONFIG": str(config), "ONCALL_DB": str(tmp_path / "cli.db")})
    assert result.returncode == 0, result.stderr
    events = json.loads(result.stdout)["events"]
    assert events[0]["cause"]["id"] == "node.headers_sent"
    assert events[0]["text"].startswith("Error [ERR_HTTP_HEADERS_SENT]")
    assert events[0]["first_seen"] is None                    # Express's stderr has no times


def test_grep_literal_regex_and_level(local, api, logs_dir):
    (logs_dir / "app.log").write_text(
        info(9, "payment timeout after 300ms") + info(8, "payment timeout after 45ms")
        + f"{stamp(7)} WARNING app.server payment timeout after 9000ms\n" + python_error(6) + info(5, "a.b*c literal"))
    runner = local(api())
    assert [e.exception for e in runner.invoke("/logs api --grep a.b*c").data["events"]] == ["app.server a.b*c literal"]
    matched = runner.invoke("/logs api --grep /timeout after \\d{3,}ms/").data["events"]
    assert [(e.exception, e.count) for e in matched] == [("app.server payment timeout after 9000ms", 2)]
    assert [e.level for e in runner.invoke("/logs api --level warn").data["events"]] == ["error", "warn"]
    assert runner.invoke("/logs api --grep /TIMEOUT/i --level warn").data["events"][0].level == "warn"


def test_since_and_last(local, api, logs_dir):
    (logs_dir / "app.log").write_text("".join(
        python_error(minutes, f"RuntimeError: failure number {chr(65 + n)}") for n, minutes in
        enumerate([50, 40, 30, 20, 10, 5])))
    runner = local(api())
    recent = runner.invoke("/logs api --since 25m").data
    assert [e.exception for e in recent["events"]] == [f"RuntimeError: failure number {c}" for c in "FED"]
    assert recent["query"]["since"] == NOW - timedelta(minutes=25)
    assert len(runner.invoke("/logs api --last 2").data["events"]) == 2
    assert [e.exception[-1] for e in runner.invoke("/logs api --since 13:25").data["events"]] == list("FEDC")
    assert runner.invoke("/logs api --since 15:00").outcome is Outcome.USAGE


def test_request_id_follows_a_request_across_files_in_time_order(local, api, logs_dir):
    (logs_dir / "app.log").write_text(
        f"{stamp(3)} INFO app.server [req-7f3a] POST /api/checkout\n" + info(2.5)
        + f"{stamp(2)} ERROR app.payments [req-7f3a] charge failed: card declined\n")
    (logs_dir / "access.log").write_text(
        '203.0.113.9 - - [24/Nov/2026:13:57:30 +0000] "POST /api/checkout HTTP/1.1" 500 64 "-" "curl/8.4" req-7f3a\n'
        '203.0.113.9 - - [24/Nov/2026:13:58:31 +0000] "GET /api/orders HTTP/1.1" 200 64 "-" "curl/8.4" req-0000\n')
    data = local(api()).invoke("/logs api --request-id req-7f3a").data
    assert [line.source for line in data["lines"]] == ["app.log", "access.log", "app.log"]
    assert "POST /api/checkout" in data["lines"][0].text and "charge failed" in data["lines"][2].text
    assert data["lines"][0].at < data["lines"][1].at < data["lines"][2].at
    assert len(data["events"]) == 2                           # the 500 and the ERROR entry


def test_status_summarises_an_access_log(local, api, logs_dir, clock):
    shutil.copy(DATA / "other" / "access.log", logs_dir / "access.log")
    clock.advance(hours=1)
    runner = local(api())
    data = runner.invoke("/logs api --status 5xx --since 2026-11-24T14:40Z").data
    status = data["status"]
    assert status.count == 5 and status.by_status == {500: 2, 502: 2, 504: 1}
    assert [(p.path, p.count) for p in status.top_paths] == [
        ("GET /api/orders", 2), ("GET /api/users/<n>", 2), ("POST /api/checkout", 1)]
    assert status.first == datetime(2026, 11, 24, 14, 45, 10, tzinfo=UTC)
    assert status.last == datetime(2026, 11, 24, 14, 46, 2, tzinfo=UTC)
    assert runner.invoke("/logs api --status 404 --since 2026-11-24T14:40Z").data["status"].count == 1
    text = Renderer(NOW.tzinfo, clock).text("logs", data)
    assert "502 ×2" in text and "`GET /api/users/<n>` ×2" in text


def test_inside_an_incident_channel_bare_logs_is_the_incidents_service_and_its_timeline(local, api, logs_dir):
    (logs_dir / "app.log").write_text(python_error(45, "ValueError: before the incident") + python_error(25)
                                      + python_error(5))
    runner = local(api())
    incident_id = open_incident(runner)
    reply = runner.invoke("/logs")
    assert reply.audience is Audience.THREAD and reply.incident_id == incident_id
    assert reply.data["query"]["since"] == NOW - timedelta(minutes=30)      # started 20m ago, 10m lead
    assert [(e.exception, e.count) for e in reply.data["events"]] == [("KeyError: 'id'", 2)]
    event = runner.dispatcher.store.events(incident_id)[-1]
    assert event.kind == "logs" and event.text == "/logs api: 1 kind of error — KeyError: 'id' ×2"
    assert event.data["causes"] == [{"id": "python.uncaught_exception", "title": event.data["events"][0]["cause"]["title"],
                                     "count": 2}]
    assert event.data["events"][0]["exception"] == "KeyError: 'id'" and event.data["events"][0]["count"] == 2
    assert event.data["events"][0]["cause"]["id"] == "python.uncaught_exception"
    assert "KeyError" in event.data["events"][0]["excerpt"]
    timeline = runner.invoke("/incident timeline").data["events"]
    assert timeline[-1].kind == "logs"


def test_a_named_service_or_incident(local, api, logs_dir):
    (logs_dir / "app.log").write_text(python_error(5))
    runner = local(api())
    incident_id = open_incident(runner, "/incident open checkout slow")        # no service
    reply = runner.invoke("/logs")
    assert reply.outcome is Outcome.OK and reply.data["service"] == "api"     # the only one with logs
    assert runner.invoke(f"/logs api #{incident_id}").incident_id == incident_id
    assert runner.invoke("/logs #99").outcome is Outcome.FAILED


@pytest.mark.parametrize("config, text, problem", [
    ("", "/logs web", "Unknown service 'web'"),
    ('[services.web]\nrepo = "/srv/web"\n', "/logs web", "web has no logs configured"),
])
def test_services_without_logs(local, api, config, text, problem):
    reply = local(api(config)).invoke(text)
    assert reply.outcome in (Outcome.USAGE, Outcome.FAILED) and problem in reply.data["message"]


def test_silence_causes_is_validated(local, api, logs_dir, make_config):
    shutil.copy(DATA / "java" / "npe_controller.log", logs_dir / "app.log")
    assert local(api(service_extra='silence_causes = ["java.npe"]')).invoke("/logs api").data["events"][0].cause \
        is None
    for unknown in ("java.nep", "NPE"):   # caught when the config is read, not when /logs runs
        with pytest.raises(ConfigError, match=f"services.api.silence_causes: '{unknown}' is not a known cause id"):
            make_config(f'[services.api]\nlogs = ["/x"]\nsilence_causes = ["{unknown}"]\n')


def test_rotated_and_gzipped_files_are_read_newest_first(local, api, logs_dir):
    (logs_dir / "app.log").write_text(info(1))
    (logs_dir / "app.log.1").write_text(python_error(30, "RuntimeError: in the first rotation"))
    (logs_dir / "app.log.2.gz").write_bytes(gzip.compress(
        (python_error(90, "RuntimeError: compressed, older") + python_error(80, "RuntimeError: compressed, newer"))
        .encode()))
    events = local(api()).invoke("/logs api --last 3").data["events"]
    assert [(e.exception, e.source) for e in events] == [
        ("RuntimeError: in the first rotation", "app.log.1"),
        ("RuntimeError: compressed, newer", "app.log.2.gz"),
        ("RuntimeError: compressed, older", "app.log.2.gz")]


def test_a_log_command_is_read(local, api, tmp_path):
    script = tmp_path / "journal.py"
    script.write_text(f"print(open({str(DATA / 'python' / 'template_missing.log')!r}).read(), end='')\n")
    config = api(service_extra=f'log_command = ["{sys.executable}", "{script}"]')
    events = local(config).invoke("/logs api").data["events"]
    assert events[0].cause.id == "python.template_missing" and events[0].source == Path(sys.executable).name
    assert local(config).invoke("/logs api").data["sources"][-1] == Path(sys.executable).name


def test_a_failing_log_command_is_a_note_and_files_are_still_read(local, api, logs_dir):
    (logs_dir / "app.log").write_text(python_error(3))
    config = api(service_extra=f'log_command = ["{sys.executable}", "-c", "import sys; sys.exit(\'no journal\')"]')
    data = local(config).invoke("/logs api").data
    assert len(data["events"]) == 1
    assert any("exited with code 1: no journal" in note for note in data["notes"])


def test_secrets_in_logs_never_leave_and_mentions_ping_no_one(local, api, logs_dir, clock):
    (logs_dir / "app.log").write_text(
        f"{stamp(2)} ERROR app.db could not connect to postgres://api:Sup3rS3cret@db.internal/api <!channel>\n"
        "Traceback (most recent call last):\n"
        '  File "/srv/api/src/acme/db.py", line 3, in connect\n'
        "    headers = {'Authorization': 'Bearer abcdefghijklmnopqrstu'}\n"
        "ConnectionError: card 4111 1111 1111 1111 rejected <@U123ABC>\n")
    runner = local(api())
    reply = runner.invoke("/logs api")
    renderer = Renderer(NOW.tzinfo, clock)
    message = renderer.slack(reply.template, reply.data)
    posted = json.dumps(message.blocks) + message.text
    for secret in ("Sup3rS3cret", "abcdefghijklmnopqrstu", "4111 1111"):
        assert secret not in posted
        assert secret not in renderer.text(reply.template, reply.data)
    assert "[redacted:password]" in posted and "[redacted:card]" in posted
    assert "<!channel>" not in posted and "&lt;!channel&gt;" in posted and "<@U123ABC>" not in posted
    out = io.StringIO()
    runner.run("/logs api", as_json=True, out=out, err=io.StringIO())
    assert "Sup3rS3cret" not in out.getvalue() and "[redacted:password]" in out.getvalue()


def test_long_excerpts_are_uploaded_whole_and_redacted(local, api, logs_dir, clock):
    frames = "".join(f'  File "/srv/api/src/acme/deep.py", line {n}, in level_{n}\n    step(token="t{n}abcdefgh")\n'
                     for n in range(190))
    (logs_dir / "app.log").write_text("".join(
        f"{stamp(9 - kind)} ERROR app Exception on /x [GET]\nTraceback (most recent call last):\n{frames}"
        f"{'ABCDE'[kind]}Error: maximum recursion depth exceeded\n" for kind in range(5)))
    reply = local(api()).invoke("/logs api")
    message = Renderer(NOW.tzinfo, clock).slack(reply.template, reply.data)
    assert len(message.blocks) == 50 and message.overflow is not None
    assert "AError: maximum recursion depth exceeded" in message.overflow
    assert "t899abcdefgh" not in message.overflow and 'token="[redacted:token]"' in message.overflow


def test_hostile_files_never_crash(local, api, logs_dir):
    (logs_dir / "binary.log").write_bytes(bytes(range(256)) * (BLOCK // 64) + b"\n"
                                          + f"{stamp(1)} ERROR caf\xe9 ".encode("latin-1") + b"\xc3\x28 in junk\n")
    (logs_dir / "huge.log").write_bytes(f"{stamp(1)} ERROR ".encode() + b"y" * (10 * 1024 * 1024) + b"\n")
    (logs_dir / "empty.log").write_bytes(b"")
    (logs_dir / "app.log.3.gz").write_bytes(b"\x1f\x8b\x08 definitely not gzip")
    reply = local(api()).invoke("/logs api --last 5")
    assert reply.outcome is Outcome.OK
    texts = [e.text for e in reply.data["events"]]
    assert any(text.startswith(f"{stamp(1)} ERROR yyyy") and len(text) < 70_000 for text in texts)
    assert any("in junk" in text for text in texts)
    assert Renderer(NOW.tzinfo, lambda: NOW).text("logs", reply.data)


def test_nothing_found_says_so(local, api, logs_dir):
    (logs_dir / "app.log").write_text(info(3) + info(2))
    reply = local(api()).invoke("/logs api")
    assert reply.data["events"] == [] and reply.data["read"]["complete"]
    text = Renderer(NOW.tzinfo, lambda: NOW).text("logs", reply.data)
    assert "No error entries in the whole log." in text
    assert "wider" not in text and "--since" not in text            # the whole file was read: nothing to widen


def test_help_lists_every_cause(local, api):
    text = Renderer(NOW.tzinfo, lambda: NOW).text(*_help(local(api())))
    assert "`python.migration_missing`" in text and "`infra.upstream_nginx`" in text


def _help(runner):
    reply = runner.invoke("/logs help")
    return reply.template, reply.data


def test_several_logs_merge_newest_first(local, api, logs_dir):
    (logs_dir / "app.log").write_text(python_error(50, "RuntimeError: app, old")
                                      + python_error(10, "RuntimeError: app"))
    (logs_dir / "worker.log").write_text(python_error(30, "RuntimeError: worker") + info(1))
    events = local(api()).invoke("/logs api --last 2").data["events"]
    assert [(e.exception, e.source) for e in events] == [("RuntimeError: app", "app.log"),
                                                         ("RuntimeError: worker", "worker.log")]


def test_the_last_errors_cost_what_lies_after_them_not_the_file_size(local, api, logs_dir):
    filler = "".join(info(60 - n / 10_000, f"GET /api/orders/{n} 200") for n in range(200_000))
    (logs_dir / "app.log").write_text(filler + "".join(
        python_error(1, f"RuntimeError: kind {kind}") for kind in "ABCDE") + info(0.5))
    reply = local(api()).invoke("/logs api")
    assert len(reply.data["events"]) == 5
    assert reply.data["read"]["bytes"] <= 2 * BLOCK < (logs_dir / "app.log").stat().st_size / 100
    assert not reply.data["read"]["complete"]


def test_reading_stops_at_the_deadline_with_a_note(local, api, logs_dir, monkeypatch):
    import commands.logs.query as logs_command
    (logs_dir / "app.log").write_text(python_error(5))
    monkeypatch.setattr(logs_command, "DEADLINE_MARGIN_SECONDS", 3600)
    monkeypatch.setattr(logs_command, "DEADLINE_MARGIN_SHARE", 1.0)
    reply = local(api()).invoke("/logs api")
    assert reply.data["read"]["timed_out"] and reply.data["events"] == []
    assert "stopped at the time limit" in Renderer(NOW.tzinfo, lambda: NOW).text("logs", reply.data)


def test_a_resolved_incident_is_read_up_to_a_little_after_it_ended(local, api, logs_dir, clock):
    (logs_dir / "app.log").write_text(python_error(25) + python_error(-30, "RuntimeError: much later"))
    runner = local(api())
    incident_id = open_incident(runner)
    clock.advance(minutes=5)
    runner.invoke(f"/incident resolve #{incident_id} fixed")
    clock.advance(hours=2)
    data = runner.invoke(f"/logs #{incident_id}").data
    assert data["query"]["until"] == NOW + timedelta(minutes=15)
    assert [e.exception for e in data["events"]] == ["KeyError: 'id'"]


def test_json_access_logs_with_quoted_statuses(local, api, logs_dir, clock):
    lines = [{"time": f"2026-11-24T13:5{n}:00Z", "status": status, "request": f"GET /api/orders/{n}",
              "method": "GET", "uri": f"/api/orders/{n}"} for n, status in enumerate(["200", "502", "504", "404"])]
    (logs_dir / "nginx.log").write_text("".join(json.dumps(line) + "\n" for line in lines))
    data = local(api()).invoke("/logs api --status 5xx").data
    assert data["status"].by_status == {502: 1, 504: 1}
    assert [p.path for p in data["status"].top_paths] == ["GET /api/orders/<n>"]
    assert [e.cause.id for e in local(api()).invoke("/logs api").data["events"]] == ["infra.upstream_nginx"] * 2


# -- QA findings ---------------------------------------------------------------------------------


def test_request_id_matches_the_whole_id_only(local, api, logs_dir):
    (logs_dir / "app.log").write_text(
        "".join(f"{stamp(3)} INFO app.server [req-{n}] GET /api/orders/{n}\n" for n in range(1000, 1037))
        + f"{stamp(2)} ERROR app.payments [req-10] charge failed\n"
        + f"{stamp(1)} INFO app.payments req-10: retried (req-100 and xreq-10 and req-10x are others)\n")
    lines = local(api()).invoke("/logs api --request-id req-10").data["lines"]
    assert [line.text.split(" ", 3)[3] for line in lines] == [
        "app.payments [req-10] charge failed",
        "app.payments req-10: retried (req-100 and xreq-10 and req-10x are others)"]


def test_request_id_in_json_logs_is_the_fields_exact_value(local, api, logs_dir):
    entries = [{"time": f"2026-11-24T13:5{n}:00Z", "level": "info", "msg": f"step {n}", "pid": 1,
                "request_id": request_id} for n, request_id in enumerate(["1", "10", "req-1", "1"])]
    entries.append({"time": "2026-11-24T13:58:00Z", "level": "error", "msg": "no field, but about 1 thing"})
    entries.append({"time": "2026-11-24T13:59:00Z", "level": "error", "msg": "retrying 10 later"})
    (logs_dir / "app.log").write_text("".join(json.dumps(entry) + "\n" for entry in entries))
    runner = local(api())
    assert [line.text for line in runner.invoke("/logs api --request-id 1").data["lines"]] == [
        "2026-11-24T13:50:00Z INFO step 0", "2026-11-24T13:53:00Z INFO step 3",
        "2026-11-24T13:58:00Z ERROR no field, but about 1 thing"]
    assert [line.text for line in runner.invoke("/logs api --request-id 10").data["lines"]] == [
        "2026-11-24T13:51:00Z INFO step 1", "2026-11-24T13:59:00Z ERROR retrying 10 later"]


def test_nothing_readable_is_a_failed_command_naming_each_source(local, api, logs_dir, make_config, tmp_path):
    (logs_dir / "folder.log").mkdir()
    os.mkfifo(logs_dir / "pipe.log")
    config = make_config(f"""
        [services.api]
        logs = ["{logs_dir}/*.log", "{tmp_path}/nothing-*.log", "{tmp_path}/gone.log", "/dev/zero"]
        log_command = ["no-such-journal-binary", "-u", "api"]
    """)
    reply = local(config).invoke("/logs api")
    assert reply.outcome is Outcome.FAILED
    message = reply.data["message"]
    assert message.startswith("Could not read any log of api:")
    for reason in (f"{logs_dir}/folder.log: a directory, not a log file",
                   f"{logs_dir}/pipe.log: a FIFO, not a log file",
                   f"{tmp_path}/nothing-*.log: no file matches",
                   f"{tmp_path}/gone.log: no such file",
                   "/dev/zero: a character device, not a log file",
                   "no-such-journal-binary: cannot run it"):
        assert reason in message
    assert "Try a wider window" not in message
    assert local(config).run("/logs api", as_json=True, out=io.StringIO(), err=io.StringIO()) == 1


def test_some_sources_unreadable_is_a_note_with_the_results(local, api, logs_dir, make_config, tmp_path):
    (logs_dir / "app.log").write_text(python_error(3))
    os.mkfifo(logs_dir / "pipe.log")
    config = make_config(f'[services.api]\nlogs = ["{logs_dir}/*.log", "{tmp_path}/gone.log"]\n')
    reply = local(config).invoke("/logs api")
    assert reply.outcome is Outcome.OK and len(reply.data["events"]) == 1
    assert f"{logs_dir}/pipe.log: a FIFO, not a log file" in reply.data["notes"]
    assert f"{tmp_path}/gone.log: no such file" in reply.data["notes"]


def test_a_missing_log_command_binary_fails_through_the_real_cli(tmp_path):
    config = tmp_path / "cli.toml"
    config.write_text('[services.api]\nlog_command = ["no-such-journal-binary"]\n')
    result = subprocess.run(
        [sys.executable, "-m", "bot", "run", "/logs api"], capture_output=True, text=True, timeout=60,
        env={**os.environ, "ONCALL_CONFIG": str(config), "ONCALL_DB": str(tmp_path / "cli.db")})
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "Could not read any log of api: no-such-journal-binary: cannot run it" in output
    assert "wider window" not in output and "kB read" not in output


def test_entries_in_the_future_say_the_log_may_be_in_local_time(local, api, logs_dir, clock):
    (logs_dir / "app.log").write_text(python_error(-58) + python_error(-60, "ValueError: local time"))
    data = local(api()).invoke("/logs api --since 15m").data
    assert [e.exception for e in data["events"]] == ["ValueError: local time", "KeyError: 'id'"]
    assert data["ahead"] == {"seconds": 3600, "sources": ["app.log"]}
    text = Renderer(NOW.tzinfo, clock).text("logs", data)
    assert "app.log: entries are up to 1 h 00 m in the future: are this log's times local time?" in text
    (logs_dir / "app.log").write_text(python_error(-2))               # a little clock skew is no news
    assert local(api()).invoke("/logs api").data["ahead"] is None


def test_a_json_error_field_is_part_of_the_event(local, api, logs_dir):
    (logs_dir / "app.log").write_text(
        json.dumps({"level": "error", "ts": 1795528680.5, "caller": "db/query.go:42", "msg": "query failed",
                    "error": "dial tcp 10.0.0.5:5432: connect: connection refused"}) + "\n"
        + json.dumps({"time": "2026-11-24T13:59:00Z", "level": "ERROR", "msg": "cache miss storm",
                      "err": "redis: connection pool timeout"}) + "\n")
    events = local(api()).invoke("/logs api").data["events"]
    assert [e.exception for e in events] == [
        "cache miss storm: redis: connection pool timeout",
        "query failed: dial tcp 10.0.0.5:5432: connect: connection refused"]
    assert "connection refused" in events[1].excerpt


def test_the_regex_flag_is_shown(local, api, logs_dir, clock):
    (logs_dir / "app.log").write_text(info(2, "key dump follows"))
    data = local(api()).invoke("/logs api --grep /KEY.*dump/i").data
    assert "regex /KEY.*dump/i" in Renderer(NOW.tzinfo, clock).text("logs", data)


def test_status_on_a_log_without_access_lines_says_so(local, api, logs_dir, clock):
    (logs_dir / "app.log").write_text(python_error(3) + info(2))
    data = local(api()).invoke("/logs api --status 5xx").data
    text = Renderer(NOW.tzinfo, clock).text("logs", data)
    assert "No 5xx responses: app.log holds no access-log lines" in text
    (logs_dir / "access.log").write_text(
        '203.0.113.9 - - [24/Nov/2026:13:58:30 +0000] "GET /api/orders HTTP/1.1" 200 64 "-" "curl/8.4"\n')
    data = local(api()).invoke("/logs api --status 5xx").data
    assert "No 5xx responses in the window." in Renderer(NOW.tzinfo, clock).text("logs", data)


def test_a_gzipped_access_log_is_folded_while_read_and_every_response_counted(local, api, logs_dir):
    lines = "".join(f'203.0.113.{n % 200} - - [24/Nov/2026:13:{20 + n % 30}:00 +0000] "GET /api/users/{n} HTTP/1.1" '
                    f'{502 if n % 3 else 504} 64 "-" "curl/8.4"\n' for n in range(1, 301))
    (logs_dir / "app.log").write_text(info(1))
    (logs_dir / "app.log.1.gz").write_bytes(gzip.compress(lines.encode()))
    os.utime(logs_dir / "app.log.1.gz", (NOW.timestamp(), NOW.timestamp()))     # rotated "now", on the test clock
    data = local(api()).invoke("/logs api --status 5xx").data
    assert data["status"].by_status == {502: 200, 504: 100}
    assert [(p.path, p.count) for p in data["status"].top_paths] == [("GET /api/users/<n>", 300)]
    assert data["status"].first == NOW - timedelta(minutes=40) and data["status"].last == NOW - timedelta(minutes=11)


# -- issues 9 and 10: true answers and hostile input ------------------------------------------------


def test_without_a_window_the_scan_is_bounded_and_says_how_far_and_how_to_go_further(local, api, logs_dir,
                                                                                   monkeypatch, clock):
    import commands.logs.query as logs_command
    from commands.logs.search import Bound
    (logs_dir / "app.log").write_text(python_error(60 * 30, "RuntimeError: a day and more ago")
                                      + "".join(info(60 * 30 - n / 2) for n in range(2, 60 * 60, 1)) + python_error(5))
    data = local(api()).invoke("/logs api --last 2").data
    assert [e.exception for e in data["events"]] == ["KeyError: 'id'"]          # 30 h back is past 24 h
    assert data["read"]["bounded"] == "time" and not data["read"]["complete"]
    text = Renderer(NOW.tzinfo, clock).text("logs", data)
    assert "reads the log's last 24 h or 256 MB" in text and "Older: `/logs api --since 2d`" in text
    assert len(local(api()).invoke("/logs api --last 2 --since 2d").data["events"]) == 2
    monkeypatch.setattr(logs_command, "DEFAULT_BOUND", Bound(age=timedelta(days=30), bytes=BLOCK))
    data = local(api()).invoke("/logs api --last 2").data
    assert data["read"]["bounded"] == "bytes" and data["read"]["bytes"] <= 2 * BLOCK


def test_a_source_that_yields_nothing_fails_naming_it(local, api, logs_dir, make_config, tmp_path):
    silent = f'log_command = ["{sys.executable}", "-c", "pass"]'
    reply = local(make_config(f"[services.api]\n{silent}\n")).invoke("/logs api")
    assert reply.outcome is Outcome.FAILED and "printed nothing (exit code 0)" in reply.data["message"]
    assert local(make_config(f"[services.api]\n{silent}\n")).run(
        "/logs api", as_json=True, out=io.StringIO(), err=io.StringIO()) == 1
    (logs_dir / "app.log").write_text("")
    reply = local(api()).invoke("/logs api")
    assert reply.outcome is Outcome.FAILED and "app.log: empty, nothing to read" in reply.data["message"]
    (logs_dir / "app.log.1").write_text(info(3))          # the live file was just rotated: the older one counts
    assert local(api()).invoke("/logs api").outcome is Outcome.OK


def test_another_services_logs_asked_in_an_incident_channel_stay_out_of_its_timeline(local, api, logs_dir,
                                                                                   make_config):
    (logs_dir / "app.log").write_text(python_error(5))
    config = make_config(f'[services.api]\nlogs = ["{logs_dir}/*.log"]\n[services.web]\nlogs = ["{logs_dir}/*.log"]\n')
    runner = local(config)
    incident_id = open_incident(runner)                   # api's incident, opened in this channel
    reply = runner.invoke("/logs web")
    assert reply.audience is Audience.CALLER and reply.incident_id is None
    assert reply.data["query"]["since"] is None           # not the incident's window either
    assert not [event for event in runner.dispatcher.store.events(incident_id) if event.kind == "logs"]
    assert runner.invoke("/logs").audience is Audience.THREAD


def test_a_request_id_inside_an_incident_is_looked_for_in_the_whole_log(local, api, logs_dir):
    (logs_dir / "app.log").write_text(f"{stamp(300)} ERROR app.pay [req-a772e6] card declined\n" + info(1))
    runner = local(api())
    open_incident(runner)                                 # started 20 minutes ago
    data = runner.invoke("/logs --request-id req-a772e6").data
    assert [line.text.split(" ", 3)[3] for line in data["lines"]] == ["app.pay [req-a772e6] card declined"]


def test_the_request_id_gate_is_the_whole_id(tmp_path):
    from commands.logs.records import Dialect
    from commands.logs.search import Query
    gate = Query(min_level=None, request_id=b"req-1000").gate(Dialect())
    assert not gate.hits(b"".join(f"[req-1000{n}] GET /x\n".encode() for n in range(10_000)))
    assert gate.hits(b"[req-10001] a\n[req-1000] b\n") and gate.hits(b"x req-1000")


def test_repeats_with_hex_request_ids_fold_into_one_event(local, api, logs_dir):
    (logs_dir / "app.log").write_text("".join(
        f"{stamp(9 - n)} ERROR app.pay [req-{token}] charge failed for order {n}\n"
        for n, token in enumerate(["a772e6", "0b19fd", "77c3a1", "e51d09", "9f2a4c", "c0ffee"])))
    events = local(api()).invoke("/logs api").data["events"]
    assert [event.count for event in events] == [6]


def test_logs_written_in_local_time_are_read_in_their_zone(local, api, logs_dir):
    local_time = (NOW - timedelta(minutes=5)).astimezone(ZoneInfo("Europe/Berlin"))
    (logs_dir / "app.log").write_text(f"{local_time:%Y-%m-%d %H:%M:%S},000 ERROR app boom\n")
    data = local(api(service_extra='log_timezone = "Europe/Berlin"')).invoke("/logs api --since 10m").data
    assert [e.last_seen for e in data["events"]] == [NOW - timedelta(minutes=5)] and data["ahead"] is None
    assert local(api()).invoke("/logs api --since 10m").data["ahead"] is not None     # read as UTC: an hour ahead


def test_a_regex_runs_in_linear_time(local, api, logs_dir):
    (logs_dir / "app.log").write_text(info(2, "a" * 35 + "!") * 200)
    started = time.monotonic()
    reply = local(api()).invoke("/logs api --grep /(a+)+$/")
    assert reply.outcome is Outcome.OK and time.monotonic() - started < 10
    reply = local(api()).invoke("/logs api --grep /(?<=a)b/")
    assert reply.outcome is Outcome.USAGE and "linear time" in reply.data["message"]


def test_many_files_are_read_newest_first_and_the_others_named(local, api, logs_dir, monkeypatch):
    from commands.logs import reading
    monkeypatch.setattr(reading, "MAX_LOGS", 5)
    for n in range(12):
        path = logs_dir / f"worker-{n:02d}.log"
        path.write_text(python_error(30 - n, f"RuntimeError: worker {chr(65 + n)}"))
        os.utime(path, (NOW.timestamp() - 3600 + n, NOW.timestamp() - 3600 + n))
    data = local(api()).invoke("/logs api --last 20").data
    assert sorted(e.source for e in data["events"]) == [f"worker-{n:02d}.log" for n in range(7, 12)]
    assert any("7 more logs match" in note for note in data["notes"]) and not data["read"]["complete"]
    assert "No error" not in Renderer(NOW.tzinfo, lambda: NOW).text("logs", data)


def test_a_link_out_of_the_log_directories_is_refused_unless_allowed(local, api, logs_dir, tmp_path):
    secret = tmp_path / "oncall.toml.secret"
    secret.write_text(f"{stamp(1)} ERROR password=hunter2 leaked\n")
    (logs_dir / "etc.log").symlink_to(secret)
    (logs_dir / "app.log").write_text(python_error(3))
    data = local(api()).invoke("/logs api").data
    assert all("hunter2" not in event.text for event in data["events"])
    assert any("etc.log: a link to a file outside the directories in logs" in note for note in data["notes"])
    allowed = local(api(service_extra="log_links_outside = true")).invoke("/logs api").data
    assert any("leaked" in event.text for event in allowed["events"])


@pytest.mark.parametrize("text", ["api --grep \udcff", "api --grep caf\ud800", "api --request-id \udcfe1",
                                  "api --grep /\ud800+/", "api --last ①", "api --last ²"])
def test_odd_characters_in_the_command_never_raise(local, api, logs_dir, text):
    (logs_dir / "app.log").write_bytes(f"{stamp(1)} ERROR caf\xe9 ".encode("latin-1") + b"\xff\n")
    reply = local(api()).invoke(f"/logs {text}")
    assert reply.outcome in (Outcome.OK, Outcome.USAGE)


def test_a_json_line_with_an_odd_status_does_not_fail_the_command(local, api, logs_dir):
    (logs_dir / "app.log").write_text("".join(json.dumps(entry) + "\n" for entry in (
        {"time": "2026-11-24T13:58:00Z", "level": "error", "msg": "odd", "status": "²"},
        {"time": "2026-11-24T13:58:01Z", "level": "error", "msg": "odder", "status": [500], "statusCode": None},
        {"time": "2026-11-24T13:59:00Z", "status": "502", "method": "GET", "path": "/x"})))
    for text in ("/logs api", "/logs api --status 5xx", "/logs api --request-id 1"):
        assert local(api()).invoke(text).outcome is Outcome.OK, text


def test_a_private_key_cut_by_the_line_limit_is_still_redacted(local, api, logs_dir, clock):
    key_body = [f"MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC{n:05d}" for n in range(100)]
    lines = ([f"{stamp(2)} ERROR app dumping config"] + [f"  line {n}" for n in range(318)]
             + ["  -----BEGIN PRIVATE KEY-----"] + [f"  {body}" for body in key_body])
    (logs_dir / "app.log").write_text("\n".join(lines) + "\n")
    data = local(api()).invoke("/logs api").data
    assert len(data["events"]) == 1
    posted = Renderer(NOW.tzinfo, clock).text("logs", data)
    assert "lines cut" in data["events"][0].text
    assert not any(body in posted for body in key_body)
    out = io.StringIO()
    local(api()).run("/logs api", as_json=True, out=out, err=io.StringIO())
    assert not any(body in out.getvalue() for body in key_body)


def test_the_timeline_keeps_a_cut_of_an_error_only_after_redaction(local, api, logs_dir):
    secret = "postgres://api:" + "S3cr3tP4ssw0rd" * 12 + "@db.internal/api"
    (logs_dir / "app.log").write_text(python_error(5, f"OperationalError: cannot reach {secret} now"))
    runner = local(api())
    incident_id = open_incident(runner)
    runner.invoke("/logs")
    event = [e for e in runner.dispatcher.store.events(incident_id) if e.kind == "logs"][-1]
    assert "S3cr3t" not in event.text and "S3cr3t" not in json.dumps(event.data)


# -- log sources: a small public interface ------------------------------------------------------------


def test_files_and_a_command_are_the_two_sources_and_source_picks_one(local, api, logs_dir, make_config, tmp_path):
    from commands.logs import sources
    assert set(sources.kinds()) >= {"files", "command"}
    (logs_dir / "app.log").write_text(python_error(3, "RuntimeError: from the file"))
    script = tmp_path / "journal.py"
    script.write_text(f"print({python_error(2, 'RuntimeError: from the command')!r}, end='')\n")
    both = f'logs = ["{logs_dir}/*.log"]\nlog_command = ["{sys.executable}", "{script}"]\n'
    runner = local(make_config(f"[services.api]\n{both}"))
    assert {e.exception for e in runner.invoke("/logs api").data["events"]} == {
        "RuntimeError: from the file", "RuntimeError: from the command"}
    only = local(make_config(f'[services.api]\n{both}source = "command"\n')).invoke("/logs api").data
    assert [e.exception for e in only["events"]] == ["RuntimeError: from the command"]
    with pytest.raises(ConfigError, match="services.api.source: 'loki' is not one of command, files"):
        make_config('[services.api]\nlogs = ["/x"]\nsource = "loki"\n')
    with pytest.raises(ConfigError, match="services.api.source: 'command' needs its settings"):
        make_config('[services.api]\nlogs = ["/x"]\nsource = "command"\n')


def test_a_new_backend_is_one_module_and_one_setting(local, make_config, monkeypatch):
    """What a backend module provides, and nothing else: its settings, its logs, their parts."""
    from commands.logs import sources
    from commands.logs.reading import Span
    from commands.logs.sources import Backward, Forward, SourceKind

    class Remote:                   # a backend that can only give its newest lines first, in pages
        name = "remote"

        def __init__(self, lines, pushdown):
            self.lines, self.pushdown = lines, pushdown

        def parts(self):
            newest = "\n".join(self.lines[len(self.lines) // 2:]).encode()
            oldest = "\n".join(self.lines[:len(self.lines) // 2]).encode()
            yield Backward("remote (recent)", lambda: Pages([newest]))
            yield Forward("remote (archive)", lambda: (chunk for chunk in [oldest]))

    class Pages:
        def __init__(self, pages):
            self.pages = pages

        def spans(self):
            for page in self.pages:
                yield Span(page, 0, page.rfind(b"\n"), page[page.rfind(b"\n") + 1:])

        def matched(self):
            pass

        def close(self):
            pass

    seen = {}

    def logs(settings, pushdown, stats, deadline):
        seen["pushdown"] = pushdown
        stats.read.add("remote")
        return [Remote(list(settings), pushdown)]

    remote = SourceKind("remote", lambda table: table.strings("remote_lines") or None, logs)
    known = sources.kinds()
    monkeypatch.setattr(sources, "kinds", lambda: {**known, "remote": remote})
    lines = [python_error(30, "RuntimeError: archived").rstrip("\n"), info(20).rstrip("\n"),
             python_error(5, "RuntimeError: recent").rstrip("\n")]
    config = make_config(f'[services.api]\nsource = "remote"\nremote_lines = {json.dumps(lines)}\n')
    data = local(config).invoke("/logs api --grep RuntimeError --since 1h").data
    assert [e.exception for e in data["events"]] == ["RuntimeError: recent", "RuntimeError: archived"]
    assert seen["pushdown"].literals == (b"RuntimeError",) and seen["pushdown"].since == NOW - timedelta(hours=1)
