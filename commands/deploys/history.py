"""A service's deploys, read from its git repository.

Fast on long histories: a listing is one `git log` with a --format string parsed here (tag deploys:
one `git for-each-ref` and one `git diff-tree --stdin`), and git's walk stops at the window's start,
so a query costs what the window holds, not what the repository's age piled up. Only `repo.git.*`
commands run, inside `with Repo(...)`, so no `git cat-file` process outlives a query; every call is
killed at the query's deadline. A name a user typed reaches git only after `checked_ref`, and after
`--end-of-options`, so it can never be read as an option (`--upload-pack=…`).

Errors (git's failures are mapped to the most specific):

    DeployError                a CommandError: the user gets the message, privately
    ├── RepoError              the service's repository cannot be read
    │   ├── NoRepo             no repo configured, or not a git repository there
    │   ├── EmptyRepo          no commits yet
    │   ├── ShallowRepo        a shallow clone: its history is cut off
    │   └── MirrorError        a remote repository could not be mirrored the first time
    ├── UnknownRef             no such branch, tag or commit, or an ambiguous short sha
    └── GitTimeout             git did not answer before the deadline
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bot.command import CommandError
from bot.redact import redact
from commands.deploys.settings import DeploySettings

if TYPE_CHECKING:
    from git import Repo


class DeployError(CommandError):
    """Deploys of a service cannot be read; the message says why, in the user's terms."""


class RepoError(DeployError):
    pass


class NoRepo(RepoError):
    pass


class EmptyRepo(RepoError):
    pass


class ShallowRepo(RepoError):
    pass


class MirrorError(RepoError):
    pass


class UnknownRef(DeployError):
    pass


class GitTimeout(DeployError):
    pass


# Records and fields are separated by NUL, which git never puts in a name, a date or a subject.
# Names, tags and subjects are cut by git (`%<(N,trunc)`: a subject is one line), so a commit with a
# 50 MB message costs a listing what any commit does; one deploy's message is read up to MAX_MESSAGE_BYTES.
MAX_SUBJECT = 300
MAX_MESSAGE_BYTES = 64 * 1024
_CUT = "%<({},trunc)"
LOG_FORMAT = (f"%x00%H%x00%P%x00{_CUT.format(200)}%aN%x00%cI%x00{_CUT.format(2000)}%D%x00"
              f"{_CUT.format(MAX_SUBJECT)}%s%x00")
_TAG_FORMAT = "%00".join((
    "%(refname:strip=2)", "%(creatordate:iso-strict)", "%(objecttype)", "%(objectname)", "%(*objectname)",
    "%(*objecttype)", "%(authorname)", "%(*authorname)", "%(subject)", "%(*subject)")) + "%00"
_LOG_OPTIONS = ("--no-show-signature", "--decorate-refs=refs/tags/")

_SHA = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")
_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/+-]{0,199}$")
_SHORTSTAT = re.compile(r"(\d+) files? changed(?:, (\d+) insertions?\(\+\))?(?:, (\d+) deletions?\(-\))?")
_PULL_REQUEST = re.compile(r"pull request #(\d+)|\(#(\d+)\)|^Merged PR (\d+)")
_TAG_BATCH = 32
MAX_REVERTS = 20                 # reverts read after an incident's start (git revert's own message)
_REVERTS = re.compile(r"^This reverts commit ([0-9a-f]{40}(?:[0-9a-f]{24})?)\b", re.M)


@dataclass(frozen=True)
class DeployWindow:
    """Which deploys: those from `since` to `until` (None: open-ended), at most `limit`, newest first."""

    since: datetime | None
    until: datetime | None
    limit: int


@dataclass(frozen=True)
class FileChange:
    path: str                      # "src/{old => new}.py" for a rename
    insertions: int | None         # None for a binary file
    deletions: int | None

    @property
    def lines(self) -> int:
        return (self.insertions or 0) + (self.deletions or 0)


@dataclass(frozen=True)
class Deploy:
    service: str
    sha: str
    short_sha: str
    when: datetime                 # landed on the branch (committer date), or the tag's date
    author: str
    subject: str
    pr: int | None
    tag: str | None
    files_changed: int
    insertions: int
    deletions: int
    merge: bool
    url: str | None                # the commit's web page, from the service's commit_url
    suspect: bool = False


@dataclass(frozen=True)
class Listing:
    deploys: list[Deploy]
    truncated: bool                # more deploys were in the window than `limit`


@dataclass(frozen=True)
class DeployDetail:
    deploy: Deploy
    message: str
    files: list[FileChange] = field(default_factory=list)   # most lines changed first
    in_paths: bool = True          # touches the service's paths (always, without paths)
    previous_tag: str | None = None


def checked_ref(name: str) -> str:
    """`name` if it can only be a sha, a tag or a branch name; ValueError otherwise.

    Stricter than git: a leading letter or digit (never `-`, so never an option), no `..`, no
    `@{`, no spaces or `~^:?*[\\`; enough for every sha, tag and branch people write.
    """
    if (not _REF.match(name) or ".." in name or "//" in name or "/." in name
            or name.endswith((".", "/", ".lock"))):
        raise ValueError(f"{name!r} is not a commit sha, a tag or a branch name")
    return name


@contextmanager
def opened(path: str, service: DeploySettings, branch: str, deadline: float) -> Iterator[History]:
    """The service's history in the repository at `path`, closed (with any git child) on exit."""
    from git import Repo  # gitpython costs its import only to the commands that read a repository
    from git.exc import InvalidGitRepositoryError, NoSuchPathError

    try:
        repo = Repo(path)
    except (NoSuchPathError, InvalidGitRepositoryError):
        raise NoRepo(f"The repo of {service.name}, {path}, is not a git repository.") from None
    except OSError as error:
        raise NoRepo(f"The repo of {service.name}, {path}, cannot be read: {error.strerror}.") from None
    with repo:
        if Path(repo.common_dir, "shallow").exists():
            raise ShallowRepo(f"The repo of {service.name}, {path}, is a shallow clone, so its history is cut "
                              "off; make it whole with `git fetch --unshallow`.")
        yield History(repo, service, branch, deadline)


class History:
    def __init__(self, repo: Repo, service: DeploySettings, branch: str, deadline: float):
        self.repo = repo
        self.service = service
        self.branch = branch
        self.deadline = deadline
        self.tag_glob = service.deploy.removeprefix("tags:") if service.deploy.startswith("tags:") else None

    # -- listings ----------------------------------------------------------------------------

    def deploys(self, window: DeployWindow) -> Listing:
        """The deploys in `window`, newest first."""
        if self.tag_glob is not None:
            return self._tag_listing(window)
        args = ["--first-parent"] if self.service.deploy == "merges" else []
        if window.since is not None:
            args.append(f"--since={_git_date(window.since)}")
        if window.until is not None:
            args.append(f"--until={_git_date(window.until)}")
        output = self._git("log", *args, "-n", str(window.limit + 1), "--shortstat", f"--format={LOG_FORMAT}",
                           *_LOG_OPTIONS, "--end-of-options", self.branch, "--", *self.service.paths,
                           revision=self.branch)
        deploys = self._parse_log(output)
        return Listing(deploys[:window.limit], len(deploys) > window.limit)

    def _parse_log(self, output: str) -> list[Deploy]:
        deploys = []
        for sha, parents, author, date, refs, subject, stat in _records(output, 7):
            files, insertions, deletions = _shortstat(stat)
            deploys.append(self._deploy(sha, parents, author, _from_git_date(date), subject, _first_tag(refs),
                                        files, insertions, deletions))
        return deploys

    def _deploy(self, sha: str, parents: str, author: str, when: datetime, subject: str, tag: str | None,
                files: int, insertions: int, deletions: int) -> Deploy:
        author, subject = author.rstrip()[:MAX_SUBJECT], subject.rstrip()[:MAX_SUBJECT]   # git pads what it cuts
        url = self.service.commit_url.replace("{sha}", sha) if self.service.commit_url else None
        return Deploy(service=self.service.name, sha=sha, short_sha=sha[:10], when=when, author=author,
                      subject=subject, pr=pull_request(subject), tag=tag, files_changed=files,
                      insertions=insertions, deletions=deletions, merge=len(parents.split()) > 1, url=url)

    def reverts(self, since: datetime, until: datetime) -> list[tuple[str, str]]:
        """(commit, the commit it reverts) for the commits on the branch, committed from `since` to
        `until`, whose message says so in git revert's words ("This reverts commit <sha>"), newest
        first, at most MAX_REVERTS."""
        output = self._git("log", f"--since={_git_date(since)}", f"--until={_git_date(until)}", "-n",
                           str(MAX_REVERTS), "--grep=^This reverts commit [0-9a-f]", "--format=%H",
                           *_LOG_OPTIONS, "--end-of-options", self.branch, "--", *self.service.paths,
                           revision=self.branch)
        found = []
        for sha in output.split():
            reverted = _REVERTS.search(self._message(sha))
            if reverted:
                found.append((sha, reverted.group(1)))
        return found

    def contains(self, deploy: str, commit: str) -> bool:
        """Whether the deploy `deploy` (a commit) holds `commit`: it is that commit or comes after it."""
        return deploy == commit or self._git("merge-base", "--end-of-options", commit, deploy).strip() == commit

    # -- tag deploys -------------------------------------------------------------------------

    def _tags(self) -> list[_Tag]:
        """Tags matching the service's glob, newest first (tagger date, or commit date when lightweight)."""
        output = self._git("for-each-ref", "--sort=-creatordate", f"--format={_TAG_FORMAT}",
                           f"refs/tags/{self.tag_glob}")
        tags = []
        for (name, date, kind, target, peeled, peeled_kind, author, peeled_author, subject,
             peeled_subject) in _records(output, 10):
            annotated = kind == "tag"
            commit = peeled if annotated else target
            if (peeled_kind if annotated else kind) == "commit":
                tags.append(_Tag(name.lstrip("\n"), _from_git_date(date), commit,
                                 peeled_author if annotated else author,
                                 peeled_subject if annotated else subject))
        if not tags:
            self._check_not_empty()
        return tags

    def _tag_listing(self, window: DeployWindow) -> Listing:
        tags = self._tags()
        start = next((i for i, tag in enumerate(tags) if window.until is None or tag.when <= window.until),
                     len(tags))
        deploys: list[Deploy] = []
        for deploy in self._tag_deploys(tags, start, stop=window.since):
            if len(deploys) == window.limit:
                return Listing(deploys, True)
            deploys.append(deploy)
        return Listing(deploys, False)

    def _tag_deploys(self, tags: list[_Tag], start: int, stop: datetime | None = None) -> Iterator[Deploy]:
        """Deploys from tags[start] on, each with its changes since the tag before it.

        With `paths`, a tag that changed nothing under them is no deploy of this service.
        """
        index = start
        while index < len(tags) and (stop is None or tags[index].when >= stop):
            end = index + 1
            while end < len(tags) and end - index < _TAG_BATCH and (stop is None or tags[end].when >= stop):
                end += 1
            pairs = [(tags[i].commit, tags[i + 1].commit if i + 1 < len(tags) else None) for i in range(index, end)]
            for tag, (files, insertions, deletions) in zip(tags[index:end], self._diff_stats(pairs), strict=True):
                if files or not self.service.paths:
                    yield self._deploy(tag.commit, "", tag.author, tag.when, tag.subject, tag.name,
                                       files, insertions, deletions)
            index = end

    def _diff_stats(self, pairs: list[tuple[str, str | None]]) -> list[tuple[int, int, int]]:
        """(files, insertions, deletions) from each pair's second commit to its first, in one diff-tree."""
        with tempfile.TemporaryFile() as requests:
            requests.write("".join(f"{new} {old}\n" if old else f"{new}\n" for new, old in pairs).encode())
            requests.seek(0)
            output = self._git("diff-tree", "--stdin", "--always", "--root", "-r", "-M", "--shortstat",
                               "--diff-merges=first-parent", "--", *self.service.paths, istream=requests)
        stats: list[tuple[int, int, int]] = []
        for line in output.splitlines():
            if _SHA.match(line.split(" ", 1)[0]):
                stats.append((0, 0, 0))
            elif line.strip() and stats:
                stats[-1] = _shortstat(line)
        return stats

    # -- one deploy --------------------------------------------------------------------------

    def detail(self, ref: str) -> DeployDetail:
        """The commit or tag `ref` (checked with `checked_ref`): its message and every file it changed."""
        if self.tag_glob is not None:
            tags = self._tags()
            for index, tag in enumerate(tags):
                if tag.name == ref:
                    return self._tag_detail(tags, index)
        args = ("--no-walk", "--numstat", "--diff-merges=first-parent", f"--format={LOG_FORMAT}",
                *_LOG_OPTIONS, "--end-of-options", ref)
        output = self._git("log", *args, "--", *self.service.paths, revision=ref)
        # A merge is listed even when its first-parent diff misses the paths: judge by the files.
        in_paths = bool(output) and bool(_numstat(_records(output, 7)[0][6]))
        if not in_paths:
            output = self._git("log", *args, "--", revision=ref)
        (sha, parents, author, date, refs, subject, numstat), = _records(output, 7)
        files = _numstat(numstat)
        deploy = self._deploy(sha, parents, author, _from_git_date(date), subject, _first_tag(refs),
                              len(files), sum(f.insertions or 0 for f in files), sum(f.deletions or 0 for f in files))
        return DeployDetail(deploy, self._message(sha), files, in_paths=in_paths or not self.service.paths)

    def _message(self, sha: str) -> str:
        """The commit's message, its first MAX_MESSAGE_BYTES (saying so when there is more)."""
        process = self.repo.git.cat_file("commit", sha, as_process=True)
        try:
            raw = process.proc.stdout.read(MAX_MESSAGE_BYTES + 1)
        finally:
            process.proc.kill()
            process.proc.wait()
        cut = len(raw) > MAX_MESSAGE_BYTES
        message = raw[:MAX_MESSAGE_BYTES].partition(b"\n\n")[2].decode("utf-8", "replace")
        return message.strip() + ("\n… (the message is longer; cut here)" if cut else "")

    def _tag_detail(self, tags: list[_Tag], index: int) -> DeployDetail:
        tag = tags[index]
        previous = tags[index + 1] if index + 1 < len(tags) else None
        (sha, parents, author, date, refs, subject, _), = _records(
            self._git("log", "--no-walk", f"--format={LOG_FORMAT}", *_LOG_OPTIONS,
                      "--end-of-options", tag.commit, "--"), 7)
        message = self._message(sha)
        span = (previous.commit, tag.commit) if previous else (tag.commit,)
        files = _numstat(self._git("diff-tree", "-r", "-M", "--numstat", "--root", "--no-commit-id",
                                   "--diff-merges=first-parent", "--end-of-options", *span, "--", *self.service.paths))
        deploy = self._deploy(tag.commit, parents, tag.author, tag.when, subject, tag.name, len(files),
                              sum(f.insertions or 0 for f in files), sum(f.deletions or 0 for f in files))
        return DeployDetail(deploy, message, files, in_paths=bool(files) or not self.service.paths,
                            previous_tag=previous.name if previous else None)

    # -- running git ---------------------------------------------------------------------------

    def _git(self, command: str, *args: str, revision: str | None = None, istream=None) -> str:
        """Run git; its failures become the most specific DeployError (about `revision` when given)."""
        timeout = self.deadline - time.monotonic()
        if timeout <= 0:
            raise GitTimeout(f"Reading the repo of {self.service.name} took too long.")
        # Waited for by subprocess's own timeout: gitpython's kill_after_timeout starts a watchdog
        # thread per call, which costs more than a short `git log` itself. (The wrapper is kept: it
        # terminates its process when it is collected.)
        running = getattr(self.repo.git, command.replace("-", "_"))(*args, istream=istream, as_process=True)
        process = running.proc
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise GitTimeout(f"Reading the repo of {self.service.name} took longer than {timeout:.0f} s.") from None
        output, error = stdout.decode(errors="replace"), stderr.decode(errors="replace")
        if process.returncode == 0:
            return output
        self._check_not_empty()
        if revision is not None and re.search(r"is ambiguous", error):
            raise UnknownRef(f"{revision!r} is ambiguous in the repo of {self.service.name}; "
                             "give more characters of the sha.")
        if revision is not None and re.search(r"bad revision|unknown revision|bad object|not a valid|"
                                              r"ambiguous argument", error):
            if revision == self.branch:
                raise UnknownRef(f"There is no branch {revision!r} in the repo of {self.service.name}"
                                 f"{self._branch_hint()}.")
            raise UnknownRef(f"There is no commit or tag {revision!r} in the repo of {self.service.name}.")
        raise DeployError(f"git could not read the repo of {self.service.name}: {git_reason(error)}")

    def _check_not_empty(self) -> None:
        status, output, _ = self.repo.git.for_each_ref("--count=1", with_extended_output=True,
                                                       with_exceptions=False, kill_after_timeout=5)
        if status == 0 and not output.strip():
            raise EmptyRepo(f"The repo of {self.service.name} has no commits yet.")

    def _branch_hint(self) -> str:
        status, output, _ = self.repo.git.for_each_ref("--count=10", "--format=%(refname:strip=2)", "refs/heads/",
                                                       with_extended_output=True, with_exceptions=False,
                                                       kill_after_timeout=5)
        branches = output.split() if status == 0 else []
        return f" (branches: {', '.join(branches)})" if branches else ""


@dataclass(frozen=True)
class _Tag:
    name: str
    when: datetime
    commit: str
    author: str
    subject: str


def pull_request(text: str) -> int | None:
    """The pull request a merge message names: "Merge pull request #123", "Fix (#123)", "Merged PR 123"."""
    found = None
    for match in _PULL_REQUEST.finditer(text):
        found = int(next(group for group in match.groups() if group))
    return found


def git_reason(error: str) -> str:
    """The line of git's stderr that says what went wrong, with any password in a URL hidden."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    at = next((i for i, line in enumerate(lines) if line.startswith(("fatal:", "error:"))), None)
    line = lines[at] if at is not None else (lines[-1] if lines else "")
    line = line.removeprefix("fatal: ").removeprefix("error: ").rstrip(".")
    if at and line.startswith("Could not read from remote repository"):
        line = f"{lines[at - 1].rstrip('.')} ({line})"   # the transport's own words say why (ssh: …)
    return redact(line)


def _records(output: str, size: int) -> list[tuple[str, ...]]:
    """NUL-separated fields, `size` per record (the text after a record's last field is its stat)."""
    fields = output.split("\0")
    if output.startswith("\0"):
        fields = fields[1:]
    return [tuple(fields[i:i + size]) for i in range(0, len(fields) - size + 1, size)]


def _shortstat(text: str) -> tuple[int, int, int]:
    match = _SHORTSTAT.search(text)
    if not match:
        return 0, 0, 0
    return int(match.group(1)), int(match.group(2) or 0), int(match.group(3) or 0)


def _numstat(text: str) -> list[FileChange]:
    files = []
    for line in text.splitlines():
        parts = line.split("\t", 2)
        if len(parts) == 3:
            added, deleted, path = parts
            files.append(FileChange(path, None if added == "-" else int(added),
                                    None if deleted == "-" else int(deleted)))
    return sorted(files, key=lambda change: -change.lines)


def _first_tag(refs: str) -> str | None:
    return next((ref.removeprefix("tag: ") for ref in refs.rstrip().split(", ") if ref.startswith("tag: ")), None)


def _git_date(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S +0000")


def _from_git_date(text: str) -> datetime:
    return datetime.fromisoformat(text.strip()).astimezone(UTC)
