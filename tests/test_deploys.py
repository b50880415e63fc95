"""/deploys on real git repositories built in temp dirs, with commit dates set by the tests."""

from __future__ import annotations

import gc
import io
import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.command import Audience, Outcome
from bot.config import ConfigError
from bot.render import MAX_BLOCKS, Renderer
from bot.serialize import to_json
from commands.deploys import history, mirror
from commands.deploys.settings import DeploySettings
from git_repo import GitRepo

T = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)   # the clock fixture's now
ROOT = Path(__file__).resolve().parent.parent


def lines(n: int) -> str:
    return "".join(f"line {i}\n" for i in range(n))


@pytest.fixture
def repo(tmp_path) -> GitRepo:
    return GitRepo(tmp_path / "api")


@pytest.fixture
def service(make_config):
    """service(repo, **keys) -> a Config with [services.api] reading `repo`."""

    def make(repo: GitRepo | str, name: str = "api", timezone: str = "UTC", **keys) -> object:
        settings = "".join(f"{key} = {json.dumps(value)}\n" for key, value in keys.items())
        where = repo if isinstance(repo, str) else str(repo.path)
        return make_config(f'timezone = "{timezone}"\n[services.{name}]\nrepo = "{where}"\n{settings}')

    return make


def shas(data) -> list[str]:
    return [d["sha"] if isinstance(d, dict) else d.sha for d in data["deploys"]]


def as_json(local, config, text: str) -> dict:
    out, err = _Capture(), _Capture()
    code = local(config).run(text, as_json=True, out=out, err=err)
    assert code == 0, out.text
    return json.loads(out.text)


class _Capture:
    def __init__(self):
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass


# -- what is listed ----------------------------------------------------------------------------------


def test_merges_are_the_first_parent_commits_newest_first_with_their_numbers(repo, service, local):
    repo.commit("initial import", T - timedelta(days=3), {"app.py": lines(10)})
    merge = repo.pull_request(12, T - timedelta(hours=3), {"app.py": lines(14), "README.md": "hi\n"})
    repo.tag("v1.2", T - timedelta(hours=3))
    direct = repo.commit("Fix login redirect (#34)", T - timedelta(hours=2), {"app.py": lines(12)},
                         author="Alan Turing")
    data = as_json(local, service(repo), "/deploys api")
    assert shas(data) == [direct, merge]   # the PR's own commit and the 3-day-old import are not deploys
    first, second = data["deploys"]
    assert first == {**first, "when": "2026-11-24T12:00:00Z", "author": "Alan Turing", "pr": 34, "tag": None,
                     "subject": "Fix login redirect (#34)", "files_changed": 1, "insertions": 0,
                     "deletions": 2, "suspect": False, "merge": False}
    assert second == {**second, "when": "2026-11-24T11:00:00Z", "author": "Grace Hopper", "pr": 12, "tag": "v1.2",
                      "files_changed": 2, "insertions": 5, "deletions": 0, "merge": True}
    assert "last_known_good" not in data and "rollback_hint" not in data


def test_commits_mode_lists_every_commit_of_the_branch(repo, service, local):
    repo.commit("initial import", T - timedelta(hours=5))
    merge = repo.pull_request(7, T - timedelta(hours=2))
    work = repo.git("rev-parse", f"{merge}^2")
    data = local(service(repo, deploy="commits")).invoke("/deploys api").data
    assert shas(data)[:2] == [merge, work] and len(data["deploys"]) == 3


def test_since_reads_a_duration_a_clock_time_in_the_configured_zone_or_iso(repo, service, local):
    old = repo.commit("old", T - timedelta(hours=2))
    recent = repo.commit("recent", T - timedelta(minutes=30))   # 13:30 UTC, 14:30 in Berlin
    utc, berlin = service(repo), service(repo, timezone="Europe/Berlin")
    assert shas(local(utc).invoke("/deploys api --since 1h").data) == [recent]
    assert shas(local(utc).invoke("/deploys api --since 3h").data) == [recent, old]
    assert shas(local(utc).invoke("/deploys api --since 13:00").data) == [recent]
    assert shas(local(berlin).invoke("/deploys api --since 14:00").data) == [recent]
    assert shas(local(berlin).invoke("/deploys api --since 13:00").data) == [recent, old]
    assert shas(local(utc).invoke("/deploys api --since 2026-11-24T11:00").data) == [recent, old]
    assert shas(local(utc).invoke("/deploys api --since 45m ago").data) == [recent]
    assert shas(local(utc).invoke("/deploys api --last 1").data) == [recent]
    runner = local(berlin)
    text = runner.renderer.text("deploys", runner.invoke("/deploys api").data)
    assert "14:30 CET (30 m 00 s ago)" in text and "13:00 CET" in text


def test_bad_windows_get_the_usage_line(repo, service, local):
    repo.commit("one", T - timedelta(hours=1))
    runner = local(service(repo))
    for text, says in [("/deploys api --since soon", "not a time"), ("/deploys api --since 2h --last 3", "not both"),
                       ("/deploys api --last 0", "--last must be"), ("/deploys api --since 23:59", "future"),
                       ("/deploys api a1b2c3d --last 3", "takes no --since"), ("/deploys api a b", "at most one")]:
        reply = runner.invoke(text)
        assert reply.outcome is Outcome.USAGE and says in reply.data["message"], (text, reply.data)


def test_tags_are_deploys_by_tagger_or_commit_date_with_changes_since_the_previous_tag(repo, service, local):
    repo.commit("initial import", T - timedelta(days=5), {"app.py": lines(10)})
    repo.tag("v1.0", T - timedelta(hours=6))                           # annotated: the tagger's date
    repo.commit("feature", T - timedelta(hours=4), {"app.py": lines(15)})
    repo.tag("nightly-1")                                              # does not match v*
    fix = repo.commit("hotfix (#9)", T - timedelta(hours=3), {"app.py": lines(13), "b.txt": "b\n"})
    repo.tag("v1.1")                                                   # lightweight: the commit's date
    data = as_json(local, service(repo, deploy="tags:v*"), "/deploys api")
    assert [d["tag"] for d in data["deploys"]] == ["v1.1", "v1.0"]
    newest, first = data["deploys"]
    assert newest == {**newest, "sha": fix, "when": "2026-11-24T11:00:00Z", "pr": 9, "files_changed": 2,
                      "insertions": 4, "deletions": 0, "subject": "hotfix (#9)"}
    assert first["when"] == "2026-11-24T08:00:00Z" and first["subject"] == "initial import"
    reply = local(service(repo, deploy="tags:v*")).invoke("/deploys api --branch main")
    assert reply.outcome is Outcome.USAGE and "does not apply" in reply.data["message"]


def test_a_monorepo_service_sees_only_commits_touching_its_paths_renames_included(repo, service, local, make_config):
    repo.commit("initial import", T - timedelta(days=2),
                {"services/api/app.py": lines(20), "services/web/ui.js": lines(5)})
    api = repo.pull_request(1, T - timedelta(hours=5), {"services/api/app.py": lines(22)})
    web = repo.pull_request(2, T - timedelta(hours=4), {"services/web/ui.js": lines(9)})
    renamed = repo.pull_request(3, T - timedelta(hours=3), {"services/api/app.py": None,
                                                             "services/api/main.py": lines(20)})
    config = make_config(f'[services.api]\nrepo = "{repo.path}"\npaths = ["services/api/"]\n'
                         f'[services.web]\nrepo = "{repo.path}"\npaths = ["services/web/"]\n')
    api_data = as_json(local, config, "/deploys api")
    assert shas(api_data) == [renamed, api]
    assert {k: api_data["deploys"][0][k] for k in ("files_changed", "insertions", "deletions")} == \
        {"files_changed": 1, "insertions": 0, "deletions": 2}   # a rename, not 1 added + 1 deleted
    assert shas(as_json(local, config, "/deploys web")) == [web]
    everything = as_json(local, config, "/deploys")
    assert [(d["service"], d["sha"]) for d in everything["deploys"]] == [("api", renamed), ("web", web), ("api", api)]


def test_another_branch(repo, service, local):
    repo.commit("initial import", T - timedelta(hours=5))
    repo.git("checkout", "-q", "-b", "release/2026-11")
    hotfix = repo.commit("hotfix", T - timedelta(hours=1))
    repo.git("checkout", "-q", "main")
    assert shas(local(service(repo)).invoke("/deploys api --branch release/2026-11").data)[0] == hotfix
    assert hotfix not in shas(local(service(repo)).invoke("/deploys api").data)
    assert shas(local(service(repo, branch="release/2026-11")).invoke("/deploys api").data)[0] == hotfix


# -- incidents and suspects ------------------------------------------------------------------------------


@pytest.fixture
def incident_repo(repo):
    """Deploys around an incident that starts at T-30m: good, two suspects, one after the start."""
    repo.commit("initial import", T - timedelta(days=2), {"app.py": lines(10)})
    shas = {
        "good": repo.pull_request(40, T - timedelta(minutes=120), {"app.py": lines(11)}),
        "merge": repo.pull_request(41, T - timedelta(minutes=80), {"app.py": lines(12)}),
        "commit": repo.commit("Tune pool size (#42)", T - timedelta(minutes=40), {"pool.cfg": "size=5\n"}),
        "after": repo.commit("Roll forward (#43)", T - timedelta(minutes=10), {"pool.cfg": "size=50\n"}),
    }
    return repo, shas


def test_during_an_incident_suspects_last_known_good_and_the_rollback_hint(incident_repo, service, local, store):
    repo, sha = incident_repo
    runner = local(service(repo))
    opened = runner.invoke("/incident open checkout returns 500 --service api --started 30m ago")
    reply = runner.invoke("/deploys")
    assert reply.audience is Audience.THREAD and reply.incident_id == opened.incident_id
    data = json.loads(to_json(reply.data))
    # The window ends 15 m after the start: the roll-forward at T-10m is not in it.
    assert shas(reply.data) == [sha["commit"], sha["merge"], sha["good"]]
    assert [d.suspect for d in reply.data["deploys"]] == [True, True, False]
    assert reply.data["last_known_good"].sha == sha["good"]
    assert reply.data["rollback_hint"] == f"git revert -m 1 {sha['commit']} {sha['merge']}"
    assert data["services"][0]["rollback_hint"] == reply.data["rollback_hint"]
    event = store.events(opened.incident_id)[-1]
    assert event.kind == "deploys" and event.data["suspects"] == [sha["commit"], sha["merge"]]
    assert event.data["last_known_good"] == sha["good"]
    assert [d["sha"] for d in event.data["suspect_deploys"]] == event.data["suspects"]
    assert event.text == (f"/deploys {reply.data['service']}: 3 deploys, suspects {sha['commit'][:10]}, "
                          f"{sha['merge'][:10]}; last known good {sha['good'][:10]}")
    text = runner.renderer.text("deploys", reply.data)
    assert "2 suspects" in text and "Last known good" in text and reply.data["rollback_hint"] in text


def test_since_inside_an_incident_counts_from_now_and_a_deploy_after_the_start_is_no_suspect(
        incident_repo, service, local):
    repo, sha = incident_repo
    runner = local(service(repo))
    runner.invoke("/incident open checkout returns 500 --started 30m ago")
    data = runner.invoke("/deploys api --since 3h").data
    assert shas(data) == [sha["after"], sha["commit"], sha["merge"], sha["good"]]
    assert [d.suspect for d in data["deploys"]] == [False, True, True, False]


def test_suspects_and_the_last_known_good_are_found_past_the_listed_deploys(incident_repo, service, local, repo):
    repo, sha = incident_repo
    runner = local(service(repo))
    runner.invoke("/incident open checkout returns 500 --started 30m ago")
    data = runner.invoke("/deploys api --last 3").data
    assert shas(data) == [sha["after"], sha["commit"], sha["merge"]]
    assert data["last_known_good"].sha == sha["good"]   # not listed, read after the listing
    wide = local(service(repo, suspect_window="2h")).invoke("/deploys api --last 3").data
    assert [d.suspect for d in wide["deploys"]] == [False, True, True]
    # In a 2 h window the third suspect is not listed, yet it is reverted too.
    assert wide["rollback_hint"] == f"git revert -m 1 {sha['commit']} {sha['merge']} {sha['good']}"
    assert wide["last_known_good"].subject == "initial import"


def test_an_incident_by_number_and_a_rolled_back_tag(repo, service, local, store):
    repo.commit("initial import", T - timedelta(days=2))
    repo.tag("v1.0", T - timedelta(hours=5))
    repo.commit("feature", T - timedelta(hours=1))
    repo.tag("v1.1", T - timedelta(minutes=45))
    incident_id = store.insert_incident(title="500s", severity=2, service="api", status="open", opened_by="U1",
                                        opened_at=T, started_at=T - timedelta(minutes=20), channel="C0ELSEWHERE")
    data = local(service(repo, deploy="tags:v*")).invoke(f"/deploys #{incident_id}").data
    assert [d.tag for d in data["deploys"] if d.suspect] == ["v1.1"]
    assert data["last_known_good"].tag == "v1.0" and data["rollback_hint"] == "redeploy v1.0"


def test_no_suspects_says_so(repo, service, local):
    repo.commit("initial import", T - timedelta(hours=5))
    runner = local(service(repo))
    runner.invoke("/incident open slow --service api --started 10m ago")
    reply = runner.invoke("/deploys")
    assert "last_known_good" not in reply.data and not any(d.suspect for d in reply.data["deploys"])
    assert "No deploy of api in the suspect window" in runner.renderer.text("deploys", reply.data)


# -- one deploy in detail ----------------------------------------------------------------------------------


@pytest.mark.parametrize("commit_url", [
    "https://github.com/acme/api/commit/{sha}",
    "https://gitlab.com/acme/api/-/commit/{sha}",
    "https://gitea.acme.dev/acme/api/commit/{sha}",
    "https://bitbucket.org/acme/api/commits/{sha}",
])
def test_one_deploy_in_detail_with_its_top_files_and_a_link(repo, service, local, commit_url):
    repo.commit("initial import", T - timedelta(days=2), {"big.bin": "x"})
    files = {f"src/file_{n:02d}.py": lines(n + 1) for n in range(25)}
    (repo.path / "big.bin").write_bytes(b"\0\1\2binary")
    sha = repo.commit("Rewrite the pool\n\nBecause the old one leaked.\nSee #77.", T - timedelta(hours=1), files)
    runner = local(service(repo, commit_url=commit_url))
    reply = runner.invoke(f"/deploys api {sha[:8]}")
    data = reply.data
    assert data["deploy"].sha == sha and data["message"] == "Rewrite the pool\n\nBecause the old one leaked.\nSee #77."
    assert [f.path for f in data["files"][:2]] == ["src/file_24.py", "src/file_23.py"]
    assert len(data["files"]) == 26 and {f.path: f.insertions for f in data["files"]}["big.bin"] is None
    url = commit_url.replace("{sha}", sha)
    assert data["deploy"].url == url
    text = runner.renderer.text("deploys_detail", data)
    assert f"Open the commit ({url})" in text and "…and 6 more files." in text and "src/file_04.py" not in text
    blocks = runner.renderer.slack("deploys_detail", data).blocks
    assert f"<{url}|Open the commit>" in json.dumps(blocks)


def test_detail_of_a_tag_and_of_a_commit_outside_the_services_paths(repo, service, local, make_config):
    repo.commit("initial import", T - timedelta(days=2), {"api/a.py": lines(3), "web/w.js": lines(3)})
    repo.tag("v1.0", T - timedelta(days=1))
    web = repo.commit("web only", T - timedelta(hours=3), {"web/w.js": lines(5)})
    repo.commit("api too", T - timedelta(hours=2), {"api/a.py": lines(6)})
    repo.tag("v1.1", T - timedelta(hours=1))
    tags = local(service(repo, deploy="tags:v*")).invoke("/deploys api v1.1").data
    assert tags["previous_tag"] == "v1.0" and tags["deploy"].tag == "v1.1"
    assert sorted(f.path for f in tags["files"]) == ["api/a.py", "web/w.js"]
    first = local(service(repo, deploy="tags:v*")).invoke("/deploys api v1.0").data
    assert first["previous_tag"] is None and sorted(f.path for f in first["files"]) == ["api/a.py", "web/w.js"]
    config = make_config(f'[services.api]\nrepo = "{repo.path}"\npaths = ["api/"]\n')
    outside = local(config).invoke(f"/deploys api {web}").data
    assert outside["in_paths"] is False and [f.path for f in outside["files"]] == ["web/w.js"]
    # A web-only pull request branched before an api change landed on main: git lists its merge
    # under api/ (its parents differ there), though the merge itself changed nothing there.
    repo.git("checkout", "-q", "-b", "pr-7")
    repo.commit("web work", T - timedelta(minutes=50), {"web/w.js": lines(9)})
    repo.git("checkout", "-q", "main")
    repo.commit("api meanwhile", T - timedelta(minutes=40), {"api/a.py": lines(8)})
    repo.git("merge", "-q", "--no-ff", "-m", "Merge pull request #7 from acme/pr-7", "pr-7", at=T - timedelta(minutes=30))
    merge = repo.git("rev-parse", "HEAD")
    merged = local(config).invoke(f"/deploys api {merge}").data
    assert merged["in_paths"] is False and [f.path for f in merged["files"]] == ["web/w.js"]


# -- errors, privately ---------------------------------------------------------------------------------


def test_each_problem_gets_a_clear_private_message(tmp_path, repo, service, local, make_config):
    repo.commit("initial import", T - timedelta(hours=1))
    empty = GitRepo(tmp_path / "empty")
    shallow = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{repo.path}", str(shallow)], check=True)
    config = make_config(f"""
        [services.api]
        repo = "{repo.path}"
        [services.gone]
        repo = "{tmp_path / 'nowhere'}"
        [services.empty]
        repo = "{empty.path}"
        [services.shallow]
        repo = "{shallow}"
        [services.norepo]
        logs = ["/var/log/x.log"]
        """)
    runner = local(config)
    for text, outcome, says in [
        ("/deploys nope", Outcome.USAGE, "Unknown service 'nope' (with a repo: api, gone, empty, shallow)"),
        ("/deploys norepo", Outcome.FAILED, "norepo has no repo configured"),
        ("/deploys gone", Outcome.FAILED, "is not a git repository"),
        ("/deploys empty", Outcome.FAILED, "The repo of empty has no commits yet."),
        ("/deploys shallow", Outcome.FAILED, "is a shallow clone"),
        ("/deploys api deadbeef", Outcome.FAILED, "There is no commit or tag 'deadbeef' in the repo of api."),
        ("/deploys api --branch nope", Outcome.FAILED, "There is no branch 'nope' in the repo of api (branches: main)"),
        ("/deploys api a1b2c3d", Outcome.FAILED, "There is no commit or tag"),
        ("/deploys api9", Outcome.USAGE, "Unknown service"),
        ("/deploys a1b2c3d", Outcome.USAGE, "Unknown service"),
    ]:
        reply = runner.invoke(text)
        assert (reply.outcome, reply.audience) == (outcome, Audience.CALLER), text
        assert says in reply.data["message"], (text, reply.data["message"])
    # All services at once: the readable one is listed, each other one says what is wrong in its row.
    data = runner.invoke("/deploys").data
    assert len(data["deploys"]) == 1
    errors = {report.name: report.error for report in data["services"]}
    assert errors["api"] is None and "shallow clone" in errors["shallow"] and "no commits" in errors["empty"]
    assert "norepo" not in errors


def test_git_is_stopped_at_the_deadline(repo, make_config):
    repo.commit("initial import", T - timedelta(hours=1))
    api = DeploySettings.of(make_config(f'[services.api]\nrepo = "{repo.path}"\n').services["api"])
    window = history.DeployWindow(T - timedelta(days=1), None, 10)
    with history.opened(str(repo.path), api, "main", time.monotonic() + 5) as readable:
        assert len(readable.deploys(window).deploys) == 1
    with history.opened(str(repo.path), api, "main", time.monotonic() - 1) as late:
        with pytest.raises(history.GitTimeout, match="took too long"):
            late.deploys(window)


def test_refs_that_could_be_read_as_options_never_reach_git(repo, service, local, monkeypatch):
    repo.commit("initial import", T - timedelta(hours=1))
    runner = local(service(repo))
    calls = []
    real = history.History._git
    monkeypatch.setattr(history.History, "_git", lambda self, *args, **kw: calls.append(args) or real(self, *args, **kw))
    for text in ['/deploys api "--upload-pack=touch /tmp/pwned"', "/deploys api -x", "/deploys api —output=x",
                 "/deploys api --branch=--all", '/deploys api --branch "-c core.pager=x"', "/deploys api HEAD@{1}",
                 "/deploys api main..HEAD", "/deploys api ../../etc", "/deploys api a:b", "/deploys api v1.lock"]:
        reply = runner.invoke(text)
        assert reply.outcome is Outcome.USAGE, (text, reply.data)
    assert calls == []
    for name in ("v1.4.2", "release/2026-11", "feature/x_y+z", "a1b2c3d", "0" * 40, "HEAD"):
        assert history.checked_ref(name) == name
    runner.invoke("/deploys api main")
    detail_call = next(args for args in calls if args[0] == "log")
    assert detail_call[detail_call.index("--end-of-options") + 1] == "main"


# -- remote repositories: the mirror --------------------------------------------------------------------


@pytest.fixture
def remote(tmp_path):
    """A bare repository served over file://, and a working clone that pushes to it."""
    origin = GitRepo(tmp_path / "origin.git", bare=True)
    work = GitRepo(tmp_path / "work")
    work.git("remote", "add", "origin", str(origin.path))
    return origin, work


def test_a_remote_repo_is_mirrored_beside_the_database_and_fetched_before_each_read(remote, service, local, store):
    origin, work = remote
    first = work.commit("initial import", T - timedelta(hours=3))
    work.git("push", "-q", "origin", "main")
    runner = local(service(f"file://{origin.path}"))
    data = runner.invoke("/deploys api").data
    assert shas(data) == [first] and data["services"][0].stale is None
    mirrors = list((store.local_dir / "git-mirrors").iterdir())
    assert [m.name for m in mirrors] == [mirror.mirror_path(Path("."), f"file://{origin.path}").name]
    assert mirrors[0].name.startswith("origin-") and (mirrors[0] / "HEAD").exists()
    second = work.commit("second", T - timedelta(hours=1))
    work.git("push", "-q", "origin", "main")
    assert shas(runner.invoke("/deploys api").data) == [second, first]


def test_a_failing_fetch_answers_from_the_mirror_with_a_stale_note(remote, service, local):
    origin, work = remote
    first = work.commit("initial import", T - timedelta(hours=3))
    work.git("push", "-q", "origin", "main")
    runner = local(service(f"file://{origin.path}"))
    fetched_at = runner.invoke("/deploys api").data["services"][0].fetched_at
    origin.path.rename(origin.path.with_name("moved.git"))
    reply = runner.invoke("/deploys api")
    report = reply.data["services"][0]
    assert reply.outcome is Outcome.OK and shas(reply.data) == [first]
    assert report.stale and "does not appear to be a git repository" in report.stale
    assert report.fetched_at == fetched_at
    assert "stale since" in runner.renderer.text("deploys", reply.data)


def test_a_hanging_remote_is_given_up_after_the_fetch_timeout(remote, service, local):
    origin, work = remote
    first = work.commit("initial import", T - timedelta(hours=3))
    work.git("push", "-q", "origin", "main")
    runner = local(service(f"file://{origin.path}", fetch_timeout="1s"))
    children = _children()     # what earlier tests started and keep (multiprocessing's resource tracker)
    runner.invoke("/deploys api")
    # git upload-pack opens packed-refs when it advertises refs; a FIFO there blocks it for good.
    origin.git("pack-refs", "--all")
    (origin.path / "packed-refs").unlink()
    os.mkfifo(origin.path / "packed-refs")
    started = time.monotonic()
    reply = runner.invoke("/deploys api")
    assert time.monotonic() - started < 5
    assert shas(reply.data) == [first] and reply.data["services"][0].stale == "no answer within 1 s"
    assert _children() == children


def test_a_remote_that_cannot_be_mirrored_the_first_time_is_an_error(tmp_path, service, local):
    reply = local(service(f"file://{tmp_path / 'missing.git'}")).invoke("/deploys api")
    assert reply.outcome is Outcome.FAILED and reply.data["message"].startswith("Could not mirror the repo of api:")
    assert not list((tmp_path / "git-mirrors").iterdir())   # nothing half-made is left behind


def test_a_mirror_directory_that_cannot_be_made_is_an_error(remote, service, local, store):
    origin, work = remote
    work.commit("initial import", T - timedelta(hours=3))
    work.git("push", "-q", "origin", "main")
    (store.local_dir / "git-mirrors").write_text("a file where the mirrors should go")
    reply = local(service(f"file://{origin.path}")).invoke("/deploys api")
    assert reply.outcome is Outcome.FAILED and "git-mirrors: File exists" in reply.data["message"]


def test_concurrent_queries_share_one_mirror(remote, service, local):
    origin, work = remote
    work.commit("initial import", T - timedelta(hours=3))
    work.git("push", "-q", "origin", "main")
    runner = local(service(f"file://{origin.path}"))
    results = []
    threads = [threading.Thread(target=lambda: results.append(runner.invoke("/deploys api"))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.outcome for r in results] == [Outcome.OK] * 6
    assert all(r.data["services"][0].stale is None and len(r.data["deploys"]) == 1 for r in results)


# -- resources, size, CLI, config ------------------------------------------------------------------------


def _children() -> set[int]:
    """Live child processes of this one (zombies included: they would be a leak too)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{os.getpid()}\n" in status:
                found.add(int(entry.name))
    return found


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)   # about git's processes, not the store
def test_a_thousand_queries_leave_no_git_process_and_no_open_file(incident_repo, service, local):
    repo, sha = incident_repo
    repo.tag("v1.0", T - timedelta(minutes=100), ref=sha["good"])
    runner = local(service(repo))
    tags = local(service(repo, deploy="tags:v*"))
    runner.invoke("/incident open checkout returns 500 --service api --started 30m ago")
    queries = [(runner, "/deploys"), (runner, "/deploys api --last 5"), (runner, f"/deploys api {sha['merge'][:10]}"),
               (tags, "/deploys api"), (runner, "/deploys api nosuchref")]
    for query_runner, text in queries:    # warm up: imports, caches, the store's connection
        query_runner.invoke(text)
    gc.collect()   # what earlier tests left for the collector must not count
    fds, children = sorted(os.listdir("/proc/self/fd")), _children()
    for n in range(1000):
        query_runner, text = queries[n % len(queries)]
        query_runner.invoke(text)
    assert _children() == children
    assert sorted(os.listdir("/proc/self/fd")) == fds


def test_a_long_listing_stays_within_slacks_limits(repo, service, local):
    for n in range(60):
        repo.commit(f"change {n} <!channel> & friends", T - timedelta(hours=20) + timedelta(minutes=n))
    runner = local(service(repo))
    data = runner.invoke("/deploys api").data
    message = runner.renderer.slack("deploys", data)
    text = json.dumps(message.blocks, ensure_ascii=False)
    assert len(message.blocks) <= MAX_BLOCKS and message.overflow is None
    assert "…and 45 more" in text and "&lt;!channel&gt; &amp; friends" in text and "<!channel>" not in text


def test_the_cli_prints_the_json_the_issue_names(incident_repo, tmp_path):
    repo, sha = incident_repo
    (tmp_path / "oncall.toml").write_text(f'[services.api]\nrepo = "{repo.path}"\n')
    env = {**os.environ, "ONCALL_CONFIG": str(tmp_path / "oncall.toml"), "ONCALL_DB": str(tmp_path / "cli.db"),
           "ONCALL_NOW": T.isoformat()}
    done = subprocess.run([sys.executable, "-m", "bot", "run", "--json", "/deploys api --since 3d"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert shas(data) == [sha["after"], sha["commit"], sha["merge"], sha["good"], shas(data)[-1]]
    for deploy in data["deploys"]:
        assert {"sha", "when", "author", "subject", "pr", "tag", "files_changed", "insertions", "deletions",
                "suspect"} <= deploy.keys()
        assert datetime.fromisoformat(deploy["when"]).tzinfo is not None
    assert data["deploys"][1]["pr"] == 42 and data["deploys"][2]["pr"] == 41


def test_config_keys_for_deploys_are_validated(make_config, tmp_path):
    config = make_config('[services.api]\nrepo = "repos/api"\nfetch_timeout = "30s"\n'
                         '[services.web]\nrepo = "git@github.com:acme/web.git"\n')
    api, web = (DeploySettings.of(config.services[name]) for name in ("api", "web"))
    assert api.repo == str(tmp_path / "repos" / "api") and not api.repo_is_remote
    assert api.fetch_timeout == timedelta(seconds=30) and web.repo_is_remote
    for text, says in [
        ('repo = "ext::sh -c touch% /tmp/pwned"', "remote helpers"),
        ('repo = "ftp://example.com/api.git"', "ftp:// is not supported"),
        ('repo = "--upload-pack=x"', "neither a path nor a URL"),
        ('commit_url = "https://github.com/acme/api/commit/"', "with {sha} in it"),
        ('paths = ["/services/api"]', "relative to the repository's root"),
        ('fetch_timeout = "soon"', "not a duration"),
    ]:
        with pytest.raises(ConfigError, match="services.api.") as raised:
            make_config(f"[services.api]\n{text}\n")
        assert says in str(raised.value)


def test_help_lists_the_forms(local):
    reply = local().invoke("/deploys help")
    text = Renderer(reply.data["config"].timezone, lambda: T).text(reply.template, reply.data)
    assert "/deploys api --since 6h" in text and "last known good" in text


def test_a_failed_fetch_keeps_the_transports_reason():
    from commands.deploys.history import git_reason

    stderr = ("ssh: Could not resolve hostname no-such-host.invalid: Name or service not known\r\n"
              "fatal: Could not read from remote repository.\n\nPlease make sure you have the correct access rights\n")
    assert git_reason(stderr) == ("ssh: Could not resolve hostname no-such-host.invalid: Name or service not known "
                                  "(Could not read from remote repository)")
    assert git_reason("fatal: repository 'https://ops:hunter2@git.example/x' not found") == \
        "repository 'https://ops:[redacted:password]@git.example/x' not found"


@pytest.mark.parametrize("body", ["word " * 1_000_000, "\n" * 5_000_000])
def test_a_huge_commit_message_is_cut_in_the_listing_and_the_detail(repo, service, local, body):
    message = repo.path / "message.txt"
    message.write_text("Deploy everything " + "x" * 3_000_000 + "\n\n" + body)
    repo.commit("before", T - timedelta(hours=3))
    repo.git("commit", "-q", "--allow-empty", "-F", str(message), at=T - timedelta(hours=2))
    sha = repo.git("rev-parse", "HEAD")
    runner = local(service(repo, deploy="commits"))
    for line in ("/deploys api", f"/deploys api {sha[:10]}"):
        for as_json in (False, True):
            out, err = io.StringIO(), io.StringIO()
            assert runner.run(line, as_json=as_json, out=out, err=err) == 0, err.getvalue()
            assert len(out.getvalue()) < 100_000, (line, as_json, len(out.getvalue()))
    detail = runner.invoke(f"/deploys api {sha[:10]}").data
    assert detail["message"].startswith("Deploy everything xxx") and detail["message"].endswith("cut here)")
