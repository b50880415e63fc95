"""`oncall-bot run` is a fresh process per call: its start-up is most of what it costs.

Times `oncall-bot run "/incident list"` (on an empty database) next to the floor a Python program
using the same two libraries pays, `python -c "import sqlite_utils, jinja2"`, both as fresh
processes, byte-compiled as an installed package is. Target: within 1.5x. Also next to a program
importing the libraries an answer needs (jinja2 to render, detect-secrets and RE2 to redact), which
leaves what the bot's own code costs.

    .venv/bin/python bench/startup.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 15
NEEDED = "import jinja2, re2, detect_secrets.core.scan"


def timed(argv: list[str], env: dict[str, str], cwd: str) -> float:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        subprocess.run(argv, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    subprocess.run([sys.executable, "-m", "compileall", "-q", "bot", "commands"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ONCALL_", "SLACK_"))}
        subprocess.run([sys.executable, "-m", "bot", "run", "/incident list"], env=env, cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL)   # the first run creates the database
        ours = timed([sys.executable, "-m", "bot", "run", "/incident list"], env, tmp)
        floor = timed([sys.executable, "-c", "import sqlite_utils, jinja2"], env, tmp)
        needed = timed([sys.executable, "-c", NEEDED], env, tmp)
    print(f"fresh processes, median of {RUNS}")
    print(f"  python -c 'import sqlite_utils, jinja2'   {floor * 1000:7.0f} ms")
    print(f"  oncall-bot run '/incident list'           {ours * 1000:7.0f} ms   ratio {ours / floor:.2f}"
          f"   (target ≤ 1.5: {'ok' if ours <= 1.5 * floor else 'MISSED'})")
    print(f"  python -c '{NEEDED}'   {needed * 1000:7.0f} ms   oncall-bot run / this {ours / needed:.2f}")


if __name__ == "__main__":
    main()
