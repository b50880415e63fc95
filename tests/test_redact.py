"""Secrets never leave the bot: the rules of bot.redact, and every exit they are hooked into."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot import redact
from bot.config import ConfigError
from bot.jsonlog import JsonFormatter
from bot.redact import RedactionSettings, Redactor
from bot.render import Renderer
from commands.probe.redact import redact as probe_redact

AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
SLACK_TOKEN = "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"
GITHUB_TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ"
       ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")


@pytest.fixture(autouse=True)
def default_redaction():
    redact.use(RedactionSettings())
    yield
    redact.use(RedactionSettings())


@pytest.mark.parametrize("text, secret, expected", [
    ("could not connect to postgres://api:s3cr3t-Pw@db.internal:5432/api", "s3cr3t-Pw",
     "could not connect to postgres://api:[redacted:password]@db.internal:5432/api"),
    ("redis://:hunter2@cache:6379/0", "hunter2", "redis://:[redacted:password]@cache:6379/0"),
    ("Authorization: Bearer abcdefghijklmnop.qrstuv", "abcdefghijklmnop", "Authorization: [redacted:authorization]"),
    ('{"Cookie": "sessionid=8f2k3j; csrftoken=zzz"}', "8f2k3j", '{"Cookie": "[redacted:cookie]"}'),
    ("{'HTTP_AUTHORIZATION': 'Token 1234567890abcdef'}", "1234567890abcdef",
     "{'HTTP_AUTHORIZATION': '[redacted:authorization]'}"),
    ("retrying with bearer 0123456789abcdefXYZ", "0123456789abcdefXYZ", "retrying with bearer [redacted:token]"),
    (f"token {JWT} rejected", JWT, "token [redacted:jwt] rejected"),
    (f"using key {AWS_KEY}", AWS_KEY, "using key [redacted:aws_key]"),
    (f"slack said invalid_auth for {SLACK_TOKEN}", SLACK_TOKEN, "slack said invalid_auth for [redacted:slack_token]"),
    (f"clone with {GITHUB_TOKEN}", GITHUB_TOKEN, "clone with [redacted:github_token]"),
    ("GET /login?user=bob&password=hunter2&next=/ HTTP/1.1", "hunter2",
     "GET /login?user=bob&password=[redacted:password]&next=/ HTTP/1.1"),
    ('{"user": "bob", "password": "p\\"w0rd", "api_key": "k-123"}', "w0rd",
     '{"user": "bob", "password": "[redacted:password]", "api_key": "[redacted:api_key]"}'),
    ('msg="{\\"secret\\":\\"abc123\\",\\"n\\":1}"', "abc123", 'msg="{\\"secret\\":\\"[redacted:secret]\\",\\"n\\":1}"'),
    ("host=db user=app password=s3cret dbname=api", "s3cret",
     "host=db user=app password=[redacted:password] dbname=api"),
    ("PGPASSWORD='two words' psql", "two words", "PGPASSWORD='[redacted:password]' psql"),
    ("paid with 4111 1111 1111 1111 today", "4111 1111", "paid with [redacted:card] today"),
    ("amex 378282246310005, mc 5555-5555-5555-4444", "378282246310005", "amex [redacted:card], mc [redacted:card]"),
])
def test_secrets_become_their_kind(text, secret, expected):
    redacted = redact.redact(text)
    assert secret not in redacted
    assert redacted == expected


SLACK_REFRESH_TOKEN = "xoxe-1-My0xLTExNjA5MzY3NTk3Mi0xMTYwOTM2NzU5ODgtMjE4MDk5MjA2MTYwMi0yMTcw"
SLACK_ROTATING_TOKEN = "xoxe.xoxp-1-Mi0yLTExNjA5MzY3NTk3Mi0xMTYwOTM2NzU5ODgtMjE4MDk5MjA2MTYwMi0y"
RESPONSE_URL = "https://hooks.slack.com/commands/T0123ABCD/1234567890123/AbCdEfGhIjKlMnOpQrStUvWx"
ACTIONS_URL = "https://hooks.slack.com/actions/T0123ABCD/1234567890123/ZyXwVuTsRqPoNmLkJiHgFeDc"


@pytest.mark.parametrize("text, secret, expected", [
    ("password: hunter2", "hunter2", "password: [redacted:password]"),
    ("login failed, Password: s3cr3t!", "s3cr3t!", "login failed, Password: [redacted:password]"),
    ("secret: 9f8e7d6c", "9f8e7d6c", "secret: [redacted:secret]"),
    ("token: abcd1234 expired", "abcd1234", "token: [redacted:token] expired"),
    ("api_key: k-123456", "k-123456", "api_key: [redacted:api_key]"),
    ("refresh_token: rt-0a1b2c3d", "rt-0a1b2c3d", "refresh_token: [redacted:token]"),
    ('password: "two words"', "two words", 'password: "[redacted:password]"'),
    ('{"pin_token": 42}', "42", '{"pin_token": [redacted:token]}'),   # a quoted key: short values too
    ("password = hunter2", "hunter2", "password = [redacted:password]"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI",
     "aws_secret_access_key = [redacted:api_key]"),
    (f"rotated {SLACK_REFRESH_TOKEN}", SLACK_REFRESH_TOKEN[8:], "rotated [redacted:slack_token]"),
    (f"got {SLACK_ROTATING_TOKEN} back", SLACK_ROTATING_TOKEN[8:], "got [redacted:slack_token] back"),
    ("x-api-key: 0123456789abcdef", "0123456789abcdef", "x-api-key: [redacted:api_key]"),
    ("X-API-Key: 0123456789abcdef\r\nAccept: */*", "0123456789abcdef",
     "X-API-Key: [redacted:api_key]\r\nAccept: */*"),
    (f"posting to {RESPONSE_URL}", "AbCdEfGhIj", "posting to https://[redacted:slack_webhook]"),
    (f"clicked, answer at {ACTIONS_URL}.", "ZyXwVuTsRq", "clicked, answer at https://[redacted:slack_webhook]."),
])
def test_loose_key_value_forms_tokens_and_slack_urls(text, secret, expected):
    redacted = redact.redact(text)
    assert secret not in redacted
    assert redacted == expected
    assert redact.redact(redacted) == redacted


def test_private_key_blocks_are_removed_whole_even_when_cut():
    block = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\nqh3k\n-----END RSA PRIVATE KEY-----"
    assert redact.redact(f"loaded {block}\nnext line") == "loaded [redacted:private_key]\nnext line"
    assert redact.redact("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA") == "[redacted:private_key]"


@pytest.mark.parametrize("text", [
    "order 4111111111111112 shipped",          # fails the Luhn check
    "ts=1700000000123 id=20261124140000123",    # Luhn may pass, but no card network starts so
    "KeyError: 'user_id' and max_tokens=100",   # a key mentioned, no secret assigned
    "Traceback (most recent call last):",
    "/api/users/1187 took 12ms",
    "Access denied for user 'root'@'localhost' (using password: YES)",
    "Access denied for user 'app'@'10.0.0.7' (using password: NO)",
    '{"password": null, "token": true}',
    "cache key=user_profile_1234 hit",
    "auth_method=client_credentials_v2",
    "bypass=true passenger=bob",
    "request from 8.8.8.8 and 10.0.0.7 took 12ms",
    "GET /users/bob@example.com 200",
    "deploy a1b2c3d4e5f6 by bob: bump sk-learn to 1.5",
])
def test_ordinary_text_is_left_alone(text):
    assert redact.redact(text) == text


@pytest.mark.parametrize("text", [
    "password reset email sent to user 42",
    "the token bucket is full",
    "token: 3 of 5 used",
    "rate limit: token = 12, burst = 20",
    "if password == confirmation: ok",
    "tokens: 1200 prompt, 300 completion",
    "secret rotation finished in 3s",
    "GET /api/tokens/refresh 200 12ms",
    "passwords must be 12 characters; yours has 8",
    "WARN api_key header missing on /v1/orders",
])
def test_ordinary_log_lines_mentioning_secrets_are_left_alone(text):
    assert redact.redact(text) == text


MYSQL_REFUSALS = [
    "(1045, \"Access denied for user 'app'@'10.0.3.12' (using password: YES)\")",
    "SQLSTATE[HY000] [1045] Access denied for user 'forge'@'10.0.3.12' (using password: NO) (Connection: mysql)",
    "127.0.0.1:3306: login refused: Access denied for user 'root'@'localhost' (using password: YES)",
]


@pytest.mark.parametrize("text", MYSQL_REFUSALS)
def test_mysql_says_whether_a_password_was_used_and_that_is_no_secret(text):
    """Whatever rules the redactor is made of (the frame's, and each probe's own), these stay whole."""
    assert redact.redact(text) == text
    assert probe_redact(text, frozenset({"hunter22"})) == text


def test_a_secret_in_parentheses_keeps_its_closing_parenthesis():
    assert redact.redact("login failed (using password: hunter22)") == "login failed (using password: [redacted:password])"
    assert redact.redact("retry (password=ab)") == "retry (password=[redacted:password])"


def test_redacting_twice_changes_nothing():
    once = redact.redact("password=hunter2 postgres://u:p@h/db Authorization: Basic dXNlcjpw")
    assert redact.redact(once) == once


def test_email_masking_and_extra_patterns_come_from_the_config(make_config):
    config = make_config("""
        [redaction]
        emails = true
        patterns = { customer_id = 'CUST-\\d{6}' }
    """)
    redactor = Redactor(config.redaction)
    assert redactor.redact("mail bob@example.com about CUST-123456") == \
        "mail [redacted:email] about [redacted:customer_id]"
    assert Redactor().redact("mail bob@example.com") == "mail bob@example.com"


@pytest.mark.parametrize("text, problem", [
    ("[redaction]\nemails = 'yes'", "redaction.emails: must be true or false"),
    ("[redaction]\npatterns = { id = '(' }", "redaction.patterns.id: not a valid regular expression"),
    ("[redaction]\npatterns = { id = 'x*' }", "matches empty text"),
    ("[redaction]\npatterns = { \"Bad Kind\" = 'x' }", "a kind is lowercase letters"),
    ("[redaction]\nmails = true", "unknown key (did you mean 'emails'?)"),
])
def test_bad_redaction_config_is_named(make_config, text, problem):
    with pytest.raises(ConfigError, match=re.escape(problem)):
        make_config(text)


def test_values_under_secret_keys_are_replaced_in_data():
    data = {"password": "x", "nested": [{"Token": "abc"}, "Bearer abcdefghijkl"], "count": 3, "ok": "fine"}
    assert redact.redact_data(data) == {
        "password": "[redacted:secret]", "nested": [{"Token": "[redacted:secret]"}, "Bearer [redacted:token]"],
        "count": 3, "ok": "fine"}


# -- every exit ---------------------------------------------------------------------------------------


def test_template_values_are_redacted_in_slack_blocks_and_text(clock):
    renderer = Renderer(ZoneInfo("UTC"), clock)
    data = {"command": "x", "message": "db at postgres://u:hunter2@db/x is down", "usage": None, "incidents": []}
    assert "hunter2" not in renderer.text("error", data)
    message = renderer.slack("error", data)
    assert "hunter2" not in json.dumps(message.blocks) and "[redacted:password]" in json.dumps(message.blocks)
    assert "hunter2" not in message.text


def test_our_json_log_lines_are_redacted():
    record = logging.makeLogRecord({"msg": "connecting to %s", "args": ("mysql://root:toor@db/app",),
                                    "levelname": "ERROR", "name": "t", "dsn": "x", "password": "p4ss"})
    try:
        raise RuntimeError(f"boom with {SLACK_TOKEN}")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    parsed = json.loads(line)
    assert "toor" not in line and SLACK_TOKEN not in line and "p4ss" not in line
    assert parsed["msg"] == "connecting to mysql://root:[redacted:password]@db/app"
    assert "[redacted:slack_token]" in parsed["traceback"]


def test_httpx_request_lines_to_a_response_url_are_redacted_in_our_log():
    # httpx logs each request at INFO; the outbox posts replies to Slack's response URL.
    record = logging.makeLogRecord({"msg": 'HTTP Request: %s %s "%s %d %s"', "levelname": "INFO", "name": "httpx",
                                    "args": ("POST", RESPONSE_URL, "HTTP/1.1", 200, "OK")})
    line = JsonFormatter().format(record)
    assert "AbCdEfGhIj" not in line and "T0123ABCD" not in line
    assert json.loads(line)["msg"] == 'HTTP Request: POST https://[redacted:slack_webhook] "HTTP/1.1 200 OK"'


def test_run_json_and_console_text_are_redacted(local, make_config):
    config = make_config("[redaction]\nemails = true\n")
    runner = local(config)
    runner.invoke("/incident open db down password=hunter2 mail ops@example.com")
    out, err = io.StringIO(), io.StringIO()
    assert runner.run("/incident status", as_json=True, out=out, err=err) == 0
    assert "hunter2" not in out.getvalue() and "ops@example.com" not in out.getvalue()
    assert "[redacted:password]" in out.getvalue()
    out = io.StringIO()
    runner.run("/incident status", as_json=False, out=out, err=err)
    assert "hunter2" not in out.getvalue() and "[redacted:email]" in out.getvalue()


def test_timeline_text_and_data_are_stored_redacted(store, clock):
    incident_id = store.insert_incident(title="t", severity=3, service=None, status="open", opened_by="U1",
                                        opened_at=clock(), started_at=clock(), channel="C1", announce_channel="C1")
    store.add_event(incident_id, at=clock(), user="U1", kind="logs", text=f"saw {AWS_KEY}",
                    data={"excerpt": "Authorization: Bearer abcdefghijklmnopq", "when": clock()})
    event = store.events(incident_id)[-1]
    assert AWS_KEY not in event.text and "[redacted:aws_key]" in event.text
    assert event.data["excerpt"] == "Authorization: [redacted:authorization]"
    assert event.data["when"] == "2026-11-24T14:00:00Z"


def test_the_real_cli_redacts_json_output(tmp_path: Path):
    config = tmp_path / "oncall.toml"
    config.write_text("[redaction]\npatterns = { ticket = 'TCK-[0-9]+' }\n")
    env = {"ONCALL_CONFIG": str(config), "ONCALL_DB": str(tmp_path / "o.db"), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-m", "bot", "run", "/incident open checkout down TCK-991 secret=abc"],
                   env=env, check=True, capture_output=True, timeout=60)
    shown = subprocess.run([sys.executable, "-m", "bot", "run", "--json", "/incident status #1"],
                           env=env, check=True, capture_output=True, text=True, timeout=60).stdout
    assert "TCK-991" not in shown and "[redacted:ticket]" in shown
    assert "secret=abc" not in shown and "secret=[redacted:secret]" in shown


# -- every kind, on a real-shaped sample (fake values in the real format) ------------------------------

HEX64 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
B64_88 = "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmE="

# One line per rule of detect-secrets (by its secret type): the scanner itself finds the secret in it.
SCANNER_SAMPLES = {
    "Artifactory Credentials": ["artifactory token AKCp8jQ8bnzXyT1uVr2wGh7sKdKkLmPoQr used",
                                "artifactory password AP6xYz3Wq9Lk2Mn8 used"],
    "AWS Access Key": ["key AKIAZ7Q3EXAMPLE4ABCD in env",
                       'aws_secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"'],
    "Azure Storage Account access key": [f"DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={B64_88}"],
    "Basic Auth Credentials": ["fetching https://deploy:Tr0ub4dor3@artifacts.internal/repo"],
    "Cloudant Credentials": [f'cloudant_password = "{HEX64}"', 'cl_apikey: "abcdefghijklmnopqrstuvwx"',
                             f"https://acme:{HEX64}@acme.cloudant.com/db",
                             "https://acme:abcdefghijklmnopqrstuvwx@acme.cloudant.com/db"],
    "Discord Bot Token": ["bot MTk4NjIyNDgzNDcxOTI1MjQ4.Cl2FMQ.ZnCjm1XVW7vRze4b7Cq4se7kKWs online"],
    "GitHub Token": ["clone with gho_16C7e42F292c6912E7710c838347Ae178B4a now"],
    "GitLab Token": ["push with glpat-xK3mP9qR2sT5vW8yZ1aB now", "runner GR1348941xK3mP9qR2sT5vW8yZ1aB",
                     "ci glcbt-a1_xK3mP9qR2sT5vW8yZ1aBcD", "mail glimt-xK3mP9qR2sT5vW8yZ1aBcDeFg",
                     "trigger glptt-0123456789abcdef0123456789abcdef01234567",
                     "agent glagent-" + "aB3dE5gH7j" * 5, "oauth gloas-" + "0123456789abcdef" * 4],
    "IBM COS HMAC Credentials": ['cos_hmac_secret_access_key = "' + "a1b2c3d4e5f6" * 4 + '"'],
    "IBM Cloud IAM Key": ['ibm_cloud_iam_api_key = "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5hJ7kL9mN"'],
    "JSON Web Token": [f"token {JWT} rejected"],
    "Mailchimp Access Key": ["mailchimp 0123456789abcdef0123456789abcdef-us12 ok"],
    "NPM tokens": ["//registry.npmjs.org/:_authToken=npm_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5"],
    "OpenAI Token": ["key sk-aB3dE5gH7jK9mN1pQ3sT5vW7yZT3BlbkFJaB3dE5gH7jK9mN1pQ3sT ok"],
    "Private Key": [f"-----BEGIN {kind}PRIVATE KEY{block}-----\nMHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5bkGK\n"
                    f"-----END {kind}PRIVATE KEY{block}-----"
                    for kind, block in (("", ""), ("RSA ", ""), ("DSA ", ""), ("EC ", ""), ("OPENSSH ", ""),
                                        ("PGP ", " BLOCK"))]
                   + ["---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----\nP2/56wAAAi4AAAA3aWYtbW9kbiB7c2lnbntyc2Et\n"
                      "---- END SSH2 ENCRYPTED PRIVATE KEY ----",
                      "PuTTY-User-Key-File-2: ssh-rsa\nEncryption: none\nPrivate-Lines: 1\nAAAAgQCPoTbHp+0Hm3wW"],
    "PyPI Token": ["twine pypi-AgEIcHlwaS5vcmc" + "aB3dE5gH7jK9mN1pQ3sT" * 4,
                   "test pypi-AgENdGVzdC5weXBpLm9yZw" + "aB3dE5gH7jK9mN1pQ3sT" * 4],
    "SendGrid API Key": ["sendgrid SG.aBcDeFgHiJkLmNoPqRsTuV.aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789aBcDeFg ok"],
    "Slack Token": [f"slack {SLACK_TOKEN}",
                    "https://hooks.slack.com/services/T0123ABCD/B0123ABCD/AbCdEfGhIjKlMnOpQrStUvWx"],
    "SoftLayer Credentials": ['softlayer_api_key = "' + "a1b2c3d4" * 8 + '"',
                              "https://api.softlayer.com/soap/v3/" + "a1b2c3d4" * 8],
    "Square OAuth Secret": ["square sq0csp-aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5hJ7kL9mN ok"],
    "Stripe Access Key": ["charge with sk_live_4eC39HqLyjWDarjtT1zdp7dc now"],
    "Telegram Bot Token": ["bot 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0 polling"],
    "Twilio API Key": ["account AC0123456789abcdef0123456789abcdef", "key SK0123456789abcdef0123456789abcdef"],
}


def test_every_rule_of_the_scanner_has_a_sample_it_finds_and_we_redact():
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    from detect_secrets.plugins.base import RegexBasedDetector
    from detect_secrets.plugins.ip_public import IPPublicDetector

    plugins = {name: plugin for name, plugin in get_mapping_from_secret_type_to_class().items()
               if issubclass(plugin, RegexBasedDetector) and plugin is not IPPublicDetector}
    assert set(plugins) == set(SCANNER_SAMPLES)    # a new rule of the scanner needs a sample here
    for name, samples in SCANNER_SAMPLES.items():
        found_by_pattern = set()
        for sample in samples:
            secrets = set(plugins[name]().analyze_string(sample))
            assert secrets, f"{name}: the scanner finds nothing in {sample!r}"
            redacted = redact.redact(sample)
            for secret in secrets:
                assert len(secret) < 8 or secret not in redacted, (name, sample, redacted)
            assert "[redacted:" in redacted
            found_by_pattern |= {p.pattern for p in plugins[name]().denylist if p.search(sample)}
        assert found_by_pattern == {p.pattern for p in plugins[name]().denylist}, f"{name}: a rule has no sample"


@pytest.mark.parametrize("text, secret, kind", [
    (f"DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={B64_88[:60]};EndpointSuffix=core.windows.net",
     B64_88[:60], "azure_key"),
    ("Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=aB3dE5gH7jK9mN1pQ3sT5vW7yZ9b=",
     "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9b", "azure_key"),
    ("GET https://acme.blob.core.windows.net/c/b.txt?sv=2022-11-02&sp=r&sig=Qm9vYmFyYmF6cXV4Zm9v%2Bcg%3D 403",
     "Qm9vYmFyYmF6cXV4Zm9v", "azure_sas"),
    ("stripe said no to sk_live_51HqLyjWDarjtT1zdp7dcXYZ8u2fF9eJx8a7b6c5d4e3f2g1h0i9j8k7l6m5n4o3p2q1r0s9t8u7 today",
     "XYZ8u2fF9eJx8a7b6c5d4e3f2g1h0", "stripe_key"),
    ("restricted key rk_live_4eC39HqLyjWDarjtT1zdp7dcAAA0 used", "4eC39HqLyjWDarjtT1zdp7dc", "stripe_key"),
    ("webhook secret whsec_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9b", "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9b", "stripe_key"),
    ("export NPM_TOKEN npm_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5 then", "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9b", "npm_token"),
    ("openai sk-proj-aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5hJ7kL9_xY-12 quota", "aB3dE5gH7jK9mN1pQ3sT5v", "openai_key"),
    ("openai sk-aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5hJ7 quota", "aB3dE5gH7jK9mN1pQ3sT5v", "openai_key"),
    ("maps key AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY denied", "9tSrke72PouQMnMX", "google_api_key"),
    ("client 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", "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9b", "google_oauth"),
    ("vault login hvs.CAESIJlU3bXAmPl3Ygo5Z5W2P8zQ4n5uGHVlZm9vYmFy ok", "CAESIJlU3bXAmPl3Ygo5", "vault_token"),
    ("sqlplus scott/Tiger123@orcl failed", "Tiger123", "password"),
    ("connect app/S3cret!@//db.internal:1521/XEPDB1", "S3cret!", "password"),
    ('{"user": "bob", "pass": "hunter2"}', "hunter2", "password"),
    ('{"user": "bob", "pwd": "hunter2"}', "hunter2", "password"),
    ("DB_PASS=hunter2 ./run", "hunter2", "password"),
    ("session_sig=7Hq2Lx9Pz4Wk8Rv3Tn6Yb1Mc5 expired", "7Hq2Lx9Pz4Wk8Rv3Tn6Yb1Mc5", "secret"),
    ('{"sessionId": "4f7c2a9e-1b3d-4f7a-9c1e-3b5d7f9a1c3e"}', "4f7c2a9e-1b3d", "secret"),
    ("contraseña: hunter22", "hunter22", "password"),
])
def test_kinds_without_a_scanner_rule_are_redacted_too(text, secret, kind):
    redacted = redact.redact(text)
    assert secret not in redacted and f"[redacted:{kind}]" in redacted
    assert redact.redact(redacted) == redacted


@pytest.mark.parametrize("secret_text", [
    "connect postgres://api:s3cr3t-Pw-long-enough@db.internal:5432/api now",
    "paid with 4111 1111 1111 1111 today",
    f"token {JWT} rejected",
    f"slack said invalid_auth for {SLACK_TOKEN}",
])
def test_an_excerpt_is_redacted_before_it_is_cut_at_any_length(secret_text):
    full = redact.redact(secret_text)
    secret_parts = [part for part in re.split(r"\W+", secret_text) if len(part) >= 4 and part not in full]
    for limit in range(1, len(secret_text) + 5):
        cut = redact.excerpt(secret_text, limit)
        assert len(cut) <= limit
        assert not any(part[:4] in cut for part in secret_parts), (limit, cut)
        assert "[redacted:" not in cut or re.search(r"\[redacted:\w+\]", cut)   # never half a mark


def test_a_private_key_cut_from_its_begin_line_is_still_a_key():
    body = "\n".join(["MIIEowIBAAKCAQEA7bq3kGz1vQ9dN0aJtq2xL8cYpR4sT1uVw3yZ6bC9dE2fH5jK"] * 20)
    tail = f"...\n{body}\n-----END RSA PRIVATE KEY-----\nnext line"
    assert redact.redact(tail) == "...\n[redacted:private_key]\nnext line"
    head = f"-----BEGIN RSA PRIVATE KEY-----\n{body[:200]}"
    assert redact.redact(head) == "[redacted:private_key]"


def test_a_long_text_is_searched_only_where_keywords_are_but_all_of_it():
    lines = [f"line {i} nothing to see" for i in range(2000)]
    lines[3] = "password=hunter2"
    lines[1999] = f"late {SLACK_TOKEN}"
    redacted = redact.redact("\n".join(lines)).splitlines()
    assert redacted[3] == "password=[redacted:password]" and redacted[1999] == "late [redacted:slack_token]"
    assert redacted[4] == lines[4] and len(redacted) == 2000

