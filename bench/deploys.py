"""/deploys on a 100,000-commit repository, next to `git log` with the same filters (target ratio ≤ 1.5).

The repository (cached in bench/.cache/, built once with `git fast-import`) is three years of a
monorepo: about 28,500 pull requests of 1-4 commits each, merged with --no-ff into main, a tag every
50 merges, 3,000 files under services/. Timed through the command's own code path (parse, run and
the text rendering), best of several runs:
- `/deploys api --since 24h` and `/deploys api --last 20` (deploy = "merges", the first-parent
  commits of main, with their shortstat);
- the same two with a monorepo `paths` filter;
against `git log` run in the same script with the same revision, window, paths and format.

    .venv/bin/python bench/deploys.py
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import tempfile
import time
import timeit
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot import config as config_module  # noqa: E402
from bot.console import Terminal  # noqa: E402
from bot.store.sqlite import SqliteStore  # noqa: E402
from commands import registry, sections  # noqa: E402
from commands.deploys.history import LOG_FORMAT  # noqa: E402

COMMITS = 100_000
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SPAN = timedelta(days=3 * 365)
SERVICES = [f"svc{n:02d}" for n in range(30)]
FILES_PER_SERVICE = 100
CACHE = ROOT / "bench" / ".cache" / "deploys-100k.git"
RUNS = 15


def build(path: Path) -> None:
    """A bare repository of COMMITS commits, written by one `git fast-import` stream."""
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix="deploys-100k-", dir=path.parent))
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(building)], check=True)
    importer = subprocess.Popen(["git", "fast-import", "--quiet"], cwd=building, stdin=subprocess.PIPE)
    rng = random.Random(3)
    files = {f"services/{service}/src/module_{n:03d}.py": [f"# {service} module {n}\n"]
             for service in SERVICES for n in range(FILES_PER_SERVICE)}
    step = SPAN / COMMITS
    clock = NOW - SPAN
    mark = 0
    written = 0
    out = importer.stdin

    def commit(ref: str, message: str, changes: dict[str, list[str]], parent: int | None,
               merged: int | None = None) -> int:
        nonlocal mark, clock, written
        mark += 1
        written += 1
        clock += step
        stamp = f"{int(clock.timestamp())} +0000"
        author = rng.choice(("Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra", "Barbara Liskov"))
        email = author.split()[0].lower() + "@example.com"
        data = message.encode()
        lines = [f"commit {ref}", f"mark :{mark}", f"author {author} <{email}> {stamp}",
                 f"committer {author} <{email}> {stamp}", f"data {len(data)}"]
        out.write("\n".join(lines).encode() + b"\n" + data + b"\n")
        if parent is not None:
            out.write(f"from :{parent}\n".encode())
        if merged is not None:
            out.write(f"merge :{merged}\n".encode())
        for name, content in changes.items():
            blob = "".join(content).encode()
            out.write(f"M 100644 inline {name}\ndata {len(blob)}\n".encode() + blob + b"\n")
        out.write(b"\n")
        return mark

    main = commit("refs/heads/main", "Initial import\n", files, None)
    pull = 0
    while written < COMMITS:
        pull += 1
        service = rng.choice(SERVICES)
        tip = main
        feature_changes: dict[str, list[str]] = {}
        for index in range(min(rng.randint(1, 4), COMMITS - written - 1) or 1):
            changes = {}
            for _ in range(rng.randint(1, 3)):
                name = f"services/{service}/src/module_{rng.randrange(FILES_PER_SERVICE):03d}.py"
                content = files[name]
                if len(content) > 30:
                    content = content[:1] + content[rng.randint(2, 10):]
                content = content + [f"value_{pull}_{index} = {rng.random()!r}\n"]
                files[name] = changes[name] = feature_changes[name] = content
            tip = commit("refs/heads/feature", f"{service}: change {pull}.{index}\n\nDetails of the change.\n",
                         changes, tip)
        if written >= COMMITS:
            break
        main = commit("refs/heads/main", f"Merge pull request #{pull} from acme/feature-{pull}\n\n{service} work\n",
                      feature_changes, main, tip)
        if pull % 50 == 0:
            out.write(f"reset refs/tags/v1.{pull // 50}\nfrom :{main}\n\n".encode())
    out.write(b"reset refs/heads/feature\nfrom 0000000000000000000000000000000000000000\n\n")
    out.close()
    if importer.wait() != 0:
        raise SystemExit("git fast-import failed")
    subprocess.run(["git", "gc", "-q"], cwd=building, check=True)
    building.rename(path)


def best_of(runs: int, action) -> float:
    """Milliseconds of the fastest of `runs` runs."""
    return min(timeit.repeat(action, repeat=runs, number=1)) * 1000


def git_log(*args: str) -> None:
    subprocess.run(["git", "-C", str(CACHE), "log", *args], check=True, capture_output=True)


def main() -> None:
    if not CACHE.exists():
        print(f"building a {COMMITS:,}-commit repository in {CACHE.relative_to(ROOT)} …", flush=True)
        started = time.perf_counter()
        build(CACHE)
        print(f"  built in {time.perf_counter() - started:.0f} s")
    count = subprocess.run(["git", "-C", str(CACHE), "rev-list", "--count", "main"], check=True,
                           capture_output=True, text=True).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="deploys-bench-"))
    config_path = work / "oncall.toml"
    config_path.write_text(f'[services.api]\nrepo = "{CACHE}"\n\n'
                           f'[services.mono]\nrepo = "{CACHE}"\npaths = ["services/svc07/"]\n')
    config = config_module.load(config_path, registry(), sections(), required=True)
    runner = Terminal(SqliteStore(work / "oncall.db"), config, registry(), lambda: NOW)

    def deploys(text: str):
        def run() -> None:
            reply = runner.invoke(text)
            assert reply.outcome.value == "ok", reply.data
            runner.renderer.text(reply.template, reply.data)
        return run

    since = f"--since={int((NOW - timedelta(hours=24)).timestamp())}"
    common = ["--first-parent", "--shortstat", f"--format={LOG_FORMAT}", "--no-show-signature",
              "--decorate-refs=refs/tags/", "--end-of-options", "main"]
    cases = [
        ("/deploys api --since 24h", [since, *common]),
        ("/deploys api --last 20", ["-n", "20", *common]),
        ("/deploys mono --since 24h", [since, *common, "--", "services/svc07/"]),
        ("/deploys mono --last 20", ["-n", "20", *common, "--", "services/svc07/"]),
    ]
    print(f"/deploys on {int(count):,} commits, best of {RUNS}")
    worst = 0.0
    for text, log_args in cases:
        shown = len(runner.invoke(text).data["deploys"])
        command_ms = best_of(RUNS, deploys(text))
        git_ms = best_of(RUNS, lambda log_args=log_args: git_log(*log_args))
        ratio = command_ms / git_ms
        worst = max(worst, ratio)
        print(f"  {text:<28} {shown:3d} deploys  {command_ms:7.1f} ms   git log {git_ms:7.1f} ms"
              f"   ratio {ratio:4.2f}")
    print(f"worst ratio {worst:.2f}   target ≤ 1.5: {'ok' if worst <= 1.5 else 'MISSED'}")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
