"""Docs that cannot rot: the documentation's examples run, and its reference matches the code.

1. Every ```console block of README.md and docs/*.md runs, in order, in one fresh folder per
   document, and what each command prints is compared with what the document shows (run ids,
   times, dates, versions and the folder's path normalised; rich tables compared cell by cell,
   whatever their widths). Files the commands need come from the document itself (a fenced block
   with a title, ```yaml title="none.yaml"```, is written to that file before the blocks after
   it run) or from docs/examples/<document>/. An HTML comment right before a block asks for a
   special set-up (``<!-- docs-test: setup=http-server -->``), runs a ```python example (its
   output is the plain block after it; a ``>>>`` session goes through doctest), or skips it,
   with a reason. ```bash blocks are only shown.
2. The signatures and fields that docs/api.md lists are checked against the code with
   ``inspect``: every public field, method and parameter is listed, and every name listed exists;
   so are the user guide's CLI reference and settings table, and the README's options.

The conventions are described in docs/developer-guide.md ("Docs that cannot rot"). To see what a
document's commands print now: ``.venv/bin/python tests/test_docs.py docs/user-guide.md``
(``--line N``: from line N on; ``--update N,M``: write what the commands at lines N and M print
into the document).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import typing
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from llm_server import FakeLLMServer, Reply, _Handler, _Server  # noqa: E402
from mcp_fixtures import NODE, ensure_npm_servers  # noqa: E402

DOCS = (
    "README.md",
    "docs/user-guide.md",
    "docs/developer-guide.md",
    "docs/troubleshooting.md",
    "docs/security.md",
    "docs/api.md",
)
API_DOC = ROOT / "docs" / "api.md"
EXAMPLES = ROOT / "docs" / "examples"
VENV_BIN = (
    ROOT / ".venv" / "bin" if (ROOT / ".venv" / "bin").is_dir() else Path(sys.executable).parent
)
WIDTH = 100
"""The terminal width the documents' outputs were made with (``COLUMNS``): rich wraps at it."""
DOC_HOME = "/home/me/trinity"
"""The folder the documents' commands run in, as the documents show it (the temporary folder and
the checkout both read as this path)."""
USER = "dana"
"""The OS user the documents show (approvals record it)."""
COMMAND_TIMEOUT_S = 60.0

# -- parsing ---------------------------------------------------------------------------------------

FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
DIRECTIVE = re.compile(r"^\s*<!--\s*docs-test:(?P<body>.*?)-->\s*$")
TITLE = re.compile(r'title="(?P<title>[^"]+)"')


@dataclasses.dataclass
class Block:
    """A fenced block of a document."""

    doc: str
    line: int
    """1-based line of the opening fence."""
    lang: str
    title: str | None
    options: dict[str, str]
    """From a ``<!-- docs-test: … -->`` comment right before the block."""
    text: str
    """The content, without the fence's indentation."""


@dataclasses.dataclass
class Command:
    line: int
    command: str
    expected: list[str]


def parse_blocks(doc: str, text: str) -> list[Block]:
    """The fenced blocks of a Markdown text, in order."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, info = match["indent"], match["fence"], match["info"].strip()
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            stripped = lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j]
            if (
                stripped.rstrip().startswith(fence[0] * len(fence))
                and not stripped.strip(fence[0]).strip()
            ):
                break
            body.append(stripped)
            j += 1
        options: dict[str, str] = {}
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        directive = DIRECTIVE.match(lines[k]) if k >= 0 else None
        if directive:
            for token in shlex.split(directive["body"]):
                key, _, value = token.partition("=")
                options[key] = value
        title = TITLE.search(info)
        blocks.append(
            Block(
                doc=doc,
                line=i + 1,
                lang=info.split()[0] if info else "",
                title=title["title"] if title else None,
                options=options,
                text="\n".join(body),
            )
        )
        i = j + 1
    return blocks


def parse_console(block: Block) -> list[Command]:
    """``$ command`` lines, each followed by the lines it prints."""
    commands: list[Command] = []
    for offset, line in enumerate(block.text.splitlines()):
        if line.startswith("$ "):
            commands.append(Command(block.line + 1 + offset, line[2:], []))
        elif commands:
            commands[-1].expected.append(line)
        elif line.strip():
            raise AssertionError(f"{block.doc}:{block.line}: output before the first '$ ' line")
    return commands


# -- normalisation ---------------------------------------------------------------------------------

RUN_ID = re.compile(r"(?<![0-9a-f])[0-9a-f]{12}(?![0-9a-f])")
BOX = "─━═│┃┏┓┗┛┡┩┌┐└┘├┤┬┴┼╇╈┳┻╋╭╮╯╰"
SUBSTITUTIONS: list[tuple[re.Pattern[str], str]] = [
    (RUN_ID, "<id>"),
    (re.compile(r"\d{4}-\d{2}-\d{2}"), "<date>"),
    (re.compile(r"(?<![\d.])\d{2}:\d{2}:\d{2}(?:\.\d+)?"), "<time>"),
    # durations: 0.03s, 2.00s, 1.2 ms, 0.000s; and JSON numbers of seconds
    (re.compile(r"(?<![\w.])\d+\.\d+ ?m?s\b"), "<t>"),
    (re.compile(r'("(?:seconds|latency_s|duration_s|after_s)": )[\d.e-]+'), r"\1<t>"),
    # versions of Python and the packages: 3.11.7
    (re.compile(r"(?<![\d.])\d+\.\d+\.\d+(?![\d.])"), "<v>"),
]


def normalise(lines: list[str], paths: list[str]) -> list[str]:
    """What is compared of some output (line for line: a line stays a line)."""
    out: list[str] = []
    for line in lines:
        for path in paths:
            line = line.replace(path, "<tmp>")
        for pattern, replacement in SUBSTITUTIONS:
            line = pattern.sub(replacement, line)
        line = line.rstrip()
        if any(char in BOX for char in line):
            # a table row: the cells' contents, whatever the column widths
            line = re.sub(r"([─━═])[─━═]*", r"\1", line)
            line = re.sub(r"\s+", " ", line).strip()
        line = re.sub(r"^\s+(?=<t>)", "", line)
        out.append(line)
    for i in range(len(out) - 1):
        if out[i + 1][:1] in "┏┌╭" and out[i + 1]:
            out[i] = out[i].strip()  # a table's title, centred over it
    while out and not out[-1]:
        out.pop()
    return out


def expected_pattern(lines: list[str]) -> re.Pattern[str]:
    """``…`` alone on a line matches any number of lines; ``…`` in a line, any text."""
    parts: list[str] = []
    for number, line in enumerate(lines):
        if line.strip() == "…":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            body = r"[^\n]*?".join(re.escape(piece) for piece in line.split("…"))
            parts.append(f"(?P<l{number}>{body})\n")
    return re.compile("".join(parts))


# -- running a document ----------------------------------------------------------------------------


class Skip(Exception):
    """A set-up this machine cannot give (Node.js missing)."""


class DocRun:
    """A document's console blocks, run in order in a fresh folder."""

    def __init__(self, doc: str, *, show: bool = False, from_line: int = 0) -> None:
        self.doc = doc
        self.show = show
        self.from_line = from_line
        self.tmp = Path(tempfile.mkdtemp(prefix="trinity-docs-"))
        self.paths = sorted(
            {str(self.tmp), str(self.tmp.resolve()), str(ROOT), DOC_HOME}, key=len, reverse=True
        )
        self.ids: dict[str, str] = {}
        """Run ids as the document shows them -> as this run made them."""
        self.failures: list[str] = []
        self.timings: dict[int, float] = {}
        """How long each command took (by its line)."""
        self.outputs: dict[int, list[str]] = {}
        """What each command printed, as the document would show it (by its line)."""
        self.ran = 0
        self.skipped: list[str] = []
        self.stack = ExitStack()
        self.setups: set[str] = set()
        self.status = 0
        """The exit status of the last command (``$ echo $?`` shows it)."""
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("TRINITY_")
            and name
            not in {
                "OPENAI_API_KEY",
                "ANTHROPIC_API_KEY",
                "OPENAI_COMPATIBLE_API_KEY",
                "OPENAI_BASE_URL",
                "ANTHROPIC_BASE_URL",
                "FORCE_COLOR",
                "LINES",
            }
        }
        env.update(
            HOME=str(self.tmp),
            COLUMNS=str(WIDTH),
            NO_COLOR="1",
            PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            USER=USER,
            LOGNAME=USER,
            PYTHONDONTWRITEBYTECODE="1",
        )
        self.env = env

    def run(self) -> None:
        try:
            shutil.copytree(ROOT / "examples", self.tmp / "examples")
            extra = EXAMPLES / Path(self.doc).stem
            if extra.is_dir():
                shutil.copytree(extra, self.tmp, dirs_exist_ok=True)
            (self.tmp / "tests").mkdir()
            (self.tmp / "tests" / "mcp_servers").symlink_to(ROOT / "tests" / "mcp_servers")
            (self.tmp / "tests" / "llm_server.py").symlink_to(ROOT / "tests" / "llm_server.py")
            text = (ROOT / self.doc).read_text(encoding="utf-8")
            example: tuple[Command, list[str]] | None = None
            for block in parse_blocks(self.doc, text):
                if block.title:
                    target = self.tmp / block.title
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(block.text + "\n", encoding="utf-8")
                if example is not None:
                    command, actual = example
                    example = None
                    if block.lang:
                        self.failures.append(
                            f"{self.doc}:{command.line}: a python example's output must follow "
                            "it, in a plain ``` block"
                        )
                    else:
                        command.expected = block.text.splitlines()
                        self.compare(command, actual)
                if block.lang == "console":
                    self.console(block)
                elif block.lang == "python" and "python" in block.options:
                    example = self.python(block)
        finally:
            self.stack.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def console(self, block: Block) -> None:
        where = f"{self.doc}:{block.line}"
        if "skip" in block.options:
            assert block.options.get("reason"), f"{where}: a skipped block needs a reason"
            self.skipped.append(f"{where}: {block.options['reason']}")
            return
        for name in filter(None, block.options.get("setup", "").split(",")):
            SETUPS[name](self, block)
        background = "background" in block.options
        env = dict(self.env, COLUMNS=block.options.get("columns", str(WIDTH)))
        for command in parse_console(block):
            self.ran += 1
            began = time.monotonic()
            actual = self.execute(command, env, background=background)
            self.timings[command.line] = time.monotonic() - began
            self.compare(command, actual)
            self.outputs[command.line] = self.as_shown(actual)
            if self.show and command.line >= self.from_line:
                print(f"--- {self.doc}:{command.line}\n$ {command.command}")
                print("\n".join(self.as_shown(actual)))

    def python(self, block: Block) -> tuple[Command, list[str]] | None:
        """Run a python example (its output is the next block, compared by the caller), or a
        ``>>>`` session (checked with doctest, here)."""
        self.ran += 1
        if block.text.lstrip().startswith(">>>"):
            name = f"doctest-{block.line}.txt"
            # the run ids it shows are the ones this document's runs made
            text = RUN_ID.sub(lambda m: self.ids.get(m.group(0), m.group(0)), block.text)
            (self.tmp / name).write_text(text + "\n", encoding="utf-8")
            command = Command(block.line, f"python -m doctest -o ELLIPSIS {name}", [])
            self.compare(command, self.execute(command, self.env, background=False))
            return None
        name = block.title or f"example-{block.line}.py"
        if not block.title:
            (self.tmp / name).write_text(block.text + "\n", encoding="utf-8")
        command = Command(block.line, f"python {name}", [])
        return command, self.execute(command, self.env, background=False)

    def as_shown(self, lines: list[str]) -> list[str]:
        """Output as the document would show it: its folder and its run ids."""
        shown = {made: doc_id for doc_id, made in self.ids.items()}
        out = []
        for line in lines:
            for path in self.paths:
                line = line.replace(path, DOC_HOME)
            out.append(RUN_ID.sub(lambda m: shown.get(m.group(0), m.group(0)), line).rstrip())
        return out

    def substitute(self, command: Command) -> str:
        """The command with the document's run ids replaced by the ones this run made."""

        def replace(match: re.Match[str]) -> str:
            word = match.group(0)
            if word in self.ids:
                return self.ids[word]
            for shown, made in self.ids.items():
                if len(word) >= 4 and shown.startswith(word) and re.search(r"\d", word):
                    return made[: len(word)]
            if len(word) == 12:
                self.failures.append(
                    f"{self.doc}:{command.line}: the command uses run id {word}, which no "
                    "earlier output of this document showed"
                )
            return word

        return re.sub(r"(?<![\w./-])[0-9a-f]{4,12}(?![\w/-])", replace, command.command)

    def execute(self, command: Command, env: dict[str, str], *, background: bool) -> list[str]:
        text = self.substitute(command)
        if background:
            return self.start_background(text, command, env)
        try:
            done = subprocess.run(
                ["bash", "-c", f"(exit {self.status}); {text}"],
                cwd=self.tmp,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=COMMAND_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            output = exc.output or b""
            return [*output.decode("utf-8", "replace").splitlines(), "<timed out>"]
        self.status = done.returncode
        return done.stdout.decode("utf-8", "replace").splitlines()

    def start_background(self, text: str, command: Command, env: dict[str, str]) -> list[str]:
        """Start a command that keeps running (a server); what it printed once it printed as
        many lines as the document shows (or after 20 s)."""
        process = subprocess.Popen(
            ["bash", "-c", text],
            cwd=self.tmp,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        lines: list[str] = []

        def read() -> None:
            assert process.stdout is not None
            for raw in process.stdout:
                lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()

        def stop() -> None:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            reader.join(5)

        self.stack.callback(stop)
        wanted = len([line for line in command.expected if line.strip() != "…"])
        deadline = time.monotonic() + 20
        while len(lines) < wanted and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        return list(lines)

    def compare(self, command: Command, actual: list[str]) -> None:
        expected = normalise(command.expected, self.paths)
        got = normalise(actual, self.paths)
        match = expected_pattern(expected).fullmatch("".join(f"{line}\n" for line in got))
        if match is None:
            self.guess_ids(command, actual)
            self.failures.append(
                f"{self.doc}:{command.line}: $ {command.command}\n"
                + "--- the document shows (normalised):\n"
                + "\n".join(expected)
                + "\n--- the command printed (normalised):\n"
                + "\n".join(got)
            )
            return
        self.learn_ids(command, actual, match)

    def guess_ids(self, command: Command, actual: list[str]) -> None:
        """After a mismatch: pair the run ids in order, so that later commands can still run
        (the failure is reported anyway)."""
        shown = list(dict.fromkeys(RUN_ID.findall("\n".join(command.expected))))
        made = list(dict.fromkeys(RUN_ID.findall("\n".join(actual))))
        taken = set(self.ids.values())
        for doc_id, run_id in zip(shown, made, strict=False):
            if doc_id not in self.ids and run_id not in taken:
                self.ids[doc_id] = run_id

    def learn_ids(self, command: Command, actual: list[str], match: re.Match[str]) -> None:
        text = match.string
        for number, line in enumerate(command.expected):
            shown = RUN_ID.findall(line)
            group = f"l{number}"
            if not shown or group not in match.groupdict():
                continue
            index = text.count("\n", 0, match.start(group))
            made = RUN_ID.findall(actual[index])
            for doc_id, run_id in zip(shown, made, strict=False):
                known = self.ids.setdefault(doc_id, run_id)
                if known != run_id:
                    self.failures.append(
                        f"{self.doc}:{command.line}: the document shows run id {doc_id} for two "
                        f"different runs ({known} and {run_id})"
                    )


# -- set-ups a block may ask for -------------------------------------------------------------------


def setup_npm_servers(run: DocRun, block: Block) -> None:
    """The npm reference MCP servers (server-everything), as tests/mcp_servers/… of the folder."""
    if "npm-servers" in run.setups:
        return
    if NODE is None:
        raise Skip(
            f"{block.doc}:{block.line}: NODE IS NOT INSTALLED: the npm reference MCP servers "
            "cannot run; install Node.js 20+ to run this document's examples"
        )
    ensure_npm_servers()
    run.setups.add("npm-servers")


class _Site(BaseHTTPRequestHandler):
    """127.0.0.1:48080 says hello; 127.0.0.2:48081 redirects there."""

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        if self.server.server_port == 48081:  # type: ignore[attr-defined]
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:48080/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"hello from a local site\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def setup_http_server(run: DocRun, block: Block) -> None:
    """Two local web sites: http://127.0.0.1:48080/ and a redirect at http://127.0.0.2:48081/."""
    if "http-server" in run.setups:
        return
    for address in (("127.0.0.1", 48080), ("127.0.0.2", 48081)):
        server = ThreadingHTTPServer(address, _Site)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        run.stack.callback(server.server_close)
        run.stack.callback(server.shutdown)
    run.setups.add("http-server")


class _FixedPortLLM(FakeLLMServer):
    """tests/llm_server.py's fake OpenAI-compatible server, on the port the document names."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self._httpd.server_close()
        self._httpd = _Server(("127.0.0.1", port), _Handler)
        self._httpd.fake = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)


def setup_fake_llm(run: DocRun, block: Block) -> None:
    """An OpenAI-compatible server on 127.0.0.1:45881 that plans one fs.write and approves it."""
    server = _FixedPortLLM(45881).start()
    server.script(
        Reply(
            '{"rationale": "write then check", "steps": [{"id": "write", "tool": "fs.write", '
            '"args": {"path": "hi.txt", "content": "hi\\n"}, "expected": "hi.txt says hi", '
            '"checks": [{"file_contains": {"path": "hi.txt", "text": "hi"}}]}]}',
            input_tokens=500,
            output_tokens=60,
        ),
        Reply('{"passed": true, "reason": "hi.txt holds hi"}', input_tokens=200, output_tokens=12),
    )
    run.stack.callback(server.stop)


def setup_kill_9(run: DocRun, block: Block) -> None:
    """``command`` started in the background and killed with SIGKILL once ``until`` (a file)
    has content: a run killed in the middle of a step."""
    command, until = block.options["command"], run.tmp / block.options["until"]
    process = subprocess.Popen(
        ["bash", "-c", f"exec {command}"],
        cwd=run.tmp,
        env=run.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not (until.exists() and until.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.02)
    process.kill()
    process.wait()
    assert until.exists(), f"{block.doc}:{block.line}: {until.name} never appeared"


SETUPS: dict[str, Callable[[DocRun, Block], None]] = {
    "npm-servers": setup_npm_servers,
    "http-server": setup_http_server,
    "fake-llm": setup_fake_llm,
    "kill-9": setup_kill_9,
}


# -- API listings ----------------------------------------------------------------------------------


def doc_sections(doc: Path = API_DOC) -> dict[str, tuple[list[str], list[str]]]:
    """A document by heading: ``heading -> (python listings, table rows)``. A section runs to
    the next heading of any level; ``>>>`` examples are not listings."""
    sections: dict[str, tuple[list[str], list[str]]] = {}
    current = sections.setdefault("", ([], []))
    text = doc.read_text(encoding="utf-8")
    blocks = {block.line: block for block in parse_blocks(doc.name, text)}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if i + 1 in blocks:
            block = blocks[i + 1]
            if block.lang == "python" and not block.text.lstrip().startswith(">>>"):
                current[0].append(block.text)
            i += len(block.text.splitlines()) + 2
            continue
        heading = re.match(r"#{2,4} (.+)", line)
        if heading:
            current = sections.setdefault(heading.group(1).strip(), ([], []))
        elif line.startswith("|") and not re.match(r"\|[-| ]+\|$", line):
            current[1].append(line)
        i += 1
    return sections


def strip_comment(line: str) -> str:
    """The line without its ``# comment`` (a ``#`` after a space, outside quotes)."""
    quote = ""
    for index, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1] == " "):
            return line[:index].rstrip()
    return line.rstrip()


def as_python(listing: str) -> str:
    """A listing made parseable: signatures get a body, a call-like ``Name(`` listing of
    parameters becomes a ``def``, a class without members gets ``...``."""
    lines = [strip_comment(line) for line in listing.splitlines()]
    lines = [line for line in lines if line.strip()]
    out: list[str] = []
    depth = 0
    in_def = False
    for number, line in enumerate(lines):
        stripped = line.strip()
        if depth == 0:
            if re.match(r"\w+\($", stripped) and not line.startswith(" "):
                line = f"def {line}"
                stripped = line
            in_def = bool(re.match(r"(async )?def ", stripped))
        depth += sum(line.count(c) for c in "([{") - sum(line.count(c) for c in ")]}")
        if depth == 0:
            indent = len(line) - len(line.lstrip())
            following = lines[number + 1] if number + 1 < len(lines) else ""
            nested = len(following) - len(following.lstrip()) > indent
            if in_def and not stripped.endswith((":", ": ...")):
                line += ": ..."
            elif stripped.startswith("class ") and stripped.endswith(":") and not nested:
                line += " ..."
            in_def = False
        out.append(line)
    return "\n".join(out)


@dataclasses.dataclass
class Listed:
    """What a listing says about a class or function: member names, and each function's
    parameters."""

    members: set[str] = dataclasses.field(default_factory=set)
    params: dict[str, list[str]] = dataclasses.field(default_factory=dict)


def parameters(args: Any) -> list[str]:
    """Parameter names of an ``ast.arguments``, without ``self`` / ``cls``."""
    every = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    names = [arg.arg for arg in every]
    if args.vararg:
        names.append(f"*{args.vararg.arg}")
    if args.kwarg:
        names.append(f"**{args.kwarg.arg}")
    return [name for name in names if name not in ("self", "cls")]


def parse_listings(listings: list[str]) -> dict[str, Listed]:
    """Top-level names of a section's listings: classes (members and their methods'
    parameters) and functions (``""`` holds their parameters)."""
    import ast

    found: dict[str, Listed] = {}
    for listing in listings:
        source = as_python(listing)
        try:
            tree = ast.parse(source)
        except SyntaxError as exc:
            raise AssertionError(f"a listing of docs/api.md does not parse:\n{source}") from exc
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                listed = found.setdefault(node.name, Listed())
                for item in node.body:
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                        listed.members.add(item.name)
                        listed.params[item.name] = parameters(item.args)
                    elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                        listed.members.add(item.target.id)
                    elif isinstance(item, ast.Assign):
                        for target in item.targets:
                            if isinstance(target, ast.Name):
                                listed.members.add(target.id)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                found.setdefault(node.name, Listed()).params[""] = parameters(node.args)
    return found


def cells(row: str) -> list[str]:
    """A table row's cells (``\\|`` is a pipe inside a cell)."""
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]]


def table_names(rows: list[str]) -> Listed:
    """The names in the first column of a table (``name``, ``name: type``, ``async
    name(params) -> type``), with the parameters shown."""
    listed = Listed()
    for row in rows:
        first = cells(row)[0] if cells(row) else ""
        for span in re.findall(r"`([^`]+)`", first):
            match = re.match(r"(?:async\s+)?(\w+)(?:\((.*)\))?", span)
            if not match:
                continue
            listed.members.add(match.group(1))
            if match.group(2) is not None and match.group(2).strip() != "...":
                params = [p.strip() for p in re.split(r",(?![^(\[]*[)\]])", match.group(2))]
                listed.params[match.group(1)] = [
                    re.match(r"\**\w*", p).group(0)  # type: ignore[union-attr]
                    for p in params
                    if p and p != "*"
                ]
    return listed


def resolve(path: str) -> Any:
    module, _, name = path.partition(":")
    target: Any = __import__(module, fromlist=["_"])
    for part in filter(None, name.split(".")):
        target = getattr(target, part)
    return target


def code_members(cls: type, *, own: bool = False) -> set[str]:
    """Public fields, methods, properties and instance attributes (``self.x = …``) of a class
    and of its bases in Trinity (``own``: of the class alone)."""
    names: set[str] = set()
    classes = [cls] if own else [k for k in cls.__mro__ if k.__module__.startswith("trinity")]
    for klass in classes:
        names |= {n for n in vars(klass) if not n.startswith("_") and n != "model_config"}
        names |= set(getattr(klass, "__annotations__", {}))
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            source = ""
        names |= set(re.findall(r"\bself\.([a-z]\w*)\s*(?::[^=\n]*)?=[^=]", source))
    if own and len(cls.__mro__) > 1:
        base = cls.__mro__[1]
        names -= set(getattr(base, "model_fields", {})) - set(vars(cls).get("__annotations__", {}))
    if dataclasses.is_dataclass(cls):
        names |= {f.name for f in dataclasses.fields(cls)}
    if not own:
        names |= set(getattr(cls, "model_fields", {}))
    return {name for name in names if not name.startswith("_")}


def signature_params(function: Callable[..., Any]) -> list[str]:
    out = []
    for name, param in inspect.signature(function).parameters.items():
        if name in ("self", "cls"):
            continue
        if param.kind == param.VAR_POSITIONAL:
            name = f"*{name}"
        elif param.kind == param.VAR_KEYWORD:
            name = f"**{name}"
        out.append(name)
    return out


def compare_params(where: str, listed: list[str], function: Callable[..., Any]) -> list[str]:
    actual = signature_params(function)
    if listed == actual:
        return []
    return [f"{where}: the listing's parameters {listed} are not the code's {actual}"]


def compare_members(where: str, listed: Listed, cls: type, *, own: bool = False) -> list[str]:
    problems = []
    actual = code_members(cls, own=own)
    missing = sorted(actual - listed.members - {"__init__"})
    unknown = sorted(listed.members - actual - {"__init__"} - set(dir(cls)))
    if missing:
        problems.append(f"{where}: not listed: {missing}")
    if unknown:
        problems.append(f"{where}: listed, but not in the code: {unknown}")
    for method, params in listed.params.items():
        function = getattr(cls, method, None)
        if callable(function) and not isinstance(function, type):
            problems += compare_params(f"{where}.{method}", params, function)
    return problems


ApiCheck = tuple[str, str, str, str]
API_CHECKS: list[ApiCheck] = [
    # (section of docs/api.md, what it lists, the code, how to compare)
    ("Runtime", "class Runtime", "trinity.runtime:Runtime.__init__", "params"),
    ("Runtime", "table", "trinity.runtime:Runtime", "members"),
    ("`prepare`", "def prepare", "trinity.runtime:Runtime.prepare", "params"),
    ("`start`, `resume`, `cancel`", "def start", "trinity.runtime:Runtime.start", "params"),
    ("`start`, `resume`, `cancel`", "def resume", "trinity.runtime:Runtime.resume", "params"),
    ("`start`, `resume`, `cancel`", "def cancel", "trinity.runtime:Runtime.cancel", "params"),
    (
        "`start`, `resume`, `cancel`",
        "def cancel_run",
        "trinity.runtime:Runtime.cancel_run",
        "params",
    ),
    ("`start`, `resume`, `cancel`", "def subscribe", "trinity.runtime:Runtime.subscribe", "params"),
    ("RunRequest", "table", "trinity.runtime:RunRequest", "members"),
    ("Settings", "def Settings", "trinity.config:Settings", "fields"),
    ("EngineState", "table", "trinity.state:EngineState", "members"),
    ("RunState(EngineState)", "table", "trinity.state:RunState", "own members"),
    ("RunLimits", "table", "trinity.limits:RunLimits", "members"),
    ("Policy", "table", "trinity.state:Policy", "own members"),
    ("Plan, Step, Check and the other models", "models", "trinity.state", "models"),
    ("Engine", "class Graph", "trinity.engine:Graph", "members"),
    ("Engine", "class StopRun", "trinity.engine:StopRun", "members"),
    ("Engine", "class Limits", "trinity.engine:Limits", "members"),
    ("Engine", "class Engine", "trinity.engine:Engine", "members"),
    ("Engine", "def resume_point", "trinity.engine:resume_point", "params"),
    ("Engine", "class Journal", "trinity.engine:Journal", "members"),
    ("Engine", "class MemoryJournal", "trinity.engine:MemoryJournal", "members"),
    ("Engine", "def run_main", "trinity.engine:run_main", "params"),
    ("Events", "Event", "trinity.events:Event", "union"),
    ("Events", "class EventBase", "trinity.events:EventBase", "members"),
    ("Events", "class JournalEntry", "trinity.events:JournalEntry", "own members"),
    ("Events", "class EventBus", "trinity.events:EventBus", "members"),
    ("Events", "def parse_event", "trinity.events:parse_event", "params"),
    ("Protocol and built-in tools", "class ToolSpec", "trinity.tools.base:ToolSpec", "members"),
    (
        "Protocol and built-in tools",
        "class ToolProvider",
        "trinity.tools.base:ToolProvider",
        "members",
    ),
    (
        "Protocol and built-in tools",
        "class BuiltinTools",
        "trinity.tools.builtin:BuiltinTools",
        "members",
    ),
    (
        "Protocol and built-in tools",
        "class ProcessLimits",
        "trinity.tools.builtin:ProcessLimits",
        "members",
    ),
    ("ToolHub", "class ToolHub", "trinity.tools.hub:ToolHub", "members"),
    ("ToolHub", "class RestartPolicy", "trinity.tools.hub:RestartPolicy", "members"),
    ("Store", "class Store", "trinity.store:Store", "members"),
    ("Agents", "class AgentContext", "trinity.agents:AgentContext", "members"),
    ("Agents", "def build_graph", "trinity.agents:build_graph", "params"),
    ("Protocol and data", "class Message", "trinity.llm.base:Message", "members"),
    ("Protocol and data", "class LLMRequest", "trinity.llm.base:LLMRequest", "members"),
    ("Protocol and data", "class LLMResponse", "trinity.llm.base:LLMResponse", "members"),
    ("Protocol and data", "class LLMProvider", "trinity.llm.base:LLMProvider", "members"),
    ("Model strings", "class ModelSpec", "trinity.llm.registry:ModelSpec", "members"),
    ("Model strings", "def parse_model", "trinity.llm.registry:parse_model", "params"),
    ("Model strings", "def check_model", "trinity.llm.registry:check_model", "params"),
    ("Model strings", "def make_provider", "trinity.llm.registry:make_provider", "params"),
    ("SDK base", "class SDKProvider", "trinity.llm.sdk:SDKProvider", "members"),
    ("SDK base", "def classify_sdk_error", "trinity.llm.sdk:classify_sdk_error", "params"),
    (
        "Scripted and recording providers",
        "class ScriptedProvider",
        "trinity.llm.scripted:ScriptedProvider",
        "members",
    ),
    (
        "Scripted and recording providers",
        "class RecordingProvider",
        "trinity.llm.scripted:RecordingProvider",
        "members",
    ),
    ("Retry helper", "class RetryPolicy", "trinity.llm.retry:RetryPolicy", "members"),
    ("Retry helper", "class AttemptFailure", "trinity.llm.retry:AttemptFailure", "members"),
    ("Retry helper", "def call_with_retries", "trinity.llm.retry:call_with_retries", "params"),
    (
        "Structured output",
        "def complete_structured",
        "trinity.llm.structured:complete_structured",
        "params",
    ),
    (
        "MCP server configuration",
        "class McpConfig",
        "trinity.tools.mcp_config:McpConfig",
        "members",
    ),
    (
        "MCP server configuration",
        "class StdioServerConfig",
        "trinity.tools.mcp_config:StdioServerConfig",
        "members",
    ),
    (
        "The built-in tools as an MCP server",
        "def serve_http",
        "trinity.tools.builtin_server:serve_http",
        "params",
    ),
    (
        "Permissions",
        "class PermissionPolicy",
        "trinity.tools.permissions:PermissionPolicy",
        "members",
    ),
    ("Permissions", "class Decision", "trinity.tools.permissions:Decision", "members"),
    ("Store", "class RunJournal", "trinity.store.journal:RunJournal", "members"),
    ("Store", "def load_run", "trinity.store.journal:load_run", "params"),
]


def check_api(check: ApiCheck, sections: dict[str, tuple[list[str], list[str]]]) -> list[str]:
    section, listing, path, how = check
    assert section in sections, f"docs/api.md has no section {section!r}"
    listings, rows = sections[section]
    where = f"docs/api.md, {section}, {listing}"
    code = resolve(path)
    if how == "union":
        text = "\n".join(listings)
        match = re.search(rf"^{listing} = Annotated\[(.*?), Field", text, re.S | re.M)
        assert match, f"{where}: no union listed"
        listed = set(re.findall(r"\w+", match.group(1)))
        actual = {member.__name__ for member in typing.get_args(typing.get_args(code)[0])}
        return [] if listed == actual else [f"{where}: lists {sorted(listed ^ actual)} wrongly"]
    if how == "models":
        return check_models(where, rows, code)
    if listing == "table":
        found = table_names(rows)
    else:
        kind, _, name = listing.partition(" ")
        found = parse_listings(listings).get(name, Listed())
        if kind == "def":
            if "" not in found.params:
                return [f"{where}: not found"]
            listed_params = found.params[""]
            if how == "fields":
                fields = list(code.model_fields)
                if listed_params == fields:
                    return []
                return [f"{where}: fields listed {listed_params}, in the code {fields}"]
            return compare_params(where, listed_params, code)
        if not found.members:
            return [f"{where}: not found"]
    if how == "params":
        return compare_params(where, found.params.get("__init__", []), code)
    return compare_members(where, found, code, own=how == "own members")


def top_level_code(cell: str) -> list[str]:
    """The `code` spans of a table cell that are not inside (an explanation in brackets)."""
    spans = []
    depth = 0
    for number, part in enumerate(cell.split("`")):
        if number % 2:
            if depth == 0:
                spans.append(part)
        else:
            depth = max(0, depth + part.count("(") - part.count(")"))
    return spans


def check_models(where: str, rows: list[str], module: Any) -> list[str]:
    """A table of ``model | fields`` rows; ``+`` in front of the fields: the base's too."""
    problems = []
    listed_by_name: dict[str, set[str]] = {}
    for row in rows:
        row_cells = cells(row)
        first = re.match(r"`(\w+)(?:\((\w+)\))?`", row_cells[0]) if len(row_cells) > 1 else None
        if not first:
            continue
        name, base = first.group(1), first.group(2)
        names = {
            m.group(1)
            for span in top_level_code(row_cells[1])
            if (m := re.match(r"(\w+)(?:\(\))?(?::|$| )", span))
        }
        if row_cells[1].startswith("+") and base:
            names |= listed_by_name.get(base, set())
        listed_by_name[name] = names
        problems += compare_members(f"{where} {name}", Listed(members=names), getattr(module, name))
    return problems


# -- the tests -------------------------------------------------------------------------------------


def run_doc(doc: str) -> DocRun:
    run = DocRun(doc)
    try:
        run.run()
    except Skip as exc:
        run.skipped.append(f"SKIPPED WHOLE DOCUMENT: {exc}")
    return run


@pytest.fixture(scope="module")
def doc_runs(request: pytest.FixtureRequest) -> Iterator[dict[str, Future[DocRun]]]:
    """The selected documents' blocks, run in parallel (one thread per document)."""
    selected = {
        item.callspec.params["doc"]
        for item in request.session.items
        if item.name.startswith("test_examples_print") and hasattr(item, "callspec")
    }
    with ThreadPoolExecutor(max_workers=len(DOCS)) as pool:
        # the longest first: it sets the pace
        order = sorted(selected, key=lambda doc: -(ROOT / doc).stat().st_size)
        yield {doc: pool.submit(run_doc, doc) for doc in order}


@pytest.mark.parametrize("doc", DOCS)
def test_examples_print_what_the_docs_show(doc: str, doc_runs: dict[str, Future[DocRun]]) -> None:
    run = doc_runs[doc].result()
    if any(note.startswith("SKIPPED WHOLE DOCUMENT") for note in run.skipped):
        pytest.skip(run.skipped[0])
    assert not run.failures, f"{len(run.failures)} example(s) differ:\n\n" + "\n\n".join(
        run.failures
    )


def update(doc: str, outputs: dict[int, list[str]], lines: list[int]) -> None:
    """Replace the output the document shows for the commands at ``lines`` with what they
    printed (read it before you commit it: excerpts made with ``…`` are lost)."""
    path = ROOT / doc
    text = path.read_text(encoding="utf-8").splitlines()
    for line in sorted(lines, reverse=True):
        start = line  # 0-based index of the first output line
        indent = text[line - 1][: len(text[line - 1]) - len(text[line - 1].lstrip())]
        end = start
        while end < len(text) and not text[end].strip().startswith(("$ ", "```")):
            end += 1
        text[start:end] = [f"{indent}{out}".rstrip() for out in outputs[line]]
    path.write_text("\n".join(text) + "\n", encoding="utf-8")


def test_api_lists_what_each_package_exports() -> None:
    """The table of imports: every name listed can be imported from its module, and every name
    in a module's ``__all__`` is listed."""
    import importlib

    _, rows = doc_sections()[""]
    problems = []
    for row in rows:
        module_cell, names_cell = cells(row)[:2]
        if not module_cell.startswith("`trinity"):
            continue
        module = importlib.import_module(module_cell.strip("`"))
        listed = set(re.findall(r"`(\w+)`", names_cell))
        missing = sorted(name for name in listed if not hasattr(module, name))
        unlisted = sorted(set(getattr(module, "__all__", ())) - listed)
        if missing or unlisted:
            problems.append(f"{module_cell}: no {missing}; not listed: {unlisted}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("check", API_CHECKS, ids=lambda check: f"{check[0]}: {check[1]}")
def test_api_listing_matches_the_code(check: ApiCheck) -> None:
    problems = check_api(check, doc_sections())
    assert not problems, "\n".join(problems)


# -- the user guide's reference tables and the README, against the CLI and the settings ----------

GUIDE = ROOT / "docs" / "user-guide.md"
CLI_SECTIONS = {
    # command -> the section of the user guide whose table lists its options
    "run": "`trinity run TARGET`",
    "runs list": "`trinity runs list`",
    "runs show": "`trinity runs show RUN_ID`",
    "runs trace": "`trinity runs trace RUN_ID`",
    "runs resume": "`trinity runs resume RUN_ID`",
    "runs cancel": "`trinity runs cancel RUN_ID`",
    "runs approve": "`trinity runs approve RUN_ID` / `trinity runs deny RUN_ID`",
    "runs deny": "`trinity runs approve RUN_ID` / `trinity runs deny RUN_ID`",
    "runs answer": "`trinity runs answer RUN_ID TEXT`",
    "runs audit": "`trinity runs audit RUN_ID`",
    "tools list": "`trinity tools list`",
    "tools call": "`trinity tools call NAME`",
    "mcp serve": "The built-in tools as an MCP server",
    "doctor": "`trinity doctor`",
}


def cli_options(path: str) -> tuple[set[str], list[str]]:
    """A command's long options, and its arguments' names, from the CLI itself."""
    import typer

    from trinity.cli import app

    command: Any = typer.main.get_command(app)
    for name in path.split():
        command = command.commands[name]
    options: set[str] = set()
    arguments: list[str] = []
    for param in command.params:
        if param.param_type_name == "option":
            options |= {opt for opt in [*param.opts, *param.secondary_opts] if opt[:2] == "--"}
        else:
            arguments.append(param.name.upper())
    return options, arguments


@pytest.mark.parametrize("command", CLI_SECTIONS)
def test_the_cli_reference_lists_every_option(command: str) -> None:
    section = CLI_SECTIONS[command]
    _, rows = doc_sections(GUIDE)[section]
    listed = {opt for row in rows for opt in re.findall(r"`(--[\w-]+)", cells(row)[0])}
    options, arguments = cli_options(command)
    assert listed == options, f"{section}: lists {sorted(listed)}, the CLI has {sorted(options)}"
    if section.startswith("`trinity"):
        assert section.strip("`").split()[-1] in [*arguments, command.split()[-1]]


def test_the_readme_lists_every_option_of_trinity_run() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    paragraph = text[text.index("Options of `trinity run`") :].split("\n\n")[0]
    listed = set(re.findall(r"`(--[\w-]+)", paragraph))
    options, _ = cli_options("run")
    assert listed == options - {"--help"}, f"README: {sorted(listed ^ options)}"


def test_the_settings_table_lists_every_setting() -> None:
    from trinity.config import Settings

    _, rows = doc_sections(GUIDE)["Settings"]
    listed = [m.group(1) for row in rows if (m := re.match(r"`(\w+)`$", cells(row)[0]))]
    assert listed == list(Settings.model_fields)


def main(argv: list[str]) -> None:
    """Show what a document's commands print now: ``python tests/test_docs.py DOC [--line N]
    [--update N,N…]`` (``--update``: write what the commands at those lines print into the
    document)."""
    doc = str(Path(argv[0]).resolve().relative_to(ROOT))
    from_line = int(argv[argv.index("--line") + 1]) if "--line" in argv else 0
    run = DocRun(doc, show=True, from_line=from_line)
    run.run()
    print(f"=== {run.ran} commands, {len(run.failures)} differ; skipped: {run.skipped}")
    slowest = sorted(run.timings.items(), key=lambda item: -item[1])[:10]
    print("slowest:", ", ".join(f"line {line} {seconds:.1f}s" for line, seconds in slowest))
    for failure in run.failures:
        print(f"\n{failure}")
    if "--update" in argv:
        update(doc, run.outputs, [int(n) for n in argv[argv.index("--update") + 1].split(",")])


if __name__ == "__main__":
    main(sys.argv[1:])
