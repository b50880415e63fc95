"""/logs on a 1 GB log against the floor a user could reach with grep, in the same run.

    .venv/bin/python bench/logs.py [--size-mb 1024]

Builds (once, cached in bench/.cache/) logs of Python-logging lines with tracebacks: one with five
kinds of error in its last 300 kB, one more error kind at 10 MB, 100 MB and ~1 GB from the end, and
a unique word at 1 MB, 10 MB, 100 MB and ~1 GB from the end (and the same, 10 MB long); one of INFO
lines with a single error at its very end; one whose lines carry request ids, `req-1000` being the
prefix of thousands of others (`req-10001`, …). Every /logs figure is the median of three runs in
this process with the page cache warm (the bot serves from a long-lived process); grep is run on
the same file in the same run as the baseline. It prints each ratio issue 11 names:

- the last errors on 1 GB against the same on 10 MB (target <= 1.1x: the cost is what lies after
  them, not the file's size);
- a single error at the end of 1 GB of INFO lines against `grep -c -i error` (target <= 2x), as
  /logs reads by default (its last 24 h or 256 MiB) and over the whole file (`--since` its start);
- `--grep` over the whole file against `grep -F` (target <= 1.5x);
- `--request-id req-1000` against `grep -F -c req-1000` (target <= 3x);
- peak memory, in a child process: its peak RSS (VmHWM, reset once idle) during the query over its
  RSS once idle, with imports and config loaded (target <= 100 MB whatever the size). Linux only.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot import config as config_module  # noqa: E402
from bot.console import Terminal  # noqa: E402
from bot.store.sqlite import SqliteStore  # noqa: E402
from commands import registry, sections  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache"
GENERATOR_VERSION = 3
START = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)
MB = 1_000_000
DISTANCES_MB = (1, 10, 100)           # plus "the file's start", just after its first line
WHOLE = "--since 2026-11-01T00:00Z"   # a window that starts before every bench log: read all of it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--memory-child", nargs=2, metavar=("LOG", "QUERY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        _memory_child(Path(args.memory_child[0]), args.memory_child[1])
        return
    path = build_log(args.size_mb * MB)
    small = build_log(10 * MB, name="app-10m.log")
    quiet = build_log(args.size_mb * MB, name=f"quiet-{args.size_mb}m.log", kind="quiet")
    requests = build_log(min(args.size_mb, 200) * MB, name=f"requests-{min(args.size_mb, 200)}m.log",
                         kind="requests")
    size = path.stat().st_size
    ratios: list[tuple[str, float, float]] = []          # (what, ratio, target)
    runner = _runner(path)
    for log in (path, small):
        warm(log)

    last5 = timed(runner, "/logs api")
    last5_small = timed(_runner(small), "/logs api")
    print("last 5 errors (within 300 kB of the end), then their repeats up to 4 MB further back:")
    print(f"  {size / MB:7,.0f} MB log   {last5 * 1000:6.1f} ms")
    print(f"  {small.stat().st_size / MB:7,.0f} MB log   {last5_small * 1000:6.1f} ms")
    ratios.append(("last errors, 1 GB against 10 MB", last5 / last5_small, 1.1))

    warm(quiet)
    quiet_runner = _runner(quiet)
    grep_i = median(lambda: _grep("-c", "-i", "error", quiet))
    bounded = timed(quiet_runner, "/logs api")
    whole = timed(quiet_runner, f"/logs api {WHOLE}")
    print(f"\na single error at the end of {quiet.stat().st_size / MB:,.0f} MB of INFO lines:")
    print(f"  grep -c -i error            {grep_i:7.3f} s   {quiet.stat().st_size / grep_i / 1e9:5.2f} GB/s")
    print(f"  /logs (default bound)       {bounded:7.3f} s")
    print(f"  /logs (the whole file)      {whole:7.3f} s   {quiet.stat().st_size / whole / 1e9:5.2f} GB/s")
    ratios.append(("one error in 1 GB of INFO, default bound, against grep -c -i error", bounded / grep_i, 2.0))
    ratios.append(("one error in 1 GB of INFO, whole file, against grep -c -i error", whole / grep_i, 2.0))

    warm(path)
    grep_f = median(lambda: _grep("-F", "needle-absent", path))
    ours = timed(runner, f"/logs api --grep needle-absent {WHOLE}")
    print("\n--grep over the whole file (no match):")
    print(f"  grep -F                     {grep_f:7.3f} s   {size / grep_f / 1e9:5.2f} GB/s")
    print(f"  /logs --grep                {ours:7.3f} s   {size / ours / 1e9:5.2f} GB/s")
    ratios.append(("--grep over the whole file against grep -F", ours / grep_f, 1.5))

    warm(requests)
    request_runner = _runner(requests)
    grep_c = median(lambda: _grep("-F", "-c", "req-1000", requests))
    request = timed(request_runner, f"/logs api --request-id req-1000 {WHOLE}")
    print(f"\n--request-id req-1000 in {requests.stat().st_size / MB:,.0f} MB where it prefixes thousands of ids:")
    print(f"  grep -F -c                  {grep_c:7.3f} s")
    print(f"  /logs --request-id          {request:7.3f} s")
    ratios.append(("--request-id (a prefix of thousands) against grep -F -c", request / grep_c, 3.0))

    print("\ncost against how far back the match is (file size fixed):")
    print(f"  {'distance':>12}  {'--grep word':>12}  {'errors (--last N)':>18}")
    labels = [f"{d} MB" for d in DISTANCES_MB] + [f"{size / MB:,.0f} MB"]
    words = [f"needle-{d:04d}mb" for d in DISTANCES_MB] + ["needle-start"]
    for index, (label, word) in enumerate(zip(labels, words, strict=True)):
        window = WHOLE if word == "needle-start" else ""      # past the default bound: a window reaches it
        grep_time = timed(runner, f"/logs api --grep {word} --last 1 {window}")
        errors_time = timed(runner, f"/logs api --last {5 + index} {window}") if index else None
        errors = f"{errors_time * 1000:11.1f} ms" if errors_time is not None else f"{'(see above)':>14}"
        print(f"  {label:>12}  {grep_time * 1000:9.1f} ms  {errors:>18}")
    print("  (errors: --last 6, 7, 8 need the error kinds placed 10 MB, 100 MB and a whole file back)")

    print("\npeak memory over idle (a child process):")
    peak = 0.0
    for label, query in (("last 5 errors", "/logs api"), ("--grep whole file", f"/logs api --grep x-absent {WHOLE}"),
                         ("--last 8 (whole file)", f"/logs api --last 8 {WHOLE}")):
        for log in (small, path):
            grown = _memory(log, query)
            peak = max(peak, grown)
            print(f"  {label:<22} {log.stat().st_size / MB:7,.0f} MB log: +{grown:6.1f} MB")
    print("\nratios (same run):")
    for what, ratio, target in ratios:
        print(f"  {ratio:5.2f}x  (target <= {target:.1f}x{'' if ratio <= target else ', MISSED'})  {what}")
    print(f"  peak memory +{peak:.1f} MB  (target <= 100 MB{'' if peak <= 100 else ', MISSED'})")


# -- the log -------------------------------------------------------------------------------------------

_PATHS = ("/api/orders/{n}", "/api/users/{n}", "/api/cart", "/api/search?q=item{n}", "/healthz",
          "/api/items/{n}/reviews")
_ERRORS = ("KeyError: 'customer_id'", "ValueError: invalid literal for int() with base 10: 'abc'",
           "TypeError: unsupported operand type(s) for +: 'NoneType' and 'int'",
           "AttributeError: 'NoneType' object has no attribute 'email'", "ZeroDivisionError: division by zero")


def _traceback(moment: datetime, exception: str, path: str) -> str:
    return (f"{_stamp(moment)} ERROR django.request Internal Server Error: {path}\n"
            "Traceback (most recent call last):\n"
            '  File "/srv/api/.venv/lib/python3.11/site-packages/django/core/handlers/exception.py", line 55, '
            'in inner\n'
            "    response = get_response(request)\n"
            '  File "/srv/api/src/acme/views.py", line 88, in detail\n'
            "    return JsonResponse(build(request))\n"
            f"{exception}\n")


def _ordinary_line(generator: random.Random, moment: datetime) -> str:
    roll = generator.random()
    if roll < 0.86:
        where = generator.choice(_PATHS).format(n=generator.randint(1, 99999))
        return (f"{_stamp(moment)} INFO django.server \"GET {where} HTTP/1.1\" 200 {generator.randint(80, 9000)} "
                f"user={generator.randint(1, 5000)} took={generator.randint(1, 900)}ms\n")
    if roll < 0.98:
        return (f"{_stamp(moment)} DEBUG django.db.backends (0.00{generator.randint(1, 9)}) SELECT \"orders_order\"."
                f"\"id\" FROM \"orders_order\" WHERE \"orders_order\".\"user_id\" = {generator.randint(1, 5000)} "
                "LIMIT 21\n")
    return f"{_stamp(moment)} WARNING django.request Not Found: /wp-login.php\n"


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S,") + f"{moment.microsecond // 1000:03d}"


def build_log(size: int, name: str | None = None, kind: str = "errors") -> Path:
    """A bench log, built once per size, kind and generator version: `errors` (the errors and
    marks above), `quiet` (INFO lines, one error at the end), `requests` (request ids)."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / (name or f"app-{size // MB}m.log")
    stamp = path.with_suffix(".json")
    wanted = {"version": GENERATOR_VERSION, "size": size, **({"kind": kind, "plain": 2} if kind != "errors" else {})}
    if path.exists() and stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return path
    print(f"building {path.name} ({size / MB:,.0f} MB), once…", flush=True)
    if kind != "errors":
        _build_plain(path, size, kind)
        stamp.write_text(json.dumps(wanted))
        return path
    generator = random.Random(42)
    marks = sorted([(size - d * MB, f"needle-{d:04d}mb") for d in DISTANCES_MB] + [(200, "needle-start")])
    errors = sorted([(size - 10 * MB, "RuntimeError: distant failure, ten"),
                     (size - 100 * MB, "RuntimeError: distant failure, a hundred"),
                     (400, "RuntimeError: distant failure, at the start")])
    tail_start = size - 300_000
    moment = START
    written = 0
    with path.open("w", encoding="utf-8") as out:
        while written < size:
            lines: list[str] = []
            for _ in range(5000):
                moment += timedelta(milliseconds=generator.randint(1, 12))
                entries = [_ordinary_line(generator, moment)]
                if marks and written >= marks[0][0]:
                    entries.append(f"{_stamp(moment)} INFO app.audit marker {marks.pop(0)[1]}\n")
                if errors and written >= errors[0][0]:
                    entries.append(_traceback(moment, errors.pop(0)[1], "/api/orders/7"))
                if written >= tail_start and generator.random() < 0.01:
                    entries.append(_traceback(moment, generator.choice(_ERRORS),
                                              f"/api/orders/{generator.randint(1, 9999)}"))
                lines.extend(entries)
                written += sum(len(entry) for entry in entries)
            out.write("".join(lines))
    stamp.write_text(json.dumps(wanted))
    return path


def _build_plain(path: Path, size: int, kind: str) -> None:
    generator = random.Random(7)
    moment = START
    written = 0
    with path.open("w", encoding="utf-8") as out:
        if kind == "requests":          # at the very start: /logs reads back through the whole file to it
            out.write(f"{_stamp(moment)} ERROR app.pay [req-1000] charge failed\n")
        while written < size:
            lines = []
            for _ in range(5000):
                moment += timedelta(milliseconds=generator.randint(1, 12))
                if kind == "requests":
                    ident = generator.choice((f"req-1000{generator.randint(0, 99999)}",
                                              f"req-{generator.randint(1, 99999)}"))
                    line = (f"{_stamp(moment)} INFO app.server [{ident}] GET /api/orders/{generator.randint(1, 9999)} "
                            f"200 took={generator.randint(1, 900)}ms\n")
                else:
                    line = _ordinary_line(generator, moment)
                lines.append(line)
                written += len(line)
            out.write("".join(lines))
        if kind == "quiet":
            out.write(_traceback(moment, "RuntimeError: the only error", "/api/orders/7"))


def _grep(*args: str | Path) -> None:
    """grep's output captured, not sent to /dev/null: there GNU grep stops at the first match."""
    subprocess.run(["grep", *map(str, args)], capture_output=True)


def warm(path: Path) -> None:
    with path.open("rb") as handle:
        while handle.read(16 * 1024 * 1024):
            pass


# -- running /logs ----------------------------------------------------------------------------------

_ROOT = str(Path(__file__).resolve().parent.parent)
_WORK = Path(tempfile.mkdtemp(prefix="bench-logs-"))


def _config_file(path: Path) -> Path:
    config = _WORK / f"{path.stem}.toml"
    config.write_text(f'[services.api]\nlogs = ["{path}"]\napp_paths = ["src/acme/"]\n')
    return config


def _env(path: Path) -> dict[str, str]:
    return {"ONCALL_CONFIG": str(_config_file(path)), "ONCALL_DB": str(_WORK / "cli.db"), "PATH": "/usr/bin:/bin"}


def _runner(path: Path) -> Terminal:
    config = config_module.load(_config_file(path), registry(), sections(), required=True)
    clock_at = lambda: START + timedelta(days=30)  # noqa: E731
    return Terminal(SqliteStore(_WORK / f"{path.stem}.db"), config, registry(), clock_at)


def timed(runner: Terminal, query: str) -> float:
    def once() -> None:
        reply = runner.invoke(query)
        if reply.outcome.value != "ok":
            raise SystemExit(f"{query}: {reply.data}")
    return median(once)


def median(action, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _memory(path: Path, query: str) -> float:
    result = subprocess.run([sys.executable, __file__, "--memory-child", str(path), query],
                            capture_output=True, text=True, check=True, cwd=_ROOT)
    figures = json.loads(result.stdout)
    return (figures["peak_kb"] - figures["idle_kb"]) / 1024


def _memory_child(path: Path, query: str) -> None:
    runner = _runner(path)
    Path("/proc/self/clear_refs").write_text("5")     # the peak so far (imports) is forgotten
    idle = _status_kb("VmRSS")
    runner.invoke(query)
    print(json.dumps({"idle_kb": idle, "peak_kb": _status_kb("VmHWM")}))


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise SystemExit(f"no {field} in /proc/self/status")


if __name__ == "__main__":
    main()
