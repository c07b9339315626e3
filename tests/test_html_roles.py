"""Every HTML page and form of the curation, generation, review, training and evaluation apps walked through the
role matrix, and the query counts of the pages that list the taxonomy.

The table below must name exactly the URL patterns of the curation, generation, review, training, evaluation and
monitor URLconfs: a new view without a row fails `test_role_table_covers_every_html_url`, and a method a view accepts
without a row fails `test_methods_outside_the_table_are_405`.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from curation import urls as curation_urls
from curation.models import Document, Leaf
from evaluation import urls as evaluation_urls
from generation import urls as generation_urls
from labweb.monitor import urls as monitor_urls
from review import urls as review_urls
from tests import test_api_roles
from tests.test_api_roles import ALLOWED, OPERATE, POEMS, READ, REVIEW, ROLES, STAFF, WRITE, World, state, targz
from training import urls as training_urls

world = test_api_roles.world  # the same leaf, seed, document, snapshot and import record as the API matrix


@dataclass(frozen=True)
class Page:
    method: str
    name: str  # "namespace:name", or a bare name inside the curation namespace
    args: Callable[[World], list] = field(compare=False)
    access: str
    success: int = 200
    body: Callable[[World], dict[str, Any]] | None = field(default=None, compare=False)
    query: str = ""
    htmx: bool = False
    label: str = ""

    def __str__(self) -> str:
        return f"{self.method} {self.name}{self.label}"

    def url(self, w: World) -> str:
        url = reverse(self.name if ":" in self.name else f"curation:{self.name}", args=self.args(w))
        return f"{url}?{self.query}" if self.query else url


def revision(w: World, pk: int | None = None) -> int:
    return Leaf.objects.get(pk=pk or w.leaf).revision


def with_revision(**extra) -> Callable[[World], dict]:
    return lambda w: {"revision": revision(w), **extra}


def none(w: World) -> list:
    return []


def leaf(w: World) -> list:
    return [w.leaf]


def seed(w: World) -> list:
    return [w.seed]


def document(w: World) -> list:
    return [w.document]


TEACHER_FORM = {
    "name": "vllm",
    "backend": "openai",
    "base_url": "http://127.0.0.1:9/v1",
    "model": "m",
    "gguf_file": "",
    "temperature": 0.7,
    "top_p": 1.0,
    "max_tokens": 512,
    "max_concurrency": 4,
    "timeout_seconds": 60,
    "context_tokens": 4096,
}
P = Page
# fmt: off
PAGES = [
    P("GET",  "tree",            none,                  READ),
    P("GET",  "tree",            none,                  READ, query="q=poems", label=" search"),
    P("GET",  "tree_children",   none,                  READ, query="path=compositional_skills", htmx=True),
    P("GET",  "leaf_create",     none,                  WRITE),
    P("POST", "leaf_create",     none,                  WRITE, 302, lambda w: {"path": "compositional_skills/a"}),
    P("GET",  "leaf_detail",     leaf,                  READ),
    P("POST", "leaf_update",     leaf,                  WRITE, 302, with_revision(task_description="Changed.")),
    P("POST", "leaf_validate",   leaf,                  WRITE, 200, lambda w: {"task_description": ""}),
    P("POST", "leaf_move",       leaf,                  WRITE, 302, with_revision(path="compositional_skills/b")),
    P("POST", "leaf_delete",     leaf,                  WRITE, 302, with_revision(confirm="on")),
    P("GET",  "leaf_yaml",       leaf,                  READ),
    P("GET",  "leaf_history",    leaf,                  READ),
    P("GET",  "leaf_revision",   lambda w: [w.leaf, 1], READ),
    P("GET",  "deleted_list",    none,                  READ),
    P("POST", "seed_add",        leaf,                  WRITE, 302, with_revision()),
    P("POST", "seed_update",     seed,                  WRITE, 302, with_revision(question="q", answer="a")),
    P("POST", "seed_delete",     seed,                  WRITE, 302, with_revision()),
    P("POST", "seed_move",       seed,                  WRITE, 302, with_revision(position=3)),
    P("POST", "document_add",    lambda w: [w.knowledge_leaf], WRITE, 302,
      lambda w: {"revision": revision(w, w.knowledge_leaf), "file": SimpleUploadedFile("b.md", b"# B")}),
    P("GET",  "document_detail", document,              READ),
    P("POST", "document_delete", document,              WRITE, 302,
      lambda w: {"revision": revision(w, w.knowledge_leaf)}),
    P("GET",  "import",          none,                  WRITE),
    P("POST", "import",          none,                  WRITE, 302, label=" archive", body=lambda w: {
        "source": "archive",
        "archive": SimpleUploadedFile("t.tar.gz", targz([("compositional_skills/from_archive/qna.yaml", POEMS)]))}),
    P("POST", "import",          none,                  STAFF, 302, label=" directory",
      body=lambda w: {"source": "directory", "directory": w.directory}),
    P("POST", "import",          none,                  STAFF, 302, label=" git",
      body=lambda w: {"source": "git", "repository": w.git, "ref": "main"}),
    P("GET",  "import_detail",   lambda w: [w.record],  READ),
    P("GET",  "import_job",      lambda w: [w.import_job], READ),
    P("POST", "import_confirm",  lambda w: [w.dry_run], WRITE, 302),
    P("POST", "import_job_cancel", lambda w: [w.import_job], WRITE, 302),
    P("GET",  "import_list",     none,                  READ),
    P("GET",  "export",          none,                  READ),
    P("GET",  "diff",            none,                  READ),
    P("GET",  "diff",            none,                  READ, query="baseline={snapshot}", label=" baseline"),
    P("POST", "snapshot_create", none,                  WRITE, 302, lambda w: {"name": "baseline"}),
    P("GET",  "generation:run_list",       none,                      READ),
    P("GET",  "generation:run_create",     none,                      OPERATE),
    P("GET",  "generation:run_estimate",   none,                      OPERATE, htmx=True),
    P("POST", "generation:run_create",     none,                      OPERATE, 302, lambda w: {
        "teacher": w.teacher, "scope": "selected", "leaves": [w.leaf], "samples_per_leaf": 5,
        "questions_per_call": 10, "max_rounds": 3, "pair_threshold": 2, "dedup_threshold": 0.7}),
    P("GET",  "generation:run_detail",     lambda w: [w.run],         READ),
    P("GET",  "generation:run_progress",   lambda w: [w.run],         READ, htmx=True),
    P("POST", "generation:run_cancel",     lambda w: [w.run],         OPERATE, 302),
    P("POST", "generation:run_resume",     lambda w: [w.stopped_run], OPERATE, 302),
    P("POST", "generation:run_retry_failed", lambda w: [w.stopped_run], OPERATE, 302),
    P("GET",  "generation:teachers",       none,                      READ),
    P("GET",  "generation:teacher_create", none,                      OPERATE),
    P("POST", "generation:teacher_create", none,                      OPERATE, 302, lambda w: TEACHER_FORM),
    P("GET",  "generation:teacher_edit",   lambda w: [w.teacher],     OPERATE),
    P("POST", "generation:teacher_edit",   lambda w: [w.teacher],     OPERATE, 302,
      lambda w: {**TEACHER_FORM, "name": "renamed"}),
    P("POST", "generation:teacher_default", none,                     OPERATE, 302),
    P("POST", "generation:teacher_delete", lambda w: [w.spare_teacher], OPERATE, 302),
    P("GET",  "generation:sample_list",    none,                      READ),
    P("GET",  "generation:sample_detail",  lambda w: [w.sample],      READ),
    P("GET",  "review:queue",              none,                      READ),
    P("GET",  "review:queue",              none,                      READ, query="state=any&sort=-score&q=q",
      label=" filtered"),
    P("GET",  "review:screen",             lambda w: [w.sample],      READ),
    P("POST", "review:decide",             lambda w: [w.sample],      REVIEW, 302,
      lambda w: {"action": "approve", "version": 1}),
    P("POST", "review:undo",               none,                      REVIEW, 302),
    P("POST", "review:claim",              none,                      REVIEW, 302, lambda w: {"size": 5}),
    P("GET",  "review:bulk_confirm",       none,                      REVIEW, query="action=approve"),
    P("POST", "review:bulk_start",         none,                      REVIEW, 302,
      lambda w: {"action": "approve", "expected": 1}),
    P("GET",  "review:bulk_job",           lambda w: [w.job],         READ),
    P("POST", "review:bulk_undo",          lambda w: [w.job],         REVIEW, 302),
    P("POST", "review:bulk_resume",        lambda w: [w.job],         REVIEW, 302),
    P("POST", "review:bulk_cancel",        lambda w: [w.job],         REVIEW, 302),
    P("GET",  "review:progress",           none,                      READ),
    P("GET",  "review:agreement",          none,                      READ),
    P("GET",  "training:job_list",         none,                      READ),
    P("GET",  "training:job_create",       none,                      OPERATE),
    P("POST", "training:job_create",       none,                      OPERATE, 302, lambda w: {
        "base_model": "base", "processes_per_node": 1, "nodes": 1,
        "phase0_recipe": test_api_roles.TRAINING_RECIPE, "phase0_epochs": 1}),
    P("GET",  "training:job_detail",       lambda w: [w.training_job], READ),
    P("GET",  "training:job_progress",     lambda w: [w.training_job], READ, htmx=True),
    P("POST", "training:job_cancel",       lambda w: [w.training_job], OPERATE, 302),
    P("POST", "training:job_resume",       lambda w: [w.stopped_job], OPERATE, 302),
    P("GET",  "training:upload_list",      none,                      OPERATE),
    P("GET",  "training:checkpoint_detail", lambda w: [w.checkpoint], READ),
    P("POST", "training:checkpoint_detail", lambda w: [w.checkpoint], OPERATE, 302, lambda w: {"prompt": "hi"}),
    P("POST", "training:upload_list",      none,                      OPERATE, 302, lambda w: {
        "file": SimpleUploadedFile("more.jsonl", test_api_roles.FACTS_JSONL)}),
    P("GET",  "training:dataset_list",     none,                      READ),
    P("GET",  "training:dataset_create",   none,                      OPERATE),
    P("POST", "training:dataset_create",   none,                      OPERATE, 302, lambda w: {
        "name": "kept", "plan": "stacked", "held_out_fraction": 0.1, "seed": 1, "complex_above_words": 80}),
    P("GET",  "training:dataset_detail",   lambda w: [w.dataset],     READ),
    P("POST", "training:dataset_train",    lambda w: [w.dataset],     OPERATE, 302),
    P("GET",  "training:dataset_download", lambda w: [w.dataset, "all"], READ),
    P("GET",  "monitor:dashboard",         none,                      OPERATE),
    P("GET",  "monitor:dashboard",         none,                      OPERATE, htmx=True, label=" live"),
    P("POST", "monitor:cancel",            lambda w: ["training", w.training_job], OPERATE, 302),
    P("POST", "monitor:cancel",            lambda w: ["generation", w.run], OPERATE, 302, label=" run"),
    P("POST", "monitor:retry",             lambda w: ["training", w.stopped_job], OPERATE, 302),
    P("GET",  "evaluation:job_list",       none,                      READ),
    P("GET",  "evaluation:job_create",     none,                      OPERATE),
    P("POST", "evaluation:job_create",     none,                      OPERATE, 302, lambda w: {
        "checkpoint": w.checkpoint, "backend": "local", "judge_threshold": 0.5, "choice_threshold": 0.05,
        "loss_threshold": 0.05, "max_new_tokens": 32}),
    P("GET",  "evaluation:job_compare",    none,                      READ,
      query="first={w.evaluation}&second={w.stopped_evaluation}"),
    P("GET",  "evaluation:job_detail",     lambda w: [w.evaluation],  READ),
    P("GET",  "evaluation:job_progress",   lambda w: [w.evaluation],  READ, htmx=True),
    P("GET",  "evaluation:job_answers",    lambda w: [w.evaluation],  READ),
    P("GET",  "evaluation:job_export",     lambda w: [w.evaluation, "csv"], READ),
    P("POST", "evaluation:job_cancel",     lambda w: [w.evaluation],  OPERATE, 302),
    P("POST", "evaluation:job_resume",     lambda w: [w.stopped_evaluation], OPERATE, 302),
    P("GET",  "evaluation:playground",     none,                      OPERATE),
    P("POST", "evaluation:playground",     none,                      OPERATE, 200, lambda w: {
        "left": f"teacher:{w.teacher}", "right": f"teacher:{w.teacher}", "prompt": "hi"}),
    P("POST", "evaluation:playground_stream", none,                   OPERATE, 200, lambda w: {
        "model": f"teacher:{w.teacher}", "prompt": "hi"}),
]
# fmt: on


@pytest.fixture
def clients(outsider, reviewer, operator, curator, staff_curator) -> dict[str, Client]:
    """One browser session per role, signed in."""
    out = {"anonymous": Client()}
    for name, user in [
        ("outsider", outsider),
        ("reviewer", reviewer),
        ("operator", operator),
        ("curator", curator),
        ("staff_curator", staff_curator),
    ]:
        out[name] = Client()
        out[name].force_login(user)
    return out


def send(client: Client, page: Page, w: World):
    url = page.url(w).format(snapshot=w.snapshot, w=w)
    headers = {"HX-Request": "true"} if page.htmx else {}
    if page.method == "GET":
        return client.get(url, headers=headers)
    return client.post(url, page.body(w) if page.body else {}, headers=headers)


@pytest.mark.parametrize("page", PAGES, ids=str)
def test_page_answers_every_role_as_the_matrix_says(page, world, clients):
    allowed = ALLOWED[page.access]
    roles = [role for role in ROLES if role not in allowed]
    if page.method == "GET":
        roles += [role for role in ROLES if role in allowed]
    else:
        roles.append(next(role for role in ROLES if role in allowed))  # a write succeeds once: the least privileged

    login = reverse("login")
    for role in roles:
        before = state()
        response = send(clients[role], page, world)
        if role in allowed:
            assert response.status_code == page.success, (role, response.status_code, response.content[:300])
            if page.method == "GET":
                assert state() == before, f"a GET by {role} changed data"
            continue
        if role == "anonymous":
            if page.method == "GET":
                assert response.status_code == 302 and response["Location"].startswith(f"{login}?next="), (
                    response.status_code,
                    response.get("Location"),
                )
            else:
                assert response.status_code in (302, 403), response.status_code
                if response.status_code == 302:
                    assert response["Location"].startswith(login)
        else:
            assert response.status_code == 403, (role, response.status_code, response.content[:300])
        assert state() == before, f"a refused {page} by {role} changed data"


def test_role_table_covers_every_html_url():
    names = {pattern.name for pattern in curation_urls.urlpatterns}
    names |= {f"generation:{pattern.name}" for pattern in generation_urls.urlpatterns}
    names |= {f"review:{pattern.name}" for pattern in review_urls.urlpatterns}
    names |= {f"training:{pattern.name}" for pattern in training_urls.urlpatterns}
    names |= {f"monitor:{pattern.name}" for pattern in monitor_urls.urlpatterns}
    names |= {f"evaluation:{pattern.name}" for pattern in evaluation_urls.urlpatterns}
    table = {page.name for page in PAGES}
    assert names - table == set(), "HTML URLs without a row in the role table"
    assert table - names == set(), "rows in the role table for URLs that do not exist"


@pytest.mark.parametrize("name", sorted({page.name for page in PAGES}))
def test_methods_outside_the_table_are_405(name, world, clients, django_user_model):
    page = next(p for p in PAGES if p.name == name)
    listed = {p.method for p in PAGES if p.name == name}
    admin = Client()
    admin.force_login(django_user_model.objects.create_superuser("root", password="pw-root"))
    for method in sorted({"GET", "POST", "PUT", "PATCH", "DELETE"} - listed):
        response = getattr(admin, method.lower())(page.url(world).format(snapshot=world.snapshot, w=world))
        assert response.status_code == 405, (method, response.status_code)


# Query counts with the whole corpus (301 leaves) imported: none of them may grow with the number of leaves,
# seeds or documents. Sign-in costs 3 of each (session, user, the user's roles).
@pytest.fixture
def curator_client(curator) -> Client:
    client = Client()
    client.force_login(curator)
    return client


def busiest_leaf() -> Leaf:
    """The knowledge leaf with the most seed examples: the heaviest editor page of the corpus."""
    from django.db.models import Count

    return Leaf.objects.filter(kind="knowledge").annotate(n=Count("seeds")).order_by("-n", "path").first()


@pytest.mark.parametrize(
    ("query", "most"),
    [
        # The roots by kind, then every folder on the open path in one query, however deep; 2 more for
        # review's counters on the tree (curation.tree_counters) and 1 for evaluation's.
        ("", 8),
        ("q=writing", 6),  # the header's counts per kind, the matches and their total
    ],
    ids=["tree", "search"],
)
def test_tree_page_queries_do_not_grow_with_the_corpus(
    query, most, imported, curator_client, django_assert_max_num_queries
):
    deep = Leaf.objects.order_by("-path").values_list("path", flat=True).first()
    url = f"{reverse('curation:tree')}?{query or 'open=' + deep}"
    with django_assert_max_num_queries(most):
        response = curator_client.get(url)
    assert response.status_code == 200
    assert Leaf.objects.count() == 301


def test_tree_page_renders_roots_without_leaves(curator_client):
    # The three roots are always shown; one without leaves (every root, in a new installation) is no leaf.
    response = curator_client.get(reverse("curation:tree"))
    assert response.status_code == 200
    assert response.content.decode().count('class="tree-node') == 3


def test_tree_children_partial_queries(imported, curator_client, django_assert_max_num_queries):
    with django_assert_max_num_queries(7):  # 4, 2 for review's counters on the tree and 1 for evaluation's
        response = curator_client.get(
            reverse("curation:tree_children"), {"path": "compositional_skills"}, headers={"HX-Request": "true"}
        )
    assert response.status_code == 200


def test_leaf_page_queries_do_not_grow_with_seeds_or_documents(
    imported, curator, curator_client, django_assert_max_num_queries
):
    from curation import services

    leaf = busiest_leaf()
    for name in ("a.md", "b.md", "c.md"):
        services.document_add(leaf=leaf, user=curator, expected_revision=None, name=name, content="# x")
    assert leaf.seeds.count() >= 5 and Document.objects.filter(leaf=leaf).count() >= 3
    with django_assert_max_num_queries(6):
        response = curator_client.get(reverse("curation:leaf_detail", args=[leaf.pk]))
    assert response.status_code == 200
    with django_assert_max_num_queries(6):
        response = curator_client.get(reverse("curation:leaf_history", args=[leaf.pk]))
    assert response.status_code == 200
