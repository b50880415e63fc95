import json
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from bot import render
from bot.render import Renderer

NOW = datetime(2026, 11, 24, 13, 0, tzinfo=UTC)


@pytest.fixture
def renderer() -> Renderer:
    return Renderer(ZoneInfo("Europe/Berlin"), lambda: NOW)


def slack(renderer: Renderer, template: str, **data):
    blocks = list(render._split_blocks(renderer.env.from_string(template).render(**data)))
    return render.to_slack(blocks), render.to_text(blocks)


def test_user_text_is_escaped_exactly_for_slack(renderer):
    message, text = slack(renderer, "Title: {{ title }}", title="<!channel> & <@U123> <http://x|y> We've \"q\"")
    shown = message.blocks[0]["text"]["text"]
    assert shown == "Title: &lt;!channel&gt; &amp; &lt;@U123&gt; &lt;http://x|y&gt; We've \"q\""
    assert text == "Title: <!channel> & <@U123> <http://x|y> We've \"q\""


def test_structure_comes_only_from_template_globals(renderer):
    forged = "\ue000header\ue001pwned\ue000 \ue003user\ue001U999\ue003 \x1b[31m"
    message, _ = slack(renderer, "{{ header('Real') }}{{ value }} {{ mention('U1') }}", value=forged)
    assert [b["type"] for b in message.blocks] == ["header", "section"]
    section = message.blocks[1]["text"]["text"]
    assert "<@U1>" in section and "<@U999>" not in section and "\x1b" not in section


def test_buttons_carry_the_command_they_run(renderer):
    message, text = slack(renderer, "{{ buttons(('Ack & go', '/incident ack #3', 'primary'), ('Resolve', '/incident resolve #3')) }}")
    (actions,) = message.blocks
    assert [(e["text"]["text"], e["value"], e.get("style")) for e in actions["elements"]] == [
        ("Ack &amp; go", "/incident ack #3", "primary"), ("Resolve", "/incident resolve #3", None)]
    assert len({e["action_id"] for e in actions["elements"]}) == 2
    assert text == "[Ack & go: /incident ack #3]  [Resolve: /incident resolve #3]"


def test_a_button_may_ask_first(renderer):
    message, text = slack(renderer, "{{ buttons(('Resolve', '/incident resolve #3', '', q, 'Not yet'), ('Probe', '/probe api')) }}",
                          q="Resolve #3 <!channel> \ue000header\ue001x\ue000?")
    resolve, probe = message.blocks[0]["elements"]
    assert resolve["confirm"] == {
        "title": {"type": "plain_text", "text": "Resolve", "emoji": True},
        "text": {"type": "mrkdwn", "text": "Resolve #3 &lt;!channel&gt; headerx?"},
        "confirm": {"type": "plain_text", "text": "Resolve", "emoji": True},
        "deny": {"type": "plain_text", "text": "Not yet", "emoji": True}}
    assert "style" not in resolve and "confirm" not in probe
    assert text == "[Resolve: /incident resolve #3]  [Probe: /probe api]"


def test_mentions_and_links_inside_context_and_buttons_stay_whole(renderer):
    message, text = slack(renderer, "{{ context('posted in ' ~ channel('C0SUM'), 'by ' ~ mention('U1') ~ ', see ' ~ link('https://x.io/a', 'the doc')) }}"
                                    "{{ buttons(('Go to ' ~ channel('C0SUM'), '/incident status #1')) }}")
    context, actions = message.blocks
    assert [e["text"] for e in context["elements"]] == ["posted in <#C0SUM>", "by <@U1>, see <https://x.io/a|the doc>"]
    assert actions["elements"][0]["text"]["text"] == "Go to <#C0SUM>" and actions["elements"][0]["value"] == "/incident status #1"
    assert not any("\ue000" <= ch <= "\ue0ff" for ch in json.dumps(message.blocks, ensure_ascii=False) + text)
    assert text.splitlines()[0] == "posted in #C0SUM  ·  by @U1, see the doc (https://x.io/a)"


def test_a_long_header_becomes_a_bold_section_not_a_cut_one(renderer):
    title = "x" * 200
    message, _ = slack(renderer, "{{ header(t) }}", t=title)
    assert message.blocks[0]["type"] == "section" and title in message.blocks[0]["text"]["text"]


def test_sections_are_split_at_3000_characters_on_line_breaks(renderer):
    lines = "\n".join(f"line {i:04d} " + "y" * 40 for i in range(200))
    message, _ = slack(renderer, "{{ t }}", t=lines)
    sections = [b["text"]["text"] for b in message.blocks]
    assert all(len(s) <= 3000 for s in sections) and len(sections) > 1
    assert "\n".join(sections) == lines


def test_code_blocks_keep_their_fences_in_every_piece(renderer):
    trace = "\n".join(f'  File "app.py", line {i}, in handler' for i in range(150))
    message, text = slack(renderer, "{{ code(t) }}", t=trace)
    sections = [b["text"]["text"] for b in message.blocks]
    assert len(sections) > 1
    assert all(s.startswith("```\n") and s.endswith("\n```") and len(s) <= 3000 for s in sections)
    assert text.splitlines()[0] == '      File "app.py", line 0, in handler'


def test_past_fifty_blocks_the_whole_message_goes_to_a_file(renderer):
    message, _ = slack(renderer, "{% for i in range(80) %}{{ divider() }}line {{ i }}\n{% endfor %}")
    assert len(message.blocks) == 50
    assert "attached file" in message.blocks[-1]["elements"][0]["text"]
    assert "line 79" in message.overflow and "line 0" in message.overflow


def test_context_elements_are_grouped_by_ten(renderer):
    message, _ = slack(renderer, "{{ context(*items) }}", items=[f"i{n}" for n in range(23)])
    assert [len(b["elements"]) for b in message.blocks] == [10, 10, 3]


def test_fallback_text_is_short_and_escaped(renderer):
    message, _ = slack(renderer, "{{ header(t) }}", t="<!here> " + "z" * 500)
    assert message.text.startswith("&lt;!here&gt; zzz") and len(message.text) <= 300
    message, _ = slack(renderer, "{{ t }}", t="z" * 298 + "&x")
    assert message.text == "z" * 298 + "…"


def test_times_are_shown_in_the_configured_zone(renderer):
    _, text = slack(renderer, "{{ a | when }} / {{ b | when }} / {{ b | ago }} / {{ 4020 | duration }}",
                    a=datetime(2026, 11, 24, 12, 5, tzinfo=UTC), b="2026-11-20T09:00:00Z")
    assert text == "13:05 CET / Fri 20 Nov 10:00 CET / 4 d 04 h ago / 1 h 07 m"
    _, other_year = slack(renderer, "{{ a | when }}", a="2020-01-01T00:00:00Z")
    assert other_year == "Wed 01 Jan 2020 01:00 CET"


def test_times_in_slack_are_slack_dates_each_reader_sees_in_their_zone(renderer):
    moment = datetime(2026, 11, 24, 12, 5, 42, tzinfo=UTC)
    message, text = slack(renderer, "{{ header('Since ' ~ (a | when)) }}at {{ a | when }}\n"
                                    "{{ context('checked ' ~ (a | when)) }}"
                                    "{{ buttons(('Set started to ' ~ (a | when), '/x', '', 'Set it to ' ~ (a | when) ~ '?', 'No')) }}"
                                    "{{ code(a | when) }}", a=moment)
    date = "<!date^1795521900^{date_short_pretty} {time}|13:05 CET>"     # to the minute, as shown
    header, section, context, actions, code = message.blocks
    assert header["text"]["text"] == "Since 13:05 CET"                   # plain text: the fallback
    assert section["text"]["text"] == f"at {date}" and context["elements"][0]["text"] == f"checked {date}"
    button = actions["elements"][0]
    assert button["text"]["text"] == "Set started to 13:05 CET" and button["confirm"]["text"]["text"] == f"Set it to {date}?"
    assert code["text"]["text"] == "```\n13:05 CET\n```"
    assert message.text == "Since 13:05 CET"
    assert text == "== Since 13:05 CET ==\nat 13:05 CET\nchecked 13:05 CET\n[Set started to 13:05 CET: /x]\n    13:05 CET"


def test_a_value_cannot_forge_a_slack_date(renderer):
    message, _ = slack(renderer, "{{ v }}", v="<!date^1^{time}|x> \ue003date\ue0051\ue005x\ue003")
    assert "<!date" not in message.blocks[0]["text"]["text"] and "&lt;!date^1^{time}|x&gt;" in message.blocks[0]["text"]["text"]


def test_every_block_is_valid_json_for_slack(renderer):
    message, _ = slack(renderer, "{{ header('H') }}body\n{{ context('c') }}{{ divider() }}{{ code('x') }}")
    assert json.loads(json.dumps(message.blocks))[0] == {"type": "header", "text": {"type": "plain_text", "text": "H", "emoji": True}}


# -- forged structure: one door for every value ----------------------------------------------------

# Every marker render.py uses, shaped as the structure it stands for, and Slack's own syntax.
FORGED = ("\ue000buttons\ue001Acknowledge\ue001/incident resolve #1\ue001primary\ue000"
          "\ue000header\ue001pwned\ue000\ue003usergroup\ue001S0ONCALL\ue003\ue003user\ue001U0BOSS\ue003"
          "\ue003link\ue001https://evil.example\ue001docs\ue003\ue003channel\ue001C0EVIL\ue003<!channel>\U000f0001")


class Plain:                     # an object that is not plain data: read through the environment's getattr
    def __init__(self, title):
        self.title = title


@dataclass(frozen=True)
class Frozen:
    title: str
    notes: tuple[str, ...]


def test_no_value_can_forge_structure_however_the_template_reaches_it(renderer):
    template = ("{% macro icon() %}🔴{% endmacro %}"
                "{{ header(icon() ~ ' #' ~ frozen.title) }}"
                "{{ top }} {{ plain.title }} {{ items['k'] }} {% for n in frozen.notes %}{{ n }}{% endfor %}\n"
                "{{ context('by ' ~ mention('U1') ~ ' ' ~ plain.title) }}"
                "{{ buttons(('Ack ' ~ top, '/incident ack #2 ' ~ frozen.title, 'primary')) }}"
                "{{ link('https://ok.example/' ~ top, items.k) }}")
    data = {"top": FORGED, "plain": Plain(FORGED), "items": {"k": FORGED}, "frozen": Frozen(FORGED, (FORGED,))}
    blocks = list(render._split_blocks(renderer.env.from_string(template).render(**data)))
    message = render.to_slack(blocks)
    assert [b["type"] for b in message.blocks] == ["header", "section", "context", "actions", "section"]
    (button,) = message.blocks[3]["elements"]
    assert button["value"].startswith("/incident ack #2 ")
    assert message.blocks[2]["elements"][0]["text"].startswith("by <@U1> ")
    shown = json.dumps([message.blocks[:3], message.blocks[4], button["text"]], ensure_ascii=False) + message.text
    assert not any(forged in shown for forged in ("<!channel>", "<@U0BOSS>", "<!subteam", "<https://evil", "<#C0EVIL"))
    text = render.to_text(blocks)
    assert not any(forged in text for forged in ("@U0BOSS", "@S0ONCALL", "#C0EVIL", "[Acknowledge", "(https://evil"))
    assert not any("\ue000" <= char <= "\uf8ff" or char >= "\U000f0000" for char in shown + text + button["value"])
    assert data["frozen"].title == FORGED     # the caller's data is not changed


def test_a_header_is_one_line(renderer):
    message, text = slack(renderer, "{{ header(t) }}", t="db down\n*Status:* resolved\u2028x\u2029y\r\x85z\x0bw")
    assert message.blocks == [{"type": "header", "text": {"type": "plain_text", "emoji": True,
                                                         "text": "db down *Status:* resolved x y z w"}}]


def test_a_value_cannot_end_the_code_span_it_is_quoted_in(renderer):
    message, text = slack(renderer, "cause `{{ v }}` *end*\n{{ code(v) }}", v="a` *bold* `b")
    section, code = (b["text"]["text"] for b in message.blocks)
    assert section.count("`") == 2 and section == "cause `aˋ *bold* ˋb` *end*"
    assert code == "```\na` *bold* `b\n```"            # a backtick cannot close a code block
    assert text.splitlines()[0] == "cause `a` *bold* `b` *end*"


def test_a_button_value_and_label_keep_their_text(renderer):
    message, text = slack(renderer, "{{ buttons((label, value)) }}", label="Run `x` & go", value="/logs api --grep `x`")
    (button,) = message.blocks[0]["elements"]
    assert button["value"] == "/logs api --grep `x`" and button["text"]["text"] == "Run `x` &amp; go"


def test_a_form_is_a_modal_whose_fields_are_named_inputs(renderer):
    many = [(f"s{n}", f"service {n}") for n in range(101)]
    template = ("{{ form('Declare an incident', 'Open', 'Cancel') }}{{ text_field('title', 'Title', t) }}"
                "{{ select_field('sev', 'Severity', [(1, 'SEV1'), (2, 'SEV2')], 2) }}{{ user_field('lead', 'Lead', optional=True) }}"
                "{{ select_field('service', 'Service', many) }}")
    blocks = list(render._split_blocks(renderer.env.from_string(template).render(t="a & <b>", many=many)))
    title, sev, lead, service = [out for block in blocks if block.kind != "form" for out in render._slack_blocks(block)]
    assert title["element"]["initial_value"] == "a & <b>"     # a value, not markup
    assert (title["block_id"], title["element"]["action_id"], title["optional"]) == ("title", "title", False)
    assert sev["element"]["initial_option"] == {"text": {"type": "plain_text", "text": "SEV2", "emoji": True}, "value": "2"}
    assert lead["element"] == {"action_id": "lead", "type": "users_select"} and lead["optional"]
    assert service["element"]["type"] == "plain_text_input"      # past Slack's 100 options: typed instead


def test_a_forms_private_metadata_fits_slack(renderer):
    from bot.outbox import MAX_METADATA, _form_metadata

    metadata = _form_metadata("C1", {"text": "\x01" * 1000, "user": "U1", "channel": "C1", "ts": "1.2"})
    assert len(metadata) <= MAX_METADATA and json.loads(metadata)["quote"]["ts"] == "1.2"
