"""Every Python and SQL block of README.md and docs/ runs, so an example that
stops working fails the suite (how to mark and set up blocks: docs/contributing.md)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .blocks import OWN_PROCESS, pages, parse
from .harness import BlockFailed, run_page, run_page_own_process

ROOT = Path(__file__).resolve().parents[2]
PAGES = pages(ROOT)


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_page_examples_run(page: Path, docs_dsn: str, tmp_path: Path) -> None:
    relative = str(page.relative_to(ROOT))
    text = page.read_text()
    blocks = parse(text, relative)
    started = time.monotonic()
    failure = None
    run = run_page_own_process if OWN_PROCESS.search(text) else run_page
    try:
        ran = run(page, ROOT, docs_dsn, tmp_path / "page", blocks)
    except BlockFailed as exc:
        failure = str(exc)
    if failure is not None:  # outside the except: the message alone, no chained traceback
        pytest.fail(failure, pytrace=False)
    expected = sum(b.runs for b in blocks)
    assert ran == expected
    print(f"{relative}: {ran} blocks in {time.monotonic() - started:.2f}s")
