"""Imports as jobs, for the tests: archives of many leaves, a worker of the default queue, and an import queued
through the API or the page and run here as the worker's task runs it (where the test is about what an import
does, not about the job)."""

import io

from django.db import connection
from django.urls import resolve

from curation.services.imports.jobs import import_job_run
from curation.taxonomy.source import write_tar
from tests.support.qna import POEMS
from tests.support.worker import Worker, worker_env


def many_leaves(count: int, *, broken: int = 0) -> bytes:
    """A .tar.gz of `count` small valid skills leaves, the last `broken` of them missing their created_by."""
    files = []
    for n in range(count):
        text = POEMS.replace(b"q1", f"question {n}".encode())
        if n >= count - broken:
            text = text.replace(b"created_by: someone\n", b"")
        files.append((f"compositional_skills/many/leaf_{n:05d}/qna.yaml", text))
    buffer = io.BytesIO()
    write_tar(files, buffer)
    return buffer.getvalue()


def run_here(client, response) -> dict:
    """The job a POST queued (202), run in this process as the worker's task runs it; the job at its end."""
    assert response.status_code == 202, response.content[:500]
    job = response.json()
    assert response["Location"] == job["url"]
    import_job_run(job_id=job["id"])
    return client.get(job["url"]).json()


def start_worker(name: str, tmp_path, settings, *, beat: bool = False, **env) -> Worker:
    """A worker of the default queue (where imports run) on the test database, with short leases."""
    environment = worker_env(
        connection.settings_dict["NAME"],
        settings.CELERY_BROKER_URL,
        PYTHONUNBUFFERED="1",
        LABWEB_WORK_LEASE_SECONDS="3",
        LABWEB_REAP_SECONDS="1",
        **env,
    )
    worker = Worker(name, tmp_path / f"{name}.log", environment, queues="default", concurrency=2, beat=beat)
    worker.wait_ready()
    return worker


def run_page(client, response):
    """The job a post to the import page queued (a redirect to its page), run here; the page it ends on."""
    assert response.status_code == 302, response.content[:500]
    found = resolve(response["Location"])
    assert found.url_name == "import_job", response["Location"]
    import_job_run(job_id=int(found.kwargs["pk"]))
    return client.get(response["Location"], follow=True)
