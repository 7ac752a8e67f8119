"""The fenced blocks of a Markdown page, with the test marks written above them.

A block's marks are HTML comments directly above its fence (blank lines
between are allowed); they render as nothing on GitHub and in the docs site:

    <!-- no-run: why this block cannot run -->
    <!-- setup: hidden_code(); more = 1 -->
    <!-- setup:
    multi_line_hidden_code()
    -->
    <!-- teardown: undo_what_the_block_did() -->   (run when the page ends)

This module only parses; ``harness.py`` runs what it finds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

#: Info strings the harness executes; every other fence (console, sh, text,
#: json, yaml, ...) is shown, not run.
RUN_LANGUAGES = frozenset({"python", "py", "pycon", "sql"})

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)(?P<rest>.*)$")
_MARK = re.compile(r"^<!--\s*(?P<kind>no-run|setup|teardown)\s*:(?P<body>.*?)-->$", re.DOTALL)
_RUN = re.compile(r"^<!--\s*run\s*-->$")
#: A page whose examples change what a process keeps (Django's settings,
#: global registries) runs in a process of its own: <!-- own-process: why -->.
OWN_PROCESS = re.compile(r"^<!--\s*own-process:\s*\S.*?-->$", re.MULTILINE)
_ANY_MARK = re.compile(
    r"^<!--\s*(no-run|setup|teardown|run|own-process|test|skip|norun|no_run)\b", re.IGNORECASE
)
#: Shell blocks are shown, not run, unless marked <!-- run --> (cheap, safe
#: commands against the test database): each command must exit 0.
SHELL_LANGUAGES = frozenset({"console", "sh", "shell", "bash"})


class MarkError(ValueError):
    """A mark the harness cannot read (misspelt, or no reason given)."""


@dataclass
class Block:
    page: str  # path relative to the repository, as the failure message names it
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    setups: list[tuple[int, str]] = field(default_factory=list)  # (line, code)
    teardowns: list[tuple[int, str]] = field(default_factory=list)  # run when the page ends
    no_run: str | None = None  # the reason
    run_shell: bool = False  # a shell block marked <!-- run -->

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def runs(self) -> bool:
        if self.no_run is not None:
            return False
        return self.lang in RUN_LANGUAGES or (self.run_shell and self.lang in SHELL_LANGUAGES)


def parse(text: str, page: str) -> list[Block]:
    """Every fenced block of ``text``, in order, with the marks above it."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = len(m["indent"]), m["fence"]
        end = i + 1
        while end < len(lines) and not (
            lines[end].strip().startswith(fence) and not lines[end].strip().strip(fence[0])
        ):
            end += 1
        body = "\n".join(_unindent(line, indent) for line in lines[i + 1 : end])
        block = Block(page, i + 1, m["lang"].lower(), body + "\n")
        _attach_marks(block, lines, i)
        blocks.append(block)
        i = end + 1
    return blocks


def _attach_marks(block: Block, lines: list[str], fence_index: int) -> None:
    """Read the comments above the fence, nearest last, into ``block``."""
    j = fence_index - 1
    found: list[tuple[int, str]] = []
    while j >= 0:
        if not lines[j].strip():
            j -= 1
            continue
        if not lines[j].rstrip().endswith("-->"):
            break
        start = j
        while start >= 0 and "<!--" not in lines[start]:
            start -= 1
        if start < 0:
            break
        comment = "\n".join(
            line.strip() if k == start else line
            for k, line in enumerate(lines[start : j + 1], start)
        ).strip()
        found.append((start + 1, comment))
        j = start - 1
    for line, comment in reversed(found):
        if OWN_PROCESS.match(comment):
            continue  # a page's mark (test_docs_blocks.py), wherever it stands
        if _RUN.match(comment):
            if block.lang not in SHELL_LANGUAGES:
                raise MarkError(f"{block.page}:{line}: <!-- run --> is for shell blocks")
            block.run_shell = True
            continue
        m = _MARK.match(comment)
        if not m:
            if _ANY_MARK.match(comment):
                raise MarkError(
                    f"{block.page}:{line}: unreadable test mark {comment[:60]!r}: write "
                    "<!-- no-run: <reason> -->, <!-- setup: <python> --> or <!-- run -->"
                )
            continue  # an ordinary comment
        if m["kind"] == "no-run":
            reason = m["body"].strip()
            if not reason:
                raise MarkError(f"{block.page}:{line}: <!-- no-run: ... --> needs a reason")
            block.no_run = reason
            continue
        target = block.setups if m["kind"] == "setup" else block.teardowns
        # The code keeps its own line numbers: a traceback points into the page.
        body = m["body"]
        if not body.strip():
            raise MarkError(f"{block.page}:{line}: an empty <!-- {m['kind']}: --> mark")
        if body.lstrip(" ").startswith("\n"):  # <!-- setup:\n code\n -->
            target.append((line + 1, _dedent(body.lstrip(" ")[1:])))
        else:  # <!-- setup: code --> (more lines may follow)
            target.append((line, _dedent(body.lstrip(" "))))


def _unindent(line: str, indent: int) -> str:
    """A fenced line without the fence's own indentation (a fence inside a list item)."""
    return line if not indent or (not line[:indent].isspace() and line.strip()) else line[indent:]


def _dedent(code: str) -> str:
    import textwrap

    return textwrap.dedent(code).strip() + "\n"


def pages(root: Path) -> list[Path]:
    """The pages under test: README.md and every docs/ page (the generated
    API reference holds no examples of its own)."""
    found = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    return [p for p in found if "reference" not in p.relative_to(root).parts[:2]]
