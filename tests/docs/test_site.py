"""The docs site builds in strict mode: every page in nav, every link and
anchor between pages resolves, and the API reference renders from the
docstrings (``mkdocs.yml``; docs/contributing.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("mkdocstrings", reason="the docs extra: pip install -e '.[docs]'")


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert done.returncode == 0, (
        f"mkdocs build --strict failed:\n{done.stderr}\n"
        "A new page goes in mkdocs.yml's nav (and docs/index.md's list); a link names a page "
        "relative to this one (other.md#anchor, GitHub's anchor); a docstring's reST that "
        "breaks the build: see docs/contributing.md#the-site-and-the-api-reference"
    )
    reference = (site / "reference" / "app" / "index.html").read_text()
    assert "Register a function as a task" in reference  # JobQueue.task's docstring
    assert (site / "contributing" / "index.html").exists()
