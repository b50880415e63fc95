"""The real Prometheus Alertmanager (Debian's prometheus-alertmanager, which .ci/run installs) in front
of `oncall-bot serve`, as in production: alerts posted to its API v2 are grouped by it and sent to
the bot's webhook with a bearer token; the bot runs without a signing secret (a Socket Mode
deployment's `serve`, answering only its alert endpoints)."""

import json
import shutil
import subprocess
import textwrap
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from bot.store.sqlite import SqliteStore
from slack_double import SlackDouble, eventually
from test_serve import Served, free_port

BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
TOKEN = "am-webhook-token-0f9e8d"


class Alertmanager:
    def __init__(self, tmp_path, webhook: str):
        assert BINARY, "prometheus-alertmanager is not installed: apt-get install prometheus-alertmanager (.ci/run does)"
        self.port = free_port()
        config = tmp_path / "alertmanager.yml"
        config.write_text(textwrap.dedent(f"""\
            route:
              receiver: oncall-bot
              group_by: [alertname]
              group_wait: 1s
              group_interval: 1s
              repeat_interval: 1h
            receivers:
              - name: oncall-bot
                webhook_configs:
                  - url: {webhook}
                    send_resolved: true
                    http_config:
                      authorization:
                        type: Bearer
                        credentials: {TOKEN}
            """))
        self.process = subprocess.Popen(
            [BINARY, f"--config.file={config}", f"--storage.path={tmp_path / 'am-data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.url = f"http://127.0.0.1:{self.port}"
        eventually(self._ready, timeout=20)

    def _ready(self) -> bool:
        assert self.process.poll() is None, self.process.stderr.read()
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def fire(self, name: str, instance: str, *, resolved: bool = False, **labels: str) -> None:
        now = datetime.now(UTC)
        alert = {"labels": {"alertname": name, "instance": instance, "service": "checkout", "severity": "critical",
                            **labels},
                 "annotations": {"summary": f"{name} on {instance}"},
                 "startsAt": (now - timedelta(minutes=3)).isoformat(),
                 "generatorURL": "http://prometheus.example:9090/graph"}
        if resolved:
            alert["endsAt"] = (now - timedelta(seconds=1)).isoformat()
        response = httpx.post(f"{self.url}/api/v2/alerts", json=[alert], timeout=5)
        assert response.status_code == 200, response.text

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def double():
    slack = SlackDouble()
    yield slack
    slack.close()


@pytest.fixture
def bot(tmp_path, double):
    (tmp_path / "oncall.toml").write_text(textwrap.dedent("""\
        [slack]
        incident_channel = "C0INCIDNT"

        [alerts.sources.prom]
        kind = "alertmanager"
        token = "${ALERTS_TOKEN}"
        """))
    served = Served(tmp_path, double, env={"ONCALL_CONFIG": str(tmp_path / "oncall.toml"), "ALERTS_TOKEN": TOKEN,
                                           "SLACK_SIGNING_SECRET": ""})
    yield served
    if served.process.poll() is None:
        served.stop()


def posted(double: SlackDouble, count: int) -> list[str]:
    return [json.dumps(call.args.get("blocks"), ensure_ascii=False)
            for call in double.wait_for("chat.postMessage", count, timeout=30)]


def test_alertmanager_groups_reach_the_bot_as_one_incident_each(tmp_path, bot, double):
    manager = Alertmanager(tmp_path, f"{bot.url}/alerts/prom")
    try:
        assert httpx.post(f"{bot.url}/slack/events", content=b"{}", timeout=5).status_code == 404   # no signing secret
        store = SqliteStore(bot.db)
        manager.fire("HighErrorRate", "web-1")
        manager.fire("HighErrorRate", "web-2")
        manager.fire("DiskFull", "db-1", severity="warning")
        eventually(lambda: len(store.recent_incidents(10)) == 2, timeout=30)
        incidents = {incident.title: incident for incident in store.recent_incidents(10)}
        assert set(incidents) == {"HighErrorRate", "DiskFull"}
        errors, disk = incidents["HighErrorRate"], incidents["DiskFull"]
        assert (errors.source, errors.severity, errors.service) == ("alertmanager:prom", 1, "checkout")
        assert errors.dedup_key == '{}:{alertname="HighErrorRate"}' and disk.severity == 3
        eventually(lambda: store.incident(errors.id).thread_ts and store.incident(disk.id).thread_ts, timeout=30)

        manager.fire("HighErrorRate", "web-3")      # a new alert of the group: its thread, no second incident
        eventually(lambda: any("HighErrorRate on web-3" in text for text in posted(double, 5)), timeout=30)
        web3 = next(call for call in double.called("chat.postMessage") if "web-3" in json.dumps(call.args["blocks"]))
        assert web3.args["thread_ts"] == store.incident(errors.id).thread_ts

        for instance in ("web-1", "web-2", "web-3"):
            manager.fire("HighErrorRate", instance, resolved=True)
        eventually(lambda: any(f"for #{errors.id} is resolved" in text for text in posted(double, 6)), timeout=30)
        resolved = next(call for call in double.called("chat.postMessage")
                        if f"for #{errors.id} is resolved" in json.dumps(call.args["blocks"]))
        assert resolved.args["thread_ts"] == store.incident(errors.id).thread_ts
        assert f"/incident resolve #{errors.id}" in json.dumps(resolved.args["blocks"])
        assert len(store.recent_incidents(10)) == 2 and store.incident(errors.id).status == "open"
    finally:
        manager.stop()
