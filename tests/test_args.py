import pytest

from bot.args import Option, parse_args
from bot.command import UsageError
from commands import registry

OPTIONS = {"sev": Option.VALUE, "started": Option.WORDS, "force": Option.FLAG}


def test_words_options_and_incident_ref():
    args = parse_args("db is down #12 --sev 2 --started 25m ago --force", OPTIONS)
    assert args.words == ["db", "is", "down"]
    assert args.options == {"sev": "2", "started": "25m ago"} and args.flags == {"force"}
    assert args.incident == 12
    assert args.text == "db is down"


def test_option_with_equals_and_em_dash_from_autocorrect():
    args = parse_args("x —sev=1 –started 14:05", OPTIONS)
    assert args.options == {"sev": "1", "started": "14:05"}


def test_quotes_group_words_and_apostrophes_are_letters():
    args = parse_args("can't reach “the db” --started \"2026-11-24 14:05\"", OPTIONS)
    assert args.words == ["can't", "reach", "the db"]
    assert args.options["started"] == "2026-11-24 14:05"


def test_free_text_keeps_line_breaks_and_drops_options():
    args = parse_args("first line\nsecond --sev 2 line", OPTIONS)
    assert args.text == "first line\nsecond line"
    assert args.rest(1) == "line\nsecond line"


def test_incident_refs_can_be_plain_text():
    args = parse_args("fix #12 now", OPTIONS, incident_refs=False)
    assert args.incident is None and args.text == "fix #12 now"


@pytest.mark.parametrize("text, message", [("--sevv 2", "unknown option --sevv"), ("--sev", "--sev needs a value"),
                                           ("--force=yes", "--force takes no value")])
def test_errors(text, message):
    with pytest.raises(UsageError, match=message):
        parse_args(text, OPTIONS)


def test_single_quotes_group_too_but_not_inside_a_word():
    args = parse_args("it's down --started '25m ago' ‘for real’ --force", OPTIONS)
    assert args.options == {"started": "25m ago for real"} and args.flags == {"force"}
    assert args.words == ["it's", "down"]
    assert parse_args("'can't' 'x y'", {}).words == ["can't", "x y"]


def test_in_prose_only_an_incident_ref_before_the_first_word_names_the_incident():
    args = parse_args("see PR #1 for the fix", OPTIONS, prose=True)
    assert args.incident is None and args.text == "see PR #1 for the fix"
    args = parse_args("--sev 2 #4 see PR #1", OPTIONS, prose=True)
    assert args.incident == 4 and args.text == "see PR #1" and args.options == {"sev": "2"}


@pytest.mark.parametrize("name, text, incident, words", [
    ("incident", "ack #3", 3, ""),
    ("incident", "#3 ack on it", 3, "on it"),
    ("incident", "ack on it, see #3", None, "on it, see #3"),
    ("incident", "update #3 see #4", 3, "see #4"),
    ("incident", "resolve fixed by reverting #5", None, "fixed by reverting #5"),
    ("incident", "open #3 is back", None, "#3 is back"),
    ("deploys", "api #3", 3, ["api"]),
    ("deploys", "#3 api", 3, ["api"]),
    ("probe", "api #3", 3, ["api"]),
    ("logs", "api #3", 3, ["api"]),
    ("triage", "api #3", 3, ["api"]),
    ("triage", "#3", 3, []),
])
def test_every_command_reads_the_incident_number_its_way(name, text, incident, words):
    args = registry()[name].parse(text)
    assert args.incident == incident
    if name == "incident":
        assert args.text == words
    else:
        assert [value for value in (getattr(args, "service", None), getattr(args, "target", None)) if value] == words
