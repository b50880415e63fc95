"""No traceback, ever: every command's text fuzzed (hypothesis), through the dispatcher and through
`run`, with text and JSON output; and the real CLI given bytes that are not UTF-8.

A reply is fine when it is not the "something went wrong" apology (the dispatcher turns any exception
into it) and renders as Slack blocks, as text and as JSON. The examples are derandomized and few
(a few hundred in all) so the suite stays fast; a failure is replayed by the same run.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot import config as config_module
from bot.command import Outcome
from bot.console import Terminal
from bot.redact import redact_data
from bot.serialize import json_default, to_json
from bot.store.sqlite import SqliteStore
from commands import registry, sections
from probe_servers import closed_port

NOW = datetime.now(UTC).replace(microsecond=0)

# Pieces that broke commands before, or that parsers treat specially; mixed with arbitrary text.
PIECES = ["#1", "#2", "#0", "#99999999999999999999", "#-1", "#①", "--sev", "--sev=²", "²", "①", "٣", "１２",
          "--last", "--last=①", "--since", "6h", "25m ago", "14:05", "99:99", "2026-W47", "2026-W99", "--weeks",
          "report", "report report report", "this-week", "last-week", "open", "ack", "update", "resolve", "close",
          "reopen", "status", "list", "timeline", "recent", "api", "all", "db", "help", "--help", '"', "“", "'",
          "—sev", "–last", "--grep", "/(a+)+$/", "/[/", "--level", "error", "--status", "5xx", "--request-id",
          "--branch", "main", "--cause", "deploy:abc1234", "HEAD", "v1.0", "-rf", "--", "=", "\ud800", "\udcff",
          "\x00", "\ue000", "\ue003user\ue001U1\ue003", "\u2028", "\n", "\t", "`", "<!channel>", "x" * 400,
          "password=hunter2", "9" * 40]
TEXT = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=10)), max_size=7).map(" ".join)
EXAMPLES = {"incident": 120, "mttr": 80, "deploys": 40, "logs": 40, "probe": 30, "triage": 15}


def _git(repo: Path, *args: str) -> None:
    when = (NOW - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    env = {**os.environ, "GIT_AUTHOR_NAME": "dana", "GIT_AUTHOR_EMAIL": "dana@acme.io", "GIT_COMMITTER_NAME": "dana",
           "GIT_COMMITTER_EMAIL": "dana@acme.io", "GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when}
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Terminal:
    """A service with a git repository, a log and two probes; two incidents, one resolved."""
    root = tmp_path_factory.mktemp("fuzz")
    repo = root / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "app.py").write_text("print('hi')\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "Merge pull request #7 from acme/fix")
    _git(repo, "tag", "v1.0")
    stamp = (NOW - timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S,000")
    (root / "app.log").write_text(f"{stamp} ERROR app boom\nTraceback (most recent call last):\n"
                                  f'  File "/srv/app.py", line 1, in x\nValueError: bad\n')
    path = root / "oncall.toml"
    path.write_text(textwrap.dedent(f"""
        [services.api]
        repo = "{repo}"
        logs = ["{root}/app.log"]
        [services.api.probes.db]
        kind = "tcp"
        address = "127.0.0.1:{closed_port()}"
        timeout = "1s"
        [services.api.probes.host]
        kind = "host"
        [triage]
        deadline = "5s"
    """))
    config = config_module.load(path, registry(), sections(), required=True)
    local = Terminal(SqliteStore(root / "oncall.db"), config, registry(), lambda: NOW)
    local.invoke("/incident open db down --service api")
    local.invoke("/incident open checkout slow")
    local.invoke("/incident resolve #2 fixed")
    return local


def _check(runner: Terminal, line: str) -> None:
    reply = runner.invoke(line)
    assert reply.template != "internal_error", line
    runner.renderer.slack(reply.template, reply.data)
    to_json(redact_data(reply.data, default=json_default))
    for as_json in (False, True):
        out, err = io.StringIO(), io.StringIO()
        code = runner.run(line, as_json=as_json, out=out, err=err)
        assert code in (0, 1, 2) and "Something went wrong" not in out.getvalue() + err.getvalue(), line
        if code == 1 and reply.outcome is Outcome.FAILED:
            assert "request id" not in err.getvalue()


@pytest.mark.parametrize("command", sorted(EXAMPLES))
def test_no_command_text_makes_a_traceback(runner, command):
    assert set(EXAMPLES) == set(registry())     # every command is fuzzed

    @settings(max_examples=EXAMPLES[command], derandomize=True, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(TEXT)
    def fuzz(text: str) -> None:
        _check(runner, f"/{command} {text}")

    fuzz()


@pytest.mark.parametrize("line", [
    b"/incident open db \xff\xfe down", b"/incident update #1 \xed\xa0\x80 note", b"/logs api --grep \xff",
    b"/mttr --weeks \xc2\xb2", b"/deploys api --last \xe2\x91\xa0", b"/incident ack #99999999999999999999",
    b"/mttr " + b"report " * 3000, b"/\xff",
])
def test_the_real_cli_answers_bytes_that_are_not_utf8(tmp_path, line):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ONCALL_"))}
    env["ONCALL_DB"] = str(tmp_path / "oncall.db")
    for extra in ([], ["--json"]):
        result = subprocess.run([sys.executable, "-m", "bot", "run", *extra, line], cwd=tmp_path, env=env,
                                capture_output=True, timeout=60)
        assert result.returncode in (0, 1, 2) and b"Traceback" not in result.stderr + result.stdout, result


# -- config files ----------------------------------------------------------------------------------------

SECTIONS = ["", "[slack]", "[services.api]", "[services.api.probes.web]", "[services.api.probes.db]", "[redaction]",
            "[redaction.patterns]", '[access."/incident"]', "[access]", "[triage]", "[services]", "[[services]]"]
KEYS = ["timezone", "incident_channel", "summary_channel", "summary_at", "repo", "branch", "deploy", "paths",
        "suspect_window", "commit_url", "fetch_timeout", "logs", "log_command", "log_format", "app_paths",
        "silence_causes", "kind", "url", "dsn", "address", "timeout", "connect_timeout", "expect_status", "method",
        "expect_body", "expect_json", "headers", "ca_file", "tls_days", "degraded_ms", "follow_redirects",
        "connections_pct", "mounts", "emails", "patterns", "users", "usergroups", "channels", "deadline", "x"]
STRINGS = ["UTC", "Europe/Berlin", "~nouser/x", "http://[::1/", "http://127.0.0.1:1/", "x{99999999999}", "(a+)+$",
           "C0123ABCD", "mon 09:00", "2s", "0s", "99999999999d", "merges", "tags:v*", "tcp", "http", "host", "any",
           "${NOPE}", "-rf", "ext::sh", "../../etc/passwd", "/dev/zero", "\u0000", "\ud800", "x" * 2000]
VALUES = st.recursive(
    st.one_of(st.sampled_from(STRINGS).map(lambda text: f'"{text}"'), st.text(max_size=8).map(repr),
              st.integers().map(str), st.sampled_from(["true", "false", "1e999", "nan", "-0", "2026-11-24"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3).map(lambda items: f"[{', '.join(items)}]"),
                            st.lists(st.tuples(st.sampled_from(KEYS), inner), max_size=3).map(
                                lambda pairs: "{" + ", ".join(f"{k} = {v}" for k, v in pairs) + "}")),
    max_leaves=6)
LINES = st.one_of(st.sampled_from(SECTIONS), st.tuples(st.sampled_from(KEYS), VALUES).map(" = ".join),
                  st.text(max_size=20))
CONFIGS = st.lists(LINES, max_size=12).map("\n".join)


@settings(max_examples=300, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(CONFIGS)
def test_no_config_file_makes_a_traceback(tmp_path, text):
    path = tmp_path / "oncall.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        config_module.load(path, registry(), sections(), required=True)
    except config_module.ConfigError as error:
        assert "\n" not in str(error) and len(str(error)) <= config_module.MAX_MESSAGE
