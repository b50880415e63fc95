"""A record read as an error: which stack wrote it, the exception, the frames, and its signature.

Repeated events fold by signature: the stack, the exception type and message with numbers, ids
and addresses masked, and the top application frame (file and function, not the line number, so a
redeploy does not split a group). Frames that are not the application's may be collapsed for
display; exception lines and the application's frames are never dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from commands.logs.records import Record

_LIBRARY = ("site-packages/", "dist-packages/", "/lib/python", "<frozen ", "node_modules/", "node:", "internal/",
            "/vendor/", "java.", "javax.", "jdk.", "sun.", "jakarta.", "org.springframework.", "org.apache.",
            "org.hibernate.", "com.zaxxer.", "io.netty.", "reactor.", "kotlin.", "/usr/local/go/", "/usr/lib/go",
            "runtime/", "runtime.", "net/http.", "/gems/", "/rubygems/", "/usr/lib/ruby", "[internal function]",
            "{main}", "<anonymous>", "Illuminate\\", "Symfony\\", "Laravel\\")


@dataclass(frozen=True)
class Frame:
    location: str               # file (or Java class.method) as written
    function: str | None
    line: int | None
    index: int                  # which line of the record it is on

    def label(self) -> str:
        where = f"{self.location}:{self.line}" if self.line else self.location
        return f"{where} in {self.function}" if self.function else where


@dataclass(frozen=True)
class Analysis:
    stack: str | None           # python | java | node | php | go | ruby | nginx | apache | access
    exception: str              # the line that names the error (for a plain message: the message)
    frames: tuple[Frame, ...]
    app_frame: Frame | None     # the application's frame nearest to the error
    signature: str


_PY_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+)(?:, in (?P<func>.+))?$')
_AT_FRAME = re.compile(r"^\s+at (?:(?P<func>[^()]+?) \()?(?P<loc>[^()\s]+?)(?::(?P<line>\d+)(?::\d+)?)?\)?"
                       r"(?: \{)?$")
_JAVA_FRAME = re.compile(r"^\s+at (?P<func>[\w$.<>/-]+)\((?P<file>[^:)]*)(?::(?P<line>\d+))?\)")
_PHP_FRAME = re.compile(r"^#\d+ (?P<file>[^(\s]+)\((?P<line>\d+)\): (?P<func>.+)$")
_GO_FILE = re.compile(r"^\s+(?P<file>\S+\.go):(?P<line>\d+)(?: \+0x[0-9a-f]+)?$")
_RUBY_FRAME = re.compile(r"^(?:\s*from )?(?:\[[\w-]+\] )?(?P<file>[^\s:]+\.(?:rb|erb|haml|slim)):(?P<line>\d+)"
                         r":in [`'](?P<func>[^']+)'")

# Which stack wrote a trace is told by its frames first: each frame line counts for its language,
# and the language with the most wins. Without frames (a trace cut short, a bare line) or between
# equals, by the names only one stack writes (exception types, its libraries, its runtime's
# phrases), in this order.
_FRAME_MARKS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("python", re.compile(r'^\s*File "[^"]+", line \d+')),
    ("java", re.compile(r"^\s*(?:at\s+)?[\w$./]+\((?:[\w$]+\.(?:java|kt|scala|groovy|clj)(?::\d+)?|Native Method"
                        r"|Unknown Source)[()\w\s]*\)")),
    ("dotnet", re.compile(r"^\s*at [\w.`<>+\[\],|]+\((?:|[^()]*[ ,][^()]*)\)(?: in .+:line \d+)?\s*$")),
    ("node", re.compile(r"^['\s]*at (?:.+ \()?(?:\S+\.[cm]?[jt]sx?|node:\S+|internal/\S+)(?::\d+){1,2}\)?\s*$"
                        r"|^['\s]*at .+ \((?:<anonymous>|native)\)\s*$")),
    ("php", re.compile(r"^#\d+ (?:\S+\.php\(\d+\)|\[internal function\]|\{main\})|^\s*at \S+\.php:\d+\)?$")),
    ("go", re.compile(r"\.go:\d+(?: \+0x[0-9a-f]+)?$|^goroutine \d+ \[")),
    ("ruby", re.compile(r"\.(?:rb|erb|haml|slim):\d+:in [`']")),
)
_NAME_MARKS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("java", re.compile(r"\b(?:java|javax|jakarta|sun)\.[a-z]+\.\w+|\borg\.(?:springframework|hibernate|apache)\."
                        r"|Exception in thread \"|^\S+\s+(?:TRACE|DEBUG|INFO|WARN|ERROR)\s+\d+ --- \[", re.M)),
    ("dotnet", re.compile(r"\bSystem\.(?:\w+\.)*\w+Exception\b"
                          r"|\bMicrosoft\.(?:AspNetCore|EntityFrameworkCore|Extensions)\.|^Unhandled [Ee]xception\. ",
                          re.M)),
    ("python", re.compile(r"Traceback \(most recent call last\)|\b(?:RecursionError|ModuleNotFoundError|ImportError"
                          r"|AttributeError|KeyError|IndentationError)\b"
                          r"|\b(?:gunicorn|uwsgi|mod_wsgi|uvicorn|django|flask|sqlalchemy|psycopg2?|celery|jinja2)\b",
                          re.M)),
    ("php", re.compile(r"PHP (?:Fatal|Parse|Warning|Notice)|\.php(?::\d+| on line \d+| line \d+|\(\d+\))"
                       r"|\[stacktrace\]|SQLSTATE\[|Illuminate\\|Symfony\\|\bLaravel\b", re.M)),
    ("ruby", re.compile(r"\.rb:\d+:in [`']|ActiveRecord::|ActionController::|ActionView::|\bNoMethodError\b"
                        r"|nil:NilClass|^[DIWEFA], \[\d{4}-", re.M)),
    ("node", re.compile(r"\(node:\d+\)|node:internal|UnhandledPromiseRejection|\bERR?_[A-Z_]{4,}|\bKnex|Sequelize"
                        r"|Mongo\w*Error|_http_outgoing|\bnode_modules/", re.M)),
    ("go", re.compile(r"^goroutine \d+ \[|^panic: |\bhttp: panic serving\b|\bruntime error: ", re.M)),
)
_NGINX_ERROR = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[\w+\] \d+#\d+: ")
_APACHE_ERROR = re.compile(r"^\[\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d(?:\.\d+)? \d{4}\] \[[\w:]+\] ")

_PY_EXCEPTION = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?::\s?(?P<message>.*))?$")
_JAVA_EXCEPTION = re.compile(r"^(?:Caused by: |Exception in thread \"[^\"]*\" )?(?P<type>[a-zA-Z_$][\w$]*(?:\.[\w$]+)+"
                             r"(?:Exception|Error|Throwable|Failure)\w*)(?::\s?(?P<message>.*))?$")
_JS_EXCEPTION = re.compile(r"^(?:Uncaught )?(?P<type>(?:[A-Z]\w*)?(?:Error|Exception)(?: \[[A-Z_0-9]+\])?)"
                           r": (?P<message>.*)$|^\[(?P<type2>UnhandledPromiseRejection): (?P<message2>.*?)\]?(?: \{)?$")
_PHP_EXCEPTION = re.compile(r"PHP (?:Fatal|Parse) error:\s+(?:Uncaught (?P<type>[\w\\]+): )?(?P<message>.*?)"
                            r"(?: in \S+(?::\d+| on line \d+))?$|\(code: \d+\): (?P<message2>.*?) at \S+:\d+\)"
                            r"|(?:production|local|staging)\.(?:ERROR|CRITICAL|ALERT|EMERGENCY): (?P<message3>.*?)"
                            r"(?: \{.*)?$")
_GO_EXCEPTION = re.compile(r"^(?P<type>panic|fatal error): (?P<message>.*)$")
_RUBY_EXCEPTION = re.compile(r":in [`'][^']+': (?P<message>.*) \((?P<type>[\w:]+)\)$|^(?:\[[\w-]+\] )?"
                             r"(?P<type2>[A-Z]\w*(?:::[A-Z]\w*)+) \((?P<message2>.*)\):?$")

_MASKS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<id>"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<ip>"),
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), "<hex>"),
    (re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{4,}\b", re.I), "<hex>"),     # req-a772e6
    (re.compile(r"\b(?=[A-Za-z0-9]*\d)(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{12,}\b"), "<id>"),   # base62 ids
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
)
_HEADER_PREFIX = re.compile(r"""(?x)^(?:(?:
    \[[^\]]*\]                                                  # [time], [pid], [ERROR], [thread]
  | \d{4}[-/]\d\d[-/]\d\d[T\x20][\d:.,]+(?:Z|[+-]\d\d:?\d\d)?      # 2026-11-24 14:02:09,903
  | [+-]\d{4} | [DIWEFA], | \d+\#\d+: | \*\d+ | \d+ | --- | --?\x20?:? | -
  | \w+\.(?:DEBUG|INFO|NOTICE|WARNING|ERROR|CRITICAL|ALERT|EMERGENCY):  # Laravel: production.ERROR:
  | (?:TRACE|DEBUG|INFO|NOTICE|WARN(?:ING)?|ERROR|CRITICAL|FATAL|SEVERE)\b:?
)\s*)+(?:[\w.$\[\]/-]+\s+:\s+)?                                   # Spring Boot's padded logger name
""")


def mask(text: str) -> str:
    """Numbers, ids, addresses and IPs replaced, so repeats of one error fold together."""
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    return text


_DIGITS = str.maketrans("123456789", "000000000")


def fold_key(record: Record) -> tuple[object, ...]:
    """What two repeats of one event share, cheaply: records with one key have one signature (the
    signature may still join records of different keys). An access entry: its status, method and
    masked path; any other: its first line with every digit a 0 (finer than `mask`, which treats
    all digits alike, and several times faster) and its other lines as written (all without their
    transport prefixes, which hold the time of each line)."""
    if record.status is not None and record.method and len(record.lines) == 1:
        return record.status, record.method, mask(_path_only(record.path or ""))
    lines = record.content
    return str(record.status), lines[0].translate(_DIGITS) if lines else "", *lines[1:]


def analyse(record: Record, app_paths: tuple[str, ...]) -> Analysis:
    lines = record.content
    stack = _stack(record)
    frames = tuple(_frames(lines))
    exception = _exception(lines, stack) or _plain_message(record)
    ours = [frame for frame in frames if is_app_frame(frame, app_paths)]
    # Python prints the innermost frame last; every other stack prints it first
    app_frame = (ours[-1] if stack == "python" else ours[0]) if ours else None
    shape = _exception_shape(exception)
    where = f"{app_frame.location}:{app_frame.function or ''}" if app_frame else ""
    if record.status is not None and record.fmt in ("access", "json") and not frames:
        shape = f"{record.status} {record.method or ''} {mask(_path_only(record.path or ''))}"
    return Analysis(stack, exception, frames, app_frame, f"{stack or '-'}|{shape}|{where}")


def _stack(record: Record) -> str | None:
    if record.fmt == "access" or (record.status is not None and record.method):
        return "access"
    first = record.content[0] if record.content else ""
    if _NGINX_ERROR.match(first) and "FastCGI sent in stderr" not in first:
        return "nginx"
    frames = {name: 0 for name, _ in _FRAME_MARKS}
    for line in record.content:
        name = next((name for name, mark in _FRAME_MARKS if mark.search(line)), None)
        if name is not None:
            frames[name] += 1
    most = max(frames.values())
    text = "\n".join(record.content)
    named = [name for name, marks in _NAME_MARKS if (not most or frames[name] == most) and marks.search(text)]
    if named:
        return named[0]
    if most:
        return next(name for name, count in frames.items() if count == most)
    if _APACHE_ERROR.match(first):
        return "apache"
    return None


def _frames(lines: list[str]) -> list[Frame]:
    frames = []
    for index, line in enumerate(lines):
        if match := _PY_FRAME.match(line):
            frames.append(Frame(match.group("file"), match.group("func"), int(match.group("line")), index))
        elif match := _JAVA_FRAME.match(line):
            frames.append(Frame(match.group("func"), None, _number(match.group("line")), index))
        elif match := _AT_FRAME.match(line):
            frames.append(Frame(match.group("loc"), match.group("func"), _number(match.group("line")), index))
        elif match := _PHP_FRAME.match(line):
            frames.append(Frame(match.group("file"), match.group("func"), int(match.group("line")), index))
        elif (match := _GO_FILE.match(line)) and index > 0:
            function = lines[index - 1].strip().split("(")[0] or None
            frames.append(Frame(match.group("file"), function, int(match.group("line")), index))
        elif match := _RUBY_FRAME.match(line):
            frames.append(Frame(match.group("file"), match.group("func"), int(match.group("line")), index))
    return frames


def _number(text: str | None) -> int | None:
    return int(text) if text else None


def is_app_frame(frame: Frame, app_paths: tuple[str, ...]) -> bool:
    """The application's own code: under `app_paths` when configured, else not a known library's."""
    location = frame.location
    if app_paths:
        return any(path in location or path.replace("/", ".") in location for path in app_paths)
    return not any(marker in location for marker in _LIBRARY)


def _exception(lines: list[str], stack: str | None) -> str | None:
    """The line naming the error: Python's last, Java's deepest cause, the others' first."""
    if stack == "python":
        found = None
        in_trace = False
        for line in lines:
            if line.startswith("Traceback (most recent call last)"):
                in_trace = True
            elif in_trace and line and not line[0].isspace() and _PY_EXCEPTION.match(line.split(" ", 1)[0].rstrip(":")):
                found = line
                in_trace = False
        return found or next((line for line in reversed(lines) if _PY_EXCEPTION.match(line)
                              and ("Error" in line or "Exception" in line)), None)
    if stack in ("java", "dotnet"):
        causes = [line.strip() for line in lines if _JAVA_EXCEPTION.match(line.strip())]
        return (causes[-1] if stack == "java" else causes[0]) if causes else None
    patterns = {"node": _JS_EXCEPTION, "php": _PHP_EXCEPTION, "go": _GO_EXCEPTION, "ruby": _RUBY_EXCEPTION}
    pattern = patterns.get(stack or "")
    if pattern is None:
        return None
    for line in lines:
        if pattern.search(line.strip()):
            return line.strip()
    return None


def _plain_message(record: Record) -> str:
    """The entry's message without its time and level; when it only announces what follows
    ("…: "), with the first line of what follows."""
    if record.status is not None and record.method:
        return f"{record.status} {record.method} {record.path or ''}".strip()
    if record.fmt == "json":
        return record.message.strip()[:500]
    message = _HEADER_PREFIX.sub("", record.content[0] if record.content else "", count=1).strip()
    if not message or message.endswith(":"):
        following = next((line.strip() for line in record.content[1:] if re.search(r"[A-Za-z]{2}", line)), "")
        message = f"{message} {following}".strip()
    return message[:500]


def _exception_shape(exception: str) -> str:
    """The exception line without the time and level prefix, masked."""
    return mask(_HEADER_PREFIX.sub("", exception, count=1))[:300]


def _path_only(path: str) -> str:
    return path.split("?", 1)[0]


# -- display -------------------------------------------------------------------------------------

COLLAPSE_AT_LEAST = 3


def collapsed(record: Record, analysis: Analysis, app_paths: tuple[str, ...]) -> str:
    """The record's text with runs of framework frames folded into one line each.

    Only when the config names the application's paths: otherwise nothing is hidden.
    """
    if not app_paths or not analysis.frames:
        return record.text
    framework = {frame.index for frame in analysis.frames if not is_app_frame(frame, app_paths)}
    # a Python frame's source line (and 3.11's ^^^ markers) go with it; a Go frame's function line too
    hidden = set()
    for frame in analysis.frames:
        if frame.index not in framework:
            continue
        hidden.add(frame.index)
        if analysis.stack == "python":
            follow = frame.index + 1
            while follow < len(record.content) and record.content[follow].startswith("    ") \
                    and not _PY_FRAME.match(record.content[follow]):
                hidden.add(follow)
                follow += 1
        if analysis.stack == "go" and frame.index > 0:
            hidden.add(frame.index - 1)
    out: list[str] = []
    run: list[str] = []
    for index, line in enumerate(record.lines):
        if index in hidden:
            run.append(line)
            continue
        _flush(run, out)
        out.append(line)
    _flush(run, out)
    return "\n".join(out)


def _flush(run: list[str], out: list[str]) -> None:
    if len(run) >= COLLAPSE_AT_LEAST:
        indent = run[0][:len(run[0]) - len(run[0].lstrip())] or "    "
        out.append(f"{indent}… {len(run)} framework lines")
    else:
        out.extend(run)
    run.clear()
