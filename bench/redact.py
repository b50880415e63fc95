"""Redaction of a 1 MB log excerpt: the whole rule set against our own rules alone, and against the
floor every gated redactor pays (lowering the text and testing each keyword once).

    .venv/bin/python bench/redact.py

The excerpt is generated from a fixed seed: application, access and JSON log lines with tracebacks,
and a secret on about one line in two hundred. Each figure is the best of five runs in this process.
"""

from __future__ import annotations

import random
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.redact import BUILTIN_RULES, Redactor  # noqa: E402

SIZE = 1_000_000
LINES = (
    '2026-11-24 14:05:{s:02d},{ms:03d} ERROR django.request Internal Server Error: /api/orders/{n}',
    'Traceback (most recent call last):',
    '  File "/srv/app/orders/views.py", line {n}, in create',
    'psycopg.OperationalError: connection to server at "10.0.{a}.{b}" port 5432 failed: timeout expired',
    '10.0.{a}.{b} - - [24/Nov/2026:14:05:{s:02d} +0000] "GET /api/orders/{n} HTTP/1.1" 200 {ms} "-" "curl/8.4"',
    '{{"ts":"2026-11-24T14:05:{s:02d}Z","level":"warn","msg":"slow query","ms":{ms},"request_id":"req-{n}"}}',
    '2026-11-24 14:05:{s:02d},{ms:03d} INFO worker job {n} done in {ms} ms, cache key=orders:{n}, tokens used: {a}',
)
SECRETS = (
    "retrying with postgres://app:s3cr3t-{n}@db.internal:5432/app",
    '{{"user":"svc","password":"hunter{n}","api_key":"k-{n}abcdef"}}',
    "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ7bn0ifQ.c2lnbmF0dXJl{n}",
    "clone with ghp_{n:0>36}",
)


def excerpt() -> str:
    rng = random.Random(20261124)
    lines, size = [], 0
    while size < SIZE:
        template = rng.choice(SECRETS) if rng.random() < 0.005 else rng.choice(LINES)
        line = template.format(s=rng.randrange(60), ms=rng.randrange(1000), n=rng.randrange(100_000),
                               a=rng.randrange(256), b=rng.randrange(256))
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)


def best(function) -> float:
    return min(timeit.repeat(function, number=1, repeat=5))


def main() -> None:
    text = excerpt()
    full, ours = Redactor(), Redactor(rules=BUILTIN_RULES)
    keywords = sorted({(keyword, rule.ignore_case) for rule in full.rules for keyword in rule.keywords})

    def floor() -> None:
        lowered = text.lower()
        [key for key, lower in keywords if key in (lowered if lower else text)]

    timings = {"floor (lower + keyword tests)": best(floor), "our rules alone": best(lambda: ours.redact(text)),
               "all rules (ours, detect-secrets, entropy)": best(lambda: full.redact(text))}
    print(f"excerpt: {len(text) / 1e6:.2f} MB, {text.count(chr(10)) + 1} lines, {len(full.rules)} rules\n")
    for name, seconds in timings.items():
        print(f"{name:45} {seconds * 1000:8.1f} ms")
    floor_s, ours_s, full_s = timings.values()
    print(f"\nall rules / our rules alone: {full_s / ours_s:.2f}x")
    print(f"all rules / floor:           {full_s / floor_s:.2f}x")


if __name__ == "__main__":
    main()
