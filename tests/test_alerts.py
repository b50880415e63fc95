"""Alerts in: POST /alerts/NAME through the real frame and a worker, against the Slack double; the
domain (dedup, reopen, seen before, auto-resolve, open_when) with a fixed clock on both stores."""

import base64
import io
import json
import threading
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot import export
from bot.command import Context, Malformed
from bot.config import ConfigError
from bot.render import Renderer
from bot.store import RESOLVED
from bot.store.sqlite import SqliteStore
from commands import alerts
from commands.alerts.payloads import parse
from commands.alerts.settings import AlertSettings
from commands.incident import card_data
from conftest import table_rows
from slack_double import eventually

DATA = Path(__file__).parent / "data" / "alerts"
CONFIG = """
[slack]
incident_channel = "C0INCIDNT"

[alerts.sources.prom]
kind = "alertmanager"
token = "${ALERTS_TOKEN}"

[alerts.sources.graf]
kind = "grafana"
username = "grafana"
password = "${GRAFANA_PASSWORD}"

[alerts.sources.cron]
kind = "generic"
token = "cron-secret-token"
"""
TOKEN = "am-secret-token-1234"
PASSWORD = "grafana-pass-5678"


@pytest.fixture
def alert_config(make_config, monkeypatch):
    monkeypatch.setenv("ALERTS_TOKEN", TOKEN)
    monkeypatch.setenv("GRAFANA_PASSWORD", PASSWORD)

    def make(alerts_keys: str = ""):
        return make_config(CONFIG + "\n[alerts]\n" + alerts_keys)

    return make


def am_alert(name: str, status: str = "firing", *, fingerprint: str | None = None, severity: str = "critical",
             service: str = "checkout", starts: str = "2026-11-24T13:55:00.123456789Z") -> dict:
    return {"status": status, "labels": {"alertname": name, "service": service, "severity": severity},
            "annotations": {"summary": f"{name} on {service}"}, "startsAt": starts,
            "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-24T14:10:00Z",
            "generatorURL": f"http://prometheus:9090/graph?g0.expr={name}", "fingerprint": fingerprint or name.lower()}


def am_body(*alerts: dict, group: str = '{}:{alertname="HighErrorRate"}') -> dict:
    status = "firing" if any(alert["status"] == "firing" for alert in alerts) else "resolved"
    return {"version": "4", "groupKey": group, "truncatedAlerts": 0, "status": status, "receiver": "oncall-bot",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
            "alerts": list(alerts)}


def bearer(token: str = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}"}


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def post(client, source: str, body, headers: dict) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{client.url}/alerts/{source}", content=content, timeout=10,
                      headers={"Content-Type": "application/json", **headers})


def texts(double, count: int) -> list[str]:
    return [json.dumps(call.args.get("blocks"), ensure_ascii=False) + (call.args.get("text") or "")
            for call in double.wait_for("chat.postMessage", count)]


# -- through the frame --------------------------------------------------------------------------


def test_an_alertmanager_group_opens_one_incident_and_later_alerts_go_to_its_thread(
        slack_bot, slack_double, store, alert_config, clock):
    bot, client = slack_bot(alert_config(), use_clock=True)
    response = post(client, "prom", am_body(am_alert("HighErrorRate")), bearer())
    assert response.status_code == 202 and response.text == "queued"
    announcement, opened, ask = texts(slack_double, 3)
    assert "Incident #1: HighErrorRate" in announcement and "an alert from `alertmanager:prom`" in announcement
    assert "Opened by an alert from `alertmanager:prom`" in opened and "HighErrorRate on checkout" in opened
    assert "Who leads #1" in ask and "/incident lead #1" in ask        # nobody opened it: who leads?
    incident = eventually(lambda: store.incident(1) if store.incident(1).thread_ts else None)
    assert (incident.severity, incident.service, incident.source) == (1, "checkout", "alertmanager:prom")
    assert incident.dedup_key == '{}:{alertname="HighErrorRate"}' and incident.opened_by == "oncall-bot"
    assert incident.started_at.isoformat() == "2026-11-24T13:55:00+00:00"

    # The same notification again (Alertmanager retries): dropped. A new alert of the group: its thread.
    assert post(client, "prom", am_body(am_alert("HighErrorRate")), bearer()).text == "already queued"
    post(client, "prom", am_body(am_alert("HighErrorRate"), am_alert("HighErrorRate", fingerprint="eu")), bearer())
    fourth = texts(slack_double, 4)[3]
    assert "Firing" in fourth and "2 alert(s) of this group still firing" in fourth
    assert slack_double.called("chat.postMessage")[3].args["thread_ts"] == incident.thread_ts

    post(client, "prom", am_body(am_alert("HighErrorRate", "resolved"), am_alert("HighErrorRate", fingerprint="eu")),
         bearer())
    assert "Resolved" in texts(slack_double, 5)[4]
    post(client, "prom", am_body(am_alert("HighErrorRate", "resolved"),
                                 am_alert("HighErrorRate", "resolved", fingerprint="eu")), bearer())
    all_resolved = slack_double.wait_for("chat.postMessage", 6)[5]
    assert "Every alert of `alertmanager:prom` for #1 is resolved" in texts(slack_double, 6)[5]
    buttons = [block for block in all_resolved.args["blocks"] if block["type"] == "actions"][0]["elements"]
    assert [button["value"] for button in buttons] == ["/incident resolve #1"]
    assert store.incident(1).status != RESOLVED and len(store.recent_incidents(10)) == 1


def test_grafana_with_basic_auth_and_the_generic_payload(slack_bot, slack_double, store, alert_config):
    bot, client = slack_bot(alert_config())
    assert post(client, "graf", (DATA / "grafana.json").read_bytes(), basic("grafana", PASSWORD)).status_code == 202
    eventually(lambda: store.incident(1))
    grafana = store.incident(1)
    assert (grafana.title, grafana.severity, grafana.service, grafana.source) == (
        "CheckoutErrorRate", 1, "checkout", "grafana:graf")
    assert grafana.started_at.isoformat() == "2026-11-24T12:52:30+00:00"     # the earlier of the two, in UTC
    assert grafana.dedup_key.endswith(':{alertname="CheckoutErrorRate", grafana_folder="Shop"}')

    assert post(client, "cron", (DATA / "generic.json").read_bytes(), bearer("cron-secret-token")).status_code == 202
    eventually(lambda: store.incident(2))
    generic = store.incident(2)
    assert (generic.title, generic.severity, generic.service, generic.source, generic.dedup_key) == (
        "nightly invoice export failed", 2, "billing", "generic:cron", "cron/invoice-export")
    thread = texts(slack_double, 6)
    assert any("ci.example.com/jobs/invoice-export/812" in text for text in thread)


@pytest.mark.parametrize("source, headers", [
    ("prom", {}),
    ("prom", {"Authorization": "Bearer not-the-token"}),
    ("prom", {"Authorization": f"Bearer {TOKEN}x"}),
    ("prom", basic("grafana", PASSWORD)),                     # basic auth where a token is configured
    ("graf", basic("grafana", "wrong")),
    ("graf", basic("admin", PASSWORD)),
    ("graf", {"Authorization": "Basic !!notbase64"}),
    ("graf", bearer()),
], ids=["none", "wrong-token", "longer-token", "basic-for-token", "wrong-password", "wrong-user", "garbled",
        "token-for-basic"])
def test_without_credentials_401_and_nothing_queued(slack_bot, slack_double, store, alert_config, source, headers):
    bot, client = slack_bot(alert_config())
    response = post(client, source, am_body(am_alert("HighErrorRate")), headers)
    assert response.status_code == 401 and "Bearer" in response.headers["WWW-Authenticate"]
    assert table_rows(store, "work") == [] and store.recent_incidents(5) == []


@pytest.mark.parametrize("body, reason", [
    (b"{not json", "the body is not JSON"),
    (b"[1, 2]", "the body is not a JSON object"),
    (json.dumps({"alerts": []}).encode(), "groupKey: missing"),
    (json.dumps(am_body(am_alert("X"))).replace('"firing"', '"burning"').encode(), "alerts[0].status: must be firing"),
    (json.dumps(am_body({**am_alert("X"), "startsAt": "yesterday"})).encode(), "alerts[0].startsAt: \"yesterday\""),
    (json.dumps(am_body({**am_alert("X"), "startsAt": "0001-01-01T00:00:00+01:00"})).encode(), "is not a time"),
    (json.dumps(am_body({**am_alert("X"), "labels": {"a": 1}})).encode(), "alerts[0].labels: must be an object"),
], ids=["not-json", "not-object", "no-group", "bad-status", "bad-time", "time-out-of-range", "bad-labels"])
def test_a_malformed_body_gets_400_with_its_reason_logged(slack_bot, store, alert_config, caplog, body, reason):
    bot, client = slack_bot(alert_config())
    response = post(client, "prom", body, bearer())
    assert response.status_code == 400 and reason in response.text
    assert any(reason in record.getMessage() for record in caplog.records)
    assert table_rows(store, "work") == []


def test_an_oversized_body_gets_413_and_an_unknown_source_404(slack_bot, store, alert_config):
    bot, client = slack_bot(alert_config())
    huge = json.dumps(am_body(am_alert("X" * 2000))).encode() * 600
    assert post(client, "prom", huge, bearer()).status_code == 413
    assert post(client, "nagios", am_body(am_alert("X")), bearer()).status_code == 404
    assert table_rows(store, "work") == []


def test_the_generic_payload_is_validated(alert_config, clock):
    configured = AlertSettings.of(alert_config())
    source = configured.source("cron")
    for body, reason in (({"title": "x", "status": "firing"}, "dedup_key: missing"),
                         ({"dedup_key": "k"}, "title: missing"),
                         ({"title": "x", "dedup_key": "k", "status": "gone"}, "status: must be firing or resolved")):
        with pytest.raises(Malformed, match=reason):
            parse(configured, source, json.dumps(body).encode(), clock())


# -- the domain, with a fixed clock, on both stores ----------------------------------------------------------


def notify(store, config, clock, body: dict, source: str = "prom") -> list:
    payload = alerts.read(config, source, json.dumps(body).encode(), clock())
    ctx = Context(user="oncall-bot", channel="C0INCIDNT", store=store, config=config, request_id="t", clock=clock)
    return alerts.handle(ctx, payload)


def resolve(store, incident_id: int, clock) -> None:
    store.update_incident(incident_id, status=RESOLVED, resolved_at=clock(), resolved_by="U0BOB0001")


def test_refiring_reopens_within_the_window_else_a_new_incident_says_it_was_seen_before(store, alert_config, clock):
    config = alert_config('reopen_within = "1h"\n')
    replies = notify(store, config, clock, am_body(am_alert("HighErrorRate")))
    assert [reply.template for reply in replies] == ["incident_card", "alert_notice", "incident_lead_ask"]
    clock.advance(minutes=10)
    notify(store, config, clock, am_body(am_alert("HighErrorRate", "resolved")))
    resolve(store, 1, clock)

    clock.advance(minutes=59)        # within reopen_within (1h): the same incident, reopened
    replies = notify(store, config, clock, am_body(am_alert("HighErrorRate", starts="2026-11-24T15:08:00Z")))
    assert [(reply.template, reply.data.get("event")) for reply in replies] == [
        ("incident_event", "reopened"), ("alert_notice", "refired")]
    assert store.incident(1).status == "open" and store.incident(1).reopened == 1
    assert store.events(1)[-1].kind == "reopened" and store.events(1)[-1].user == "oncall-bot"

    notify(store, config, clock, am_body(am_alert("HighErrorRate", "resolved", starts="2026-11-24T15:08:00Z")))
    resolve(store, 1, clock)
    clock.advance(hours=1, seconds=1)     # past the window: a new incident, which says it was seen before
    replies = notify(store, config, clock, am_body(am_alert("HighErrorRate", starts="2026-11-24T16:09:00Z")))
    assert replies[1].data["event"] == "opened" and replies[1].data["seen_before"].id == 1
    assert [incident.id for incident in store.recent_incidents(5)] == [2, 1]
    (opened,) = [event for event in store.events(2) if event.kind == "opened"]
    assert opened.data["seen_before"] == 1
    assert table_rows(store, "alert_groups")[0][3] == 2     # the group now points at #2


def test_auto_resolve_resolves_once_every_alert_is_resolved(store, alert_config, clock):
    config = alert_config("auto_resolve = true\n")
    notify(store, config, clock, am_body(am_alert("A"), am_alert("B")))
    clock.advance(minutes=5)
    assert [r.data.get("event") for r in notify(store, config, clock, am_body(am_alert("A", "resolved"), am_alert("B")))] \
        == ["update"]
    assert store.incident(1).status == "open"
    assert (store.events(1)[-1].kind, store.events(1)[-1].text) == ("alerts", "alertmanager:prom resolved: A")
    replies = notify(store, config, clock, am_body(am_alert("A", "resolved"), am_alert("B", "resolved")))
    assert [r.data.get("event") for r in replies] == ["auto_resolved", "resolved"]
    incident = store.incident(1)
    assert incident.status == RESOLVED and incident.resolved_by == "oncall-bot"
    assert [event.kind for event in store.events(1)] == ["detected", "opened", "alerts", "alerts", "resolved"]
    assert store.events(1)[-1].text == "every alert of alertmanager:prom resolved"


def test_alerts_open_when_does_not_match_are_only_posted_to_the_channel(store, alert_config, clock):
    config = alert_config('open_when = [{ severity = "critical|error" }, { team = "payments", env = "prod" }]\n')
    replies = notify(store, config, clock, am_body(am_alert("DiskFilling", severity="warning")))
    assert [(reply.template, reply.audience.value, reply.data["event"]) for reply in replies] == [
        ("alert_notice", "channel", "unmatched")]
    assert store.recent_incidents(5) == []
    paged = am_body({**am_alert("Payments"), "labels": {"alertname": "Payments", "team": "payments", "env": "prod",
                                                         "severity": "info"}}, group="payments")
    assert notify(store, config, clock, paged)[0].template == "incident_card"
    assert store.incident(1).severity == 4

    silent = alert_config("open_when = []\n")     # nothing pages: every group is only posted
    assert [reply.audience.value for reply in notify(store, silent, clock, am_body(am_alert("X"), group="x"))] == [
        "channel"]
    assert len(store.recent_incidents(5)) == 1


def test_concurrent_notifications_of_one_group_open_one_incident(store, alert_config, clock):
    config = alert_config()
    bodies = [am_body(am_alert("HighErrorRate", fingerprint=f"f{n}")) for n in range(6)]
    errors = []

    def one(body):
        try:
            notify(store, config, clock, body)
        except Exception as error:   # noqa: BLE001 (reported below)
            errors.append(error)

    threads = [threading.Thread(target=one, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [incident.id for incident in store.recent_incidents(10)] == [1]
    assert len(table_rows(store, "alert_groups")) == 1


def test_export_gives_source_and_dedup_key(store, alert_config, clock):
    notify(store, alert_config(), clock, am_body(am_alert("HighErrorRate")))
    store.insert_incident(title="by hand", severity=3, service=None, status="open", opened_by="U0ALICE01",
                          opened_at=clock(), started_at=clock(), channel="C0INCIDNT", announce_channel="C0INCIDNT")
    out = io.StringIO()
    export.write(store, None, "json", out)
    rows = json.loads(out.getvalue())
    assert [(row["source"], row["dedup_key"]) for row in rows] == [
        ("alertmanager:prom", '{}:{alertname="HighErrorRate"}'), (None, None)]
    out = io.StringIO()
    export.write(store, None, "csv", out)
    header, first = out.getvalue().splitlines()[:2]
    assert header.endswith(",source,dedup_key,lead,comms,postmortem_at")
    assert first.endswith(',alertmanager:prom,"{}:{alertname=""HighErrorRate""}",,,')


# -- config ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, problem", [
    ('[alerts.sources.x]\nkind = "nagios"\ntoken = "t"\n', "alerts.sources.x.kind: 'nagios' is not one of"),
    ('[alerts.sources.x]\nkind = "generic"\n', "alerts.sources.x.token: every source is authenticated"),
    ('[alerts.sources.x]\nkind = "generic"\nusername = "u"\n', "alerts.sources.x.password: every source"),
    ('[alerts.sources.x]\nkind = "generic"\ntoken = "t"\nusername = "u"\npassword = "p"\n', "not both"),
    ('[alerts.sources.x]\nkind = "generic"\ntoken = "${NOT_SET_ANYWHERE}"\n', "NOT_SET_ANYWHERE is not set"),
    ('[alerts.sources.X]\nkind = "generic"\ntoken = "t"\n', "alerts.sources.X: a source's name is lowercase"),
    ('[alerts]\nopen_when = [{ severity = "(a+)+" }]\n', "alerts.open_when: item 1: severity: a repetition"),
    ('[alerts]\nopen_when = { severity = "x" }\n', "alerts.open_when: must be a list of tables"),
    ('[alerts.severity_map]\ncritical = 5\n', "alerts.severity_map.critical: must be a whole number from 1 to 4"),
    ('[alerts]\nreopen_within = "soon"\n', "alerts.reopen_within:"),
    ('[alerts]\nchannel = "#incidents"\n', "alerts.channel: '#incidents' is not a Slack channel ID"),
    ('[alerts]\nauto_resolve = "yes"\n', "alerts.auto_resolve: must be true or false"),
    ('[alerts]\nservice_lable = "app"\n', "unknown key (did you mean 'service_label'?)"),
])
def test_a_bad_alerts_config_is_one_line(make_config, text, problem):
    with pytest.raises(ConfigError) as error:
        make_config(text)
    assert problem in str(error.value) and "\n" not in str(error.value)


def test_the_defaults_and_a_severity_map(make_config):
    settings = AlertSettings.of(make_config(""))
    assert (settings.service_label, settings.severity_label, settings.open_when, settings.channel,
            settings.reopen_within.total_seconds(), settings.auto_resolve) == ("service", "severity", None, None,
                                                                               3600, False)
    assert [settings.severity(value) for value in ("critical", "ERROR", "high", "warning", "info", "page")] == [
        1, 2, 2, 3, 4, None]
    custom = AlertSettings.of(make_config('[alerts.severity_map]\npage = 1\nticket = 3\n'))
    assert (custom.severity("page"), custom.severity("critical")) == (1, None)


def test_sources_without_a_channel_are_refused_at_serve(make_config):
    config = make_config('[alerts.sources.x]\nkind = "generic"\ntoken = "t"\n')
    with pytest.raises(ConfigError, match="alerts.channel: not set, nor \\[slack\\] incident_channel"):
        alerts.endpoints(config)


# -- triage at page time -------------------------------------------------------------------------------


TRIAGED = """
[services.checkout]

[access]
"/triage" = { users = ["U0BOSS001"] }     # people's access: the bot runs its own duties all the same
"""


def card_update(double, incident) -> str:
    """The last update of the incident's announcement (not of a progress message)."""
    return blocks(double.wait_for("chat.update", 1, timeout=20, where=lambda call: call.args["ts"] == incident.thread_ts
                                  and "Triage:" in blocks(call))[-1])


def test_an_incident_an_alert_opens_is_triaged_in_its_thread_and_its_card_says_the_verdict(
        slack_bot, slack_double, store, make_config, monkeypatch):
    monkeypatch.setenv("ALERTS_TOKEN", TOKEN)
    monkeypatch.setenv("GRAFANA_PASSWORD", PASSWORD)
    bot, client = slack_bot(make_config(CONFIG + TRIAGED))
    post(client, "prom", am_body(am_alert("HighErrorRate")), bearer())
    eventually(lambda: any(event.kind == "triage" for event in store.events(1)), timeout=20)
    (triage,) = slack_double.wait_for("chat.postMessage", timeout=20,
                                      where=lambda call: "Triage · checkout · #1" in blocks(call))
    incident = store.incident(1)      # once the thread's reply is posted, its announcement's ts is kept
    assert triage.args["thread_ts"] == incident.thread_ts
    assert incident.verdict and incident.status == "open"
    assert f"*Triage:* {incident.verdict[:20]}" in card_update(slack_double, incident)
    assert [(event.kind, event.user) for event in store.events(1)][:3] == [
        ("detected", None), ("opened", "oncall-bot"), ("triage", "oncall-bot")]     # detected: the alert's evidence
    assert incident.detected_at == incident.started_at


def blocks(call) -> str:
    return json.dumps(call.args.get("blocks"), ensure_ascii=False)


@pytest.mark.parametrize("on_open", [True, False])
def test_incident_open_runs_triage_when_on_open_is_set(slack_bot, slack_double, store, make_config, on_open):
    bot, client = slack_bot(make_config(f"[triage]\non_open = {str(on_open).lower()}\n[services.checkout]\n"))
    client.command("/incident", "open checkout 500s --service checkout")
    eventually(lambda: store.incident(1) and store.incident(1).thread_ts)
    if on_open:
        eventually(lambda: store.incident(1).verdict, timeout=20)
        assert [event.kind for event in store.events(1)] == ["opened", "triage"]
    else:
        slack_double.wait_for("chat.postMessage")
        assert store.incident(1).verdict is None
        assert [row[1].partition(":")[0] for row in table_rows(store, "work")] == ["command"]


def test_the_card_of_an_alert_says_its_source_and_names_the_bot_without_a_mention(store, alert_config, clock):
    config = alert_config("auto_resolve = true\n")
    notify(store, config, clock, am_body(am_alert("A")))
    notify(store, config, clock, am_body(am_alert("A", "resolved")))
    card = Renderer(config.timezone, clock).slack("incident_card", card_data(store.incident(1), clock()))
    assert "*Opened by* an alert from `alertmanager:prom`" in card.text + json.dumps(card.blocks)
    assert "*Resolved by* oncall-bot" in json.dumps(card.blocks) and "<@oncall-bot>" not in json.dumps(card.blocks)


def test_a_generic_alert_without_a_start_fires_again_after_it_was_resolved(
        slack_bot, slack_double, store, alert_config, clock):
    bot, client = slack_bot(alert_config(), use_clock=True)
    alert = {"title": "backup failed", "dedup_key": "backup", "severity": "error"}
    cron = bearer("cron-secret-token")
    assert post(client, "cron", alert, cron).text == "queued"
    assert post(client, "cron", alert, cron).text == "already queued"        # a retry, the same second
    assert post(client, "cron", {**alert, "status": "resolved"}, cron).text == "queued"
    eventually(lambda: len(table_rows(store, "work")) == 2 and store.work_pending() == 0)
    resolve(store, 1, clock)
    clock.advance(minutes=10)
    assert post(client, "cron", alert, cron).text == "queued"
    eventually(lambda: store.incident(1).status == "open" and store.incident(1).reopened == 1)


def test_a_group_remembers_a_bounded_number_of_alerts_forgetting_resolved_ones_first(
        store, alert_config, clock, monkeypatch):
    monkeypatch.setattr(alerts, "KEPT_ALERTS", 3)
    config = alert_config()
    notify(store, config, clock, am_body(am_alert("A", starts="2026-11-24T13:00:00Z"),
                                         am_alert("B", starts="2026-11-24T13:01:00Z")))
    notify(store, config, clock, am_body(am_alert("A", "resolved", starts="2026-11-24T13:00:00Z"),
                                         am_alert("B", "resolved", starts="2026-11-24T13:01:00Z")))
    notify(store, config, clock, am_body(am_alert("C"), am_alert("D")))
    kept = store.alert_group("alertmanager:prom", '{}:{alertname="HighErrorRate"}').alerts
    assert sorted(kept) == ["b", "c", "d"]


TRICKY = ["0001-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-23:59", "2026-02-30T00:00:00Z",
          "2026-11-24T14:00:00.1234567890123Z", "firing", "resolved", "critical", "javascript:alert(1)", "http://x/<>",
          "a" * 3000]
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
                    | st.sampled_from(TRICKY),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                    max_leaves=12)
FIELDS = ["groupKey", "alerts", "status", "labels", "annotations", "startsAt", "endsAt", "fingerprint",
          "generatorURL", "commonLabels", "commonAnnotations", "title", "dedup_key", "started", "severity", "service",
          "link"]


def test_no_body_makes_a_traceback(tmp_path, alert_config, clock):
    """Whatever a source sends: Malformed (400), or a notification the domain acts on without failing."""
    config = alert_config()
    store = SqliteStore(tmp_path / "fuzz.db")
    valid = am_body(am_alert("A"))

    @settings(max_examples=150, derandomize=True, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(st.sampled_from(["prom", "graf", "cron"]), st.sampled_from(FIELDS), JSON, st.booleans())
    def fuzz(source: str, field: str, value, in_alert: bool) -> None:
        body = json.loads(json.dumps(valid))
        (body["alerts"][0] if in_alert else body)[field] = value
        try:
            payload = alerts.read(config, source, json.dumps(body).encode(), clock())
        except Malformed:
            return
        ctx = Context(user="oncall-bot", channel="C0INCIDNT", store=store, config=config, request_id="f", clock=clock)
        for reply in alerts.handle(ctx, payload):
            Renderer(config.timezone, clock).slack(reply.template, reply.data)

    fuzz()


def test_triage_runs_when_an_alert_opens_or_reopens_an_incident_of_a_configured_service(store, alert_config, clock):
    config = alert_config('[services.checkout]\n')
    opened = notify(store, config, clock, am_body(am_alert("HighErrorRate")))
    assert [duty.command for duty in opened[0].duties] == ["/triage #1"] and opened[1].data["triage"]
    notify(store, config, clock, am_body(am_alert("HighErrorRate", "resolved")))
    resolve(store, 1, clock)
    clock.advance(minutes=5)
    reopened = notify(store, config, clock, am_body(am_alert("HighErrorRate", starts="2026-11-24T14:04:00Z")))
    assert [(duty.key, duty.command) for duty in reopened[0].duties] == [("triage-at-open:1:1", "/triage #1")]
    unknown = notify(store, config, clock, am_body(am_alert("Other", service="ledger"), group="other"))
    assert unknown[0].duties == () and not unknown[1].data["triage"]
    assert "No triage: ledger is not a configured service" in Renderer(config.timezone, clock).text(
        unknown[1].template, unknown[1].data)


def test_the_generic_severity_and_service_are_read_as_the_configured_labels(store, alert_config, clock):
    config = alert_config('severity_label = "priority"\nservice_label = "app"\n')
    body = {"title": "queue stuck", "dedup_key": "q", "severity": "critical", "service": "billing"}
    notify(store, config, clock, body, source="cron")
    assert (store.incident(1).severity, store.incident(1).service) == (1, "billing")
