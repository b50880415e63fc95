"""Several replicas of the bot on one PostgreSQL: 3 `serve` and 2 `socket` processes (each with a
worker process of its own) sharing a database on a PostgreSQL server of the test's own, while Slack
delivers every request twice to different replicas, one replica is killed with -9, and the
database server restarts. Nothing is lost, nothing is done twice, and incident changes stay
consistent."""

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest
from test_socket import SocketModeSlack

from bot.store.postgres import PostgresStore
from conftest import SIGNING_SECRET, BotClient
from slack_double import SlackDouble, eventually, slash_command
from test_serve import free_port

_numbers = itertools.count()
MONDAY_AFTER_THE_SLOT = "2026-11-23T09:30:00Z"   # the weekly report of 2026-W47 is due


class Replica:
    """One replica: `serve` or `socket`, with one worker process, in a process group of its own so
    that it can be killed whole."""

    def __init__(self, mode: str, root, database: str, double: SlackDouble, socket_url: str | None = None):
        self.port = free_port() if mode == "serve" else None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ONCALL_", "PORT"))}
        env.update(SLACK_BOT_TOKEN="xoxb-replica", SLACK_SIGNING_SECRET=SIGNING_SECRET, SLACK_APP_TOKEN="xapp-replica",
                   SLACK_API_URL=double.api_url, ONCALL_DB=database, ONCALL_CONFIG=str(root / "oncall.toml"),
                   ONCALL_NOW=MONDAY_AFTER_THE_SLOT)
        argv = [sys.executable, "-m", "bot", mode, "--workers", "1"]
        if mode == "serve":
            argv += ["--host", "127.0.0.1", "--port", str(self.port)]
        # To a file, not a pipe nobody reads: a replica logging while the database is down would
        # fill the pipe and stall on its next log line.
        self.output = root / f"{mode}-{next(_numbers)}.log"
        with self.output.open("w") as output:
            self.process = subprocess.Popen(argv, cwd=root, env=env, stdout=output, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self.client = BotClient(f"http://127.0.0.1:{self.port}", double) if self.port else None

    def healthy(self) -> bool:
        assert self.process.poll() is None, self.output.read_text()[-4000:]
        if self.client is None:
            return True
        try:
            return httpx.get(f"{self.client.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


@pytest.fixture
def replicas(private_postgres, tmp_path):
    with psycopg.connect(f"{private_postgres.url}/postgres", autocommit=True) as admin:
        admin.execute("CREATE DATABASE oncall")
    database = f"{private_postgres.url}/oncall"
    (tmp_path / "oncall.toml").write_text('[slack]\nsummary_channel = "C0SUMMARY"\n')
    double = SlackDouble()
    socket_slack = SocketModeSlack()
    double.socket_url = socket_slack.url
    started = [Replica("serve", tmp_path, database, double) for _ in range(3)]
    started += [Replica("socket", tmp_path, database, double) for _ in range(2)]
    try:
        for replica in started:
            eventually(replica.healthy, timeout=60)
        eventually(lambda: len(double.called("apps.connections.open")) >= 2, timeout=30)
        yield started, double, socket_slack, private_postgres, database
    finally:
        for replica in started:
            if replica.process.poll() is None:
                replica.kill()
        socket_slack.close()
        double.close()


def opened_titles(double: SlackDouble) -> list[str]:
    """The titles of the announcements Slack received, each as often as it was posted."""
    return [call.args["text"].split("replica test ", 1)[1].split(" ")[0] for call in double.called("chat.postMessage")
            if "replica test " in call.args.get("text", "") and "thread_ts" not in call.args]


def missing(database: str, announced: set[str], started: list[Replica]) -> str:
    """Why an announcement is missing: the work of each missing title, its incident's outbox rows,
    and what the replicas logged about it."""
    lost = sorted({f"t{i:02d}" for i in range(24)} - announced)
    with psycopg.connect(database) as conn:
        found = {title: {
            "work": conn.execute("SELECT key, attempts, lease_until, done_at FROM work WHERE key LIKE %s",
                                 [f"%:trigger-{int(title[1:])}"]).fetchall(),
            "incidents": conn.execute("SELECT id, status, thread_ts FROM incidents WHERE title LIKE %s",
                                      [f"%test {title}"]).fetchall(),
            "outbox": conn.execute("SELECT o.id, o.kind, o.attempts, o.sent_at, o.failed_at, o.in_flight_since, "
                                   "o.error FROM outbox o JOIN incidents i ON i.id = o.incident_id "
                                   "WHERE i.title LIKE %s", [f"%test {title}"]).fetchall(),
        } for title in lost}
    said = [line for replica in started for line in replica.output.read_text().splitlines()
            if "warning" in line or "error" in line]
    return f"missing {lost}: {found}; the replicas' warnings: {said[-40:]}"


def test_replicas_do_everything_once_through_a_killed_replica_and_a_database_restart(replicas):
    started, double, socket_slack, server, database = replicas
    serves, sockets = started[:3], started[3:]

    def deliver(index: int, alive: list[Replica]) -> None:
        """Every request reaches two replicas (Slack's retry landing elsewhere), or a socket twice."""
        body = slash_command("/incident", f"open replica test t{index:02d} --sev 2", channel=f"C0REPL{index:03d}",
                             trigger_id=f"trigger-{index}")
        if index % 4 == 3:
            payload = dict(urllib.parse.parse_qsl(body.decode()))
            envelope = {"envelope_id": f"env-{index}", "type": "slash_commands", "payload": payload,
                        "accepts_response_payload": True}
            socket_slack.outgoing.put(envelope)
            socket_slack.outgoing.put({**envelope, "retry_attempt": 1, "retry_reason": "timeout"})
            return
        for replica in (alive[index % len(alive)], alive[(index + 1) % len(alive)]):
            response = replica.client.post(body)
            assert response.status_code == 200 and "unavailable" not in response.text

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: deliver(i, serves), range(12)))
    serves[0].kill()                                   # a replica lost with whatever it had claimed
    server.stop()                                      # and the database restarts meanwhile
    time.sleep(1)
    server.start()
    alive = serves[1:]
    for replica in alive:
        eventually(replica.healthy, timeout=30)        # reconnected by itself
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: deliver(i, alive), range(12, 24)))

    try:
        eventually(lambda: len(set(opened_titles(double))) == 24, timeout=90)
    except AssertionError:
        raise AssertionError(missing(database, set(opened_titles(double)), started)) from None
    time.sleep(2)
    titles = opened_titles(double)
    assert sorted(titles) == sorted(f"t{i:02d}" for i in range(24)), "lost or posted twice"

    store = PostgresStore(database)
    incidents = store.recent_incidents(100)
    assert sorted(i.id for i in incidents) == list(range(1, 25))       # unique, gap-free
    assert {i.channel for i in incidents} == {f"C0REPL{i:03d}" for i in range(24)}

    # Two replicas acknowledging and resolving one incident at once: one state, one entry each.
    target = next(i for i in incidents if i.channel == "C0REPL001")
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda job: job[0].client.command("/incident", job[1], channel="C0REPL001"),
                      [(alive[0], f"ack #{target.id}"), (alive[1], f"resolve #{target.id} fixed")]))
    eventually(lambda: store.incident(target.id).status == "resolved", timeout=30)
    kinds = [event.kind for event in store.events(target.id)]
    assert kinds.count("acknowledged") <= 1 and kinds.count("resolved") == 1
    assert store.incident(target.id).resolved_at is not None

    # Every replica's scheduler found last week's report due: it went out once.
    def reports() -> list:
        return [call for call in double.called("chat.postMessage") if call.args.get("channel") == "C0SUMMARY"]

    eventually(reports, timeout=60)
    time.sleep(2)
    assert len(reports()) == 1 and store.report_claimed("2026-W47") is not None
    store.close()
    assert all(replica.stop() == 0 for replica in alive + sockets)


def test_while_the_database_is_down_slack_is_told_and_health_is_503_then_it_recovers(private_postgres, tmp_path,
                                                                                      slack_double):
    from wsgiref.simple_server import make_server

    from bot.app import SlackBot, SlackEnv
    from bot.config import Config
    from commands import registry
    from conftest import _QuietHandler, _ThreadingWSGIServer

    store = PostgresStore(f"{private_postgres.url}/postgres", local_dir=tmp_path)
    bot = SlackBot(SlackEnv("xoxb-down", SIGNING_SECRET, slack_double.api_url), Config(), store, registry())
    server = make_server("127.0.0.1", 0, bot, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    client = BotClient(f"http://127.0.0.1:{server.server_address[1]}", slack_double)
    try:
        assert httpx.get(f"{client.url}/healthz").status_code == 200
        private_postgres.stop()
        health = httpx.get(f"{client.url}/healthz", timeout=10)
        assert health.status_code == 503 and health.json()["status"] == "error"
        refused = client.command("/incident", "open while the database is down")
        assert refused.status_code == 200 and "database is unavailable" in refused.text
        private_postgres.start()
        eventually(lambda: httpx.get(f"{client.url}/healthz", timeout=10).status_code == 200, timeout=30)
        taken = client.command("/incident", "open after the database came back")
        assert taken.status_code == 200 and taken.text == "" and store.work_pending() == 1
    finally:
        server.shutdown()
        server.server_close()
        store.close()
