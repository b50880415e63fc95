"""Documentation is part of the product: a command without help or a README section fails here."""

import re
from pathlib import Path

import pytest

from bot.config import Config, Table
from bot.render import Renderer
from bot.times import utc_now
from commands import registry

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
ARCHITECTURE = (ROOT / "ARCHITECTURE.md").read_text()


@pytest.mark.parametrize("name", list(registry()))
def test_every_command_has_help_a_readme_section_and_a_place_on_the_map(name):
    command = registry()[name]
    renderer = Renderer(Config().timezone, utc_now)
    assert renderer.has(command.help_template), f"templates/{command.help_template}.j2 is missing"
    help_text = renderer.text(command.help_template, {**command.help_data(Config()), "command": command, "config": Config()})
    assert f"/{name}" in help_text
    assert re.search(rf"^### /{name}\b", README, re.M), f"README.md has no '### /{name}' section"
    section = README.split(f"### /{name}", 1)[1].split("\n### ", 1)[0]
    assert "Not built yet" not in section and f"/{name}" in section
    assert re.search(rf"\b{name}\b", ARCHITECTURE), f"ARCHITECTURE.md does not place commands/{name}"
    assert command.description and command.usage and len(command.usage) <= 1000


def test_readme_quickstart_is_two_one_line_commands_that_ci_runs():
    quickstart = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)\n```", quickstart, re.S)
    assert len(blocks) == 2 and all("\n" not in b for b in blocks)
    assert blocks[0].endswith("oncall-bot console")
    ci = (ROOT / ".ci" / "run").read_text()
    assert blocks[1] in ci, ".ci/run must run the README's test command"


def test_every_config_key_the_code_reads_is_in_the_readme(make_config, monkeypatch):
    """Reads a config with a probe of every kind, noting each key any table asked for, present or
    not: each must be documented in README.md, so a setting cannot exist without its line."""
    asked: set[str] = set()
    original = Table.done

    def noting(table: Table) -> None:
        asked.update(table._asked)
        original(table)

    monkeypatch.setattr(Table, "done", noting)
    targets = {"http": 'url = "http://x"', "redis": 'url = "redis://x"', "postgres": 'dsn = "postgresql://x/db"',
               "mysql": 'dsn = "mysql://x/db"', "tcp": 'address = "x:1"', "host": ""}
    probes = "\n".join(f'[services.api.probes.{kind}]\nkind = "{kind}"\n{target}' for kind, target in targets.items())
    make_config(f'[access]\n"/incident" = {{ users = ["U012AB3CD"] }}\n[redaction.patterns]\nx = "y"\n{probes}')
    names = {"api", "/incident", "x", *targets}     # chosen by the user: a service, a command, a kind of secret
    documented = set(re.findall(r"[\w/]+", " ".join(re.findall(r"`([^`\n]+)`", README))))
    undocumented = sorted(asked - names - documented)
    assert not undocumented, f"config keys missing from README.md: {undocumented}"
