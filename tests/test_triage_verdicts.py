"""The ranking rules of /triage's verdict (commands/triage/verdicts.py), one by one."""

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from commands.triage.verdicts import Endpoint, frame_paths, naming_line, rank, touches

START = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)
PY_TRACE = '''Traceback (most recent call last):
  File "/srv/api/venv/lib/python3.11/site-packages/django/core/handlers/exception.py", line 55, in inner
  File "/srv/api/src/acme/payments/views.py", line 42, in pay
TypeError: unsupported operand type(s) for /: 'int' and 'NoneType\''''


def deploy(sha, minutes_before, *, suspect=True, author="dana", subject="change"):
    return SimpleNamespace(sha=sha, short_sha=sha[:7], service="api", author=author, subject=subject,
                           when=START - timedelta(minutes=minutes_before), suspect=suspect)


def error(text, *, cause=None, count=1, first_seen=START + timedelta(minutes=1)):
    return SimpleNamespace(text=text, stack="python", count=count, first_seen=first_seen, exception=text.splitlines()[-1],
                           cause=SimpleNamespace(id=cause, title=f"title of {cause}", evidence="the line",
                                                 next_step="the next step") if cause else None)


def probe(kind, status, *, target="db", detail="detail", error_class=None, **metrics):
    return SimpleNamespace(service="api", target=target, kind=kind, status=status, detail=detail, error=error_class,
                           metrics=metrics)


ENDPOINTS = {"db": Endpoint("db.internal", 5432, "db"), "cache": Endpoint("cache", 6379, "cache")}


def verdicts(**parts):
    defaults = dict(deploys=[], deploy_files={}, probes=[], host=[], errors=[], endpoints=ENDPOINTS,
                    first_error=None, started=START, suspect_window=timedelta(minutes=60), incident_id=12)
    return rank(**{**defaults, **parts})


def test_a_suspect_whose_files_are_in_the_traceback_ranks_above_one_whose_are_not():
    result = verdicts(deploys=[deploy("aaaaaaa1", 5), deploy("bbbbbbb2", 30)],
                      deploy_files={"aaaaaaa1": ["README.md"], "bbbbbbb2": ["src/acme/payments/views.py"]},
                      errors=[error(PY_TRACE)], first_error=START + timedelta(minutes=1))
    assert [(v.kind, v.summary) for v in result[:2]] == [("deploy", "Deploy bbbbbbb (api)"), ("deploy", "Deploy aaaaaaa (api)")]
    best = result[0]
    assert best.score > 80 and "frames are in a file it changed (src/acme/payments/views.py)" in best.evidence
    assert "31 m 00 s before the first error" in best.evidence
    assert best.action == ("Resolve: caused by bbbbbbb", "/incident resolve #12 --cause deploy:bbbbbbb2")


def test_closer_suspects_rank_higher_and_deploys_outside_the_window_do_not_count():
    result = verdicts(deploys=[deploy("far00001", 55), deploy("near0001", 2), deploy("old00001", 90, suspect=False)])
    assert [v.summary for v in result] == ["Deploy near000 (api)", "Deploy far0000 (api)"]
    assert result[0].score > result[1].score >= 50


def test_a_down_dependency_named_in_the_errors_ranks_high():
    redis_error = error("redis.exceptions.ConnectionError: Error 111 connecting to cache:6379. Connection refused.",
                        cause="infra.redis_unreachable", count=40)
    result = verdicts(probes=[probe("redis", "down", target="cache", detail="cache:6379 refused the connection")],
                      errors=[redis_error], deploys=[deploy("ccccccc1", 20)])
    top = result[0]
    assert (top.kind, top.score) == ("dependency", 90)
    assert top.evidence == ("cache:6379 refused the connection — the logs name it: “redis.exceptions.ConnectionError: "
                            "Error 111 connecting to cache:6379. Connection refused.”")
    assert top.since == redis_error.first_seen and top.summary == "Redis (api cache) is down"
    # the errors are explained by the dependency: not counted again as a known cause of their own
    assert [v.kind for v in result] == ["dependency", "deploy"]


def test_a_down_dependency_the_errors_do_not_name_ranks_lower_than_one_they_do():
    named = verdicts(probes=[probe("postgres", "down")], errors=[error(
        'psycopg.OperationalError: connection to server at "db.internal" (10.0.0.5), port 5432 failed',
        cause="infra.db_unreachable")])[0]
    unnamed = verdicts(probes=[probe("postgres", "down")])[0]
    degraded = verdicts(probes=[probe("postgres", "degraded")])[0]
    assert named.score > unnamed.score > degraded.score >= 40


def test_pool_exhaustion_is_named_with_its_numbers():
    exhausted = probe("postgres", "degraded", detail="97/100 connections in use (97%): the pool is nearly exhausted",
                      connections=97, max_connections=100)
    result = verdicts(probes=[exhausted], errors=[error("TimeoutError: ResourceRequest timed out", cause="node.pool_exhausted")])
    assert (result[0].kind, result[0].summary, result[0].score) == ("dependency", "Postgres pool exhausted: 97/100 connections", 80)
    assert "name it" not in result[0].evidence and result[1].kind == "known_cause"   # its error names no host
    named = verdicts(probes=[exhausted], errors=[error("FATAL: sorry, too many clients already (db.internal:5432)")])
    assert named[0].score == 90 and "the logs name it: “FATAL: sorry, too many clients already (db.internal:5432)”" in named[0].evidence
    refused = probe("postgres", "down", detail="no connection slot left", error_class="TooManyConnections")
    assert verdicts(probes=[refused])[0].summary == "Postgres pool exhausted"


def test_a_known_cause_without_a_failing_dependency_is_its_own_verdict():
    result = verdicts(errors=[error("ProgrammingError: relation \"orders\" does not exist", cause="python.migration_missing", count=23)])
    assert [(v.kind, v.score) for v in result] == [("known_cause", 59)]
    assert result[0].summary == "title of python.migration_missing (python.migration_missing) ×23"


def test_host_resources():
    host = [probe("host", "degraded", target="host", detail="disk / 97% full; load 0.1/CPU")]
    assert [(v.kind, v.summary, v.score) for v in verdicts(host=host)] == [("resource", "This host: disk / 97% full", 50)]
    host = [probe("host", "degraded", target="host", detail="load 4.50 per CPU of 2 (warning at 2) · memory 40%")]
    assert verdicts(host=host)[0].summary == "This host: load 4.50 per CPU of 2 (warning at 2)"


def test_with_no_evidence_it_says_so_rather_than_guessing():
    result = verdicts(probes=[probe("postgres", "ok")], host=[probe("host", "ok")], errors=[error("ValueError: x")],
                      deploys=[deploy("dddddd01", 200, suspect=False)])
    assert len(result) == 1 and (result[0].kind, result[0].score) == ("none", 0)
    assert result[0].summary == "No evidence points to a cause yet"
    assert "0 suspect deploys; 1 probes, 0 not ok; host ok; 1 kinds of error in the logs, 0 with a known cause" in result[0].evidence


@pytest.mark.parametrize("stack, changed, hit", [
    (PY_TRACE, "src/acme/payments/views.py", True),
    (PY_TRACE, "src/acme/payments/models.py", False),
    ("    at com.acme.orders.OrderController.create(OrderController.java:57)", "src/main/java/com/acme/orders/OrderController.java", True),
    ("    at createOrder (/app/src/routes/orders.js:41:13)", "src/routes/orders.js", True),
    ("#0 /var/www/app/Http/Controllers/OrderController.php(88): App\\\\Models\\\\Order->save()", "app/Http/Controllers/OrderController.php", True),
    ("main.handler(...)\n\t/go/src/acme/api/handler.go:31 +0x1d", "api/handler.go", True),
    ("app/models/order.rb:12:in `total'", "app/models/order.rb", True),
    (PY_TRACE, "src/acme/{billing => payments}/views.py", True),
])
def test_frames_and_changed_files(stack, changed, hit):
    assert touches(changed, frame_paths(stack)) is hit


NGINX = ('2026/11/24 14:01:{:02d} [error] 311#311: *{} upstream prematurely closed connection while reading response '
         'header from upstream, client: 10.0.0.7, server: shop, request: "GET /api/orders HTTP/1.1", '
         'upstream: "http://10.0.0.12:8080/api/orders", host: "shop.example.com"')


def test_probes_the_errors_do_not_mention_are_not_claimed_and_the_known_cause_keeps_its_rank():
    probes = [probe("http", "down", target="app", detail="127.0.0.1:18080 refused the connection"),
              probe("tcp", "down", target="socket", detail="127.0.0.1:19090 refused the connection"),
              probe("http", "down", target="health", detail="localhost:17070 timed out")]
    endpoints = {"app": Endpoint("127.0.0.1", 18080, "app"), "socket": Endpoint("127.0.0.1", 19090, "socket"),
                 "health": Endpoint("localhost", 17070, "health")}
    upstream = error(NGINX.format(5, 41), cause="infra.upstream_nginx", count=30)
    result = verdicts(probes=probes, endpoints=endpoints, errors=[upstream])
    assert [(v.kind, v.score) for v in result] == [("dependency", 70)] * 3 + [("known_cause", 61)]
    assert not any("name it" in v.evidence for v in result) and all(v.since is None for v in result[:3])
    assert result[3].summary == "title of infra.upstream_nginx (infra.upstream_nginx) ×30"
    # the same errors, when the upstream they name is a probe's: that probe is named, with the line
    endpoints["app"] = Endpoint("10.0.0.12", 8080, "app")
    named = verdicts(probes=probes, endpoints=endpoints, errors=[upstream])
    assert [(v.summary, v.score) for v in named][0] == ("HTTP (api app) is down", 90)
    assert named[0].evidence.startswith("127.0.0.1:18080 refused the connection — the logs name it: “…")
    assert 'upstream: "http://10.0.0.12:8080/api/orders"' in named[0].evidence and named[0].since == upstream.first_seen
    assert [v.kind for v in named] == ["dependency"] * 3     # its errors are the named probe's evidence now


@pytest.mark.parametrize("endpoint, line, named", [
    (Endpoint("127.0.0.1", 5432, "db"), 'connection to server at "127.0.0.1", port 5432 failed: Connection refused', True),
    (Endpoint("127.0.0.1", 5432, "db"), "port 54321 is in use", False),
    (Endpoint("127.0.0.1", 6379, "cache"), "Error 111 connecting to localhost:6379. Connection refused.", True),
    (Endpoint("::1", 6379, "cache"), "Error 111 connecting to [::1]:6379.", True),
    (Endpoint("127.0.0.1", 22, "ssh"), "2026-11-24 10:22:01 ERROR worker died at 10:22", False),
    (Endpoint("127.0.0.1", 8080, "app"), "client: 127.0.0.1, server: shop, upstream: http://10.0.0.9:9000/", False),
    (Endpoint("localhost", None, "app"), "GET http://localhost/app failed", False),
    (Endpoint("db.internal", None, "db"), 'could not translate host name "db.internal" to address', True),
    (Endpoint("db.internal", None, "db"), "connected to db.internal.example.com", False),
    (Endpoint("10.0.0.12", 9000, "api"), 'upstream: "http://10.0.0.12:8080/x"', True),
    (Endpoint(None, None, "orders-db"), "pool orders-db: timeout acquiring a connection", True),
    (Endpoint(None, None, "app"), "at Client (/app/node_modules/knex/lib/client.js:312:26)", False),
    (Endpoint(None, None, "db"), "db error: the db is down", False),
])
def test_what_names_a_probe(endpoint, line, named):
    found = naming_line([error(f"Error: boom\n{line}")], endpoint)
    assert (found is not None) is named
    if named:
        assert found[1] == line
