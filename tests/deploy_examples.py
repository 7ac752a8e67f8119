"""Reading the deployment examples (examples/deploy) and docs/deployment.md
for the tests that keep them true: command lines, unit settings, manifest
fields and SQL, without a YAML library (none is a dependency)."""

from __future__ import annotations

import json
import re
import shlex
import warnings
from pathlib import Path
from typing import Any

import click

from jobqueue.cli import main

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "examples" / "deploy"
DOC = ROOT / "docs" / "deployment.md"
WORKER_UNIT = DEPLOY / "jobqueue-worker@.service"
BEAT_UNIT = DEPLOY / "jobqueue-beat.service"
ENV_FILE = DEPLOY / "jobqueue.env"
MANIFEST = DEPLOY / "kubernetes.yaml"
KEDA = DEPLOY / "keda.yaml"

_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")


def parse_command(line: str) -> tuple[list[str], dict[str, Any]] | None:
    """The jobqueue command of a shell line, parsed by the CLI's own click
    commands: (the command's path, e.g. ["db", "grant"], its parameters). None
    when the line runs something else. A bad option raises click's error."""
    words = shlex.split(line, comments=True)
    while words and _ASSIGNMENT.match(words[0]):
        words.pop(0)  # VAR=value before the command
    if not words or Path(words[0]).name != "jobqueue":
        return None
    return parse_args(words[1:])


def parse_args(args: list[str]) -> tuple[list[str], dict[str, Any]]:
    command: click.Command = main
    path: list[str] = []
    params: dict[str, Any] = {}
    while True:
        ctx = command.make_context("jobqueue", list(args))
        params.update(ctx.params)
        if not isinstance(command, click.Group):
            if ctx.args:
                raise click.UsageError(f"unexpected arguments {ctx.args} for {path}")
            return path, params
        with warnings.catch_warnings():  # click 8.2+: the name moves into args
            warnings.simplefilter("ignore", DeprecationWarning)
            rest = [*getattr(ctx, "protected_args", []), *ctx.args]
        if not rest:
            raise click.UsageError(f"no command after {path}")
        name, args = rest[0], rest[1:]
        sub = command.get_command(ctx, name)
        if sub is None:
            raise click.UsageError(f"no such command {name!r} under {path}")
        command, path = sub, [*path, name]


def doc_commands(text: str) -> list[str]:
    """Every jobqueue command line in the fenced code blocks of a Markdown
    text (``$ `` prompts dropped, backslash continuations joined). Inline code
    spans are left alone: prose names fragments such as ``db grant --worker``."""
    lines: list[str] = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if re.match(r"^([A-Z_][A-Z0-9_]*=\S+\s+)*jobqueue\s", line):
                lines.append(line)
    return lines


def doc_section(title: str) -> str:
    """The text of one ``## title`` section of docs/deployment.md."""
    text = DOC.read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert match, f"docs/deployment.md has no section {title!r}"
    return match.group(1)


def sql_blocks(text: str) -> list[str]:
    return re.findall(r"^```sql\n(.*?)^```", text, flags=re.S | re.M)


def statements(sql: str) -> list[str]:
    """The statements of a block of SQL (no semicolons inside literals here)."""
    return [s.strip() for s in sql.split(";") if re.sub(r"--[^\n]*", "", s).strip()]


def env_file(path: Path = ENV_FILE) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def unit(path: Path) -> dict[str, list[str]]:
    """A systemd unit's settings, every section together: key → values."""
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;" or line.startswith("["):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def unit_exec(path: Path) -> str:
    """The unit's ExecStart, with ``${VAR}`` from the example environment file."""
    (line,) = unit(path)["ExecStart"]
    env = env_file()
    return re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], line)


def seconds(value: str) -> float:
    """A systemd time span such as ``60``, ``90s``, ``2min`` or ``1min 30s``."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    total = 0.0
    for number, suffix in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * units[suffix]
    return total


def manifest_documents(path: Path) -> list[str]:
    return [d for d in re.split(r"^---\s*$", path.read_text(), flags=re.M) if d.strip()]


def top_field(document: str, name: str) -> str:
    match = re.search(rf"^{name}:\s*(\S+)\s*$", document, flags=re.M)
    assert match, f"no top-level {name} in\n{document}"
    return match.group(1)


def document(path: Path, kind: str) -> str:
    (found,) = [d for d in manifest_documents(path) if top_field(d, "kind") == kind]
    return found


def commands(document: str) -> list[list[str]]:
    """Every ``command: [...]`` of a manifest document (flow sequences of
    double-quoted strings, which JSON reads)."""
    return [json.loads(m) for m in re.findall(r"command:\s*(\[.*?\])", document, flags=re.S)]


def int_field(document: str, name: str) -> int:
    match = re.search(rf"^\s*{name}:\s*(\d+)\s*$", document, flags=re.M)
    assert match, f"no {name} in the manifest"
    return int(match.group(1))


def keda_queries() -> list[str]:
    """The ``query: >-`` folded blocks of keda.yaml, folded as YAML folds them."""
    found = []
    lines = KEDA.read_text().splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)query:\s*>-\s*$", line)
        if match:
            indent = len(match.group(1))
            body = []
            for following in lines[i + 1 :]:
                if following.strip() and len(following) - len(following.lstrip()) <= indent:
                    break
                body.append(following.strip())
            found.append(" ".join(part for part in body if part))
    return found
