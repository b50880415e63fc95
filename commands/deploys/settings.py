"""/deploys' part of `[services.NAME]`: where a service's deploys are read and what counts as one."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from bot.config import ServiceSection, Table

DEPLOY_KINDS = ("merges", "commits")
# A repo is remote when it is a URL ("https://…", "file://…") or scp-like ("git@host:org/repo.git").
_REMOTE_REPO = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://|[^/:]+:)")
REPO_SCHEMES = ("https", "http", "ssh", "git", "file")


@dataclass(frozen=True)
class DeploySettings(ServiceSection):
    repo: str | None = None
    branch: str = "main"
    deploy: str = "merges"
    paths: tuple[str, ...] = ()
    suspect_window: timedelta = timedelta(minutes=60)
    commit_url: str | None = None
    fetch_timeout: timedelta = timedelta(seconds=10)

    @property
    def repo_is_remote(self) -> bool:
        """A remote repo is mirrored before it is read; a local one is read in place."""
        return self.repo is not None and bool(_REMOTE_REPO.match(self.repo))

    @classmethod
    def read(cls, table: Table) -> DeploySettings:
        deploy = table.string("deploy", "merges") or "merges"
        if deploy not in DEPLOY_KINDS and not (deploy.startswith("tags:") and len(deploy) > 5):
            table.fail("deploy", f"{deploy!r} is not one of merges, commits, \"tags:<glob>\"")
        paths = table.strings("paths")
        if any(path.startswith("/") for path in paths):
            table.fail("paths", "paths are relative to the repository's root, without a leading /")
        return cls(
            repo=_repo(table),
            branch=table.string("branch", "main") or "main",
            deploy=deploy,
            paths=paths,
            suspect_window=table.duration("suspect_window", cls.suspect_window),
            commit_url=_commit_url(table),
            fetch_timeout=table.duration("fetch_timeout", cls.fetch_timeout),
        )


def _repo(table: Table) -> str | None:
    """A remote URL as written, or a local path made absolute (relative to the config file)."""
    repo = table.string("repo", None, expand_env=True)
    if repo is None:
        return None
    if repo.startswith("-") or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*::", repo):
        table.fail("repo", f"{repo!r} is neither a path nor a URL (remote helpers like ext:: are refused)")
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", repo)
    if scheme and scheme.group(1).lower() not in REPO_SCHEMES:
        table.fail("repo", f"{scheme.group(1)}:// is not supported; use one of {', '.join(REPO_SCHEMES)}, "
                           "an scp-like git@host:path, or a local path")
    if _REMOTE_REPO.match(repo):
        return repo
    try:
        return os.path.abspath(Path(table.file).parent / Path(repo).expanduser())
    except (RuntimeError, KeyError):     # ~nobody/…: no such user, so no home directory
        table.fail("repo", f"{repo!r}: the home directory of {repo.split('/')[0]!r} is not known")


def _commit_url(table: Table) -> str | None:
    url = table.string("commit_url", None)
    if url is not None and (not re.match(r"^https?://", url) or "{sha}" not in url):
        table.fail("commit_url", f"{url!r} is not an http(s) URL with {{sha}} in it, "
                                 "like https://github.com/acme/api/commit/{sha}")
    return url
