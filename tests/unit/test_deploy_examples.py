"""The deployment examples and docs/deployment.md agree with the CLI and with
each other: every command line parses with the options the CLI has, the stop
timeouts leave a warm shutdown room to finish, and the liveness probe checks
what the health file means."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobqueue.config import Settings
from jobqueue.worker.runner import _RECORD_GRACE
from jobqueue.worker.settings import WorkerSettings
from tests.deploy_examples import (
    BEAT_UNIT,
    DEPLOY,
    DOC,
    KEDA,
    MANIFEST,
    WORKER_UNIT,
    commands,
    doc_commands,
    doc_section,
    document,
    env_file,
    int_field,
    keda_queries,
    manifest_documents,
    parse_args,
    parse_command,
    seconds,
    top_field,
    unit,
    unit_exec,
)


def test_every_jobqueue_command_in_the_deployment_docs_parses() -> None:
    lines = doc_commands(DOC.read_text())
    assert len(lines) >= 6
    for line in lines:
        # A systemd specifier or a placeholder is an ordinary value here.
        assert parse_command(line) is not None, line


def test_a_wrong_option_is_caught() -> None:
    with pytest.raises(Exception, match="no_such"):
        parse_command("jobqueue -A proj.tasks:app worker --no_such 1")
    with pytest.raises(Exception, match="celery"):
        parse_command("jobqueue celery ping")


@pytest.mark.parametrize("path", [WORKER_UNIT, BEAT_UNIT])
def test_units(path: Path) -> None:
    settings = unit(path)
    parsed = parse_command(unit_exec(path))
    assert parsed is not None
    assert parsed[0] == (["worker"] if path == WORKER_UNIT else ["beat"])
    assert settings["Restart"] == ["always"]
    assert settings["KillSignal"] == ["SIGTERM"]
    assert settings["User"] != ["root"]
    assert "JOBQUEUE_EMBEDDED=0" in settings["Environment"]
    assert settings["EnvironmentFile"] == ["/etc/jobqueue/jobqueue.env"]
    assert "JOBQUEUE_DSN" in env_file()


def test_the_worker_unit_outlasts_a_warm_shutdown() -> None:
    settings = unit(WORKER_UNIT)
    _, params = parse_command(unit_exec(WORKER_UNIT)) or ([], {})
    shutdown = params["shutdown_timeout"]
    assert shutdown < Settings().lease_ttl  # else jobs still finishing get rescued
    assert seconds(settings["TimeoutStopSec"][0]) > shutdown + _RECORD_GRACE
    assert settings["KillMode"] == ["mixed"]  # process-pool children are the worker's


def test_the_docs_show_the_units_worker_command() -> None:
    (line,) = [c for c in doc_commands(doc_section("systemd")) if " worker " in c]
    assert parse_command(line) == parse_command(unit_exec(WORKER_UNIT))


def manifest_worker() -> list[str]:
    (command,) = commands(document(MANIFEST, "Deployment"))[:1]
    return command


def test_the_manifest_is_well_formed() -> None:
    kinds = [top_field(d, "kind") for d in manifest_documents(MANIFEST)]
    assert kinds == ["Secret", "Job", "Deployment"]
    for path in (MANIFEST, KEDA):
        text = path.read_text()
        assert "\t" not in text
        for doc in manifest_documents(path):
            top_field(doc, "apiVersion")
            assert re.search(r"^metadata:\n  name: \S+$", doc, flags=re.M)


def test_the_manifest_parses_as_yaml() -> None:
    yaml = pytest.importorskip("yaml")  # not a dependency: checked where it is installed
    for path in (MANIFEST, KEDA):
        docs = list(yaml.safe_load_all(path.read_text()))
        assert all("kind" in d and "apiVersion" in d for d in docs)


def test_the_manifests_commands_parse() -> None:
    job = [parse_args(c[1:]) for c in commands(document(MANIFEST, "Job"))]
    assert [path for path, _ in job] == [["db", "upgrade"], ["db", "grant"]]
    path, params = parse_args(manifest_worker()[1:])
    assert path == ["worker"]
    assert params["health_file"] == "/tmp/jobqueue-health"
    deployment = document(MANIFEST, "Deployment")
    assert int_field(deployment, "terminationGracePeriodSeconds") > (
        params["shutdown_timeout"] + _RECORD_GRACE
    )
    assert params["shutdown_timeout"] < Settings().lease_ttl
    (line,) = [c for c in doc_commands(doc_section("Kubernetes")) if " worker " in c]
    assert parse_command(line) == (path, params)


def liveness(document_text: str) -> list[str]:
    (probe,) = [c for c in commands(document_text) if c[0] == "python"]
    return probe


def test_the_liveness_probe_allows_a_lease() -> None:
    probe = liveness(document(MANIFEST, "Deployment"))
    match = re.search(r"st_mtime > (\d+)\)", probe[2])
    assert match and float(match.group(1)) == Settings().lease_ttl
    assert probe[2] in doc_section("Kubernetes")
    assert WorkerSettings().shutdown_timeout <= Settings().lease_ttl


@pytest.mark.parametrize(("age", "healthy"), [(1, True), (29, True), (31, False), (None, False)])
def test_the_liveness_probe_runs(tmp_path: Path, age: float | None, healthy: bool) -> None:
    path = tmp_path / "health"
    if age is not None:
        path.touch()
        os.utime(path, (time.time() - age, time.time() - age))
    probe = liveness(document(MANIFEST, "Deployment"))
    code = probe[2].replace("/tmp/jobqueue-health", str(path))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
    assert (result.returncode == 0) is healthy


def test_keda_scales_on_due_jobs_with_a_worker_always_running() -> None:
    queries = keda_queries()
    assert len(queries) == 2
    assert all("queue_stats" in q and "pending" not in q for q in queries)
    assert int_field(KEDA.read_text(), "minReplicaCount") >= 1
    queues = manifest_worker()[manifest_worker().index("-Q") + 1].split(",")
    for query in queries:
        assert re.findall(r"'(\w+)'", query.split("queue IN", 1)[1]) == queues


def test_the_examples_are_all_checked() -> None:
    assert {p.name for p in DEPLOY.iterdir()} == {
        WORKER_UNIT.name,
        BEAT_UNIT.name,
        "jobqueue.env",
        MANIFEST.name,
        KEDA.name,
    }
