"""The command line as users and scripts use it: run, console, manifest, startup errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from commands import registry

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "tests" / "data" / "slack" / "manifest.schema.1.0.0.json"


def oncall(tmp_path, *args, stdin=None, env=None, python_path=None):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ONCALL_"))}
    clean.update(env or {})
    if python_path:
        clean["PYTHONPATH"] = python_path
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=tmp_path, env=clean, input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_run_prints_and_exits_by_outcome(tmp_path):
    opened = oncall(tmp_path, "run", "/incident open db down --sev 2")
    assert opened.returncode == 0 and "Incident #1: db down" in opened.stdout and opened.stderr == ""
    assert (tmp_path / "oncall.db").exists()
    failed = oncall(tmp_path, "run", "/incident", "ack", "#7")
    assert failed.returncode == 1 and "There is no incident #7" in failed.stderr
    usage = oncall(tmp_path, "run", "/incident open")
    assert usage.returncode == 2 and "Usage: `/incident" in usage.stderr
    unknown = oncall(tmp_path, "run", "/nope")
    assert unknown.returncode == 2 and "There is no /nope command" in unknown.stderr


def test_run_json_prints_the_templates_data(tmp_path):
    oncall(tmp_path, "run", "/incident open db down")
    result = oncall(tmp_path, "run", "--json", "/incident ack #1")
    data = json.loads(result.stdout)
    assert data["incident"]["status"] == "acknowledged" and data["event"] == "acknowledged"
    assert data["incident"]["opened_at"].endswith("Z")
    trailing = oncall(tmp_path, "run", "/mttr this-week", "--json")
    assert json.loads(trailing.stdout)["resolved"] == 0
    bad = oncall(tmp_path, "run", "--json", "/mttr someday")
    assert bad.returncode == 2 and "is not a period" in json.loads(bad.stdout)["message"]


def test_console_runs_commands_as_typed_in_slack(tmp_path):
    session = "/incident open db down --sev 1\n/incident ack\nhello\nhelp\n/mttr\nquit\n/incident list\n"
    result = oncall(tmp_path, "console", stdin=session)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "── announcement of incident #1 ──" in out and "── thread of incident #1 ──" in out
    assert "acknowledged #1" in out and "Type a command as in Slack" in out and "/incident` — " in out
    assert "MTTR · " in out and "Open incidents" not in out  # nothing after quit runs


def test_console_and_run_need_no_config_and_no_slack(tmp_path):
    result = oncall(tmp_path, "console", stdin="/incident list\n")
    assert result.returncode == 0 and "No incident is open" in result.stdout


@pytest.mark.parametrize("args, env, message", [
    (["serve"], {}, "SLACK_BOT_TOKEN is not set"),
    (["serve"], {"SLACK_BOT_TOKEN": "xoxb-1"}, "SLACK_SIGNING_SECRET is not set"),
    (["socket"], {"SLACK_BOT_TOKEN": "xoxb-1"}, "SLACK_APP_TOKEN is not set"),
    (["serve"], {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "SLACK_API_URL": "slack.com/api"},
     "SLACK_API_URL: 'slack.com/api' is not an http(s) URL"),
    (["serve"], {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "PORT": "http"}, "PORT: 'http' is not a port"),
    (["run", "/mttr"], {"ONCALL_CONFIG": "missing.toml"}, "missing.toml: no such file"),
    (["run", "/mttr"], {"ONCALL_DB": "no/such/dir/x.db"}, "ONCALL_DB: no/such/dir/x.db: the directory no/such/dir does not exist"),
    (["run"], {}, "run needs a command"),
    (["manifest", "--http-url", "oncall.example.com/slack/events"], {}, "--http-url: 'oncall.example.com/slack/events' is not an http(s) URL"),
])
def test_startup_problems_are_one_line_and_exit_2(tmp_path, args, env, message):
    result = oncall(tmp_path, *args, env=env)
    assert result.returncode == 2 and message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_a_bad_config_names_file_and_key(tmp_path):
    (tmp_path / "oncall.toml").write_text('[services.api.probes.db]\nkind = "postgres"\ndsn = "x"\ntimout = "2s"\n')
    result = oncall(tmp_path, "run", "/mttr")
    assert result.returncode == 2
    assert result.stderr == "oncall-bot: oncall.toml: services.api.probes.db.timout: unknown key (did you mean 'timeout'?)\n"


@pytest.mark.parametrize("args, socket", [([], True), (["--socket"], True),
                                          (["--http-url", "https://bot.example.com/slack/events"], False)])
def test_the_manifest_is_valid_for_slack_and_lists_every_command(tmp_path, args, socket):
    result = oncall(tmp_path, "manifest", *args)
    manifest = json.loads(result.stdout)
    jsonschema.validate(manifest, json.loads(SCHEMA.read_text()))
    commands = manifest["features"]["slash_commands"]
    assert [c["command"] for c in commands] == [f"/{name}" for name in registry()]
    assert all(c["usage_hint"] == registry()[c["command"][1:]].usage for c in commands)
    assert manifest["settings"]["socket_mode_enabled"] is socket
    assert manifest["settings"]["interactivity"]["is_enabled"] is True     # buttons, the form, the shortcut
    assert [(s["type"], s["callback_id"], s["name"]) for s in manifest["features"]["shortcuts"]] == \
        [("message", "declare_incident", "Declare incident")]
    if not socket:
        assert {c["url"] for c in commands} == {"https://bot.example.com/slack/events"}
        assert manifest["settings"]["interactivity"]["request_url"] == "https://bot.example.com/slack/events"
    assert {"commands", "chat:write", "files:write"} <= set(manifest["oauth_config"]["scopes"]["bot"])
    # an outbox post in doubt is looked for in the history of the channel, private channel or DM it went to
    assert {"channels:history", "groups:history", "im:history"} <= set(manifest["oauth_config"]["scopes"]["bot"])


def test_the_console_script_is_the_same_as_python_m_bot(tmp_path):
    script = Path(sys.executable).parent / "oncall-bot"
    result = subprocess.run([str(script), "run", "/incident list"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60, env={k: v for k, v in os.environ.items() if not k.startswith("ONCALL_")})
    assert result.returncode == 0 and "No incident is open" in result.stdout


def test_templates_are_found_when_installed_without_editable_mode(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    work = tmp_path / "elsewhere"
    work.mkdir()
    probe = subprocess.run([sys.executable, "-c", "import importlib.resources as r; print(r.files('templates'))"],
                           cwd=work, env={**os.environ, "PYTHONPATH": str(target)}, capture_output=True, text=True)
    assert probe.stdout.strip() == str(target / "templates")
    result = oncall(work, "run", "/mttr help", python_path=str(target))
    assert result.returncode == 0 and "*Definitions*" in result.stdout


def test_oncall_now_sets_the_clock_of_the_whole_process(tmp_path):
    at = {"ONCALL_NOW": "2026-01-05T09:30:00Z"}
    opened = oncall(tmp_path, "run", "--json", "/incident open db down --started 10m ago", env=at)
    incident = json.loads(opened.stdout)["incident"]
    assert incident["opened_at"].startswith("2026-01-05T09:3") and incident["started_at"].startswith("2026-01-05T09:2")
    week = oncall(tmp_path, "summary", env=at)
    assert week.returncode == 0 and "2026-W01" in week.stdout    # last week, seen from 5 January
    bad = oncall(tmp_path, "run", "/incident list", env={"ONCALL_NOW": "yesterday"})
    assert bad.returncode == 2 and "ONCALL_NOW" in bad.stderr and "Traceback" not in bad.stderr


def test_a_deleted_database_is_a_startup_error_not_a_new_empty_one(tmp_path):
    assert oncall(tmp_path, "run", "/incident open db down").returncode == 0      # first run: created
    (tmp_path / "oncall.db").unlink()
    gone = oncall(tmp_path, "run", "/incident list")
    assert gone.returncode == 2 and not (tmp_path / "oncall.db").exists()
    assert gone.stderr.count("\n") == 1 and "the database is missing, but one was created there before" in gone.stderr
    (tmp_path / ".oncall.db.created").unlink()                                   # as the error says
    assert oncall(tmp_path, "run", "/incident list").returncode == 0


def test_serve_with_alert_sources_but_no_channel_for_them_is_one_line(tmp_path):
    (tmp_path / "oncall.toml").write_text('[alerts.sources.prom]\nkind = "alertmanager"\ntoken = "t"\n')
    result = oncall(tmp_path, "serve", env={"SLACK_BOT_TOKEN": "xoxb-1"})
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("oncall-bot: oncall.toml: alerts.channel: not set, nor [slack] incident_channel")


@pytest.mark.parametrize(("cpus", "workers"), [(1, 1), (2, 1), (3, 2), (64, 2)])
def test_serve_leaves_a_cpu_to_the_acks_unless_it_has_only_one(monkeypatch, cpus, workers):
    from bot.cli import default_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
    assert default_workers() == workers
