"""Every API endpoint and method walked through the role matrix: who may read, who may write, who is refused.

The table below must list exactly what the URLconf serves under /api/: a new endpoint without a row fails
`test_role_table_covers_every_api_route`.
"""

import io
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import URLResolver, get_resolver
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from curation import services
from curation.models import Document, Leaf, LeafRevision, SeedExample, TaxonomyImport, TaxonomySnapshot
from curation.services.imports.jobs import import_job_create, import_job_run
from curation.taxonomy.source import write_tar
from evaluation.models import EvaluationJob
from generation.models import GenerationRun, Sample, Teacher
from generation.sdg.pipelines import GeneratedSample
from generation.services.runs import run_cancel, run_create
from generation.services.samples import samples_write
from generation.services.teachers import teacher_create
from review.models import BulkJob, Decision, ReviewItem
from review.queue import Queue
from review.services.bulk import bulk_create, bulk_run
from tests.support.qna import POEMS
from training.models import Dataset, TrainingJob


def targz(files: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    write_tar(files, buffer)
    return buffer.getvalue()


@dataclass
class World:
    """One of everything the endpoints act on, made through the services."""

    tmp_path: Path
    leaf: int
    knowledge_leaf: int  # documents belong to knowledge leaves only
    seed: int
    document: int
    snapshot: int
    record: int
    teacher: int
    spare_teacher: int
    run: int
    stopped_run: int
    item: int
    sample: int
    training_job: int
    stopped_job: int
    checkpoint: int
    dataset: int
    evaluation: int
    stopped_evaluation: int
    job: int = 0  # a bulk review job, done: its undo can run
    import_job: int = 0  # a queued dry run: it can be cancelled
    dry_run: int = 0  # a dry run that has run: its import can be confirmed

    @cached_property
    def directory(self) -> str:
        leaf = self.tmp_path / "dir" / "compositional_skills" / "from_directory"
        leaf.mkdir(parents=True)
        (leaf / "qna.yaml").write_bytes(POEMS)
        return str(self.tmp_path / "dir")

    @cached_property
    def git(self) -> str:
        repo = self.tmp_path / "repo"
        (repo / "compositional_skills" / "from_git").mkdir(parents=True)
        (repo / "compositional_skills" / "from_git" / "qna.yaml").write_bytes(POEMS)
        base = ["git", "-c", "user.name=LabWeb Test", "-c", "user.email=labweb@example.com"]
        base += ["-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main", "-C", str(repo)]
        for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "poems"]):
            subprocess.run(base + args, check=True, capture_output=True)
        return str(repo)


# Who may call an endpoint.
READ = "any role"  # reviewer, operator, curator
WRITE = "curator"
OPERATE = "operator"
REVIEW = "reviewer"
STAFF = "staff curator"  # server-side paths
PUBLIC = "anyone"

ROLES = ("anonymous", "outsider", "reviewer", "operator", "curator", "staff_curator")
ALLOWED = {
    READ: {"reviewer", "operator", "curator", "staff_curator"},
    WRITE: {"curator", "staff_curator"},
    OPERATE: {"operator"},
    REVIEW: {"reviewer"},
    STAFF: {"staff_curator"},
    PUBLIC: set(ROLES),
}


@dataclass(frozen=True)
class Endpoint:
    method: str
    name: str  # the URL name, as `reverse` knows it
    url: str  # formatted with the world as `w`
    access: str
    success: int = 200
    body: dict | Callable[[World], dict[str, Any]] | None = field(default=None, compare=False)
    multipart: bool = False
    label: str = ""

    def __str__(self) -> str:
        return f"{self.method} {self.name}{self.label}"


def new_seed(w: World) -> dict:
    return {"leaf": w.leaf, "question": "q", "answer": "a"}


def new_document(w: World) -> dict:
    return {"leaf": w.knowledge_leaf, "name": "b.md", "content": "# B"}


def archive(w: World) -> dict:
    return {"archive": SimpleUploadedFile("t.tar.gz", targz([("compositional_skills/from_archive/qna.yaml", POEMS)]))}


def directory(w: World) -> dict:
    return {"directory": w.directory}


def git_main(w: World) -> dict:
    return {"git": w.git, "ref": "main"}


CREDENTIALS = {"username": "carla", "password": "pw-carla"}  # the curator fixture's
LEAF, SEED, DOCUMENT = "/api/leaves/{w.leaf}/", "/api/seeds/{w.seed}/", "/api/documents/{w.document}/"
TEACHER, RUN = "/api/teachers/{w.teacher}/", "/api/runs/{w.run}/"
ITEM = "/api/review/items/{w.sample}/"
NEW_TEACHER = {"name": "vllm", "backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}


TRAINING_RECIPE = "datasets:\n- path: uploads/facts.jsonl\n  sampling_size: 1.0\n"
TRAINING_JOB = "/api/training-jobs/{w.training_job}/"
FACTS_JSONL = b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n'


def new_training_job(w: World) -> dict:
    return {"base_model": "base", "phases": [{"name": "one", "recipe": TRAINING_RECIPE, "config": {"epochs": 1}}]}


def training_upload(w: World) -> dict:
    return {"file": SimpleUploadedFile("replay.jsonl", FACTS_JSONL)}


def new_evaluation(w: World) -> dict:
    return {"checkpoint": w.checkpoint, "judge": w.teacher}


EVALUATION = "/api/evaluations/{w.evaluation}/"


def new_run(w: World) -> dict:
    return {"teacher": w.teacher, "scope": "selected", "leaves": [w.leaf], "samples_per_leaf": 5}


E = Endpoint
# fmt: off
ENDPOINTS = [
    E("GET",    "api-root",        "/api/",                       READ),
    E("GET",    "leaf-list",       "/api/leaves/",                READ),
    E("POST",   "leaf-list",       "/api/leaves/",                WRITE, 201, {"path": "compositional_skills/new"}),
    E("GET",    "leaf-detail",     LEAF,                          READ),
    E("PATCH",  "leaf-detail",     LEAF,                          WRITE, 200, {"domain": "poetry"}),
    E("DELETE", "leaf-detail",     LEAF,                          WRITE, 204),
    E("POST",   "leaf-move",       LEAF + "move/",                WRITE, 200, {"path": "compositional_skills/moved"}),
    E("GET",    "leaf-qna",        LEAF + "qna/",                 READ),
    E("GET",    "leaf-history",    LEAF + "history/",             READ),
    E("GET",    "leaf-revision",   LEAF + "history/1/",           READ),
    E("GET",    "seed-list",       "/api/seeds/",                 READ),
    E("POST",   "seed-list",       "/api/seeds/",                 WRITE, 201, new_seed),
    E("GET",    "seed-detail",     SEED,                          READ),
    E("PATCH",  "seed-detail",     SEED,                          WRITE, 200, {"answer": "changed"}),
    E("DELETE", "seed-detail",     SEED,                          WRITE, 204),
    E("POST",   "seed-move",       SEED + "move/",                WRITE, 200, {"position": 3}),
    E("GET",    "document-list",   "/api/documents/",             READ),
    E("POST",   "document-list",   "/api/documents/",             WRITE, 201, new_document),
    E("GET",    "document-detail", DOCUMENT,                      READ),
    E("DELETE", "document-detail", DOCUMENT,                      WRITE, 204),
    E("GET",    "import-list",     "/api/imports/",               READ),
    E("POST",   "import-list",     "/api/imports/",               WRITE, 202, archive, True, " archive"),
    E("POST",   "import-list",     "/api/imports/",               STAFF, 202, directory, label=" directory"),
    E("POST",   "import-list",     "/api/imports/",               STAFF, 202, git_main, label=" git"),
    E("GET",    "import-detail",   "/api/imports/{w.record}/",    READ),
    E("GET",    "import-job-list", "/api/import-jobs/",           READ),
    E("GET",    "import-job-detail", "/api/import-jobs/{w.import_job}/", READ),
    E("POST",   "import-job-cancel", "/api/import-jobs/{w.import_job}/cancel/", WRITE, 200),
    E("GET",    "snapshot-list",   "/api/snapshots/",             READ),
    E("POST",   "snapshot-list",   "/api/snapshots/",             WRITE, 201, {"name": "baseline"}),
    E("GET",    "snapshot-detail", "/api/snapshots/{w.snapshot}/", READ),
    E("GET",    "api-tree",        "/api/tree/",                  READ),
    E("GET",    "api-diff",        "/api/diff/",                  READ),
    E("GET",    "api-export",      "/api/export/",                READ),
    E("GET",    "api-schema",      "/api/schema/",                READ),
    E("GET",    "api-docs",        "/api/docs/",                  READ),
    E("POST",   "api-token",       "/api/auth/token/",            PUBLIC, 200, CREDENTIALS),
    E("GET",    "teacher-list",    "/api/teachers/",              READ),
    E("POST",   "teacher-list",    "/api/teachers/",              OPERATE, 201, NEW_TEACHER),
    E("GET",    "teacher-detail",  TEACHER,                       READ),
    E("PUT",    "teacher-detail",  TEACHER,                       OPERATE, 200, {**NEW_TEACHER, "name": "renamed"}),
    E("PATCH",  "teacher-detail",  TEACHER,                       OPERATE, 200, {"temperature": 0.2}),
    E("DELETE", "teacher-detail",  "/api/teachers/{w.spare_teacher}/", OPERATE, 204),
    E("GET",    "run-list",        "/api/runs/",                  READ),
    E("POST",   "run-list",        "/api/runs/",                  OPERATE, 201, new_run),
    E("GET",    "run-detail",      RUN,                           READ),
    E("POST",   "run-cancel",      RUN + "cancel/",               OPERATE),
    E("POST",   "run-resume",      "/api/runs/{w.stopped_run}/resume/", OPERATE),
    E("POST",   "run-retry-failed", "/api/runs/{w.stopped_run}/retry-failed/", OPERATE),
    E("GET",    "run-events",      RUN + "events/",               READ),
    E("GET",    "run-leaves",      RUN + "leaves/",               READ),
    E("GET",    "work-item-list",  "/api/work-items/",            READ),
    E("GET",    "work-item-detail", "/api/work-items/{w.item}/",  READ),
    E("GET",    "sample-list",     "/api/samples/",               READ),
    E("GET",    "sample-detail",   "/api/samples/{w.sample}/",    READ),
    E("GET",    "review-item-list", "/api/review/items/",         READ),
    E("GET",    "review-item-detail", ITEM,                       READ),
    E("POST",   "review-item-decide", ITEM + "decide/",           REVIEW, 200, {"action": "approve", "version": 1}),
    E("POST",   "review-item-edit", ITEM + "edit/",               REVIEW, 200,
      {"question": "q?", "response": "r.", "version": 1}),
    E("POST",   "review-undo",     "/api/review/undo/",           REVIEW, 200, {"steps": 1}),
    E("POST",   "review-claim",    "/api/review/claim/",          REVIEW, 200, {"size": 5}),
    E("POST",   "review-bulk-preview", "/api/review/bulk/preview/", REVIEW, 200, {"action": "approve"}),
    E("POST",   "review-bulk",     "/api/review/bulk/",           REVIEW, 202, {"action": "approve", "expected": 1}),
    E("GET",    "review-bulk-detail", "/api/review/bulk/{w.job}/", READ),
    E("POST",   "review-bulk-undo", "/api/review/bulk/{w.job}/undo/", REVIEW, 202),
    E("POST",   "review-bulk-resume", "/api/review/bulk/{w.job}/resume/", REVIEW, 409),  # not failed: refused
    E("POST",   "review-bulk-cancel", "/api/review/bulk/{w.job}/cancel/", REVIEW, 409),  # done: refused
    E("GET",    "review-stats",    "/api/review/stats/",          READ),
    E("GET",    "review-agreement", "/api/review/agreement/",     READ),
    E("GET",    "training-job-list", "/api/training-jobs/",       READ),
    E("POST",   "training-job-list", "/api/training-jobs/",       OPERATE, 201, new_training_job),
    E("POST",   "training-job-mix", "/api/training-jobs/mix/",    OPERATE, 200, new_training_job),
    E("GET",    "training-job-detail", TRAINING_JOB,              READ),
    E("POST",   "training-job-cancel", TRAINING_JOB + "cancel/",  OPERATE),
    E("POST",   "training-job-resume", "/api/training-jobs/{w.stopped_job}/resume/", OPERATE),
    E("GET",    "training-job-metrics", TRAINING_JOB + "metrics/", READ),
    E("GET",    "training-job-events", TRAINING_JOB + "events/",  READ),
    E("GET",    "checkpoint-list", "/api/checkpoints/",           READ),
    E("GET",    "checkpoint-detail", "/api/checkpoints/{w.checkpoint}/", READ),
    E("GET",    "checkpoint-download", "/api/checkpoints/{w.checkpoint}/download/", READ),
    E("GET",    "training-upload-list", "/api/training-uploads/", READ),
    E("POST",   "training-upload-list", "/api/training-uploads/", OPERATE, 201, training_upload, True),
    E("GET",    "dataset-list",    "/api/datasets/",              READ),
    E("POST",   "dataset-list",    "/api/datasets/",              OPERATE, 201, {"name": "kept", "plan": "stacked"}),
    E("GET",    "dataset-detail",  "/api/datasets/{w.dataset}/",  READ),
    E("GET",    "dataset-file",    "/api/datasets/{w.dataset}/files/all/", READ),
    E("GET",    "evaluation-list", "/api/evaluations/",           READ),
    E("POST",   "evaluation-list", "/api/evaluations/",           OPERATE, 201, new_evaluation),
    E("GET",    "evaluation-detail", EVALUATION,                  READ),
    E("POST",   "evaluation-cancel", EVALUATION + "cancel/",      OPERATE),
    E("POST",   "evaluation-resume", "/api/evaluations/{w.stopped_evaluation}/resume/", OPERATE),
    E("GET",    "evaluation-leaves", EVALUATION + "leaves/",      READ),
    E("GET",    "evaluation-measurements", EVALUATION + "measurements/", READ),
    E("GET",    "evaluation-events", EVALUATION + "events/",      READ),
    E("GET",    "evaluation-export", EVALUATION + "export/?as=csv", READ),
    E("GET",    "evaluation-compare", "/api/evaluations/compare/?first={w.evaluation}&second={w.evaluation}", READ),
]
# fmt: on
# The OpenAPI document, the Swagger UI page, checkpoint archives and dataset files answer in their own formats.
NOT_JSON = {"api-schema", "api-docs", "checkpoint-download", "dataset-file", "evaluation-export"}


def training_world(tmp_path: Path, settings, user) -> dict:
    """A training job that never runs (its task would be sent on commit), a stopped one, and a checkpoint."""
    from labweb.jobs import Status
    from training.models import Checkpoint
    from training.services.jobs import job_create

    settings.LABWEB_TRAINING_DIR = str(tmp_path / "training")
    (tmp_path / "training" / "uploads").mkdir(parents=True)
    (tmp_path / "training" / "uploads" / "facts.jsonl").write_bytes(FACTS_JSONL)
    body = new_training_job(None)
    job = job_create(user=user, name="job", **body)
    stopped = job_create(user=user, name="stopped", start=False, **body)
    stopped.phases.update(status=Status.CANCELLED)
    type(stopped).objects.filter(pk=stopped.pk).update(status=Status.CANCELLED)
    folder = tmp_path / "training" / "checkpoint"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    checkpoint = Checkpoint.objects.create(
        phase=job.phases.get(), name="epoch-001", path=str(folder), step=1, epoch=1, samples_seen=1
    )
    from training.models import Dataset, DatasetFile

    dataset = Dataset.objects.create(
        name="built", system_prompt="s", tokenizer="t", status=Status.SUCCEEDED, created_by=user
    )
    DatasetFile.objects.create(
        dataset=dataset,
        role="all",
        path=str(tmp_path / "training" / "uploads" / "facts.jsonl"),
        sha256="0" * 64,
        samples=1,
        tokens=3,
        bytes=len(FACTS_JSONL),
    )
    from evaluation.services.jobs import evaluation_create

    evaluation = evaluation_create(user=user, checkpoint=checkpoint, start=False)
    stopped_evaluation = evaluation_create(user=user, checkpoint=checkpoint, start=False)
    type(stopped_evaluation).objects.filter(pk=stopped_evaluation.pk).update(status=Status.CANCELLED)
    return {
        "training_job": job.pk,
        "stopped_job": stopped.pk,
        "checkpoint": checkpoint.pk,
        "dataset": dataset.pk,
        "evaluation": evaluation.pk,
        "stopped_evaluation": stopped_evaluation.pk,
    }


def poems_upload() -> services.ImportSource:
    return services.ImportSource.upload(io.BytesIO(targz([("compositional_skills/poems/qna.yaml", POEMS)])), "t.tar.gz")


@pytest.fixture
def world(curator, reviewer, tmp_path, settings) -> World:
    services.taxonomy_import(source=poems_upload(), user=curator)
    leaf = Leaf.objects.get()
    knowledge = services.leaf_create(path="knowledge/astronomy/planets", user=curator)
    document = services.document_add(leaf=knowledge, user=curator, expected_revision=None, name="a.md", content="# A")
    snapshot = services.snapshot_create(name="start", user=curator)
    teacher = teacher_create(user=curator, name="scripted", base_url="http://127.0.0.1:9/v1", model="m")
    # Runs queue their work when the transaction commits, which a test's never does: nothing is sent to Celery.
    run = run_create(teacher=teacher, user=curator, scope="selected", leaf_ids=[leaf.pk], samples_per_leaf=5)
    stopped = run_cancel(run=run_create(teacher=teacher, user=curator, samples_per_leaf=5), user=curator)
    stopped.items.filter(pk=stopped.items.order_by("pk").first().pk).update(state="failed")  # to retry
    item = run.items.first()
    samples_write(
        item=item,
        samples=[
            GeneratedSample(
                key=key,
                question="q",
                response="r",
                context=None,
                seed_indices=[0],
                chunk_index=None,
                scores={},
                rationales={},
                raw={},
                prompts=[],
            )
            for key in ("k", "k2")
        ],
    )
    # The reviewer approved the second sample in a bulk job that has run: undo has something to take back.
    second = item.samples.get(idempotency_key__endswith=":k2").pk
    job = bulk_create(reviewer=reviewer, action="approve", queue=Queue(), selected=[second], expected=1)
    bulk_run(job_id=job.pk)
    # Import jobs queue their task when the transaction commits, too: the dry run is run here.
    dry_run = import_job_create(source=poems_upload(), user=curator, dry_run=True)
    import_job_run(job_id=dry_run.pk)
    import_job = import_job_create(source=poems_upload(), user=curator, dry_run=True)
    return World(
        tmp_path=tmp_path,
        leaf=leaf.pk,
        knowledge_leaf=knowledge.pk,
        seed=leaf.seeds.order_by("position").first().pk,
        document=document.pk,
        snapshot=snapshot.pk,
        record=TaxonomyImport.objects.get().pk,
        teacher=teacher.pk,
        spare_teacher=teacher_create(user=curator, name="unused", base_url="http://127.0.0.1:9/v1", model="m").pk,
        run=run.pk,
        stopped_run=stopped.pk,
        item=item.pk,
        sample=item.samples.get(idempotency_key__endswith=":k").pk,
        job=job.pk,
        import_job=import_job.pk,
        dry_run=dry_run.pk,
        **training_world(tmp_path, settings, curator),
    )


@pytest.fixture
def clients(outsider, reviewer, operator, curator, staff_curator) -> dict[str, APIClient]:
    """One client per role, each signed in the way a script is: with its API token."""
    out = {"anonymous": APIClient()}
    for name, user in [
        ("outsider", outsider),
        ("reviewer", reviewer),
        ("operator", operator),
        ("curator", curator),
        ("staff_curator", staff_curator),
    ]:
        out[name] = APIClient()
        out[name].credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return out


def send(client: APIClient, endpoint: Endpoint, world: World):
    url = endpoint.url.format(w=world)
    body = endpoint.body(world) if callable(endpoint.body) else endpoint.body
    if body is None:
        return getattr(client, endpoint.method.lower())(url)
    return getattr(client, endpoint.method.lower())(url, body, format="multipart" if endpoint.multipart else "json")


def state() -> tuple:
    """What any write would change."""
    return (
        list(Leaf.objects.order_by("pk").values_list("pk", "path", "revision", "content_hash")),
        SeedExample.objects.count(),
        Document.objects.count(),
        LeafRevision.objects.count(),
        TaxonomySnapshot.objects.count(),
        TaxonomyImport.objects.count(),
        list(Teacher.objects.order_by("pk").values_list("name", "temperature")),
        list(GenerationRun.objects.order_by("pk").values_list("status", flat=True)),
        Sample.objects.count(),
        list(ReviewItem.objects.order_by("pk").values_list("state", "version", "claimed_by")),
        Decision.objects.count(),
        list(BulkJob.objects.order_by("pk").values_list("status", flat=True)),
        list(TrainingJob.objects.order_by("pk").values_list("status", flat=True)),
        Dataset.objects.count(),
        list(EvaluationJob.objects.order_by("pk").values_list("status", flat=True)),
        sorted(p.name for p in Path(settings.LABWEB_TRAINING_DIR).glob("uploads/*")),
    )


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_endpoint_answers_every_role_as_the_matrix_says(endpoint, world, clients):
    allowed = ALLOWED[endpoint.access]
    roles = [role for role in ROLES if role not in allowed]
    if endpoint.method == "GET" or endpoint.access == PUBLIC:
        roles += [role for role in ROLES if role in allowed]
    else:
        roles.append(next(role for role in ROLES if role in allowed))  # a write succeeds once: the least privileged

    for role in roles:
        before = state()
        response = send(clients[role], endpoint, world)
        if role in allowed:
            assert response.status_code == endpoint.success, (role, response.status_code, response.content[:300])
            if endpoint.method == "GET":
                assert state() == before, f"a GET by {role} changed data"
            continue
        expected = (401, 403) if role == "anonymous" else (403,)
        assert response.status_code in expected, (role, response.status_code, response.content[:300])
        if endpoint.name not in NOT_JSON:
            error = response.json()["error"]
            assert error["message"] and response.json()["errors"][0] == error
        assert state() == before, f"a refused {endpoint} by {role} changed data"


def api_routes() -> set[tuple[str, str]]:
    """(URL name, method) for every view the URLconf serves under /api/."""
    found = set()

    def walk(patterns, prefix: str):
        for pattern in patterns:
            route = prefix + str(pattern.pattern).lstrip("^")
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
            elif route.startswith("api/"):
                callback = pattern.callback
                view = getattr(callback, "cls", None) or callback.view_class
                if getattr(callback, "actions", None):  # a viewset route: method -> action
                    methods = set(callback.actions) & set(view.http_method_names)
                else:
                    methods = {m for m in view.http_method_names if hasattr(view, m)}
                found.update((pattern.name, m.upper()) for m in methods - {"head", "options"})

    walk(get_resolver().url_patterns, "")
    return found


def test_role_table_covers_every_api_route():
    table = {(e.name, e.method) for e in ENDPOINTS}
    routes = api_routes()
    assert routes - table == set(), "API routes without a row in the role table"
    assert table - routes == set(), "rows in the role table for routes that do not exist"


@pytest.mark.parametrize("name", sorted({e.name for e in ENDPOINTS}))
def test_methods_outside_the_table_are_405(name, world, clients, django_user_model):
    admin = APIClient()
    admin.force_authenticate(django_user_model.objects.create_superuser("root", password="pw-root"))
    endpoint = next(e for e in ENDPOINTS if e.name == name)
    listed = {e.method for e in ENDPOINTS if e.name == name}
    for method in sorted({"GET", "POST", "PUT", "PATCH", "DELETE"} - listed):
        response = getattr(admin, method.lower())(endpoint.url.format(w=world), {}, format="json")
        assert response.status_code == 405, (method, response.status_code)
