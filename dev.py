#!/usr/bin/env python3
"""Developer entry point that needs nothing but Python 3.10+.

    python3 dev.py demo    # a worker + enqueuer on the embedded PostgreSQL
    python3 dev.py test    # lint, type-check and the full test suite

Both create ./.venv and install what they need into it first. The tests use
$JOBQUEUE_TEST_DSN if set, else a Docker PostgreSQL via testcontainers if a
Docker engine answers, else the embedded PostgreSQL: no server is required.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"


def run(*args: str | Path, env: dict[str, str] | None = None) -> None:
    print("+", " ".join(str(a) for a in args), flush=True)
    done = subprocess.run([str(a) for a in args], cwd=ROOT, env=env)
    if done.returncode:
        sys.exit(done.returncode)


def install(extra: str = "") -> None:
    if not PY.exists():
        venv.create(VENV, with_pip=True)
    target = f".[{extra}]" if extra else "."
    run(PY, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-e", target)


def demo() -> None:
    install()
    env = {k: v for k, v in os.environ.items() if k != "JOBQUEUE_DSN"}
    command = [str(BIN / "jobqueue"), "demo"]
    print("+", " ".join(command), flush=True)
    demo = subprocess.Popen(command, cwd=ROOT, env=env)
    while True:
        # Ctrl-C reaches the demo too, which stops the embedded server it
        # started before it exits: wait for that (subprocess.run would kill it).
        try:
            sys.exit(demo.wait())
        except KeyboardInterrupt:
            continue


def test(pytest_args: list[str]) -> None:
    install("test")
    run(PY, "-m", "ruff", "check", ".")
    run(PY, "-m", "mypy")
    run(PY, "-m", "pytest", *pytest_args)


def main() -> None:
    command, *rest = sys.argv[1:] or ["help"]
    if command == "demo":
        demo()
    elif command == "test":
        test(rest)
    else:
        print(__doc__)
        sys.exit(0 if command in ("help", "-h", "--help") else 2)


if __name__ == "__main__":
    main()
