"""The wheel holds jobqueue and nothing else: every file of the package, the
migrations under jobqueue/migrations, py.typed; no benchmarks, tests or
examples at the top of site-packages."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import ROOT

_SKIPPED_PARTS = {"__pycache__"}


def _files(directory: Path, prefix: str) -> set[str]:
    """What a wheel should hold of ``directory``, under ``prefix``."""
    return {
        f"{prefix}/{path.relative_to(directory).as_posix()}"
        for path in directory.rglob("*")
        if path.is_file() and not _SKIPPED_PARTS & set(path.parts) and path.suffix != ".pyc"
    }


def test_the_wheel_holds_jobqueue_alone(tmp_path: Path) -> None:
    # hatchling is in the test extra: no download when it is installed.
    isolation = [] if importlib.util.find_spec("hatchling") is None else ["--no-build-isolation"]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", tmp_path, ROOT],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("jobqueue-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    dist_info = {n for n in names if n.split("/")[0].endswith(".dist-info")}
    assert {n.split("/")[0] for n in names - dist_info} == {"jobqueue"}
    expected = _files(ROOT / "jobqueue", "jobqueue") | _files(
        ROOT / "migrations", "jobqueue/migrations"
    )
    assert names - dist_info == expected
    assert "jobqueue/py.typed" in names
    assert "jobqueue/migrations/env.py" in names
    assert "jobqueue/sql/schema.sql" in names and "jobqueue/sql/queries.sql" in names
    versions = {n for n in names if n.startswith("jobqueue/migrations/versions/")}
    assert len(versions) == len(list((ROOT / "migrations" / "versions").glob("*.py")))
