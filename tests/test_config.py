from datetime import timedelta
from pathlib import Path

import pytest

from bot import config as config_module
from bot.config import ConfigError
from commands import registry, sections
from commands.alerts.settings import AlertSettings
from commands.deploys.settings import DeploySettings
from commands.logs.settings import LogSettings
from commands.probe.settings import ProbeSettings

ROOT = Path(__file__).resolve().parent.parent


def test_the_example_config_is_valid(monkeypatch):
    monkeypatch.setenv("API_DATABASE_URL", "postgresql://app:secret@db.internal/app")
    monkeypatch.setenv("ALERTMANAGER_TOKEN", "am-token")
    monkeypatch.setenv("GRAFANA_WEBHOOK_PASSWORD", "grafana-password")
    config = config_module.load(ROOT / "oncall.example.toml", registry(), sections())
    api = config.services["api"]
    assert config.timezone.key == "Europe/Berlin"
    assert config.slack.incident_channel == "C0123INC"
    assert (config.slack.summary_weekday, config.slack.summary_time.hour) == (0, 9)
    assert DeploySettings.of(api).suspect_window == timedelta(minutes=60)
    assert LogSettings.of(api).sources["command"] == ("journalctl", "-u", "api", "-o", "cat")
    probes = ProbeSettings.of(api).probes
    assert probes["db"].dsn == "postgresql://app:secret@db.internal/app"
    assert probes["health"].expect_status == 200
    alerts = AlertSettings.of(config)
    assert [(s.name, s.kind, s.token, s.password) for s in alerts.sources] == [
        ("prom", "alertmanager", "am-token", None), ("grafana", "grafana", None, "grafana-password")]
    assert alerts.opens({"severity": "critical"}) and not alerts.opens({"severity": "warning"})


def test_a_missing_optional_file_gives_embedded_defaults(tmp_path):
    config = config_module.load(tmp_path / "absent.toml", registry(), sections())
    assert config.timezone.key == "UTC" and config.services == {} and config.source == "embedded defaults"


def test_a_missing_required_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="absent.toml: no such file"):
        config_module.load(tmp_path / "absent.toml", registry(), sections(), required=True)


@pytest.mark.parametrize("text, message", [
    ('timezon = "UTC"', r"oncall.toml: timezon: unknown key \(did you mean 'timezone'\?\)"),
    ('timezone = "Europe/Berln"', "oncall.toml: timezone: unknown time zone 'Europe/Berln'"),
    ("timezone = 3", "oncall.toml: timezone: must be a string, not a number"),
    ('[slack]\nincident_channel = "#incidents"', "slack.incident_channel: '#incidents' is not a Slack channel ID"),
    ('[slack]\nsummary_at = "monday 9am"', "slack.summary_at: 'monday 9am' is not a weekday and time"),
    ('[access]\n"/log" = { users = ["U012AB3CD"] }', r'access."/log": not a command; \[access\] keys are commands'),
    ('[access]\n"/incident" = { users = ["dana"] }', "access.\"/incident\".users: 'dana' is not a Slack user ID"),
    ('[access]\n"/incident" = { groups = ["S0ONCALL"] }', r"access.\"/incident\".groups: unknown key \(did you mean 'usergroups'"),
    ('[services.api]\nsuspect_window = "an hour"', "services.api.suspect_window: 'an hour' is not a duration"),
    ('[services.api]\ndeploy = "tags"', "services.api.deploy: 'tags' is not one of merges, commits"),
    ('[services.api]\nlog_format = "xml"', "services.api.log_format: 'xml' is not one of auto, json, text, access"),
    ('[services.api]\nlogs = "/var/log/api.log"', "services.api.logs: must be a list of non-empty strings"),
    ('[services.api.probes.db]\nkind = "postgres"\ndsn = "x"\ntimout = "2s"',
     r"services.api.probes.db.timout: unknown key \(did you mean 'timeout'\?\)"),
    ('[services.api.probes.db]\nkind = "postgres"', "services.api.probes.db.dsn: missing; a postgres probe needs dsn"),
    ('[services.api.probes.db]\nkind = "mongo"', "services.api.probes.db.kind: 'mongo' is not one of postgres"),
    ('[services.api.probes.db]\ndsn = "x"', "services.api.probes.db.kind: missing"),
    ('[services.api.probes.db]\nkind = "postgres"\nurl = "x"', "services.api.probes.db.url: not used by a postgres probe"),
    ('[services.api.probes.t]\nkind = "tcp"\naddress = "db"', "services.api.probes.t.address: 'db' is not host:port"),
    ('[services.api.probes.c]\nkind = "redis"\nurl = "redis://x"\nexpect_status = 200',
     "services.api.probes.c.expect_status: only http probes"),
    ('[services.api.probes.h]\nkind = "http"\nurl = "http://x"\nexpect_status = 999',
     "services.api.probes.h.expect_status: must be a whole number from 100 to 599"),
    ('[services.api.probes.h]\nkind = "http"\nurl = "http://x"\ntimeout = "0s"',
     "services.api.probes.h.timeout: must be longer than zero"),
    ('[services.api.probes.db]\nkind = "postgres"\ndsn = "${ONCALL_TEST_UNSET_VAR}"',
     "services.api.probes.db.dsn: environment variable ONCALL_TEST_UNSET_VAR is not set"),
    ("[services]\napi = 3", "services.api: must be a table, not a number"),
    ("timezone = ", "oncall.toml: not valid TOML"),
])
def test_every_problem_is_one_line_naming_file_and_key(make_config, tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as raised:
        make_config(text)
    assert "\n" not in str(raised.value)
    assert str(raised.value).startswith(f"{tmp_path / 'oncall.toml'}: ")


def test_env_vars_are_expanded(make_config, monkeypatch):
    monkeypatch.setenv("ONCALL_TEST_DSN", "mysql://root:pw@127.0.0.1/test")
    config = make_config('[services.api.probes.db]\nkind = "mysql"\ndsn = "${ONCALL_TEST_DSN}"\ntimeout = "1s"')
    probe = ProbeSettings.of(config.services["api"]).probes["db"]
    assert probe.dsn == "mysql://root:pw@127.0.0.1/test" and probe.timeout == timedelta(seconds=1)


def _deep(kind: str) -> str:
    return "x = " + ("[" * 5000 + "]" * 5000 if kind == "arrays" else "{a = " * 3000 + "1" + "}" * 3000)


@pytest.mark.parametrize("text, problem", [
    ('[services.api]\nrepo = "~nouser-9f8e7d/x"', "services.api.repo: '~nouser-9f8e7d/x': the home directory"),
    ('[services.api.probes.web]\nkind = "http"\nurl = "http://[::1/"', "services.api.probes.web.url: not a valid URL"),
    ("[redaction]\npatterns = { id = 'x{99999999999}' }", "redaction.patterns.id: not a valid regular expression"),
    ("[redaction]\npatterns = { id = '(a+)+$' }", "redaction.patterns.id: a repetition inside a repetition"),
    ("[redaction]\npatterns = { id = '(x|[a-z]*)*y' }", "redaction.patterns.id: a repetition inside a repetition"),
    ("[redaction]\npatterns = { id = '(?<=k)v' }", "redaction.patterns.id: cannot run in linear time"),
    (_deep("arrays"), "nested"), (_deep("tables"), "nested"),
    ("x = " + "[" * 40 + "]" * 40, "nested more than 16 deep"),
    ('timezone = "' + "x" * 500_000 + '"', "timezone: unknown time zone 'xxxx"),
    ('timezone = "' + "x" * 2_000_000 + '"', "larger than 1024 KB"),
])
def test_hostile_values_are_one_line_errors(make_config, text, problem):
    with pytest.raises(ConfigError) as error:
        make_config(text)
    assert problem in str(error.value) and "\n" not in str(error.value) and len(str(error.value)) <= 300


@pytest.mark.parametrize("kind", ["device", "fifo", "directory"])
def test_only_a_regular_file_is_read_as_the_config(tmp_path, kind):
    import os
    import subprocess
    import sys

    path = {"device": Path("/dev/zero"), "fifo": tmp_path / "fifo", "directory": tmp_path}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    with pytest.raises(ConfigError, match="not a regular file"):
        config_module.load(path, registry(), sections(), required=True)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ONCALL_")}, "ONCALL_CONFIG": str(path),
           "ONCALL_DB": str(tmp_path / "o.db")}
    result = subprocess.run([sys.executable, "-m", "bot", "run", "/incident list"], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "not a regular file" in result.stderr


def test_the_outbox_retention_is_a_duration(make_config):
    assert make_config("").slack.outbox_retention == timedelta(days=30)
    assert make_config('[slack]\noutbox_retention = "7d"').slack.outbox_retention == timedelta(days=7)
    with pytest.raises(ConfigError, match="slack.outbox_retention"):
        make_config('[slack]\noutbox_retention = "soon"')
