"""A git repository built in a temp dir, its commits dated as a test says."""

from __future__ import annotations

import os
import subprocess
from datetime import datetime, timedelta
from pathlib import Path


class GitRepo:
    """A repository whose commits, merges and tags happen at the times a test says."""

    def __init__(self, path: Path, *, bare: bool = False):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", "main", *(["--bare"] if bare else []))
        self.counter = 0

    def git(self, *args: str, at: datetime | None = None, author: str = "Ada Lovelace") -> str:
        email = author.split()[0].lower() + "@example.com"
        env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
               "GIT_AUTHOR_NAME": author, "GIT_AUTHOR_EMAIL": email,
               "GIT_COMMITTER_NAME": author, "GIT_COMMITTER_EMAIL": email}
        if at is not None:
            env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = at.isoformat()
        done = subprocess.run(["git", *args], cwd=self.path, env=env, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    def commit(self, message: str, at: datetime, files: dict[str, str | None] | None = None,
               author: str = "Ada Lovelace") -> str:
        self.counter += 1
        for name, content in (files or {f"notes/{self.counter}.txt": f"{message}\n"}).items():
            target = self.path / name
            if content is None:
                target.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content)
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message, at=at, author=author)
        return self.git("rev-parse", "HEAD")

    def pull_request(self, number: int, at: datetime, files: dict[str, str | None] | None = None,
                     author: str = "Grace Hopper") -> str:
        """A branch with one commit an hour before `at`, merged --no-ff at `at` as GitHub does."""
        self.git("checkout", "-q", "-b", f"pr-{number}")
        self.commit(f"work for #{number}", at - timedelta(hours=1), files, author=author)
        self.git("checkout", "-q", "main")
        self.git("merge", "-q", "--no-ff", "-m", f"Merge pull request #{number} from acme/pr-{number}",
                 f"pr-{number}", at=at, author=author)
        return self.git("rev-parse", "HEAD")

    def tag(self, name: str, at: datetime | None = None, ref: str = "HEAD") -> None:
        if at is None:
            self.git("tag", name, ref)
        else:
            self.git("tag", "-a", "-m", f"release {name}", name, ref, at=at)
