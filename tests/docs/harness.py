"""Runs one Markdown page's blocks in order, as a reader would type them.

- One namespace per page (``__name__`` is ``proj.tasks``, the module the docs'
  examples live in, so a task defined in a block is named ``proj.tasks.<fn>``
  as the prose says). Hidden set-ups (``<!-- setup: ... -->``) run in it just
  before their block.
- A Python block whose first line is ``# some/path.py`` is a file the reader
  creates: it is written under the page's directory (on ``sys.path``), imported,
  and its public names are put in the namespace for the blocks that follow
  (a ``test_*.py`` or ``conftest.py`` is only written, for pytest to run).
- Any other Python block runs with the results its comments claim checked
  (``claims.py``); ``await`` at its top level runs on the page's event loop.
- A block starting with ``>>>`` is a session: run by doctest, its printed
  output compared (``...`` matches anything).
- A SQL block is sent as written on an autocommit connection; a placeholder
  ``<result id>`` is replaced by the namespace's ``result_id`` (a set-up
  defines it).
- A shell block marked ``<!-- run -->`` runs command by command in bash; each
  must exit 0.
- Every ``postgresql://`` (or ``postgresql+psycopg://``) string literal in a
  Python block is pointed at the test database, and ``$JOBQUEUE_DSN`` is set
  to it, so ``JobQueue()`` finds it as the docs say it will.

The page gets the database's ``jobqueue`` schema, freshly migrated, and a
fresh ``public`` schema (for the examples' own tables such as ``orders``).
"""

from __future__ import annotations

import ast
import asyncio
import doctest
import gc
import importlib
import inspect
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import threading
import traceback
import types
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg.conninfo import conninfo_to_dict

from jobqueue import JobQueue, migrate

from . import claims
from .blocks import SHELL_LANGUAGES, Block, MarkError, parse

HINT = (
    "Fix the example if the docs are wrong. If it needs context the prose gives "
    "(an app, a task, a row), add a hidden set-up right above its fence: "
    "<!-- setup: python code -->. If it truly cannot run here (a fragment, a "
    "long-running server), mark it: <!-- no-run: the reason -->. "
    "See docs/contributing.md#examples-are-tested."
)

_DSN_LITERAL = re.compile(r"""(?P<q>["'])postgresql(?P<plus>\+psycopg)?://[^"'\n]*(?P=q)""")
_PLACEHOLDER = re.compile(r"<(?P<name>[a-z][a-z ]*[a-z])>")
_PLAIN_CLI = re.compile(r"^jobqueue\s")
_MODULE_FILE = re.compile(r"^#\s*(?P<path>[\w./-]+\.py)\s*$")


#: The module the examples live in (``proj/tasks.py`` in the docs): a task a
#: block defines is named ``proj.tasks.<function>``, as the prose says.
PAGE_MODULE = "proj.tasks"


class BlockFailed(AssertionError):
    """One block did not run; the message names the page, the line and the fix."""


def url(conninfo: str, driver: str = "") -> str:
    """``conninfo`` (key=value or URI) as a URI, for SQLAlchemy and the docs' literals."""
    p = conninfo_to_dict(conninfo)
    user = quote(str(p.get("user") or ""), safe="")
    password = f":{quote(str(p['password']), safe='')}" if p.get("password") else ""
    auth = f"{user}{password}@" if user else ""
    host, port, dbname = str(p.get("host") or "localhost"), p.get("port"), p.get("dbname") or ""
    if host.startswith("/"):  # a Unix socket (the embedded server): host and port as query
        query = f"?host={quote(host, safe='/')}" + (f"&port={port}" if port else "")
        return f"postgresql{driver}://{auth}/{dbname}{query}"
    return f"postgresql{driver}://{auth}{host}{f':{port}' if port else ''}/{dbname}"


class Harness:
    """What hidden set-ups may use, as ``harness`` in the page's namespace."""

    def __init__(self, dsn: str, workdir: Path, ns: dict[str, Any]) -> None:
        self.dsn = url(dsn)
        self.workdir = workdir
        self._ns = ns
        self._workers: list[tuple[Any, threading.Thread]] = []

    def worker(self, app: JobQueue, **options: Any) -> Any:
        """Start an in-process worker for ``app`` (stopped when the page ends);
        returns once it is ready. ``options`` are ``Worker``'s (queues=[...])."""
        from jobqueue.worker.runner import Worker

        options.setdefault("concurrency", 4)
        ready = threading.Event()
        started = Worker(app, **options)
        app.hooks.connect("worker_ready", lambda worker, **_: worker is started and ready.set())
        thread = threading.Thread(target=started.run, name="docs-worker", daemon=True)
        thread.start()
        if not ready.wait(30):
            raise RuntimeError("the docs worker did not start within 30 s")
        self._workers.append((started, thread))
        return started

    def example_tasks(self) -> None:
        """The docs' ``proj/tasks.py`` (``setups/proj_tasks.py``: ``app`` and
        the quickstart's and canvas's tasks) in the page's namespace, which is
        the module ``proj.tasks``: ``from proj.tasks import add`` works."""
        path = Path(__file__).parent / "setups" / "proj_tasks.py"
        exec(compile(path.read_text(), str(path), "exec"), self._ns)

    def write(self, relative: str, text: str) -> Path:
        """A file of the reader's project that the page does not show (e.g.
        ``proj/models.py``), under the page's directory (on ``sys.path``);
        its packages get an ``__init__.py``."""
        path = self.workdir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in Path(relative).parents:
            if parent != Path(".") and not (self.workdir / parent / "__init__.py").exists():
                (self.workdir / parent / "__init__.py").write_text("")
        path.write_text(textwrap.dedent(text))
        importlib.invalidate_caches()
        return path

    def sql(self, statement: str, params: Any = None) -> list[Any]:
        """Run SQL on the test database (autocommit); the rows, if any."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def stop(self) -> None:
        for worker, _ in self._workers:
            worker.stop()
        for _, thread in self._workers:
            thread.join(30)


def prepare_database(dsn: str) -> None:
    """A fresh ``jobqueue`` schema at head and an empty ``public`` schema."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        _end_other_sessions(conn)
        conn.execute("DROP SCHEMA IF EXISTS jobqueue CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")
    migrate.upgrade(dsn, "jobqueue")


def _end_other_sessions(conn: psycopg.Connection[Any]) -> None:
    """End what a page left open on the test database (a reader's ``conn`` in
    the middle of a transaction), so the next page's DROP is not blocked.
    The database is this test session's own: only the docs' sessions are here."""
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )


def drop_new_schemas(dsn: str, before: set[str]) -> None:
    """Drop the schemas a page created (``schema="jq"`` in an example)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        _end_other_sessions(conn)
        rows = conn.execute("SELECT nspname FROM pg_namespace").fetchall()
        for (name,) in rows:
            if name not in before:
                conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def schemas(dsn: str) -> set[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace").fetchall()}


class PageRun:
    """The state of one page's run: its namespace, files and workers."""

    def __init__(self, dsn: str, workdir: Path, page_setup: Path | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.page_setup = page_setup
        self._modules_before = set(sys.modules)
        self._apps_before = _apps()
        # The namespace is a real module's, so what looks a class's module up in
        # sys.modules (SQLAlchemy's annotations, pickle) finds the page's names.
        module = types.ModuleType(PAGE_MODULE)
        sys.modules[PAGE_MODULE] = module
        self.ns: dict[str, Any] = vars(module)
        self.harness = Harness(dsn, workdir, self.ns)
        self.ns["harness"] = self.harness
        self._teardowns: list[tuple[Block, int, str]] = []
        # The page's event loop, current for its blocks as the REPL's is.
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)

    # -- the page ---------------------------------------------------------------

    def run(self, blocks: list[Block]) -> int:
        """Run every runnable block in order; the number run."""
        sys.path.insert(0, str(self.workdir))
        ran = 0
        try:
            if self.page_setup is not None:
                self._page_setup(self.page_setup)
            for block in blocks:
                if not block.runs:
                    continue
                self.block(block)
                ran += 1
        except BaseException:
            with suppress(BlockFailed):  # the block's failure is the one to report
                self.close()
            raise
        self.close()
        return ran

    def _page_setup(self, path: Path) -> None:
        try:
            exec(compile(path.read_text(), str(path), "exec"), self.ns)
        except Exception as exc:
            frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
            where = "".join(traceback.format_list(frames))
            raise BlockFailed(
                f"the page's set-up {path} failed:\n{where}{type(exc).__name__}: {exc}"
            ) from None

    def close(self) -> None:
        """Teardowns, then what the page left running: always all of it."""
        try:
            for block, line, code in reversed(self._teardowns):
                self._guard(block, partial(self._exec, code, block.page, line), "its teardown")
        finally:
            self._release()

    def _release(self) -> None:
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()
        asyncio.set_event_loop(None)
        self.harness.stop()
        for name in set(sys.modules) - self._modules_before:
            sys.modules.pop(name)
        # Every app the page made, the ones it rebound included: their pools and
        # result listeners must not outlive the page's database.
        for app in _apps() - self._apps_before:
            app.close()
        if str(self.workdir) in sys.path:
            sys.path.remove(str(self.workdir))
        importlib.invalidate_caches()

    def block(self, block: Block) -> None:
        self._teardowns.extend((block, line, code) for line, code in block.teardowns)
        for line, code in block.setups:
            self._guard(block, partial(self._exec, code, block.page, line), "its set-up")
        if block.lang == "sql":
            self._guard(block, lambda: self._sql(block), "")
        elif block.lang in SHELL_LANGUAGES:
            self._guard(block, lambda: self._shell(block), "")
        elif block.code.lstrip().startswith(">>>"):
            self._guard(block, lambda: self._doctest(block), "")
        elif m := _MODULE_FILE.match(block.code.splitlines()[0]):
            self._guard(block, lambda: self._module(block, m["path"]), "")
        else:
            code = _DSN_LITERAL.sub(self._dsn_literal, block.code)
            self._guard(block, lambda: self._exec_checked(code, block.page, block.line + 1), "")

    # -- kinds of block --------------------------------------------------------------

    def _exec(self, code: str, page: str, first_line: int) -> None:
        # Blank lines in front keep the page's line numbers in the traceback.
        exec(compile("\n" * (first_line - 1) + code, page, "exec"), self.ns)

    def _exec_checked(self, code: str, page: str, first_line: int) -> None:
        """A reader's block: as ``_exec``, with the results its comments claim
        checked. ``await`` at the top level runs as in ``python -m asyncio``,
        on one event loop for the whole page (what one block opens on it, the
        next may use)."""
        tree = claims.instrument("\n" * (first_line - 1) + code, page)
        self.ns[claims.CHECK] = claims.claim
        compiled = compile(tree, page, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        if compiled.co_flags & inspect.CO_COROUTINE:
            self._loop.run_until_complete(eval(compiled, self.ns))
        else:
            exec(compiled, self.ns)

    def _dsn_literal(self, m: re.Match[str]) -> str:
        written = m[0][1:-1].replace("+psycopg", "", 1)
        try:
            conninfo_to_dict(written)
        except psycopg.ProgrammingError:
            return m[0]  # a malformed DSN is the example's point (its error): kept
        return repr(url(self.harness.dsn, m["plus"] or ""))

    def _module(self, block: Block, relative: str) -> None:
        path = self.workdir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(self.workdir).parents:
            init = self.workdir / parent / "__init__.py"
            if parent != Path(".") and not init.exists():
                init.write_text("")
        code = _DSN_LITERAL.sub(self._dsn_literal, block.code)
        path.write_text(code)
        name = ".".join(Path(relative).with_suffix("").parts)
        if name == PAGE_MODULE:  # the page's own module: run in its namespace
            self.ns["__file__"] = str(path)
            self._exec(code, block.page, block.line + 1)
            return
        if path.name == "conftest.py" or path.name.startswith("test_"):
            return  # a reader runs it with pytest: a <!-- run --> console block
        importlib.invalidate_caches()
        sys.modules.pop(name, None)
        module = importlib.import_module(name)
        self.ns.update({k: v for k, v in vars(module).items() if not k.startswith("_")})

    def _doctest(self, block: Block) -> None:
        parser = doctest.DocTestParser()
        test = parser.get_doctest(block.code, self.ns, block.where, block.page, block.line)
        out = io.StringIO()
        runner = doctest.DocTestRunner(
            optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
        )
        result = runner.run(test, out=out.write, clear_globs=False)
        self.ns.update(test.globs)  # DocTest ran on a copy: what it defined is the page's
        if result.failed:
            raise BlockFailed(out.getvalue())

    def _sql(self, block: Block) -> None:
        def value(m: re.Match[str]) -> str:
            key = m["name"].replace(" ", "_")
            if key not in self.ns:
                raise BlockFailed(
                    f"placeholder <{m['name']}>: define {key} in a hidden set-up "
                    f"(<!-- setup: {key} = ... -->)"
                )
            return str(self.ns[key])

        statement = _PLACEHOLDER.sub(value, block.code)
        with psycopg.connect(self.harness.dsn, autocommit=True) as conn:
            conn.execute(statement)

    def _shell(self, block: Block) -> None:
        """Each command of the block (``$ `` lines in a console block, every
        line of an sh block; ``\\`` continues one), with ``$JOBQUEUE_DSN`` the
        test database's; a prompt gets ``y``. Each must exit 0 within 60 s.
        A plain ``jobqueue ...`` command (no pipe, redirection, variable or
        second command) runs this checkout's CLI in-process, which spares a
        second of interpreter start-up each; any other runs in bash, in the
        page's directory, with this interpreter's ``jobqueue`` on PATH."""
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        env["PYTHONPATH"] = os.pathsep.join([str(self.workdir), env.get("PYTHONPATH", "")])
        for command in shell_commands(block):
            if _PLAIN_CLI.match(command) and not set(command) & set("|&;<>$`("):
                self._cli(command)
                continue
            done = subprocess.run(
                ["bash", "-c", command],
                cwd=self.workdir,
                env=env,
                input="y\n",
                capture_output=True,
                text=True,
                timeout=60,
            )
            if done.returncode:
                raise BlockFailed(
                    f"$ {command}\nexit status {done.returncode}\n{done.stdout}{done.stderr}"
                )

    def _cli(self, command: str) -> None:
        from click.testing import CliRunner

        from jobqueue.cli import main

        args = shlex.split(command, comments=True)[1:]
        done = CliRunner().invoke(main, args, input="y\n", catch_exceptions=True)
        if done.exit_code:
            crash = ""
            if done.exc_info and not isinstance(done.exception, SystemExit):
                crash = "".join(traceback.format_exception(*done.exc_info))
            raise BlockFailed(f"$ {command}\nexit status {done.exit_code}\n{done.output}{crash}")

    # -- failures ----------------------------------------------------------------

    def _guard(self, block: Block, run: Any, part: str) -> None:
        try:
            run()
        except BlockFailed as exc:
            raise BlockFailed(self._message(block, part, str(exc))) from None
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            mine = (block.page, str(self.workdir))
            frames = [
                f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(mine)
            ]
            where = "".join(traceback.format_list(frames))
            detail = f"{where}{type(exc).__name__}: {exc}"
            raise BlockFailed(self._message(block, part, detail)) from None

    def _message(self, block: Block, part: str, detail: str) -> str:
        what = f"the {block.lang} block at {block.where}" + (f" ({part})" if part else "")
        return f"{what} failed:\n{detail.rstrip()}\n\n{HINT}"


def shell_commands(block: Block) -> list[str]:
    """The commands of a shell block, continuation lines joined, comments kept
    (bash drops them)."""
    lines = block.code.splitlines()
    if block.lang == "console":
        lines = _console(lines)
    commands: list[str] = []
    pending = ""
    for line in lines:
        if not line.strip() and not pending:
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        commands.append(pending)
        pending = ""
    return commands


def _console(lines: list[str]) -> list[str]:
    """A console block's commands: ``$ `` lines and the lines continuing them."""
    out: list[str] = []
    continuing = False
    for line in lines:
        if line.startswith("$ "):
            out.append(line[2:])
        elif continuing:
            out.append(line)
        else:
            continue
        continuing = line.rstrip().endswith("\\")
    return out


def _apps() -> set[JobQueue]:
    # type(), not isinstance(): isinstance reads __class__, which a lazy object
    # (django.conf.settings) answers by configuring itself, or raising.
    return {o for o in gc.get_objects() if issubclass(type(o), JobQueue)}


def run_page(path: Path, root: Path, dsn: str, workdir: Path, blocks: list[Block]) -> int:
    """Run ``path``'s blocks against a fresh ``jobqueue`` schema on ``dsn``."""
    prepare_database(dsn)
    before = schemas(dsn)
    setup = root / "tests" / "docs" / "setups" / (path.stem.lower() + ".py")
    old_env = dict(os.environ)  # a set-up may set variables the example reads
    os.environ["JOBQUEUE_DSN"] = url(dsn)
    os.environ["JOBQUEUE_EMBEDDED"] = "0"
    try:
        return PageRun(dsn, workdir, setup if setup.exists() else None).run(blocks)
    finally:
        os.environ.clear()
        os.environ.update(old_env)
        drop_new_schemas(dsn, before)
        shutil.rmtree(workdir, ignore_errors=True)


def run_page_own_process(
    path: Path, root: Path, dsn: str, workdir: Path, blocks: list[Block]
) -> int:
    """``run_page`` in a new interpreter (``main`` below): what the page's
    examples change in a process (Django's settings) stays there."""
    label = blocks[0].page if blocks else path.name  # as failures name the page
    done = subprocess.run(
        [sys.executable, "-m", "tests.docs.harness", str(path), label, dsn, str(workdir)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=170,
    )
    if done.returncode:
        raise BlockFailed(done.stderr.strip())
    return int(done.stdout.split()[-1])


def main(argv: list[str]) -> int:
    """``python -m tests.docs.harness PAGE NAME DSN WORKDIR``: one page in a process
    of its own (a page marked ``<!-- own-process: ... -->``, whose examples
    change what a process keeps, such as Django's settings). Prints how many
    blocks ran, or the failure, on stderr, exit status 1."""
    page, name, dsn, workdir = Path(argv[0]), argv[1], argv[2], Path(argv[3])
    root = Path(__file__).resolve().parents[2]
    try:
        ran = run_page(page, root, dsn, workdir, parse(page.read_text(), name))
    except (BlockFailed, MarkError) as exc:
        print(exc, file=sys.stderr)
        return 1
    print(ran)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
