"""Scenarios through the real Slack frame (Bolt, signatures, the outbox) against the Web API double."""

import json
import logging
import socket
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from slack_bolt.request import BoltRequest

from bot.command import Command, Reply
from bot.dispatch import Invocation
from bot.jsonlog import JsonFormatter
from bot.store import Event
from commands import incident as incident_command
from conftest import table_rows, unwritable
from slack_double import (
    eventually,
    home_button_click,
    home_opened,
    message_shortcut,
    sign,
    slash_command,
    view_submission,
)


def blocks_text(call) -> str:
    return json.dumps(call.args.get("blocks"), ensure_ascii=False) + (call.args.get("text") or "")


def test_open_ack_resolve_in_one_thread_with_the_announcement_updated(slack_bot, slack_double, store):
    bot, client = slack_bot()
    assert client.command("/incident", "open checkout 500s --sev 2").status_code == 200
    (announcement,) = slack_double.wait_for("chat.postMessage")
    assert announcement.args["channel"] == "C0INCIDNT" and "thread_ts" not in announcement.args
    assert announcement.headers["Authorization"] == "Bearer xoxb-test-token"
    buttons = [b for b in announcement.args["blocks"] if b["type"] == "actions"][0]["elements"]
    assert [b["value"] for b in buttons] == ["/incident ack #1", "/incident lead #1", "/incident resolve #1"]
    thread = "1700000000.000001"
    eventually(lambda: store.incident(1).thread_ts == thread)

    assert client.click("/incident ack #1", user="U0BOB0001", message_ts=thread).status_code == 200
    replies = slack_double.wait_for("chat.postMessage", 2)
    assert replies[1].args["thread_ts"] == thread and "<@U0BOB0001> acknowledged #1" in replies[1].args["text"]
    (update,) = slack_double.wait_for("chat.update")
    assert update.args["ts"] == thread and "acknowledged" in blocks_text(update)

    client.command("/incident", "resolve fixed the pool")
    replies = slack_double.wait_for("chat.postMessage", 3)
    assert replies[2].args["thread_ts"] == thread and "resolved #1" in replies[2].args["text"]
    updates = slack_double.wait_for("chat.update", 2)
    assert "Reopen" in blocks_text(updates[1]) and "fixed the pool" in blocks_text(updates[1])
    assert [e.kind for e in store.events(1)] == ["opened", "acknowledged", "resolved"]
    assert [e.user for e in store.events(1)] == ["U0ALICE01", "U0BOB0001", "U0ALICE01"]


def test_acks_are_immediate_and_empty_even_under_load(slack_bot, slack_double):
    bot, client = slack_bot()
    with ThreadPoolExecutor(max_workers=30) as pool:
        responses = list(pool.map(lambda i: client.command("/incident", f"open load {i}"), range(30)))
    assert {(r.status_code, r.text) for r in responses} == {(200, "")}
    assert len(slack_double.wait_for("chat.postMessage", 30)) == 30


@pytest.mark.parametrize("tamper", ["wrong-secret", "changed-body", "stale", "unsigned", "future"])
def test_bad_signatures_get_401_and_change_nothing(slack_bot, slack_double, store, tamper):
    bot, client = slack_bot()
    body = slash_command("/incident", "open should not exist")
    if tamper == "wrong-secret":
        response = client.post(body, secret="not-the-secret")
    elif tamper == "changed-body":
        headers = sign(client.secret, body)
        response = httpx.post(f"{client.url}/slack/events", content=body.replace(b"exist", b"exis7"),
                              headers={"Content-Type": "application/x-www-form-urlencoded", **headers})
    elif tamper == "stale":
        response = client.post(body, timestamp=int(time.time()) - 6 * 60)
    elif tamper == "future":
        response = client.post(body, timestamp=int(time.time()) + 6 * 60)
    else:
        response = httpx.post(f"{client.url}/slack/events", content=body,
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 401
    time.sleep(0.3)
    assert store.recent_incidents(10) == [] and [c.method for c in slack_double.calls] in ([], ["auth.test"])


def test_a_redelivery_is_acked_and_dropped(slack_bot, slack_double, store):
    bot, client = slack_bot()
    body = slash_command("/incident", "open db down", response_url=slack_double.response_url())
    first = client.post(body)
    again = client.post(body, {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
    assert first.status_code == again.status_code == 200
    slack_double.wait_for("chat.postMessage")
    time.sleep(0.3)
    assert len(store.recent_incidents(10)) == 1 and len(slack_double.called("chat.postMessage")) == 1


@pytest.mark.parametrize("text", ["open payload service 500s", "open payload=1 from the checkout form"])
def test_a_command_whose_text_says_payload_is_run(slack_bot, slack_double, store, text):
    # Bolt's own parse takes a form with the word "payload" anywhere in it for an interaction's.
    bot, client = slack_bot()
    response = client.command("/incident", text)
    assert (response.status_code, response.text) == (200, "")
    (announcement,) = slack_double.wait_for("chat.postMessage")
    assert text.removeprefix("open ") in blocks_text(announcement)
    assert [incident.title for incident in store.recent_incidents(10)] == [text.removeprefix("open ")]


def test_slacks_own_checks_are_answered(slack_bot, slack_double, store):
    bot, client = slack_bot()
    assert client.post(b"token=legacy&ssl_check=1").status_code == 200
    challenge = client.post(json.dumps({"type": "url_verification", "challenge": "c4a11e"}).encode())
    assert challenge.status_code == 200 and challenge.json() == {"challenge": "c4a11e"}
    assert store.work_pending() == 0


def test_a_command_of_another_app_is_left_to_bolt_and_one_that_cannot_be_queued_is_a_500(
        slack_bot, slack_double, store, caplog):
    # Slash commands over HTTP go to their listener past Bolt's dispatch, the rest through it.
    bot, client = slack_bot()
    assert client.command("/deploy-prod", "now").status_code == 404           # Bolt: no listener for it
    without_user = client.post(b"command=%2Fincident&text=list&trigger_id=t-1&channel_id=C1")
    assert (without_user.status_code, without_user.text) == (500, "")
    assert "could not queue a /incident command" in caplog.text and "KeyError: 'user_id'" in caplog.text
    assert table_rows(store, "work") == []
    assert client.command("/incident", "list").status_code == 200
    slack_double.wait_for("response_url")
    assert len(table_rows(store, "work")) == 1


def test_a_double_submit_answers_with_the_incident_already_open(slack_bot, slack_double, store):
    bot, client = slack_bot()
    client.command("/incident", "open Checkout down")
    client.command("/incident", "open checkout down")
    (private,) = slack_double.wait_for("response_url")
    assert private.args["response_type"] == "ephemeral" and "No second incident was opened" in blocks_text(private)
    assert len(store.recent_incidents(10)) == 1


def test_user_text_cannot_ping_or_link(slack_bot, slack_double):
    bot, client = slack_bot()
    client.command("/incident", "open <!channel> <@U0BOSS001> <https://evil.example|login> & db down")
    (post,) = slack_double.wait_for("chat.postMessage")
    text = blocks_text(post)
    # Slack's escapes read as typed (/incident has escaping on), as text: a link shows its URL, not a label
    assert "@channel @U0BOSS001 https://evil.example &amp; db down" in text
    assert "<!channel>" not in text and "<@U0BOSS001>" not in text and "<https://evil" not in text


def test_access_rules_for_commands_and_buttons(slack_bot, slack_double, store, make_config):
    slack_double.usergroups["S0ONCALL1"] = ["U0CAROL01"]
    bot, client = slack_bot(make_config("""
        [access]
        "/incident" = { users = ["U0ALICE01"], usergroups = ["S0ONCALL1"] }
    """))
    client.command("/incident", "open db down", user="U0MALLORY")
    (denied,) = slack_double.wait_for("response_url")
    text = blocks_text(denied)
    assert "not allowed to run `/incident`" in text and "<@U0ALICE01>" in text and "<!subteam^S0ONCALL1>" in text
    assert store.recent_incidents(10) == []

    client.command("/incident", "open db down", user="U0CAROL01")  # a member of the group
    slack_double.wait_for("chat.postMessage")
    client.click("/incident resolve #1", user="U0MALLORY")
    (ephemeral,) = slack_double.wait_for("chat.postEphemeral")
    assert ephemeral.args["user"] == "U0MALLORY" and "not allowed" in blocks_text(ephemeral)
    assert store.incident(1).status == "open"
    client.click("/incident resolve #1", user="U0ALICE01")
    slack_double.wait_for("chat.update")
    assert store.incident(1).status == "resolved"


def test_access_by_channel(slack_bot, slack_double, store, make_config):
    bot, client = slack_bot(make_config('[access]\n"/mttr" = { channels = ["C0INCIDNT"] }'))
    client.command("/mttr", "", channel="C0RANDOM1")
    (denied,) = slack_double.wait_for("response_url")
    assert "in this channel.\\nIt can be run in <#C0INCIDNT>" in blocks_text(denied)
    client.command("/mttr", "", channel="C0INCIDNT")
    answers = slack_double.wait_for("response_url", 2)
    assert "MTTR" in blocks_text(answers[1])


def test_a_failure_answers_privately_with_a_request_id_and_logs_the_traceback(
        slack_bot, slack_double, monkeypatch, caplog):
    def broken(ctx, args):
        raise RuntimeError("kaboom")

    monkeypatch.setitem(incident_command._ACTIONS, "status", broken)
    bot, client = slack_bot()
    with caplog.at_level(logging.ERROR):
        client.command("/incident", "status")
        (answer,) = slack_double.wait_for("response_url")
    text = blocks_text(answer)
    assert "Something went wrong" in text and "kaboom" not in text
    request_id = text.split("Request id `")[1].split("`")[0]
    (record,) = [r for r in caplog.records if r.getMessage() == "/incident failed"]
    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == request_id and "RuntimeError: kaboom" in line["traceback"]


def test_when_slack_is_down_the_incident_exists_and_the_post_follows(slack_bot, slack_double, store):
    slack_double.fail("chat.postMessage", times=2, status=503)
    bot, client = slack_bot()
    client.command("/incident", "open db down")
    eventually(lambda: store.recent_incidents(10))
    assert store.incident(1).title == "db down" and store.incident(1).thread_ts is None
    client.command("/incident", "ack #1")
    posts = slack_double.wait_for("chat.postMessage", 2, timeout=20)
    assert "thread_ts" not in posts[0].args and posts[1].args["thread_ts"] == store.incident(1).thread_ts
    assert len([c for c in slack_double.called("chat.postMessage") if c.args.get("_failed")]) == 2


def test_429_is_retried_after_retry_after(slack_bot, slack_double):
    slack_double.fail("chat.postMessage", status=429, retry_after=1)
    bot, client = slack_bot()
    client.command("/incident", "open db down")
    (post,) = slack_double.wait_for("chat.postMessage")
    failed = [c for c in slack_double.called("chat.postMessage") if c.args.get("_failed")]
    assert len(failed) == 1 and post.at - failed[0].at >= 1.0


def test_a_permanent_failure_is_told_to_the_caller(slack_bot, slack_double, store):
    slack_double.fail("chat.postMessage", error="channel_not_found")
    bot, client = slack_bot()
    client.command("/incident", "open db down")
    (told,) = slack_double.wait_for("response_url")
    assert "channel_not_found" in blocks_text(told)
    assert store.incident(1).title == "db down"


def test_not_in_channel_joins_and_retries(slack_bot, slack_double):
    slack_double.fail("chat.postMessage", error="not_in_channel")
    bot, client = slack_bot()
    client.command("/incident", "open db down")
    slack_double.wait_for("chat.postMessage")
    assert slack_double.called("conversations.join")[0].args["channel"] == "C0INCIDNT"


def test_commands_typed_elsewhere_answer_in_the_thread_and_point_there(slack_bot, slack_double, make_config):
    bot, client = slack_bot(make_config('[slack]\nincident_channel = "C0123INC0"'))
    client.command("/incident", "open db down", channel="C0RANDOM1")
    (announcement,) = slack_double.wait_for("chat.postMessage")
    assert announcement.args["channel"] == "C0123INC0"
    (pointer,) = slack_double.wait_for("response_url")
    assert "Posted in the thread of incident #1 in <#C0123INC0>" in blocks_text(pointer)
    client.command("/incident", "status", channel="C0123INC0")
    posts = slack_double.wait_for("chat.postMessage", 2)
    assert posts[1].args["thread_ts"] == announcement.args.get("ts", "1700000000.000001")


def test_past_the_budget_the_whole_answer_is_uploaded_in_the_thread(slack_bot, slack_double, store):
    bot, client = slack_bot()
    client.command("/incident", "open db down")
    slack_double.wait_for("chat.postMessage")
    incident = eventually(lambda: store.incident(1).thread_ts and store.incident(1))
    events = [Event(id=n, incident_id=1, at=incident.opened_at, user="U0ALICE01", kind="update",
                    text=f"note {n} " + "x" * 60, data={}) for n in range(3000)]
    data = {**incident_command.card_data(incident, incident.opened_at), "events": events, "only": []}
    bot.worker.outbox.post(Reply("incident_timeline", data, "thread", incident_id=1),
             Invocation("incident", "timeline", "U0ALICE01", "C0INCIDNT", "r1"))
    slack_double.wait_for("files.completeUploadExternal")
    (post,) = slack_double.wait_for("chat.postMessage", 2)[1:]
    assert len(post.args["blocks"]) == 50
    (uploaded,) = slack_double.uploads.values()
    assert b"note 2999" in uploaded and b"note 0 " in uploaded
    complete = slack_double.called("files.completeUploadExternal")[0]
    assert complete.args["thread_ts"] == incident.thread_ts


def test_healthz(slack_bot, store):
    bot, client = slack_bot()
    ok = httpx.get(f"{client.url}/healthz")
    assert ok.status_code == 200 and ok.json()["status"] == "ok"
    with unwritable(store) as why:
        down = httpx.get(f"{client.url}/healthz", timeout=10)
    assert down.status_code == 503 and down.json()["status"] == "error"
    assert why in down.json()["database"]
    assert httpx.get(f"{client.url}/healthz").status_code == 200


def test_a_resent_socket_mode_envelope_opens_one_incident(slack_bot, slack_double, store):
    bot, _ = slack_bot()
    body = slash_command("/incident", "open socket mode db down").decode()
    first = bot.app.dispatch(BoltRequest(body=body, mode="socket_mode"))
    again = bot.app.dispatch(BoltRequest(body=body, mode="socket_mode"))
    assert first.status == again.status == 200
    slack_double.wait_for("chat.postMessage")
    time.sleep(0.3)
    assert len(store.recent_incidents(10)) == 1 and len(slack_double.called("chat.postMessage")) == 1


def test_the_app_home_shows_open_incidents_and_its_buttons_work(slack_bot, slack_double, store, make_config):
    bot, client = slack_bot()
    client.command("/incident", "open home page down --sev 1")
    slack_double.wait_for("chat.postMessage")
    response = client.post(home_opened(user="U0BOB0001"), {"Content-Type": "application/json"})
    assert response.status_code == 200
    (view,) = slack_double.wait_for("views.publish")
    assert view.args["user_id"] == "U0BOB0001" and view.args["view"]["type"] == "home"
    text = json.dumps(view.args["view"]["blocks"], ensure_ascii=False)
    assert "home page down" in text and "/incident ack #1" in text and "This week so far" in text

    client.post(home_button_click("/incident resolve #1", user="U0BOB0001"))
    eventually(lambda: store.incident(1).status == "resolved")
    refreshed = slack_double.wait_for("views.publish", 2)[1]
    assert "No incident is open" in json.dumps(refreshed.args["view"]["blocks"])
    assert slack_double.called("chat.postMessage")[-1].args["thread_ts"] == store.incident(1).thread_ts


def test_a_refusal_from_the_app_home_comes_as_a_direct_message(slack_bot, slack_double, store, make_config):
    bot, client = slack_bot(make_config('[access]\n"/incident" = { users = ["U0ALICE01"] }'))
    client.command("/incident", "open db down")
    slack_double.wait_for("chat.postMessage")
    client.post(home_button_click("/incident resolve #1", user="U0MALLORY"))
    (opened,) = slack_double.wait_for("conversations.open")
    assert opened.args["users"] == "U0MALLORY"
    direct = slack_double.wait_for("chat.postMessage", 2)[1]
    assert direct.args["channel"] == "D0MALLORY" and "not allowed" in blocks_text(direct)
    assert store.incident(1).status == "open"


def test_a_long_command_shows_its_progress_in_one_message_updated_in_place(slack_bot, slack_double, store):
    def steps(ctx, args):
        for step in ("one", "two"):
            ctx.progress(Reply("error", {"command": "steps", "message": f"step {step}", "usage": None, "incidents": []},
                               "thread", incident_id=1))
            time.sleep(0.2)
        return Reply("error", {"command": "steps", "message": "all done", "usage": None, "incidents": []},
                     "thread", incident_id=1)

    bot, client = slack_bot(commands={"steps": Command("steps", "steps", "", lambda text: text, steps)})
    client.command("/incident", "open db down")
    slack_double.wait_for("chat.postMessage")
    client.command("/steps", "")
    posts = slack_double.wait_for("chat.postMessage", 2)
    assert "step one" in posts[1].args["text"] and posts[1].args["thread_ts"] == store.incident(1).thread_ts
    final = slack_double.wait_for("chat.update", where=lambda c: "all done" in c.args.get("text", ""))[-1]
    assert final.args["ts"] == "1700000000.000002" and final.args["channel"] == "C0INCIDNT"
    time.sleep(0.3)
    assert len(slack_double.called("chat.postMessage")) == 2


def test_an_answer_that_cannot_be_rendered_is_an_apology_with_the_request_id(slack_bot, slack_double):
    unrenderable = Command("broken", "broken", "", lambda text: text,
                           lambda ctx, args: Reply("error", {"command": "broken"}))  # the template needs more
    bot, client = slack_bot(commands={"broken": unrenderable})
    client.command("/broken", "")
    (answer,) = slack_double.wait_for("response_url")
    assert "Something went wrong running `/broken`" in blocks_text(answer) and "Request id `" in blocks_text(answer)


def test_a_command_cut_short_by_a_restart_is_told_so(slack_bot, slack_double):
    def slow_run(ctx, args):
        time.sleep(5)
        return Reply("restarting", {"command": "slow"})

    slow = Command("slow", "slow", "", lambda text: text, slow_run)
    bot, client = slack_bot(commands={"slow": slow})
    client.command("/slow", "")
    time.sleep(0.3)
    started = time.monotonic()
    bot.worker.stop(2)
    assert time.monotonic() - started < 3
    (told,) = slack_double.wait_for("response_url")
    assert "`/slow` was cut short" in blocks_text(told)


# -- hostile requests: refused with one short log line, never the body, never a traceback --------------

SECRET_IN_BODY = "hooks.slack.com/commands/T0/1/SECRETBODYMARKER"


@pytest.mark.parametrize("case, status", [
    ("unsigned", 401), ("bad-signature", 401), ("timestamp-not-a-number", 401), ("timestamp-huge", 401),
    ("raw-0xff", 401), ("signed-0xff", 400), ("payload-not-json", 401), ("signed-payload-not-json", 400),
    ("signed-json-not-an-object", 400), ("content-length-not-a-number", 400), ("too-large", 413),
])
def test_a_malformed_or_forged_request_is_refused_in_one_line(slack_bot, slack_double, store, caplog, case, status):
    bot, client = slack_bot()
    body = slash_command("/incident", "open must not exist", response_url=f"https://{SECRET_IN_BODY}")
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if case == "bad-signature":
        headers.update(sign("wrong", body))
    elif case.startswith("timestamp-"):
        headers.update(sign(client.secret, body), **{"X-Slack-Request-Timestamp":
                                                       "soon" if case.endswith("number") else "9" * 40})
    elif case.endswith("0xff"):
        body = b"\xff\xfe" + body
        headers.update(sign(client.secret, body) if case.startswith("signed") else {})
    elif case.endswith("payload-not-json"):
        body = b"payload=%7Bnot+json+" + SECRET_IN_BODY.encode()
        headers.update(sign(client.secret, body) if case.startswith("signed") else sign("wrong", body))
    elif case == "signed-json-not-an-object":
        body = b'["' + SECRET_IN_BODY.encode() + b'"]'
        headers.update(sign(client.secret, body), **{"Content-Type": "application/json"})
    elif case == "content-length-not-a-number":
        headers.update(sign(client.secret, body), **{"Content-Length": "12x"})
    elif case == "too-large":
        body = body + b"&pad=" + b"x" * (5 << 20)
        headers.update(sign(client.secret, body))
    caplog.set_level(logging.DEBUG)
    if case == "content-length-not-a-number":      # what an HTTP client would not send
        port = int(client.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"POST /slack/events HTTP/1.0\r\n" + b"".join(
                f"{k}: {v}\r\n".encode() for k, v in headers.items()) + b"\r\n" + body)
            assert sock.recv(100).split()[1] == str(status).encode()
    else:
        response = httpx.post(f"{client.url}/slack/events", content=body, headers=headers, timeout=10)
        assert response.status_code == status
    time.sleep(0.2)
    assert store.recent_incidents(10) == []
    lines = [JsonFormatter().format(record) for record in caplog.records]
    assert not any("traceback" in json.loads(line) for line in lines)
    assert not any("SECRETBODYMARKER" in line or "must+not+exist" in line for line in lines)
    rejected = [line for line in lines if "rejected a request" in line]
    assert len(rejected) == 1 and len(rejected[0]) < 400


def test_a_log_line_is_bounded_after_redaction():
    record = logging.makeLogRecord({"msg": "got %s", "args": ("x" * 100_000 + " password=hunter2",),
                                    "levelname": "WARNING", "name": "slack_bolt.App"})
    line = json.loads(JsonFormatter().format(record))
    assert len(line["msg"]) <= 4000 and line["msg"].endswith("…")


# -- secrets typed into incidents: redacted at the door, stored redacted -------------------------------

def test_a_secret_in_a_title_or_note_is_in_no_table_and_no_message(slack_bot, slack_double, store, tmp_path):
    from bot import export

    bot, client = slack_bot()
    secret = "glpat-Zq81xK3mP9qR2sT5vW8y"
    client.command("/incident", f"open checkout down, token {secret} leaked")
    client.command("/incident", f"update rotated {secret}")
    client.command("/incident", f"resolve revoked postgres://app:{secret}@db/x")
    slack_double.wait_for("chat.update")
    slack_double.wait_for("chat.postMessage", 3)
    time.sleep(0.3)
    calls = json.dumps([c.args for c in slack_double.calls], ensure_ascii=False)
    assert secret not in calls and "[redacted:gitlab_token]" in calls
    for table in ("incidents", "events", "outbox"):
        assert secret not in json.dumps(table_rows(store, table), default=str), table
    for output_format in ("csv", "json"):
        out = __import__("io").StringIO()
        export.write(store, None, output_format, out)
        assert secret not in out.getvalue() and "[redacted:" in out.getvalue()


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)   # a PostgreSQL database is never created by us
def test_healthz_never_creates_the_database(slack_bot, store):
    bot, client = slack_bot()
    assert httpx.get(f"{client.url}/healthz").status_code == 200
    for suffix in ("", "-wal", "-shm"):
        Path(store.path + suffix).unlink(missing_ok=True)
    response = httpx.get(f"{client.url}/healthz")
    assert response.status_code == 503 and response.json()["status"] == "error"
    assert not Path(store.path).exists()


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)   # PostgreSQL's: tests/test_replicas.py
def test_a_command_the_sqlite_inbox_cannot_take_is_answered_so_and_taken_once_it_can(
        slack_bot, slack_double, store, monkeypatch):
    bot, client = slack_bot()
    monkeypatch.setattr("bot.store.sqlite.BUSY_TIMEOUT_MS", 300)
    blocker = sqlite3.connect(store.path + "-inbox", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        refused = client.command("/incident", "open while the inbox is locked")
        assert refused.status_code == 200 and "database is unavailable" in refused.text
        assert httpx.get(f"{client.url}/healthz", timeout=10).status_code == 503
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    taken = client.command("/incident", "open once the inbox takes it")
    assert taken.status_code == 200 and taken.text == ""
    eventually(lambda: [incident.title for incident in store.recent_incidents(5)] == ["once the inbox takes it"])


def test_a_private_answer_too_long_for_slack_says_where_its_file_went(slack_bot, slack_double):
    def huge(ctx, args):
        return Reply("error", {"command": "huge", "message": "\n".join(f"line {i} " + "x" * 2900 for i in range(60)),
                               "usage": None, "incidents": []})

    bot, client = slack_bot(commands={"huge": Command("huge", "", "", lambda text: text, huge)})
    client.command("/huge", "")
    (answer,) = slack_double.wait_for("response_url")
    note = answer.args["blocks"][-1]["elements"][0]["text"]
    assert "in your direct messages with the bot" in note and "attached" not in note
    (opened,) = slack_double.wait_for("conversations.open")
    assert opened.args["users"] == "U0ALICE01"
    (upload,) = slack_double.wait_for("files.completeUploadExternal")
    assert upload.args["channel_id"] == "D0ALICE01"


def test_a_refusal_never_tells_you_to_ask_yourself(store, clock, make_config):
    from bot.access import Access
    from bot.dispatch import Dispatcher
    from bot.render import Renderer
    from commands import registry

    config = make_config('[access]\n"/incident" = { users = ["U0ALICE01", "U0BOB0001"], channels = ["C0INCIDNT"] }\n'
                         '"/mttr" = { users = ["U0ALICE01"], usergroups = ["S0ONCALL1"] }\n')
    dispatcher = Dispatcher(store, config, registry(), clock, Access(config.access, lambda group: set()))
    renderer = Renderer(config.timezone, clock)

    def refusal(user, command, channel):
        reply = dispatcher.run(Invocation(command, "list", user, channel, "t"))
        return renderer.text(reply.template, reply.data)

    alice_elsewhere = refusal("U0ALICE01", "incident", "C0RANDOM1")
    assert "in this channel" in alice_elsewhere and "Ask" not in alice_elsewhere and "#C0INCIDNT" in alice_elsewhere
    mallory = refusal("U0MALLORY", "incident", "C0RANDOM1")
    assert "Ask @U0ALICE01, @U0BOB0001." in mallory
    alice_mttr = dispatcher.run(Invocation("mttr", "", "U0ALICE01", "C0RANDOM1", "t"))
    assert alice_mttr.template != "denied"
    carol = refusal("U0CAROL01", "mttr", "C0RANDOM1")
    assert "Ask @U0ALICE01, someone in @S0ONCALL1." in carol


def test_a_private_answer_through_response_url_survives_slack_hiccups(slack_bot, slack_double):
    slack_double.fail("response_url", status=429, retry_after=1)      # slack_sdk waits Retry-After
    slack_double.fail("response_url", status=503)                      # the outbox retries later
    bot, client = slack_bot()
    client.command("/incident", "list")
    (answer,) = slack_double.wait_for("response_url", timeout=20)
    failed = [c for c in slack_double.called("response_url") if c.args.get("_failed")]
    assert len(failed) == 2 and answer.at - failed[0].at >= 1.0 and "No incident is open" in blocks_text(answer)


# -- Slack-native: dates each reader sees in their own zone --------------------------------------------

def test_times_are_slack_dates_with_a_fallback_and_the_card_shows_the_start_not_a_frozen_age(
        slack_bot, slack_double, make_config):
    bot, client = slack_bot(make_config('timezone = "Europe/Berlin"'), use_clock=True)
    client.command("/incident", "open db down --started 14:20")            # 13:20 UTC; the clock says 14:00 UTC
    (announcement,) = slack_double.wait_for("chat.postMessage")
    started = "<!date^1795526400^{date_short_pretty} {time}|14:20 CET>"
    card = blocks_text(announcement)
    assert f"*Ongoing since* {started}" in card and "Ongoing for" not in card
    assert announcement.args["text"] == "🔴 Incident #1: db down"           # the notification: plain text
    client.command("/incident", "timeline")
    timeline = slack_double.wait_for("chat.postMessage", 2)[1]
    assert "<!date^1795528800^{date_short_pretty} {time}|15:00 CET>" in blocks_text(timeline)   # opened now


# -- Slack-native: the open form (a modal) and the Declare incident shortcut ------------------------------

SERVICES = '[services.api]\n[services.web]\n'


def test_open_without_a_title_opens_the_form_and_its_submission_opens_the_incident(
        slack_bot, slack_double, store, make_config):
    bot, client = slack_bot(make_config(SERVICES))
    client.command("/incident", "open --sev 2", trigger_id="77.1.form")
    (opened,) = slack_double.wait_for("views.open")
    view = opened.args["view"]
    assert opened.args["trigger_id"] == "77.1.form" and view["type"] == "modal"
    assert view["callback_id"] == "form:incident" and view["title"]["text"] == "Declare an incident"
    assert json.loads(view["private_metadata"])["channel"] == "C0INCIDNT"
    fields = {block["block_id"]: block for block in view["blocks"] if block["type"] == "input"}
    assert list(fields) == ["title", "severity", "service", "started", "lead"]
    assert fields["lead"]["element"]["type"] == "users_select" and fields["lead"]["optional"]
    assert fields["severity"]["element"]["initial_option"]["value"] == "2"        # what was typed, filled in
    assert [o["value"] for o in fields["service"]["element"]["options"]] == ["api", "web"]
    assert fields["service"]["optional"] and fields["started"]["optional"] and not fields["title"]["optional"]
    assert store.recent_incidents(10) == []

    response = client.post(view_submission(view, {"title": "checkout 500s", "severity": {"option": "1"},
                                                  "service": {"option": "api"}, "started": "",
                                                  "lead": {"user": "U0CAROL01"}}, user="U0BOB0001"))
    assert response.status_code == 200 and response.text == ""                    # the modal closes
    (announcement,) = slack_double.wait_for("chat.postMessage")
    assert announcement.args["channel"] == "C0INCIDNT" and "checkout 500s" in blocks_text(announcement)
    incident = store.incident(1)
    assert (incident.title, incident.severity, incident.service, incident.opened_by, incident.lead) == \
        ("checkout 500s", 1, "api", "U0BOB0001", "U0CAROL01")
    assert [(e.kind, e.user, e.data.get("new")) for e in store.events(1)] == \
        [("opened", "U0BOB0001", None), ("lead", "U0BOB0001", "U0CAROL01")]     # handed as /incident lead hands it
    assert "<@U0CAROL01>" in blocks_text(announcement)
    assert not slack_double.called("response_url")


def test_a_form_with_errors_stays_open_and_says_which_field(slack_bot, slack_double, store, make_config):
    bot, client = slack_bot(make_config(SERVICES))
    client.command("/incident", "open")
    view = slack_double.wait_for("views.open")[0].args["view"]
    response = client.post(view_submission(view, {"title": "   ", "severity": {"option": "3"},
                                                  "service": {"option": "nope"}, "started": "in a bit",
                                                  "lead": {"user": "bogus"}}))
    assert response.status_code == 200
    answer = response.json()
    assert answer["response_action"] == "errors" and set(answer["errors"]) == {"title", "service", "started", "lead"}
    assert "needs a title" in answer["errors"]["title"] and "Unknown service 'nope'" in answer["errors"]["service"]
    assert "is not a time" in answer["errors"]["started"]
    time.sleep(0.3)
    assert store.recent_incidents(10) == [] and not slack_double.called("chat.postMessage")


def test_the_console_still_asks_for_a_title(local):
    reply = local().invoke("/incident open")
    assert reply.outcome.value == "usage" and "An incident needs a title" in reply.data["message"]


def test_declare_incident_on_a_message_quotes_and_links_it_in_the_new_thread(
        slack_bot, slack_double, store, make_config):
    bot, client = slack_bot(make_config(SERVICES))
    secret = "glpat-Zq81xK3mP9qR2sT5vW8y"
    alert = f"Checkout p99 > 2s on api <@U0BOSS001>\nrunbook token {secret}\n" + "x" * 3000
    response = client.post(message_shortcut("declare_incident", alert, trigger_id="88.1.short"))
    assert response.status_code == 200 and response.text == ""
    (opened,) = slack_double.wait_for("views.open")
    view = opened.args["view"]
    assert opened.args["trigger_id"] == "88.1.short" and secret not in json.dumps(opened.args)
    shown = json.dumps(view["blocks"], ensure_ascii=False)
    assert "From a message* by <@U0CAROL01>" in shown and "&lt;@U0BOSS001&gt;" in shown and "[redacted:" in shown
    title = next(b for b in view["blocks"] if b.get("block_id") == "title")["element"]["initial_value"]
    assert title == "Checkout p99 > 2s on api <@U0BOSS001>"                      # its first line, offered
    assert len(view["private_metadata"]) <= 3000

    client.post(view_submission(view, {"title": "checkout slow", "severity": {"option": "2"}, "started": "",
                                       "service": {"option": "api"}}, user="U0BOB0001"))
    posts = slack_double.wait_for("chat.postMessage", 2)
    announcement, quote = posts
    assert announcement.args["channel"] == "C0ALERTS1" and "thread_ts" not in announcement.args
    assert quote.args["thread_ts"] == store.incident(1).thread_ts
    (permalink,) = slack_double.called("chat.getPermalink")
    assert (permalink.args["channel"], permalink.args["message_ts"]) == ("C0ALERTS1", "1699999999.000100")
    text = blocks_text(quote)
    assert "<@U0BOB0001> declared #1 from <https://oncall-test.slack.com/archives/C0ALERTS1/p1699999999000100|this message>" \
        in text and "by <@U0CAROL01>" in text
    assert ":\\n> Checkout p99 &gt; 2s on api &lt;@U0BOSS001&gt;\\n&gt; runbook token [redacted:" in text   # each line quoted
    assert "…" in text and secret not in text
    opened_event = store.events(1)[0]
    assert opened_event.kind == "opened" and opened_event.data["quote"]["link"].endswith("p1699999999000100")
    assert secret not in json.dumps(opened_event.data)


def test_declare_incident_on_a_tools_alert_quotes_its_attachment(slack_bot, slack_double, store):
    bot, client = slack_bot()
    client.post(message_shortcut("declare_incident", "", author=None,
                                 attachments=[{"fallback": "[FIRING] HighErrorRate api", "color": "danger"}]))
    view = slack_double.wait_for("views.open")[0].args["view"]
    assert "From a message*, quoted" in json.dumps(view["blocks"])                # no author: a bot posted it
    assert [b["block_id"] for b in view["blocks"] if b["type"] == "input"] == ["title", "severity", "started", "lead"]
    client.post(view_submission(view, {"title": "api errors", "severity": {"option": "3"}, "started": ""}))
    quote = slack_double.wait_for("chat.postMessage", 2)[1]
    assert "[FIRING] HighErrorRate api" in blocks_text(quote)


def test_a_form_slack_would_not_open_is_told_to_whoever_asked(slack_bot, slack_double, store):
    slack_double.fail("views.open", error="expired_trigger_id")
    bot, client = slack_bot()
    client.command("/incident", "open")
    (told,) = slack_double.wait_for("response_url")
    assert "I could not open the form (`views_open: expired_trigger_id`); try again" in blocks_text(told)
    assert store.recent_incidents(10) == []
