"""/probe as people use it: services and targets by name, incidents, the reply, the CLI, Slack;
and the guarantees: all at once under one deadline, no pile-up, no crash, no password anywhere."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.command import Audience, Outcome
from bot.render import MAX_BLOCKS, Renderer
from commands.probe import parse, runner
from commands.probe.runner import Target, run_probes
from commands.probe.settings import ProbeSettings
from probe_servers import WebServer, closed_port
from slack_double import eventually

ROOT = Path(__file__).resolve().parent.parent
SECRETS = ("s3cret-pg-pw", "wr0ng-my-pw", "wr0ng-redis-pw", "hunter2-pw", "qu3ry-t0ken", "hdr-t0ken-123")


def services_config(web: WebServer, refused: int) -> str:
    return f"""
    [services.api]
    [services.api.probes.db]
    kind = "postgres"
    dsn = "postgresql://postgres:s3cret-pg-pw@127.0.0.1:5432/test"
    [services.api.probes.health]
    kind = "http"
    url = "{web.url}/ok"
    [services.api.probes.slow]
    kind = "http"
    url = "{web.url}/slowish"
    degraded_ms = 100
    [services.api.probes.search]
    kind = "tcp"
    address = "127.0.0.1:{refused}"

    [services.web.probes.cache]
    kind = "redis"
    url = "redis://127.0.0.1:6379/0"
    [services.web.probes.machine]
    kind = "host"
    load_per_cpu = 1000
    memory_pct = 100
    disk_pct = 100
    files_pct = 100

    [services.docs]
    repo = "/srv/docs"
    """


# -- parsing --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, service, target, incident", [
    ("", None, None, None), ("api", "api", None, None), ("api db", "api", "db", None), ("all", "all", None, None),
    ("#3", None, None, 3), ("api #3", "api", None, 3),
])
def test_parse(text, service, target, incident):
    args = parse(text)
    assert (args.service, args.target, args.incident) == (service, target, incident)


@pytest.mark.parametrize("text, message", [("api db extra", "one service"), ("all db", "takes no target")])
def test_parse_refuses(local, text, message):
    reply = local().invoke(f"/probe {text}")
    assert reply.outcome is Outcome.USAGE and message in reply.data["message"]


# -- the reply ------------------------------------------------------------------------------------


def test_probe_a_service_failing_and_slowest_first(local, make_config, web):
    reply = local(make_config(services_config(web, closed_port()))).invoke("/probe api")
    assert reply.audience is Audience.CALLER and reply.outcome is Outcome.OK
    results = reply.data["results"]
    assert [(r.target, r.status) for r in results[:2]] == [("search", "down"), ("slow", "degraded")]
    assert {r.target for r in results[2:]} == {"db", "health"} and {r.status for r in results[2:]} == {"ok"}
    assert results[2].latency_ms >= results[3].latency_ms
    assert reply.data["counts"] == {"down": 1, "degraded": 1, "ok": 2}


def test_json_has_the_issue_keys(local, make_config, web):
    out, err = io.StringIO(), io.StringIO()
    code = local(make_config(services_config(web, closed_port()))).run("/probe api", as_json=True, out=out, err=err)
    data = json.loads(out.getvalue())
    assert code == 0 and data["scope"] == "api"
    for result in data["results"]:
        assert {"target", "kind", "status", "latency_ms", "detail"} <= set(result)
        assert result["status"] in ("ok", "degraded", "down") and isinstance(result["latency_ms"], int)
    assert {r["target"] for r in data["results"]} == {"db", "health", "slow", "search"}


def test_one_target_and_all(local, make_config, web):
    runner_ = local(make_config(services_config(web, closed_port())))
    one = runner_.invoke("/probe web cache")
    assert [(r.service, r.target, r.kind) for r in one.data["results"]] == [("web", "cache", "redis")]
    everything = runner_.invoke("/probe all")
    assert {(r.service, r.target) for r in everything.data["results"]} == {
        ("api", "db"), ("api", "health"), ("api", "slow"), ("api", "search"), ("web", "cache"), ("web", "machine")}


def test_text_reply(local, make_config, web):
    runner_ = local(make_config(services_config(web, closed_port())))
    text = runner_.renderer.text("probe", runner_.invoke("/probe all").data)
    lines = text.splitlines()
    assert lines[0] == "== 🩺 /probe all =="
    assert lines[1].startswith("❌ *api · search* (tcp) · ") and "refused the connection" in lines[1]
    assert lines[2].startswith("⚠️ *api · slow* (http) · ") and "slow: " in lines[2]
    assert "1 down · 1 degraded · 4 ok" in text and "[Probe again: /probe all]" in text


@pytest.mark.parametrize("text, outcome, exit_code, message", [
    # a name that does not exist is a usage error (exit 2), as in /logs, /deploys and /mttr
    ("/probe nope", Outcome.USAGE, 2, "Unknown service 'nope' (with probes: api, web)."),
    ("/probe api nope", Outcome.USAGE, 2, "api has no probe 'nope'; its probes: db, health, slow, search."),
    ("/probe docs", Outcome.FAILED, 1, "docs has no probes configured: add [services.docs.probes.TARGET] to the config."),
])
def test_unknown_names_say_what_exists(local, make_config, web, text, outcome, exit_code, message):
    runner_ = local(make_config(services_config(web, 1)))
    reply = runner_.invoke(text)
    assert reply.outcome is outcome and reply.data["message"] == message
    out, err = io.StringIO(), io.StringIO()
    assert runner_.run(text, as_json=True, out=out, err=err) == exit_code


def test_bare_probe_outside_an_incident_asks_for_a_service(local, make_config, web):
    reply = local(make_config(services_config(web, 1))).invoke("/probe")
    assert reply.outcome is Outcome.USAGE and reply.data["message"] == "Name a service: /probe <service> (with probes: api, web)."


def test_no_probes_configured(local):
    reply = local().invoke("/probe all")
    assert reply.data["message"] == "No service has probes configured: add [services.NAME.probes.TARGET] to the config."


def test_bare_probe_in_an_incident_channel_probes_its_service_and_records_it(local, make_config, web, store):
    runner_ = local(make_config(services_config(web, closed_port())))
    runner_.invoke("/incident open checkout 500s --service web")
    reply = runner_.invoke("/probe")
    assert reply.audience is Audience.THREAD and reply.incident_id == 1
    assert {r.target for r in reply.data["results"]} == {"cache", "machine"}
    event = store.events(1)[-1]
    assert (event.kind, event.text) == ("probe", "/probe web: 2 ok")
    assert [r["target"] for r in event.data["results"]] == [r.target for r in reply.data["results"]]
    assert event.data["counts"] == {"down": 0, "degraded": 0, "ok": 2}
    named = runner_.invoke("/probe api search #1")
    assert named.incident_id == 1 and store.events(1)[-1].text == "/probe api search: 1 down (api/search)"


def test_an_incident_without_a_service(local, make_config, web):
    runner_ = local(make_config(services_config(web, 1)))
    runner_.invoke("/incident open something is off")
    reply = runner_.invoke("/probe")
    assert reply.outcome is Outcome.FAILED and reply.data["message"].startswith("Incident #1 has no service")


def test_help_lists_the_configured_targets(local, make_config, web):
    runner_ = local(make_config(services_config(web, 1)))
    text = runner_.renderer.text("probe_help", {**runner_.invoke("/probe help").data})
    assert "• api: db (postgres), health (http), slow (http), search (tcp)" in text
    assert "• web: cache (redis), machine (host)" in text and "docs" not in text


def test_a_long_list_stays_within_slack_limits(local, make_config, clock):
    probes = "".join(f'[services.big.probes.t{n:02d}]\nkind = "tcp"\naddress = "127.0.0.1:{closed_port()}"\n'
                     for n in range(60))
    reply = local(make_config(probes)).invoke("/probe big")
    message = Renderer(ZoneInfo("UTC"), clock).slack("probe", reply.data)
    assert len(message.blocks) <= MAX_BLOCKS and message.overflow is None
    text = json.dumps(message.blocks, ensure_ascii=False)
    assert "…and 20 more, 0 of them ok" in text and text.count("refused the connection") == 40


# -- one deadline, all at once, nothing piling up ------------------------------------------------


def test_hanging_targets_of_every_kind_take_one_timeout_not_their_sum(make_config, hanging):
    targets = [("http", f'url = "http://{hanging.address}/"'), ("http", f'url = "https://{hanging.address}/"'),
               ("postgres", f'dsn = "postgresql://postgres@{hanging.address}/test"'),
               ("mysql", f'dsn = "mysql://root@{hanging.address}/test"'),
               ("redis", f'url = "redis://{hanging.address}/0"'),
               *[("http", f'url = "http://{hanging.address}/{n}"') for n in range(7)]]
    text = "".join(f'[services.h.probes.p{n}]\nkind = "{kind}"\n{target}\ntimeout = "1s"\n'
                   for n, (kind, target) in enumerate(targets))
    config = make_config(text)
    targets = [Target("h", probe) for probe in ProbeSettings.of(config.services["h"]).probes.values()]
    started = time.monotonic()
    results = run_probes(targets, time.monotonic() + 30)
    took = time.monotonic() - started
    assert len(results) == 12 and {r.status for r in results} == {"down"}
    assert {r.error for r in results} <= {"ConnectTimeout", "ReadTimeout"}
    assert 1.0 <= took < 2.0, took       # one 1 s timeout for all twelve; two in a row would be 2 s


def test_the_command_deadline_caps_every_probe(make_config, hanging):
    config = make_config(f'[services.h.probes.p]\nkind = "http"\nurl = "http://{hanging.address}/"\ntimeout = "10s"')
    started = time.monotonic()
    (result,) = run_probes([Target("h", ProbeSettings.of(config.services["h"]).probes["p"])], time.monotonic() + 0.5)
    assert time.monotonic() - started < 1.0 and result.error == "ReadTimeout"


def test_asking_again_joins_the_probe_in_flight_instead_of_piling_up(make_config, hanging):
    config = make_config(f'[services.h.probes.p]\nkind = "postgres"\n'
                         f'dsn = "postgresql://postgres@{hanging.address}/test"\ntimeout = "1s"')
    target = Target("h", ProbeSettings.of(config.services["h"]).probes["p"])
    results = []
    askers = [threading.Thread(target=lambda: results.extend(run_probes([target], time.monotonic() + 30)))
              for _ in range(10)]
    for asker in askers:
        asker.start()
        time.sleep(0.02)
    for asker in askers:
        asker.join()
    assert len(results) == 10 and {r.error for r in results} == {"ConnectTimeout"}
    assert len(hanging.accepted) == 1          # one connection: the ten requests shared one flight
    # libpq holds the abandoned thread to its 2 s minimum; then it ends and leaves the table.
    eventually(lambda: not runner.flights_in_the_air() and not _probe_threads(), timeout=5)


def test_a_crashing_probe_is_a_down_line_and_a_log_line_without_secrets(make_config, monkeypatch, caplog):
    def broken(check):
        raise KeyError(f"oops {check.probe.dsn}")

    monkeypatch.setattr(runner, "kind", lambda name: broken)
    config = make_config('[services.h.probes.p]\nkind = "postgres"\n'
                         'dsn = "postgresql://app:s3cret-pg-pw@db.internal/app"')
    with caplog.at_level(logging.WARNING, logger="commands.probe.runner"):
        (result,) = run_probes([Target("h", ProbeSettings.of(config.services["h"]).probes["p"])], time.monotonic() + 30)
    assert (result.status, result.error) == ("down", "ProbeCrashed")
    assert result.detail == "the probe itself failed (KeyError); the bot's log has the details"
    (record,) = [r for r in caplog.records if "crashed" in r.getMessage()]
    assert "KeyError" in record.traceback and "[redacted:" in record.getMessage()
    assert "s3cret" not in record.getMessage() + record.traceback


# -- secrets --------------------------------------------------------------------------------------


def secret_config(web: WebServer) -> str:
    host = web.url.removeprefix("http://")
    return f"""
    [services.api.probes.db]
    kind = "postgres"
    dsn = "${{ONCALL_TEST_PG_DSN}}"
    [services.api.probes.mdb]
    kind = "mysql"
    dsn = "mysql://root:wr0ng-my-pw@127.0.0.1:3306/test"
    [services.api.probes.cache]
    kind = "redis"
    url = "redis://nobody:wr0ng-redis-pw@127.0.0.1:6379/0"
    [services.api.probes.health]
    kind = "http"
    url = "http://ops:hunter2-pw@{host}/fail?token=qu3ry-t0ken"
    headers = {{ X-Api-Key = "hdr-t0ken-123" }}
    """


def test_no_secret_in_the_reply_the_json_or_the_logs(local, make_config, web, monkeypatch, caplog):
    monkeypatch.setenv("ONCALL_TEST_PG_DSN", "postgresql://postgres:s3cret-pg-pw@127.0.0.1:5432/no_such_db")
    runner_ = local(make_config(secret_config(web)))
    with caplog.at_level(logging.DEBUG):
        reply = runner_.invoke("/probe api")
        out, err = io.StringIO(), io.StringIO()
        runner_.run("/probe api", as_json=True, out=out, err=err)
    assert {r.status for r in reply.data["results"]} == {"down"}
    shown = runner_.renderer.text("probe", reply.data) + out.getvalue() + err.getvalue()
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "HTTP Request: GET" in logged          # httpx did log the request, scrubbed
    for secret in SECRETS:
        assert secret not in shown and secret not in logged, secret


def test_through_the_real_cli(tmp_path, web):
    config = tmp_path / "oncall.toml"
    config.write_text(secret_config(web).replace("[services", "\n[services"), encoding="utf-8")
    env = {**os.environ, "ONCALL_CONFIG": str(config), "ONCALL_DB": str(tmp_path / "cli.db"),
           "ONCALL_TEST_PG_DSN": "postgresql://postgres:s3cret-pg-pw@127.0.0.1:5432/test"}
    done = subprocess.run([sys.executable, "-m", "bot", "run", "--json", "/probe api"], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    results = {r["target"]: r for r in json.loads(done.stdout)["results"]}
    assert results["db"]["status"] == "ok"
    assert (results["mdb"]["status"], results["cache"]["status"], results["health"]["status"]) == ("down",) * 3
    for secret in SECRETS:
        assert secret not in done.stdout + done.stderr


# -- Slack ----------------------------------------------------------------------------------------


def test_in_slack_other_commands_are_acked_at_once_while_probes_hang(slack_bot, slack_double, make_config, hanging):
    # An ack that waited for the probes would take their 5 s; the bound leaves a loaded machine room.
    probes = "".join(f'[services.h.probes.p{n}]\nkind = "http"\nurl = "http://{hanging.address}/{n}"\ntimeout = "5s"\n'
                     for n in range(5))
    bot, client = slack_bot(make_config(probes))
    assert client.command("/probe", "h").status_code == 200
    time.sleep(0.2)   # the probes are hanging now
    for n in range(5):
        started = time.monotonic()
        response = client.command("/incident", f"open still answering {n}")
        assert response.status_code == 200 and time.monotonic() - started < 2.5
    (answer,) = slack_double.wait_for("response_url", where=lambda call: "/probe h" in json.dumps(call.args))
    assert "0 ok" in json.dumps(answer.args, ensure_ascii=False)
    assert len(slack_double.wait_for("chat.postMessage", 5)) == 5


def _probe_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("probe ")]
