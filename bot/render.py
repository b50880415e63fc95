"""jinja2 templates -> Block Kit for Slack, or plain text for the console and `oncall-bot run`.

One render, two backends. Templates write Slack mrkdwn and call `header()`, `divider()`,
`context()`, `buttons()`, `code()` for structure and `mention()`, `channel()`, `link()` inline;
those emit private-use markers that no value can carry, so no value can forge a block, a button,
a mention or a link. The `when` filter is such a marker too: a Slack date (`<!date^…>`, shown in
each reader's zone) with the configured zone's text as its fallback, which plain-text fields (a
header, a button, the notification) and the text backend show.

One door for every value: the environment cleans what a template is given before the template
sees it (`new_context`: the data, deep, dataclasses included), every attribute or item a template
reads (`getattr`, `getitem`: objects that are not plain data) and every value it prints
(`finalize`). Cleaning redacts secrets (bot.redact), then strips control characters and the whole
private-use area, so templates cannot forget it, and whatever a template cuts (`truncate`, `[:n]`)
is cut after redaction. The notification text is made from the same blocks.

Code spans: Slack has no escape for a backtick, so a backtick in a value would end the template's
`code span` and let the rest of the value format itself. Values carry their backticks as a marker;
Slack's mrkdwn gets a look-alike (ˋ) outside code blocks, plain text and code blocks the backtick.
Headers are one line: line and paragraph separators in them become spaces.

Escaping: every value is HTML-escaped by jinja's autoescape, then the quote entities are turned
back (Slack decodes exactly `&amp;`, `&lt;`, `&gt;` and would show `We&#39;ve`). So `<!channel>` in
a title reaches Slack as `&lt;!channel&gt;` and pings no one. The text backend unescapes it all.

Budgets (Slack's limits): 50 blocks a message, 3000 characters a section, 150 a header, 10
context elements, 25 buttons. A longer header becomes a bold section; text past 50 blocks goes
into a file that the frame uploads in the thread, never cut silently.
"""

from __future__ import annotations

import copy
import dataclasses
import html
import importlib.resources
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import jinja2
from markupsafe import Markup, escape

from bot.redact import redact
from bot.times import format_duration, from_iso

if TYPE_CHECKING:
    from bot.command import Upload

MAX_BLOCKS = 50
MAX_SECTION = 3000
MAX_HEADER = 150
MAX_CONTEXT = 10
MAX_BUTTONS = 25
MAX_FALLBACK = 300
MAX_VIEW_TITLE = 24      # a modal's title, submit and close labels
MAX_LABEL = 2000         # an input's label
MAX_INPUT = 3000         # a text input's value
MAX_OPTION = 75          # an option's text and value
MAX_OPTIONS = 100        # a select's options: past them, the field is a text input

# Private-use characters: not whitespace to str.strip()/split() (the ASCII separators \x1c-\x1f are).
# An inline marker has its own field separator: it may sit inside a block's field (a mention in a context).
_BLOCK, _FIELD, _ITEM, _INLINE, _BACKTICK, _INLINE_FIELD = "\ue000", "\ue001", "\ue002", "\ue003", "\ue004", "\ue005"
_BLOCK_MARK = re.compile(f"{_BLOCK}(\\w+){_FIELD}(.*?){_BLOCK}", re.S)
_INLINE_MARK = re.compile(f"{_INLINE}(\\w+){_INLINE_FIELD}(.*?){_INLINE}", re.S)
_SLACK_USER = re.compile(r"^[UW][A-Z0-9]+$")
# Control characters (tab, LF and CR stay) and every private-use character, the planes' too.
# (The backtick marker is left: a value cleaned twice keeps its backticks.)
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ue000-\ue003\ue005-\uf8ff\U000f0000-\U0010ffff]")
_SEPARATORS = str.maketrans(dict.fromkeys("\x0b\x0c\x1c\x1d\x1e\x85", " "))   # control characters that part words
SLACK_BACKTICK = "\u02cb"   # ˋ, where a backtick would end a code span


@dataclass(frozen=True)
class Block:
    kind: str                       # section | code | header | divider | context | buttons | field | form
    text: str = ""
    items: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class SlackMessage:
    blocks: list[dict[str, Any]]
    text: str                       # the notification / fallback text
    overflow: str | None = None     # the whole message as plain text, when it did not fit


class _Cleaned(str):
    """A value already cleaned: the environment does not clean it twice (what is made from it is a plain str)."""

    __slots__ = ()


def clean(value: Any) -> Any:
    """Redact secrets, strip control characters and any forged marker from a value bound for a template."""
    if isinstance(value, (Markup, _Cleaned)) or not isinstance(value, str):
        return value
    return _Cleaned(_CONTROL.sub("", redact(value).translate(_SEPARATORS)).replace("`", _BACKTICK))


def clean_data(value: Any) -> Any:
    """`clean` through dicts (keys too), lists, tuples, sets and dataclasses; other objects as they are
    (a template reads their attributes through the environment's `getattr`, which cleans them)."""
    if isinstance(value, str):
        return clean(str(value) if isinstance(value, Markup) else value)
    if isinstance(value, dict):
        return {clean_data(key): clean_data(item) for key, item in value.items()}
    if isinstance(value, list):
        return [clean_data(item) for item in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(clean_data(item) for item in value)
    if isinstance(value, (set, frozenset)):
        return type(value)(clean_data(item) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changed = {}
        for field in dataclasses.fields(value):
            current = getattr(value, field.name, None)
            cleaned = clean_data(current)
            if cleaned is not current:
                changed[field.name] = cleaned
        if not changed:
            return value
        duplicate = copy.copy(value)
        for name, cleaned in changed.items():
            object.__setattr__(duplicate, name, cleaned)   # frozen dataclasses too: this is our copy
        return duplicate
    return value


class _CleanTemplate(jinja2.Template):
    def new_context(self, vars: dict[str, Any] | None = None, shared: bool = False,   # noqa: A002 (jinja's name)
                    locals: Mapping[str, Any] | None = None) -> jinja2.runtime.Context:   # noqa: A002
        return super().new_context(clean_data(vars) if vars else vars, shared, locals)


class _CleanEnvironment(jinja2.Environment):
    """Every value a template is given, reads or prints is cleaned (see the module's docstring)."""

    template_class = _CleanTemplate

    def getattr(self, obj: Any, attribute: str) -> Any:
        return clean(super().getattr(obj, attribute))

    def getitem(self, obj: Any, argument: Any) -> Any:
        return clean(super().getitem(obj, argument))


class Renderer:
    def __init__(self, timezone: ZoneInfo, clock: Callable[[], datetime]):
        self.timezone = timezone
        self.clock = clock
        self.workspace_url: str | None = None   # from auth.test, for links to threads
        self.env = _CleanEnvironment(
            loader=jinja2.FileSystemLoader(str(importlib.resources.files("templates"))),
            autoescape=True,
            finalize=clean,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            bytecode_cache=_bytecode_cache(),
            # The templates are the package's own files and do not change under a running bot: not
            # checking each one's modification time before every render saves a stat per message.
            auto_reload=False,
        )
        self.env.globals.update(
            header=_header, divider=_divider, context=_context, buttons=_buttons, code=_code,
            mention=_mention, channel=_channel, usergroup=_usergroup, link=_link, thread_link=self.thread_link,
            form=_form, text_field=_text_field, select_field=_select_field, user_field=_user_field,
        )
        self.env.filters.update(when=self.date, ago=self.ago, duration=format_duration, day=self.day)

    def has(self, template: str) -> bool:
        try:
            self.env.get_template(f"{template}.j2")
        except jinja2.TemplateNotFound:
            return False
        return True

    def blocks(self, template: str, data: dict[str, Any]) -> list[Block]:
        shadowed = self.env.globals.keys() & data.keys()
        if shadowed:
            raise ValueError(f"{template}: data keys {sorted(shadowed)} would hide template globals")
        rendered = self.env.get_template(f"{template}.j2").render(**data)
        return list(_split_blocks(rendered))

    def text(self, template: str, data: dict[str, Any]) -> str:
        return to_text(self.blocks(template, data))

    def slack(self, template: str, data: dict[str, Any]) -> SlackMessage:
        return to_slack(self.blocks(template, data))

    def file(self, upload: Upload) -> bytes:
        """An upload's bytes: its content, or the text its template writes (cleaned like every message)."""
        return upload.content if upload.template is None else (self.text(upload.template, upload.data) + "\n").encode()

    def view(self, template: str, data: dict[str, Any]) -> dict[str, Any]:
        """A modal (Slack's view) from a template that calls `form()` and the `*_field()` globals;
        `callback_id` and `private_metadata` are the frame's to add."""
        blocks = self.blocks(template, data)
        forms = [block for block in blocks if block.kind == "form"]
        if len(forms) != 1:
            raise ValueError(f"{template}: a view needs one form(title, submit)")
        (title, submit, close), = forms[0].items
        return {"type": "modal", "title": _plain_field(title, MAX_VIEW_TITLE),
                "submit": _plain_field(submit, MAX_VIEW_TITLE), "close": _plain_field(close, MAX_VIEW_TITLE),
                "blocks": [out for block in blocks if block.kind != "form" for out in _slack_blocks(block)]}

    def thread_link(self, channel: str | None, ts: str | None, label: str) -> Markup | str:
        """A link to a message's thread when the workspace is known, else just the label."""
        if not (self.workspace_url and channel and ts):
            return label
        return _link(f"{self.workspace_url.rstrip('/')}/archives/{channel}/p{ts.replace('.', '')}", label)

    # -- filters ---------------------------------------------------------------------------

    def _local(self, moment: datetime | str | None) -> datetime | None:
        if isinstance(moment, str):
            moment = from_iso(moment)
        return moment.astimezone(self.timezone) if moment else None

    def when(self, moment: datetime | str | None) -> str:
        """`14:05 CET` today, `Mon 23 Nov 14:05 CET` another day, `Wed 01 Jan 2020 00:00 UTC`
        another year, in the configured zone."""
        local = self._local(moment)
        if local is None:
            return "—"
        today = self.clock().astimezone(self.timezone).date()
        clock = local.strftime("%H:%M %Z")
        if local.date() == today:
            return clock
        day = "%a %d %b" if local.year == today.year else "%a %d %b %Y"
        return f"{local.strftime(day)} {clock}"

    def date(self, moment: datetime | str | None) -> Markup | str:
        """The `when` filter: a time Slack shows in each reader's own zone (`<!date^…>`), whose
        fallback, and the text backend's rendering, is `when` in the configured zone. To the
        minute, as shown: two times in the same minute are the same."""
        local = self._local(moment)
        if local is None:
            return "—"
        return _inline("date", str(int(local.timestamp()) // 60 * 60), self.when(local))

    def day(self, moment: datetime | str | None) -> str:
        local = self._local(moment)
        return local.strftime("%a %d %b %Y") if local else "—"

    def ago(self, moment: datetime | str | None) -> str:
        if isinstance(moment, str):
            moment = from_iso(moment)
        if moment is None:
            return "—"
        delta = self.clock() - moment
        if delta < timedelta(0):
            return f"in {format_duration(-delta.total_seconds())}"
        return f"{format_duration(delta.total_seconds())} ago"


# -- structure markers (template globals) --------------------------------------------------------


def _mark(kind: str, *items: Iterable[Any] | Any) -> Markup:
    fields = _ITEM.join(_FIELD.join(str(escape(clean(part))) for part in _as_tuple(item)) for item in items)
    return Markup(f"{_BLOCK}{kind}{_FIELD}{fields}{_BLOCK}")


def _as_tuple(item: Any) -> tuple[Any, ...]:
    return tuple(item) if isinstance(item, (list, tuple)) else (item,)


def _header(text: Any) -> Markup:
    """One line: line and paragraph separators (and any run of whitespace) become one space."""
    words = text.split() if isinstance(text, str) else str(text).split()
    return _mark("header", Markup(" ").join(words) if isinstance(text, Markup) else " ".join(words))


def _divider() -> Markup:
    return _mark("divider", "")


def _context(*items: Any) -> Markup:
    return _mark("context", *(item for item in items if item))


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    """Compiled templates kept between processes, in jinja2's per-user cache directory (which it
    checks is the user's own, mode 0700): `oncall-bot run` is a fresh process per call, and compiling
    its templates cost it more than rendering them. None where there is no such directory."""
    try:
        return jinja2.FileSystemBytecodeCache()
    except (RuntimeError, OSError):
        return None


def _buttons(*buttons: tuple[str, ...]) -> Markup:
    """Each button is (label, command text it runs[, "primary" | "danger" | ""[, question, no]]):
    with a question, Slack asks it first (a confirm dialog: the label says yes, `no` says no)."""
    return _mark("buttons", *buttons)


def _form(title: str, submit: str, close: str) -> Markup:
    """A modal's title and buttons: the template is a form (Renderer.view)."""
    return _mark("form", (title, submit, close))


def _text_field(name: str, label: str, value: Any = "", placeholder: str = "", optional: bool = False,
                multiline: bool = False, max_length: int = MAX_INPUT) -> Markup:
    """A text input; its value is submitted under `name`."""
    return _mark("field", ("text", name, label, value or "", placeholder, "optional" if optional else "",
                           "multiline" if multiline else "", str(max_length)))


def _select_field(name: str, label: str, options: Iterable[tuple[Any, Any]], initial: Any = None,
                  optional: bool = False) -> Markup:
    """A static select of (value, label) options; the chosen value is submitted under `name`."""
    return _mark("field", ("select", name, label, "" if initial is None else initial, "",
                           "optional" if optional else ""),
                 *((str(value), text) for value, text in options))


def _user_field(name: str, label: str, optional: bool = False) -> Markup:
    """A users select; the chosen user's id is submitted under `name`."""
    return _mark("field", ("user", name, label, "", "", "optional" if optional else ""))


def _code(text: Any) -> Markup:
    return _mark("code", text)


def _inline(kind: str, *parts: Any) -> Markup:
    return Markup(f"{_INLINE}{kind}{_INLINE_FIELD}" + _INLINE_FIELD.join(str(escape(clean(p))) for p in parts)
                  + _INLINE)


def _mention(user: str | None) -> Markup | str:
    return _inline("user", user) if user else "someone"


def _channel(channel: str | None) -> Markup | str:
    return _inline("channel", channel) if channel else "this channel"


def _usergroup(group: str) -> Markup:
    return _inline("usergroup", group)


def _link(url: str, label: str) -> Markup:
    return _inline("link", url, label)


# -- parsing the rendered markup -----------------------------------------------------------------


def _split_blocks(rendered: str) -> Iterable[Block]:
    position = 0
    for match in _BLOCK_MARK.finditer(rendered):
        yield from _section(rendered[position:match.start()])
        kind, payload = match.group(1), match.group(2)
        if kind in ("context", "buttons", "field", "form"):
            items = tuple(_fields(item) for item in payload.split(_ITEM) if item)
            if items:
                yield Block(kind, items=items)
        elif kind == "divider":
            yield Block(kind)
        elif payload.strip("\n"):
            yield Block(kind, text=payload.strip("\n") if kind == "code" else payload.strip())
        position = match.end()
    yield from _section(rendered[position:])


def _fields(item: str) -> tuple[str, ...]:
    """An item's fields, split at _FIELD except inside an inline marker (a channel, a link), whose
    own fields are its parts."""
    fields, inside = [""], False
    for piece in re.split(f"([{_INLINE}{_FIELD}])", item):
        if piece == _FIELD and not inside:
            fields.append("")
            continue
        inside ^= piece == _INLINE
        fields[-1] += piece
    return tuple(fields)


def _section(text: str) -> Iterable[Block]:
    text = re.sub(r"\n{3,}", "\n\n", text.strip("\n")).rstrip()
    if text.strip():
        yield Block("section", text=text)


# -- Slack backend ---------------------------------------------------------------------------------


def _slack_inline(text: str, backtick: str = SLACK_BACKTICK, *, plain: bool = False) -> str:
    """Inline markers -> Slack's syntax; a value's backticks -> `backtick` (a look-alike in mrkdwn).
    `plain`: for plain_text fields (a header, a button), where a date is its fallback text."""

    def replace(match: re.Match[str]) -> str:
        kind, parts = match.group(1), match.group(2).split(_INLINE_FIELD)
        if kind == "date":
            return parts[1] if plain else f"<!date^{parts[0]}^{{date_short_pretty}} {{time}}|{parts[1]}>"
        if kind == "user":   # a Slack user's ID; else the bot itself ("oncall-bot"), named as it is
            return f"<@{parts[0]}>" if _SLACK_USER.match(parts[0]) else parts[0]
        if kind == "channel":
            return f"<#{parts[0]}>"
        if kind == "usergroup":
            return f"<!subteam^{parts[0]}>"
        return f"<{parts[0]}|{parts[1]}>"

    return _INLINE_MARK.sub(replace, text).replace("&#39;", "'").replace("&#34;", '"').replace(_BACKTICK, backtick)


def to_slack(blocks: list[Block]) -> SlackMessage:
    out: list[dict[str, Any]] = []
    for block in blocks:
        out.extend(_slack_blocks(block))
    fallback = next((_plain(b) for b in blocks if b.kind in ("header", "section")), "")
    fallback = _slack_inline(fallback, plain=True)     # a notification: dates as their text, never cut inside one
    if len(fallback) > MAX_FALLBACK:
        fallback = re.sub(r"&[a-z]*$", "", fallback[:MAX_FALLBACK - 1]) + "…"
    if len(out) <= MAX_BLOCKS:
        return SlackMessage(out, fallback)
    kept = out[:MAX_BLOCKS - 1]
    note = f"… {len(out) - len(kept)} more blocks: the whole message is in the attached file."
    kept.append({"type": "context", "elements": [{"type": "mrkdwn", "text": note}]})
    return SlackMessage(kept, fallback, overflow=to_text(blocks))


def _slack_blocks(block: Block) -> list[dict[str, Any]]:
    if block.kind == "divider":
        return [{"type": "divider"}]
    if block.kind == "header":
        text = _slack_inline(block.text, "`", plain=True)
        if len(text) <= MAX_HEADER and "\n" not in text:
            return [{"type": "header", "text": {"type": "plain_text", "text": text, "emoji": True}}]
        return [_mrkdwn_section(chunk) for chunk in _chunks(f"*{_slack_inline(block.text)}*", MAX_SECTION)]
    if block.kind == "context":
        elements = [{"type": "mrkdwn", "text": _slack_inline(item[0])[:MAX_SECTION]} for item in block.items]
        return [{"type": "context", "elements": elements[i:i + MAX_CONTEXT]}
                for i in range(0, len(elements), MAX_CONTEXT)]
    if block.kind == "buttons":
        buttons = []
        for index, (label, value, *extra) in enumerate(block.items):
            button = {"type": "button", "action_id": f"run:{index}", "value": _plain_text(value),
                      "text": {"type": "plain_text", "text": _slack_inline(label, "`", plain=True)[:75], "emoji": True}}
            if extra and extra[0] in ("primary", "danger"):
                button["style"] = extra[0]
            if len(extra) == 3:
                button["confirm"] = _confirm(label, question=extra[1], no=extra[2])
            buttons.append(button)
        return [{"type": "actions", "elements": buttons[i:i + MAX_BUTTONS]}
                for i in range(0, len(buttons), MAX_BUTTONS)]
    if block.kind == "field":
        return [_input(block)]
    if block.kind == "form":
        return []
    if block.kind == "code":
        body = _slack_inline(block.text, "`", plain=True).replace("```", "`\u200b``")
        return [_mrkdwn_section(f"```\n{chunk}\n```") for chunk in _chunks(body, MAX_SECTION - 8)]
    return [_mrkdwn_section(chunk) for chunk in _chunks(_slack_inline(block.text), MAX_SECTION)]


def _input(block: Block) -> dict[str, Any]:
    """An input block of a modal; its block and action ids are the field's name, so a submission's
    values and the errors answered about them are by name."""
    (kind, name, label, value, placeholder, optional, *rest), *options = block.items
    name = _plain_text(name)
    element: dict[str, Any] = {"action_id": name}
    if kind == "select" and len(options) > MAX_OPTIONS:
        kind, rest = "text", ["", str(MAX_OPTION)]
    if kind == "text":
        multiline, max_length = rest
        element.update(type="plain_text_input", multiline=bool(multiline), max_length=int(max_length))
        if value:
            element["initial_value"] = _plain_text(_slack_inline(value, "`", plain=True))[:int(max_length)]
    elif kind == "select":
        choices = [{"text": _plain_field(text, MAX_OPTION), "value": _plain_text(option)[:MAX_OPTION]}
                   for option, text in options]
        element.update(type="static_select", options=choices)
        chosen = [choice for choice in choices if choice["value"] == _plain_text(value)]
        if chosen:
            element["initial_option"] = chosen[0]
    else:
        element["type"] = "users_select"
    if placeholder:
        element["placeholder"] = _plain_field(placeholder, 150)
    return {"type": "input", "block_id": name, "label": _plain_field(label, MAX_LABEL), "optional": bool(optional),
            "element": element}


def _plain_field(text: str, size: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": _slack_inline(text, "`", plain=True)[:size], "emoji": True}


def _confirm(label: str, *, question: str, no: str) -> dict[str, Any]:
    """Slack's confirm dialog for a button: its label is the title and the yes."""
    def plain(text: str, size: int) -> dict[str, Any]:
        return {"type": "plain_text", "text": _slack_inline(text, "`", plain=True)[:size], "emoji": True}

    return {"title": plain(label, 100), "text": {"type": "mrkdwn", "text": _slack_inline(question)[:300]},
            "confirm": plain(label, 30), "deny": plain(no, 30)}


def _mrkdwn_section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _chunks(text: str, size: int) -> list[str]:
    """Split at line breaks into pieces of at most `size`; a longer line is split where it must."""
    chunks: list[str] = []
    current = ""
    for line in text.split("\n"):
        while len(line) > size:
            if current:
                chunks.append(current)
                current = ""
            chunks.append(line[:size])
            line = line[size:]
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > size:
            chunks.append(current)
            current = line
        else:
            current = candidate
    if current or not chunks:
        chunks.append(current)
    return chunks


# -- text backend -----------------------------------------------------------------------------------


def _text_inline(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        kind, parts = match.group(1), match.group(2).split(_INLINE_FIELD)
        if kind == "date":
            return parts[1]
        if kind == "user":
            return f"@{parts[0]}"
        if kind == "channel":
            return f"#{parts[0]}"
        if kind == "usergroup":
            return f"@{parts[0]}"
        return f"{parts[1]} ({parts[0]})"

    return _plain_text(_INLINE_MARK.sub(replace, text))


def _plain_text(text: str) -> str:
    return html.unescape(text).replace(_BACKTICK, "`")


def _plain(block: Block) -> str:
    return block.text.split("\n", 1)[0] if block.kind == "section" else block.text


def to_text(blocks: list[Block]) -> str:
    lines: list[str] = []
    for block in blocks:
        if block.kind == "header":
            lines.append(f"== {_text_inline(block.text)} ==")
        elif block.kind == "divider":
            lines.append("-" * 40)
        elif block.kind == "context":
            lines.append("  ·  ".join(_text_inline(item[0]) for item in block.items))
        elif block.kind == "buttons":
            lines.append("  ".join(f"[{_text_inline(label)}: {_plain_text(value)}]"
                                   for label, value, *_ in block.items))
        elif block.kind == "form":
            lines.append(f"== {_text_inline(block.items[0][0])} ==")
        elif block.kind == "field":
            lines.append(f"{_text_inline(block.items[0][2])}: {_text_inline(block.items[0][3])}")
        elif block.kind == "code":
            lines.extend("    " + line for line in _text_inline(block.text).split("\n"))
        else:
            lines.append(_text_inline(block.text))
    return "\n".join(lines)
