"""/triage end to end through `oncall-bot serve`: one scenario per verdict kind, against real git
repositories, the real Postgres and Redis, local HTTP servers and log files; and the command's
behaviour (progress, a part that overruns, seen before, the impact start) through the console runner."""

import json
import os
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from bot.command import Audience, Command, Reply
from bot.dispatch import Invocation
from commands.triage import query as triage
from probe_servers import WebServer, closed_port
from slack_double import SlackDouble
from test_serve import Served

NOW = datetime.now(UTC)    # the served bot's clock starts here (ONCALL_NOW), however long the suite ran before


def stamp(minutes_ago: float, form: str = "%Y-%m-%d %H:%M:%S,000") -> str:
    return (NOW - timedelta(minutes=minutes_ago)).strftime(form)


def git(repo: Path, *args: str, minutes_ago: float | None = None) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "dana", "GIT_AUTHOR_EMAIL": "dana@acme.io",
           "GIT_COMMITTER_NAME": "dana", "GIT_COMMITTER_EMAIL": "dana@acme.io"}
    if minutes_ago is not None:
        when = (NOW - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
        env.update(GIT_AUTHOR_DATE=when, GIT_COMMITTER_DATE=when)
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


def repo_with(path: Path, commits: list[tuple[float, str, dict[str, str]]]) -> Path:
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    for minutes_ago, subject, files in commits:
        for name, content in files.items():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_text(content)
        git(path, "add", "-A")
        git(path, "commit", "-q", "-m", subject, minutes_ago=minutes_ago)
    return path


def python_trace(minutes_ago: float) -> str:
    return textwrap.dedent(f"""\
        {stamp(minutes_ago)} ERROR django.request Internal Server Error: /checkout/pay
        Traceback (most recent call last):
          File "/srv/pay/venv/lib/python3.11/site-packages/django/core/handlers/exception.py", line 55, in inner
            response = get_response(request)
          File "/srv/pay/src/acme/payments/views.py", line 42, in pay
            amount = order.total_cents / order.currency.rate
        TypeError: unsupported operand type(s) for /: 'int' and 'NoneType'
        """)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Five services, each broken in its own way (or not at all), and the bot serving them."""
    root = tmp_path_factory.mktemp("triage")
    logs = root / "logs"
    logs.mkdir()
    pay = repo_with(root / "pay", [(180, "initial", {"src/acme/payments/views.py": "x = 1\n", "README": "pay\n"}),
                                   (20, "Charge in cents (#481)", {"src/acme/payments/views.py": "x = 2\n"}),
                                   (12, "Update the README", {"README": "pay, in cents\n"})])
    docs = repo_with(root / "docs", [(600, "initial", {"index.md": "docs\n"})])
    (logs / "pay.log").write_text(python_trace(4) + python_trace(2))
    (logs / "orders.log").write_text("".join(
        f'{stamp(m, "%Y-%m-%dT%H:%M:%S.000Z")} ERROR KnexTimeoutError: Knex: Timeout acquiring a connection. '
        f'The pool is probably full. Are you missing a .transacting(trx) call?\n'
        f'    at Client_PG.acquireConnection (/app/node_modules/knex/lib/client.js:312:26)\n' for m in (4, 3, 2)))
    redis_port = closed_port()
    (logs / "sessions.log").write_text("".join(
        f"{stamp(m)} ERROR sessions Error 111 connecting to 127.0.0.1:{redis_port}. Connection refused.\n"
        "Traceback (most recent call last):\n"
        '  File "/srv/sessions/venv/lib/python3.11/site-packages/redis/connection.py", line 264, in connect\n'
        f"redis.exceptions.ConnectionError: Error 111 connecting to 127.0.0.1:{redis_port}. Connection refused.\n"
        for m in (5, 3)))
    app_port = closed_port()
    (logs / "nginx-error.log").write_text("".join(
        f"{stamp(m, '%Y/%m/%d %H:%M:%S')} [error] 311#311: *{m} connect() failed (111: Connection refused) while "
        f'connecting to upstream, client: 10.0.0.7, server: shop, request: "POST /checkout HTTP/1.1", '
        f'upstream: "http://127.0.0.1:{app_port}/checkout", host: "shop"\n' for m in (4, 3, 2)))
    (logs / "docs.log").write_text(f"{stamp(3)} INFO docs served /index.html in 3 ms\n")
    healthy = WebServer()
    held = [psycopg.connect("postgresql://postgres@127.0.0.1:5432/test") for _ in range(12)]
    in_use = psycopg.connect("postgresql://postgres@127.0.0.1:5432/test").execute(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'").fetchone()[0]
    (root / "oncall.toml").write_text(textwrap.dedent(f"""
        [services.pay]
        repo = "{pay}"
        logs = ["{logs / 'pay.log'}"]
        app_paths = ["src/acme/"]
        [services.orders]
        logs = ["{logs / 'orders.log'}"]
        [services.orders.probes.db]
        kind = "postgres"
        dsn = "postgresql://postgres@127.0.0.1:5432/test"
        connections_pct = {max(1, in_use - 5)}
        [services.sessions]
        logs = ["{logs / 'sessions.log'}"]
        [services.sessions.probes.cache]
        kind = "redis"
        url = "redis://127.0.0.1:{redis_port}/0"
        timeout = "1s"
        [services.web]
        logs = ["{logs / 'nginx-error.log'}"]
        [services.web.probes.app]
        kind = "http"
        url = "http://127.0.0.1:{app_port}/healthz"
        timeout = "1s"
        [services.docs]
        repo = "{docs}"
        logs = ["{logs / 'docs.log'}"]
        [services.docs.probes.site]
        kind = "http"
        url = "{healthy.url}/ok"
        [services.docs.probes.box]        # thresholds this machine cannot reach, whatever its load
        kind = "host"
        load_per_cpu = 1000
        memory_pct = 100
        disk_pct = 100
        files_pct = 100
        mounts = ["{root}"]
    """))
    double = SlackDouble()
    served = Served(root, double, env={"ONCALL_CONFIG": str(root / "oncall.toml"), "ONCALL_NOW": NOW.isoformat()})
    yield served, double, root
    served.stop()
    double.close()
    healthy.close()
    for conn in held:
        conn.close()


def triage_in_slack(world, service: str, channel: str) -> tuple[str, dict]:
    """Open an incident for `service` in `channel`, /triage there; the final message and the JSON."""
    served, double, root = world
    served.client.command("/incident", f"open {service} is failing --service {service} --started 5m ago",
                          channel=channel)
    announcement = double.wait_for("chat.postMessage", where=lambda c: c.args.get("channel") == channel)[0]
    served.client.command("/triage", "", channel=channel)
    running = double.wait_for("chat.postMessage", 2, where=lambda c: c.args.get("channel") == channel)[1]
    assert running.args["thread_ts"] == announcement.args.get("thread_ts", running.args["thread_ts"])
    assert "triage running" in json.dumps(running.args["blocks"])
    final = double.wait_for("chat.update", timeout=30, where=lambda c: c.args.get("channel") == channel
                            and "Done in" in json.dumps(c.args.get("blocks")))[-1]
    assert final.args["ts"] == running.args.get("ts", final.args["ts"])
    incident_id = json.loads(subprocess.run(
        [sys.executable, "-m", "bot", "run", "--json", "/incident list"], cwd=root, capture_output=True, text=True,
        env={**os.environ, "ONCALL_CONFIG": str(root / "oncall.toml"), "ONCALL_DB": str(served.db),
             "ONCALL_NOW": NOW.isoformat()},
    ).stdout)["incidents"]
    incident_id = next(item["incident"]["id"] for item in incident_id if item["incident"]["channel"] == channel)
    data = json.loads(subprocess.run(
        [sys.executable, "-m", "bot", "run", "--json", f"/triage #{incident_id}"], cwd=root, capture_output=True,
        text=True, env={**os.environ, "ONCALL_CONFIG": str(root / "oncall.toml"), "ONCALL_DB": str(served.db),
             "ONCALL_NOW": NOW.isoformat()},
    ).stdout)
    return json.dumps(final.args["blocks"], ensure_ascii=False), data


def test_bad_deploy(world):
    text, data = triage_in_slack(world, "pay", "C0TRIPAY1")
    top = data["verdicts"][0]
    assert top["kind"] == "deploy" and top["score"] >= 85
    assert "by dana" in top["evidence"] and "frames are in a file it changed (src/acme/payments/views.py)" in top["evidence"]
    assert data["verdicts"][1]["kind"] == "deploy" and data["verdicts"][1]["score"] < top["score"]  # the README change
    assert "Charge in cents" in text and "/incident resolve #" in text and "--cause deploy:" in text
    assert {"deploys", "probes", "logs", "host"} <= set(data) and data["deploys"]["deploys"][0]["suspect"] is True
    assert all({"kind", "summary", "evidence", "score"} <= set(v) for v in data["verdicts"])


def test_pool_exhausted(world):
    text, data = triage_in_slack(world, "orders", "C0TRIORD1")
    top = data["verdicts"][0]
    assert top["kind"] == "dependency" and top["summary"].startswith("Postgres pool exhausted: ")
    assert "connections" in top["summary"] and "name it" not in top["evidence"]   # knex's errors name no host
    assert "node.pool_exhausted" in [v["summary"].split("(")[-1].split(")")[0] for v in data["verdicts"]]
    assert "Postgres pool exhausted" in text


def test_redis_down(world):
    text, data = triage_in_slack(world, "sessions", "C0TRISES1")
    top = data["verdicts"][0]
    assert (top["kind"], top["summary"]) == ("dependency", "Redis (sessions cache) is down")
    assert "refused" in top["evidence"] and top["since"] is not None
    assert "since" in text


def test_upstream_502s(world):
    text, data = triage_in_slack(world, "web", "C0TRIWEB1")
    kinds = [(v["kind"], v["summary"]) for v in data["verdicts"]]
    assert kinds[0] == ("dependency", "HTTP (web app) is down") and data["verdicts"][0]["score"] == 90
    assert "the logs name it: “" in data["verdicts"][0]["evidence"] and ':' in data["verdicts"][0]["evidence"]
    assert text.count("Probe again") == 1
    assert "infra.upstream_nginx" in json.dumps(data["logs"]["events"][0]["cause"])


def test_no_evidence(world):
    text, data = triage_in_slack(world, "docs", "C0TRIDOC1")
    assert [v["kind"] for v in data["verdicts"]] == ["none"]
    assert "No evidence points to a cause yet" in text


# -- the command's behaviour, through the console runner ----------------------------------------------


@pytest.fixture
def pay_config(tmp_path, make_config):
    repo = repo_with(tmp_path / "pay", [(180, "initial", {"src/acme/payments/views.py": "x = 1\n"}),
                                        (20, "Charge in cents (#481)", {"src/acme/payments/views.py": "x = 2\n"})])
    log = tmp_path / "pay.log"
    log.write_text(python_trace(4) + python_trace(2))
    return make_config(f'[services.pay]\nrepo = "{repo}"\nlogs = ["{log}"]\napp_paths = ["src/acme/"]\n'
                       '[triage]\ndeadline = "3s"\n')


def test_progress_is_shown_part_by_part_and_everything_goes_in_the_timeline(local, store, pay_config, clock):
    clock.now = NOW
    runner = local(pay_config)
    runner.invoke("/incident open checkout 500s --service pay --started 5m ago")
    shown = []
    reply = runner.dispatcher.run(
        triage_invocation("/triage", runner.user), progress=lambda partial: shown.append(partial))
    assert reply.audience is Audience.THREAD and reply.incident_id == 1
    assert shown[0].data["final"] is False and all(p["state"] == "running" for p in shown[0].data["parts"].values())
    assert len(shown) >= 2 and reply.data["final"] is True
    kinds = [event.kind for event in store.events(1)]
    assert kinds[:2] == ["detected", "opened"] and kinds.count("triage") == 1   # detected: its logs
    assert not {"deploys", "logs", "probe"} & set(kinds)                        # its parts record nothing
    (recorded,) = [event for event in store.events(1) if event.kind == "triage"]
    assert recorded.data["verdicts"][0]["kind"] == "deploy" and recorded.data["signatures"]
    top = reply.data["verdicts"][0]
    assert recorded.text == f"/triage pay: most likely {top.summary} (score {top.score})"
    assert recorded.data["suspects"] == [d["sha"] for d in recorded.data["suspect_deploys"]] != []
    assert recorded.data["events"][0]["count"] == 2 and recorded.data["events"][0]["cause"]
    assert [r["target"] for r in recorded.data["results"]] == ["host"]


def triage_invocation(line, user):
    return Invocation(command="triage", text=line.removeprefix("/triage").strip(), user=user, channel="console",
                      request_id="t-1")


def test_the_impact_start_button_corrects_the_incident(local, store, pay_config, clock):
    clock.now = NOW
    runner = local(pay_config)
    runner.invoke("/incident open checkout 500s --service pay --started 1m ago")
    data = runner.invoke("/triage").data
    offer = data["impact_start"]
    assert offer["at"].replace(microsecond=0) == (NOW - timedelta(minutes=4)).replace(microsecond=0)
    assert offer["set_started"].startswith("/incident update #1 --started ")
    assert runner.invoke(offer["set_started"]).outcome.value == "ok"
    assert store.incident(1).started_at == offer["at"].replace(microsecond=0)


def test_seen_before_points_at_the_earlier_incident_and_its_resolution(local, store, pay_config, clock):
    clock.now = NOW
    runner = local(pay_config)
    runner.invoke("/incident open checkout 500s --service pay --started 5m ago")
    runner.invoke("/triage")
    runner.invoke("/incident resolve #1 reverted the cents change")
    runner.invoke("/incident open checkout 500s again --service pay --started 3m ago")
    data = runner.invoke("/triage #2").data
    (seen,) = data["seen_before"]
    assert seen["incident"].id == 1 and seen["incident"].resolution == "reverted the cents change"
    text = runner.renderer.text("triage", data)
    assert "Seen before* in #1 checkout 500s" in text and "reverted the cents change" in text


def test_a_part_that_overruns_the_deadline_is_reported_and_the_rest_still_counts(local, pay_config, monkeypatch, clock):
    clock.now = NOW
    slow_logs = Command("logs", "", "", lambda text: text, lambda ctx, args: time.sleep(10))
    monkeypatch.setattr(triage, "LOGS", slow_logs)
    runner = local(pay_config)
    runner.invoke("/incident open checkout 500s --service pay --started 5m ago")
    started = time.monotonic()
    data = runner.invoke("/triage").data
    assert time.monotonic() - started < 4.5
    assert data["parts"]["logs"]["state"] == "timed out" and data["parts"]["deploys"]["state"] == "done"
    assert data["verdicts"][0].kind == "deploy"
    assert "⌛ *logs*" in runner.renderer.text("triage", data)


def test_without_an_incident_it_answers_in_the_channel_and_asks_for_a_service(local, make_config):
    runner = local(make_config("[services.a]\n[services.b]\n"))
    reply = runner.invoke("/triage")
    assert reply.outcome.value == "usage" and "configured: a, b" in reply.data["message"]
    reply = runner.invoke("/triage a")
    assert reply.audience is Audience.CHANNEL and reply.data["parts"]["deploys"]["state"] == "skipped"


@pytest.mark.parametrize("denied, part", [("/logs", "logs"), ("/deploys", "deploys"), ("/probe", "host")])
def test_a_part_the_user_may_not_run_is_not_run(tmp_path, make_config, store, clock, denied, part):
    from bot.access import Access
    from bot.dispatch import Dispatcher
    from bot.render import Renderer
    from commands import registry

    clock.now = NOW
    repo = repo_with(tmp_path / "pay", [(20, "Charge in cents (#481)", {"src/views.py": "x = 2\n"})])
    log = tmp_path / "pay.log"
    log.write_text(python_trace(2))
    config = make_config(f'[services.pay]\nrepo = "{repo}"\nlogs = ["{log}"]\n[triage]\ndeadline = "3s"\n'
                         f'[access]\n"{denied}" = {{ users = ["U0OTHER01"] }}\n')
    dispatcher = Dispatcher(store, config, registry(), clock, Access(config.access, lambda group: set()))
    reply = dispatcher.run(Invocation("triage", "pay", "U0ALICE01", "C0INCIDNT", "t-2"))
    assert reply.data["parts"][part] == {"state": "skipped", "note": f"not allowed: you may not run {denied}",
                                         "took_ms": None}
    assert reply.data[part] is None
    text = Renderer(config.timezone, clock).text(reply.template, reply.data)
    assert f"not allowed: you may not run {denied}" in text
    if part == "logs":
        assert "unsupported operand" not in text
    allowed = dispatcher.run(Invocation("triage", "pay", "U0OTHER01", "C0INCIDNT", "t-3"))
    assert allowed.data["parts"][part]["state"] == "done"


# -- what belongs in an incident ----------------------------------------------------------------------


@pytest.fixture
def two_services(tmp_path, make_config, web):
    """checkout and web, each with a repository, a log showing the same error, and a probe."""
    config = ""
    for name in ("checkout", "web"):
        repo = repo_with(tmp_path / name, [(180, f"{name} initial", {"src/acme/payments/views.py": "x = 1\n"})])
        log = tmp_path / f"{name}.log"
        log.write_text(python_trace(4) + python_trace(2))
        config += (f'[services.{name}]\nrepo = "{repo}"\nlogs = ["{log}"]\n'
                   f'[services.{name}.probes.site]\nkind = "http"\nurl = "{web.url}/ok"\n')
    return make_config(config + '[triage]\ndeadline = "5s"\n')


def test_answers_about_another_service_are_given_but_not_recorded_in_the_incident(local, store, two_services, clock):
    clock.now = NOW
    runner = local(two_services)
    runner.invoke("/incident open checkout 500s --service checkout --started 5m ago")
    for line in ("/deploys web", "/probe web", "/probe all", "/triage web", "/deploys web --last 1"):
        reply = runner.invoke(line)
        assert reply.outcome.value == "ok" and reply.incident_id is None, line
        assert reply.audience in (Audience.CALLER, Audience.CHANNEL), line
    assert [event.kind for event in store.events(1)] == ["detected", "opened"]    # detected: checkout's own logs
    for line in ("/deploys", "/probe", "/probe checkout", "/deploys checkout #1", "/probe web site #1"):
        reply = runner.invoke(line)                # the incident's service, or named with #N on purpose
        assert reply.audience is Audience.THREAD and reply.incident_id == 1, line
    assert [event.kind for event in store.events(1)] == ["detected", "opened", "deploys", "probe", "probe", "deploys",
                                                         "probe"]


def test_seen_before_only_for_the_same_service(local, store, two_services, clock):
    clock.now = NOW
    runner = local(two_services)
    runner.invoke("/incident open web 500s --service web --started 5m ago")
    runner.invoke("/triage #1")
    runner.invoke("/incident resolve #1 restarted web")
    runner.invoke("/incident open checkout 500s --service checkout --started 5m ago")
    first = runner.invoke("/triage #2").data
    assert first["logs"]["events"] and first["seen_before"] == []        # the same error, but web's
    runner.invoke("/incident resolve #2 restarted checkout")
    runner.invoke("/incident open checkout 500s again --service checkout --started 5m ago")
    again = runner.invoke("/triage #3").data
    assert [seen["incident"].id for seen in again["seen_before"]] == [2]


def test_one_probe_again_button_and_every_lead_listed(local, tmp_path, make_config):
    probes = "".join(f'[services.shop.probes.p{n}]\nkind = "tcp"\naddress = "127.0.0.1:{closed_port()}"\n'
                     'timeout = "1s"\n' for n in range(7))
    calm_host = ('[services.shop.probes.box]\nkind = "host"\nload_per_cpu = 1000\nmemory_pct = 100\ndisk_pct = 100\n'
                 f'files_pct = 100\nmounts = ["{tmp_path}"]\n')       # thresholds this machine cannot reach
    runner = local(make_config(f"[services.shop]\n{probes}{calm_host}"))
    data = runner.invoke("/triage shop").data
    assert [v.kind for v in data["verdicts"]] == ["dependency"] * 7
    text = runner.renderer.text("triage", data)
    assert text.count("[Probe again: /probe shop]") == 1
    assert "oncall-bot run" not in text and "Weaker leads" in text
    assert all(v.summary in text for v in data["verdicts"])


def test_a_first_error_at_the_edge_of_what_was_read_may_be_earlier(local, tmp_path, make_config, clock):
    clock.now = NOW
    log = tmp_path / "pay.log"
    log.write_text("".join(python_trace(m / 3) for m in range(90, 0, -1)))     # every 20 s for the last 30 minutes
    runner = local(make_config(f'[services.pay]\nlogs = ["{log}"]\napp_paths = ["src/acme/"]\n'))
    runner.invoke("/incident open checkout 500s --service pay --started 5m ago")
    data = runner.invoke("/triage").data
    assert data["impact_start"]["may_be_earlier"] is True
    read_from = data["impact_start"]["read_from"]
    assert data["impact_start"]["at"] - read_from < timedelta(minutes=1)
    text = runner.renderer.text("triage", data)
    assert f"It may be earlier: the logs were read from {runner.renderer.when(read_from)} on" in text
    runner.invoke("/incident open later --service pay --started 1m ago")
    log.write_text(python_trace(4) + python_trace(2))
    assert runner.invoke("/triage #2").data["impact_start"]["may_be_earlier"] is False


def test_every_button_that_changes_an_incident_asks_first(local, store, pay_config, clock):
    """Whatever template shows it: a button that resolves, reopens or corrects an incident has a
    confirm dialog; acknowledging and probing again do not need one."""
    clock.now = NOW
    runner = local(pay_config)
    messages = [runner.invoke("/incident open checkout 500s --service pay --started 1m ago")]
    messages.append(runner.invoke("/triage"))
    messages.append(runner.invoke("/incident ack"))
    messages.append(Reply("home", {"incident": runner.invoke("/incident list").data, "mttr": None, "last_report": None}))
    messages.append(runner.invoke("/incident resolve"))
    buttons = [element for reply in messages for target in (reply, reply.card) if target
               for block in runner.renderer.slack(target.template, target.data).blocks if block["type"] == "actions"
               for element in block["elements"]]
    changing = [b for b in buttons if b["value"].startswith(("/incident resolve", "/incident reopen", "/incident update"))]
    assert {b["value"].split()[1] for b in changing} == {"resolve", "reopen", "update"}
    assert any("--cause deploy:" in b["value"] for b in changing) and any("--started" in b["value"] for b in changing)
    assert len(changing) >= 5 and all(b["confirm"]["text"]["text"] and b["confirm"]["deny"]["text"] for b in changing)
    assert all("confirm" not in b for b in buttons if b not in changing)
