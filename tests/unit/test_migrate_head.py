"""head_revision() reads the scripts' text so that a worker never loads
alembic: its answer must be alembic's."""

from __future__ import annotations

import subprocess
import sys

from alembic.script import ScriptDirectory

from jobqueue import migrate


def test_head_revision_is_alembics_head() -> None:
    scripts = ScriptDirectory.from_config(migrate._config())
    assert migrate.head_revision() == scripts.get_current_head()


def test_a_worker_loads_neither_alembic_nor_sqlalchemy() -> None:
    code = (
        "import sys\n"
        "import jobqueue\n"
        "from jobqueue import cli\n"
        "from jobqueue.worker import runner\n"
        "from jobqueue.migrate import head_revision\n"
        "head_revision()\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'alembic', 'sqlalchemy'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
