"""The taxonomy tree page, its children partial and the API tree: only the subtree asked for, in a fixed number
of queries, with the per-leaf counters other apps register (`curation.tree_counters`) summed per folder."""

import re

import pytest
from django.test import Client
from django.urls import reverse

from curation.models import Leaf, LeafRevision
from curation.tree_counters import LeafCounters, register, registered, unregister

PATHS = [
    "compositional_skills/writing/poetry/haiku",
    "compositional_skills/writing/poetry/limerick",
    "compositional_skills/writing/poetry/limerick/dirty",  # a leaf that is also a folder
    "compositional_skills/writing/prose/essay",
    "compositional_skills/math/sums",
    "knowledge/science/planets",
]
HTMX = {"HX-Request": "true"}


def add_leaves(paths: list[str], invalid: tuple[str, ...] = ()) -> dict[str, int]:
    Leaf.objects.bulk_create(
        [Leaf(path=p, kind=p.split("/", 1)[0], is_valid=p not in invalid, content_hash=p) for p in paths]
    )
    return dict(Leaf.objects.values_list("path", "id"))


class FakeReview:
    """A review app's provider, as the module docstring tells one to write it: one grouped query for any ids."""

    def __init__(self, per_leaf: dict[int, dict[str, int]]):
        self.per_leaf = per_leaf
        self.calls: list[list[int]] = []

    def __call__(self, leaf_ids):
        self.calls.append(sorted(leaf_ids))
        # A real query, so that query counts see the provider as a review app's would be seen.
        ids = list(LeafRevision.objects.filter(leaf_id__in=list(leaf_ids)).values_list("leaf_id", flat=True)[:1])
        assert ids is not None
        return {pk: values for pk, values in self.per_leaf.items() if pk in set(leaf_ids)}


@pytest.fixture
def page(curator) -> Client:
    client = Client()
    client.force_login(curator)
    return client


@pytest.fixture
def review():
    """Registers a counter for the test, as a review app's ready() would, and takes it out again."""
    made = []

    def make(per_leaf):
        provider = FakeReview(per_leaf)
        register(
            LeafCounters(key="review", label="Review", fields=("pending", "approved", "rejected"), counts=provider)
        )
        made.append(provider)
        return provider

    yield make
    unregister("review")
    assert not registered()


def bar(html: str, path: str) -> str:
    """The title of the review bar of the node whose details carry data-path=`path`."""
    start = html.index(f'data-path="{path}"')
    return re.search(r'class="counter counter-review"[^>]*title="([^"]*)"', html[start:]).group(1)


def test_the_tree_page_shows_roots_counted_and_opens_only_the_folders_on_the_open_path(page, db):
    add_leaves(PATHS, invalid=("compositional_skills/math/sums",))
    html = page.get(reverse("curation:tree"), {"open": "compositional_skills/writing/poetry"}).content.decode()
    assert re.search(r'id="count-leaves">6<', html) and re.search(r'id="count-invalid" class="bad">1<', html)
    marks = ('data-path="compositional_skills"', ">foundational_skills<", 'data-path="knowledge"')
    at = [html.index(mark) for mark in marks]
    assert at == sorted(at)  # the roots by name, as every level
    assert 'data-path="compositional_skills/writing/poetry" open' in html
    assert 'data-path="compositional_skills/writing/prose"' in html  # a sibling on the path: shown, closed
    assert "/taxonomy/leaf/" in html and ">haiku<" in html
    assert "essay" not in html  # inside a closed folder: not loaded
    assert "planets" not in html


def test_the_children_partial_builds_only_the_folder_asked_for(page, db):
    ids = add_leaves(PATHS)
    response = page.get(
        reverse("curation:tree_children"), {"path": "compositional_skills/writing/poetry"}, headers=HTMX
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert f'href="/taxonomy/leaf/{ids["compositional_skills/writing/poetry/haiku"]}/"' in html
    assert 'data-path="compositional_skills/writing/poetry/limerick"' in html  # a leaf holding a leaf: a folder
    assert "essay" not in html and "sums" not in html
    missing = page.get(reverse("curation:tree_children"), {"path": "compositional_skills/nothing"}, headers=HTMX)
    assert missing.status_code == 404


def test_a_folder_name_with_like_wildcards_matches_only_itself(page, db):
    add_leaves(["knowledge/a_b/x", "knowledge/aXb/y", "knowledge/a%/z"])
    html = page.get(reverse("curation:tree_children"), {"path": "knowledge/a_b"}, headers=HTMX).content.decode()
    assert ">x<" in html and ">y<" not in html and ">z<" not in html


@pytest.mark.parametrize("name", ["q", "open"])
def test_a_nul_in_a_tree_parameter_is_a_400_not_a_crash(page, db, name):
    assert page.get(reverse("curation:tree"), {name: "a\x00b"}).status_code == 400
    assert page.get(reverse("curation:tree_children"), {"path": "a\x00b"}, headers=HTMX).status_code == 400


@pytest.mark.parametrize("size", [6, 60])
def test_tree_pages_take_the_same_queries_at_any_size_and_open_depth(page, db, size, django_assert_num_queries):
    add_leaves(PATHS + [f"knowledge/science/extra/leaf_{n}" for n in range(size - len(PATHS))])
    # 3 for the signed-in user (session, user, roles); the roots by kind; the opened folders, however deep.
    with django_assert_num_queries(4):
        page.get(reverse("curation:tree"))
    with django_assert_num_queries(5):
        page.get(reverse("curation:tree"), {"open": "compositional_skills/writing/poetry/limerick"})
    with django_assert_num_queries(4):
        page.get(reverse("curation:tree_children"), {"path": "knowledge/science"}, headers=HTMX)
    with django_assert_num_queries(6):  # the header counts per kind, the matches and their total
        page.get(reverse("curation:tree"), {"q": "poetry"})
    with django_assert_num_queries(5):  # the matches and their total, no tree at all
        page.get(reverse("curation:tree"), {"q": "poetry"}, headers=HTMX)


def test_a_registered_counter_colours_leaves_and_sums_folders_over_their_subtree(page, db, review):
    ids = add_leaves(PATHS)
    haiku, limerick = (
        ids["compositional_skills/writing/poetry/haiku"],
        ids["compositional_skills/writing/poetry/limerick"],
    )
    dirty, sums = ids["compositional_skills/writing/poetry/limerick/dirty"], ids["compositional_skills/math/sums"]
    provider = review(
        {
            haiku: {"pending": 2, "approved": 3},
            limerick: {"rejected": 1},
            dirty: {"pending": 1, "approved": 1, "rejected": 1},
            sums: {"approved": 10},
            ids["knowledge/science/planets"]: {"pending": 7},
        }
    )
    html = page.get(reverse("curation:tree"), {"open": "compositional_skills/writing/poetry"}).content.decode()
    assert bar(html, "compositional_skills") == "Review: pending 3, approved 14, rejected 2"
    assert bar(html, "compositional_skills/writing") == "Review: pending 3, approved 4, rejected 2"
    assert bar(html, "compositional_skills/writing/poetry/limerick") == "Review: pending 1, approved 1, rejected 2"
    assert bar(html, "knowledge") == "Review: pending 7, approved 0, rejected 0"
    haiku_at = html.index(f"/taxonomy/leaf/{haiku}/")
    assert 'title="Review: pending 2, approved 3, rejected 0"' in html[haiku_at : haiku_at + 1000]
    assert (
        'class="counter-part counter-review-approved" data-field="approved" data-value="3" style="width: 60.0%"' in html
    )
    assert provider.calls == [sorted(ids.values())]  # one call, with every leaf the page sums


def test_the_children_partial_and_the_api_tree_carry_the_counter_sums(page, api, db, review):
    ids = add_leaves(PATHS)
    review(
        {
            ids["compositional_skills/writing/poetry/haiku"]: {"pending": 4},
            ids["compositional_skills/writing/prose/essay"]: {"approved": 1},
        }
    )
    html = page.get(
        reverse("curation:tree_children"), {"path": "compositional_skills/writing"}, headers=HTMX
    ).content.decode()
    assert bar(html, "compositional_skills/writing/poetry") == "Review: pending 4, approved 0, rejected 0"
    assert bar(html, "compositional_skills/writing/prose") == "Review: pending 0, approved 1, rejected 0"
    tree = api.get("/api/tree/").json()
    skills = next(child for child in tree["children"] if child["path"] == "compositional_skills")
    assert skills["counters"] == {"review": {"pending": 4, "approved": 1, "rejected": 0}}
    assert tree["counters"]["review"]["pending"] == 4


@pytest.mark.parametrize("size", [6, 60])
def test_counters_add_a_fixed_number_of_queries_whatever_the_size(
    page, api, db, review, size, django_assert_num_queries
):
    add_leaves(PATHS + [f"knowledge/science/extra/leaf_{n}" for n in range(size - len(PATHS))])
    review({})
    # The tree's queries, the leaf ids under what is drawn, and the provider's one.
    with django_assert_num_queries(7):
        page.get(reverse("curation:tree"), {"open": "knowledge/science/extra"})
    with django_assert_num_queries(6):
        page.get(reverse("curation:tree_children"), {"path": "knowledge/science"}, headers=HTMX)
    with django_assert_num_queries(3):  # the caller's roles, every leaf, then the provider
        api.get("/api/tree/")


def test_the_registry_refuses_a_taken_key_and_bad_fields(review):
    review({})
    with pytest.raises(ValueError, match="already registered"):
        register(LeafCounters(key="review", label="Other", fields=("x",), counts=lambda ids: {}))
    with pytest.raises(ValueError, match="slug"):
        register(LeafCounters(key="Has Space", label="x", fields=("x",), counts=lambda ids: {}))
    with pytest.raises(ValueError, match="fields"):
        register(LeafCounters(key="eval", label="x", fields=(), counts=lambda ids: {}))
    assert [c.key for c in registered()] == ["review"]


def test_a_provider_returning_a_negative_count_is_an_error_not_a_bar(page, db, review):
    ids = add_leaves(PATHS)
    review({ids["knowledge/science/planets"]: {"pending": -1}})
    with pytest.raises(ValueError, match="pending=-1"):
        page.get(reverse("curation:tree"))


def test_without_a_counter_the_tree_draws_no_bars(page, db):
    add_leaves(PATHS)
    assert 'class="counter ' not in page.get(reverse("curation:tree")).content.decode()
