"""Entries, not lines: grouping of every stack's traces, signatures, and the known causes.

The fixtures under tests/data/logs/ copy the shapes of real traces: Node/Express, Python
(Django, Flask, gunicorn, uwsgi), PHP/Laravel, Java/Spring Boot, Go, Ruby, nginx, and the
loghub samples of Apache, OpenStack and Zookeeper logs (logpai/loghub).
"""

from __future__ import annotations

import random
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from commands.logs import causes, reading
from commands.logs.analysis import analyse, collapsed, mask
from commands.logs.reading import BackwardFile, LogFile, SourcesRead
from commands.logs.records import BackwardGrouper, Dialect, decode, detect, forward_records
from commands.logs.report import CauseContext, EventGroups

DATA = Path(__file__).parent / "data" / "logs"


NOW = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)


def forward(batches: list[list[bytes]], dialect: Dialect) -> list[list[bytes]]:
    return [lines for completed in forward_records(iter(batches), dialect) for lines in completed]


def records_of(path: Path) -> list:
    data = path.read_bytes().split(b"\n")
    dialect = detect(data, Dialect(now=NOW))
    return [decode(lines, path.name, dialect) for lines in forward([data], dialect)]


def events_of(path: Path, *, app_paths: tuple[str, ...] = (), limit: int = 10, silenced=frozenset()):
    folder = EventGroups(app_paths)
    for record in reversed(records_of(path)):        # a scan meets the newest entries first
        if record.level is not None and record.level >= 40:
            folder.add(record)
    return folder.events(limit, CauseContext("api", app_paths, silenced, {"db": "postgres", "cache": "redis"}))


# (fixture, the newest event's exception contains, its cause, how many error events)
CASES = [
    ("node/unhandled_rejection.log", "[UnhandledPromiseRejection: This error originated", "node.unhandled_rejection",
     1),
    ("node/unhandled_rejection_warning.log", "Unhandled promise rejection", "node.unhandled_rejection", 2),
    ("node/headers_sent.log", "Error [ERR_HTTP_HEADERS_SENT]: Cannot set headers", "node.headers_sent", 1),
    ("node/undefined_access.log", "TypeError: Cannot read properties of undefined (reading 'split')",
     "node.undefined_access", 1),
    ("node/pool_knex.log", "KnexTimeoutError: Knex: Timeout acquiring a connection", "node.pool_exhausted", 1),
    ("node/pool_sequelize.log", "SequelizeConnectionAcquireTimeoutError: Operation timeout",
     "node.pool_exhausted", 1),
    ("node/pool_pg.log", "Error: timeout exceeded when trying to connect", "node.pool_exhausted", 1),
    ("node/pool_mongoose.log", "MongoWaitQueueTimeoutError", "node.pool_exhausted", 1),
    ("python/django_view.log", "IndexError: list index out of range", "python.uncaught_exception", 1),
    ("python/flask_chained.log", "shop.payments.PaymentError: provider answered without an id",
     "python.uncaught_exception", 1),
    ("python/migration_missing.log", 'django.db.utils.ProgrammingError: relation "billing_invoice" does not exist',
     "python.migration_missing", 1),
    ("python/migration_sqlite.log", "no such table: accounts_profile", "python.migration_missing", 1),
    ("python/template_missing.log", "TemplateDoesNotExist: reports/weekly_v2.html", "python.template_missing", 1),
    ("python/wsgi_gunicorn.log", "Reason: App failed to load.", "python.wsgi_config", 3),
    ("python/wsgi_uwsgi.log", "ModuleNotFoundError: No module named 'acme.settings'", "python.wsgi_config", 1),
    ("python/unknown_error.log", "ValueError: SKU AB-1234 has a negative stock level", None, 1),
    ("php/syntax_error.log", "PHP Parse error:  syntax error, unexpected token", "php.syntax_error", 1),
    ("php/laravel_app_key.log", "No application encryption key has been specified.", "php.env_missing", 1),
    ("php/laravel_db_credentials.log", "SQLSTATE[HY000] [1045] Access denied", "php.env_missing", 1),
    ("php/storage_permission.log", "could not be opened in append mode", "php.storage_permission", 1),
    ("php/autoload_missing.log", "Failed opening required '/var/www/html/vendor/autoload.php'",
     "php.autoload_missing", 1),
    ("java/npe_controller.log", "java.lang.NullPointerException: Cannot invoke", "java.npe", 1),
    ("java/bean_config.log", "APPLICATION FAILED TO START", "java.bean_config", 1),
    ("java/hibernate_mapping.log", "Schema-validation: missing column [loyalty_points]", "java.hibernate_mapping", 2),
    ("java/oom.log", "java.lang.OutOfMemoryError: Java heap space", "java.oom", 2),
    ("infra/db_psycopg.log", 'port 5432 failed: Connection refused', "infra.db_unreachable", 1),
    ("infra/db_node.log", "connect ECONNREFUSED 10.0.4.21:5432", "infra.db_unreachable", 1),
    ("infra/db_java.log", "Connection to db.internal:5432 refused", "infra.db_unreachable", 2),
    ("infra/redis_python.log", "Error 111 connecting to cache.internal:6379", "infra.redis_unreachable", 1),
    ("infra/redis_node.log", "connect ECONNREFUSED 10.0.4.30:6379", "infra.redis_unreachable", 1),
    ("infra/nginx_error.log", "upstream prematurely closed connection", "infra.upstream_nginx", 3),
    ("other/access.log", "502 GET /api/orders", "infra.upstream_nginx", 3),
    ("other/go_panic.log", "panic: runtime error: invalid memory address", "go.nil_pointer", 1),
    ("other/ruby_crash.log", "Net::ReadTimeout", "infra.upstream_timeout", 2),
]


@pytest.mark.parametrize("name, exception, cause, count", CASES, ids=[case[0] for case in CASES])
def test_real_traces_get_their_cause(name, exception, cause, count):
    events = events_of(DATA / name)
    assert len(events) == count
    newest = events[0]
    assert exception in newest.exception
    assert (newest.cause.id if newest.cause else None) == cause
    if newest.cause:
        assert newest.cause.evidence in newest.text
        assert newest.cause.next_step and "{" not in newest.cause.next_step


def test_the_catalog_ids_are_the_stable_ones():
    """Ids are a contract (scripts read them, configs silence them): the 19 first ones and the 15
    added for issue 11, in the catalog's order (the first cause that matches wins)."""
    assert causes.known_ids() == [
        "node.pool_exhausted", "node.headers_sent", "node.heap_oom", "node.undefined_access",
        "python.wsgi_config", "python.migration_missing", "python.template_missing", "python.recursion",
        "php.syntax_error", "php.env_missing", "php.storage_permission", "php.autoload_missing",
        "java.oom", "java.hibernate_mapping", "java.bean_config", "java.npe",
        "go.nil_pointer", "ruby.no_method_error", "dotnet.null_reference",
        "db.deadlock", "db.lock_timeout", "redis.oom", "redis.readonly",
        "infra.redis_unreachable", "infra.db_unreachable", "infra.disk_full", "infra.too_many_open_files",
        "infra.dns_failure", "infra.tls_error", "infra.upstream_nginx", "infra.upstream_timeout", "k8s.oomkilled",
        "node.unhandled_rejection", "python.uncaught_exception",
    ]


def test_warnings_deprecations_404s_and_info_are_not_errors():
    assert events_of(DATA / "other/noise.log") == []
    records = records_of(DATA / "other/noise.log")
    deprecation = next(r for r in records if "DeprecationWarning" in r.text)
    assert deprecation.lines[1] == "  return datetime.utcnow()"     # its source line stays with it
    assert deprecation.level == 30


def test_a_guess_is_never_forced():
    events = events_of(DATA / "python/unknown_error.log")
    assert events[0].cause is None
    assert "SKU AB-1234" in events[0].text


def test_a_silenced_cause_is_not_suggested():
    events = events_of(DATA / "java/npe_controller.log", silenced=frozenset({"java.npe"}))
    assert events[0].cause is None


def test_the_next_step_names_the_service_probe_and_frame():
    db = events_of(DATA / "infra/db_psycopg.log")[0].cause
    assert "/probe api db" in db.next_step
    headers = events_of(DATA / "node/headers_sent.log")[0].cause
    assert "/srv/app/src/routes/users.js:31" in headers.next_step


def test_repeats_fold_by_signature_with_numbers_and_ids_masked():
    events = events_of(DATA / "python/django_view.log")
    assert events[0].count == 2
    assert str(events[0].first_seen) == "2026-11-24 14:02:09.903000+00:00"
    assert str(events[0].last_seen) == "2026-11-24 14:02:14.551000+00:00"
    assert "2210" in events[0].text                     # the newest occurrence is the one shown
    assert events[0].frame == "/srv/api/src/acme/orders/views.py:48 in get"
    assert mask("user 5f0c2d3e-8f8e-4b7a-9d55-0a1b2c3d4e5f at 10.0.4.21:5432 took 12.5 ms, obj 0x7f3a") == \
        "user <id> at <ip> took <n> ms, obj <hex>"


def test_access_log_errors_fold_by_status_and_path():
    events = events_of(DATA / "other/access.log")
    assert [(e.exception, e.count) for e in events] == [
        ("502 GET /api/orders", 2), ("504 POST /api/checkout", 1), ("500 GET /api/users/2210", 2)]


def test_framework_frames_collapse_but_exception_lines_stay():
    record = next(r for r in records_of(DATA / "java/hibernate_mapping.log") if "Caused by" in r.text)
    analysis = analyse(record, ("com.acme.",))
    shown = collapsed(record, analysis, ("com.acme.",))
    for line in record.lines:
        if "Exception" in line and not line.startswith("\tat"):
            assert line in shown
    assert "com.acme.shop.ShopApplication.main" in shown
    python = next(r for r in records_of(DATA / "python/django_view.log") if r.level == 40)
    shown = collapsed(python, analyse(python, ("src/acme/",)), ("src/acme/",))
    assert "… 12 framework lines" in shown
    assert 'File "/srv/api/src/acme/orders/views.py", line 48, in get' in shown
    assert shown.endswith("IndexError: list index out of range")
    assert collapsed(python, analyse(python, ()), ()) == python.text     # no app_paths: nothing hidden


@pytest.mark.parametrize("name", sorted(str(p.relative_to(DATA)) for p in DATA.glob("*/*.log")))
def test_reading_backwards_groups_like_reading_forwards(name, monkeypatch):
    """Whatever the block size, the backward reader's entries are the forward reader's."""
    path = DATA / name
    data = path.read_bytes().split(b"\n")
    dialect = detect(data)
    forwards = forward([data[:-1] if data[-1] == b"" else data], dialect)
    generator = random.Random(name)
    for _ in range(5):
        monkeypatch.setattr(reading, "BLOCK", generator.choice([16, 64, 300, 4096]))
        monkeypatch.setattr(reading, "MAX_BLOCK", reading.BLOCK * 4)
        reader = BackwardFile(LogFile(path, path.name), SourcesRead())
        grouper = BackwardGrouper(dialect)
        backward = []
        for span in reader.spans():
            backward.extend(grouper.feed(span, generator.random() < 0.7)[0])
        backward.extend(grouper.finish())
        reader.close()
        kept = [record for record in reversed(backward)]
        assert all(record in forwards for record in kept)


@pytest.mark.parametrize("name, headed, expected_errors", [
    ("Apache_2k.log", True, sum(1 for line in (DATA / "loghub/Apache_2k.log").open() if "] [error] " in line)),
    # each line starts with the name of the file loghub took it from, then the time
    ("OpenStack_2k.log", False, 0),
    ("Zookeeper_2k.log", True, sum(1 for line in (DATA / "loghub/Zookeeper_2k.log").open() if " - ERROR " in line)),
])
def test_loghub_samples_parse_with_times_and_levels(name, headed, expected_errors):
    path = DATA / "loghub" / name
    records = records_of(path)
    dialect = detect(path.read_bytes().split(b"\n"))
    assert (dialect.fmt, dialect.headed) == ("text", headed)
    assert len(records) == 2000                         # one entry per line: none is a continuation
    assert all(record.timestamp is not None for record in records)
    assert all(record.level is not None for record in records)
    errors = [record for record in records if record.level >= 40]
    assert len(errors) == expected_errors
    assert all(causes.match(r.lines, None, silenced=frozenset(), service="x", frame=None, probes={}) is None
               for r in errors)


def test_the_catalog_ships_as_package_data():
    """Read through importlib.resources, so it must be listed as package data for a wheel to carry it."""
    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert "causes.toml" in pyproject["tool"]["setuptools"]["package-data"]["commands.logs"]


def test_a_malformed_catalog_entry_is_named():
    entry = {"id": "node.x", "stack": "Node", "title": "t", "next_step": "see {nothing}",
             "evidence": [{"keyword": "x"}]}
    with pytest.raises(causes.CatalogError, match="cause node.x: next_step may use only"):
        causes.parse_catalog({"cause": [entry]})
    with pytest.raises(causes.CatalogError, match="cause node.x: unknown key 'evidense'"):
        causes.parse_catalog({"cause": [{**entry, "evidense": []}]})
    with pytest.raises(causes.CatalogError, match="bad regex"):
        causes.parse_catalog({"cause": [{**entry, "next_step": "ok", "evidence": [{"keyword": "x", "regex": "("}]}]})


def test_a_record_stays_bounded_whatever_its_lines(tmp_path):
    lines = [b"2026-11-24 14:00:00 ERROR app boom"] + [b"  " + b"z" * 20_000] * 450
    record = forward([lines], Dialect(headed=True))[0]
    assert record[0] == lines[0] and len(record) == 401 and b"lines cut" in record[300]
    assert sum(len(line) for line in record) < 401 * 17_000
    path = tmp_path / "app.log"
    path.write_bytes(b"\n".join(lines) + b"\n")
    reader = BackwardFile(LogFile(path, "app.log"), SourcesRead())
    grouper = BackwardGrouper(Dialect(headed=True))
    backward = [records for span in reader.spans() for records in grouper.feed(span, True)[0]]
    backward += grouper.finish()
    assert len(backward) == 1 and sum(len(line) for line in backward[0]) < 401 * 17_000
