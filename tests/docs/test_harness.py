"""The docs harness itself: what it runs, what it refuses, what it says."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from .blocks import MarkError, parse
from .harness import BlockFailed, run_page

ROOT = Path(__file__).resolve().parents[2]

PAGE = """# A page

<!-- setup: x = 40 -->
```python
y = x + 2
```

<!-- no-run: a fragment -->
```python
...  # not run
```

```console
$ not run either
```

```sql
SELECT 1;
```

<!-- teardown: print("torn down") -->
    ```python
    # proj/extra.py
    VALUE = 42
    ```

```python
assert VALUE + y == 84  # the module's names, and the first block's
```

```python
import asyncio

task = asyncio.ensure_future(asyncio.sleep(0, result=y))
```

```python
await task  # 42: top-level await, one event loop for the page
```
"""


def test_parse_reads_marks_languages_and_lines() -> None:
    blocks = parse(PAGE, "page.md")
    assert [(b.line, b.lang, b.runs) for b in blocks] == [
        (4, "python", True),
        (9, "python", False),
        (13, "console", False),
        (17, "sql", True),
        (22, "python", True),
        (27, "python", True),
        (31, "python", True),
        (37, "python", True),
    ]
    assert blocks[0].setups == [(3, "x = 40\n")]
    assert blocks[1].no_run == "a fragment"
    assert blocks[4].teardowns == [(21, 'print("torn down")\n')]
    assert blocks[4].code.startswith("# proj/extra.py\n")  # the list item's indent removed


def test_a_mark_without_a_reason_or_misspelt_is_refused() -> None:
    with pytest.raises(MarkError, match=r"page.md:1: <!-- no-run: ... --> needs a reason"):
        parse("<!-- no-run: -->\n```python\npass\n```\n", "page.md")
    with pytest.raises(MarkError, match=r"page.md:1: unreadable test mark"):
        parse("<!-- norun because -->\n```python\npass\n```\n", "page.md")


def test_claims_in_comments_are_checked_and_prose_is_not() -> None:
    from .claims import literal_claim

    assert literal_claim("5") == "5"
    assert literal_claim("[0, 2, 4], in order") == "[0, 2, 4]"
    assert literal_claim("(1, 2): immutable") == "(1, 2)"
    assert literal_claim("True; False if already paused") == "True"
    assert literal_claim("every queue") is None
    assert literal_claim("True if it went back") is None
    assert literal_claim("[0, 2, 4, ..., 18]") is None  # illustrative


def test_dsn_literals_point_at_the_test_database_unless_malformed(
    docs_dsn: str, tmp_path: Path
) -> None:
    text = (
        "```python\nimport psycopg\n"
        "with psycopg.connect('postgresql://app:secret@db.example/shop') as conn:\n"
        "    conn.execute('SELECT 1')\n"
        "bad = 'postgresql://app@db.example/shop?nosuch=1'\n"
        "assert 'nosuch' in bad  # kept as written\n```\n"
    )
    page = tmp_path / "page.md"
    page.write_text(text)
    assert run_page(page, ROOT, docs_dsn, tmp_path / "work", parse(text, "page.md")) == 1


def test_a_page_runs_in_order_in_one_namespace(docs_dsn: str, tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(PAGE)
    blocks = parse(PAGE, "page.md")
    assert run_page(page, ROOT, docs_dsn, tmp_path / "work", blocks) == 6


@pytest.mark.parametrize(
    ("block", "says"),
    [
        ("```python\nx = 1\nundefined_name\n```\n", "NameError: name 'undefined_name'"),
        ("```sql\nSELECT * FROM no_such_table;\n```\n", 'relation "no_such_table"'),
        ("```sql\nSELECT '<job id>'::uuid;\n```\n", "define job_id in a hidden set-up"),
        ("```python\n>>> 1 + 1\n3\n```\n", "Expected:\n    3\nGot:\n    2"),
        ("```python\nx = 2\nx + 1  # 4: a wrong claim\n```\n", "says 4, the code gives 3"),
        ("```python\nprint('a' * 2)  # 'aaa'\n```\n", "says 'aaa', the code gives 'aa'"),
    ],
)
def test_a_failing_block_names_page_line_and_the_fix(
    docs_dsn: str, tmp_path: Path, block: str, says: str
) -> None:
    text = "# A page\n\n" + block
    page = tmp_path / "page.md"
    page.write_text(text)
    with pytest.raises(BlockFailed) as failed:
        run_page(page, ROOT, docs_dsn, tmp_path / "work", parse(text, "docs/page.md"))
    message = str(failed.value)
    assert "block at docs/page.md:3 failed" in message
    assert says in message
    assert "<!-- setup:" in message and "<!-- no-run:" in message


def test_a_page_marked_own_process_runs_in_another_interpreter(
    docs_dsn: str, tmp_path: Path
) -> None:
    from .blocks import OWN_PROCESS
    from .harness import run_page_own_process

    text = (
        "<!-- own-process: it marks sys.modules -->\n\n"
        "```python\nimport sys\nsys.modules['docs_marker'] = sys\n```\n\n"
        "```python\nundefined_here\n```\n"
    )
    assert OWN_PROCESS.search(text)
    page = tmp_path / "page.md"
    page.write_text(text)
    with pytest.raises(BlockFailed, match=r"(?s)block at .*page.md:8 failed.*undefined_here"):
        run_page_own_process(page, ROOT, docs_dsn, tmp_path / "work", parse(text, "page.md"))
    assert "docs_marker" not in sys.modules


def test_the_example_tasks_are_the_pages_proj_tasks(docs_dsn: str, tmp_path: Path) -> None:
    text = (
        "<!-- setup: harness.example_tasks(); harness.worker(app) -->\n"
        "<!-- setup: harness.write('proj/models.py', 'ORDER = 42\\n') -->\n"
        "```python\nfrom proj.models import ORDER\nfrom proj.tasks import add\n\n"
        "add.delay(2, ORDER).get(timeout=10)  # 44\n```\n"
    )
    page = tmp_path / "page.md"
    page.write_text(text)
    assert run_page(page, ROOT, docs_dsn, tmp_path / "work", parse(text, "page.md")) == 1


def test_a_test_file_is_written_for_pytest_to_run(docs_dsn: str, tmp_path: Path) -> None:
    text = (
        "```python\n# tests/test_example.py\ndef test_it():\n    assert 1 + 1 == 2\n```\n\n"
        "<!-- run -->\n```console\n"
        "$ python -m pytest -q -p no:cacheprovider tests/test_example.py\n1 passed\n```\n"
    )
    page = tmp_path / "page.md"
    page.write_text(text)
    assert run_page(page, ROOT, docs_dsn, tmp_path / "work", parse(text, "docs/page.md")) == 2


def test_a_shell_block_runs_only_when_marked_and_each_command_must_succeed(
    docs_dsn: str, tmp_path: Path
) -> None:
    text = (
        "```console\n$ false   # shown, not run\n```\n\n"
        "<!-- run -->\n```console\n$ jobqueue queue pause emails \\\n"
        "    --reason 'provider down'\nemails: paused\n"
        "$ jobqueue schedule pause no-such-schedule\n```\n"
    )
    page = tmp_path / "page.md"
    page.write_text(text)
    with pytest.raises(BlockFailed) as failed:
        run_page(page, ROOT, docs_dsn, tmp_path / "work", parse(text, "docs/page.md"))
    message = str(failed.value)
    assert "console block at docs/page.md:6 failed" in message
    assert (
        "$ jobqueue schedule pause no-such-schedule\nexit status 1" in message
    )  # the first one ran
