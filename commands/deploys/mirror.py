"""Remote repositories, mirrored before they are read.

A service whose `repo` is a URL is read from a bare mirror in `git-mirrors/` beside the database
(so the bot's state stays in one directory). Every query fetches first, within the service's
`fetch_timeout`; when the fetch fails or times out, the mirror is read as it is and the answer says
since when it is stale. Only branches and tags are fetched, not a host's pull-request refs.

One fetch per mirror at a time in this process: a query that waited for another's fetch uses that
one instead of fetching again. A new mirror is built in a temporary directory and renamed into
place, so a half-made mirror is never read.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from commands.deploys.history import MirrorError, git_reason

MIRRORS_DIR = "git-mirrors"
_FETCHED_MARK = "oncall-fetched"        # its mtime is the last successful fetch
_REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
_ENV = {"GIT_TERMINAL_PROMPT": "0"}     # a missing credential fails at once instead of prompting

_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


@dataclass(frozen=True)
class Mirror:
    path: Path
    fetched_at: datetime | None          # the last successful fetch
    fetch_error: str | None = None       # why this query's fetch failed: stale since fetched_at


def mirrors_dir(local_dir: Path) -> Path:
    """Where mirrors live: `git-mirrors/` in the store's local directory (an SQLite database's own)."""
    return local_dir / MIRRORS_DIR


def mirror_path(root: Path, url: str) -> Path:
    """One mirror per URL, so services sharing a repository share its mirror."""
    name = re.split(r"[/:]", url.rstrip("/"))[-1].removesuffix(".git")
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:40].lstrip(".") or "repo"
    return root / f"{name}-{hashlib.sha256(url.encode()).hexdigest()[:16]}.git"


def refresh(url: str, root: Path, timeout: float, service: str) -> Mirror:
    """The mirror of `url`, fetched now when the remote answers within `timeout` seconds."""
    path = mirror_path(root, url)
    waiting_since = time.time()
    with _lock(path):
        fetched_at = _fetched_at(path)
        if fetched_at is not None and fetched_at.timestamp() >= waiting_since:
            return Mirror(path, fetched_at)
        if not path.exists():
            _create(url, path, timeout, service)
            return Mirror(path, _fetched_at(path))
        error = _fetch(url, path, timeout)
        return Mirror(path, _fetched_at(path), error)


def _lock(path: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(path, threading.Lock())


def _fetched_at(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp((path / _FETCHED_MARK).stat().st_mtime, UTC)
    except OSError:
        return None


def _fetch(url: str, path: Path, timeout: float) -> str | None:
    """None when fetched; else what went wrong, in a few words."""
    from git import Repo

    started = time.monotonic()
    with Repo(path) as repo:
        status, _, error = repo.git.fetch(
            "--prune", "--quiet", "--end-of-options", url, *_REFSPECS, env=_ENV,
            kill_after_timeout=timeout, with_extended_output=True, with_exceptions=False)
    if status == 0:
        (path / _FETCHED_MARK).touch()
        return None
    if time.monotonic() - started >= timeout:
        return f"no answer within {timeout:g} s"
    return git_reason(error) or f"git fetch exited with {status}"


def _create(url: str, path: Path, timeout: float, service: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    except OSError as error:
        raise MirrorError(f"Could not mirror the repo of {service}: {path.parent}: {error.strerror}.") from None
    from git import Repo

    try:
        Repo.init(building, bare=True).close()
        failure = _fetch(url, building, timeout)
        if failure is not None:
            raise MirrorError(f"Could not mirror the repo of {service}: {failure}.")
        try:
            building.rename(path)
        except OSError:
            if not path.exists():
                raise
            # Another process made the mirror meanwhile: theirs is as good.
    finally:
        shutil.rmtree(building, ignore_errors=True)
