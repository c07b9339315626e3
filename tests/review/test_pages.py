"""The review pages without JavaScript: every action is a plain form or link, and refusals show on the page."""

import pytest
from django.test import Client

from review.models import BulkJob, Decision, ReviewItem
from review.queue import Queue
from review.services.bulk import bulk_create, bulk_step

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser_client(reviewer) -> Client:
    client = Client()
    client.force_login(reviewer)
    return client


def ids() -> list[int]:
    return list(ReviewItem.objects.order_by("pk").values_list("pk", flat=True))


def test_a_plain_form_decision_goes_on_to_the_next_sample_of_the_queue(make_samples, browser_client):
    make_samples(1)
    first, second = ids()[:2]
    page = browser_client.get(f"/review/samples/{first}/?sort=age").content.decode()
    assert 'name="version" value="1"' in page and f'href="/review/samples/{second}/?sort=age"' not in page
    assert f'href="/review/samples/{second}/"' in page  # the next link keeps the queue (the default sort is dropped)
    response = browser_client.post(f"/review/samples/{first}/decide/", {"action": "approve", "version": 1})
    assert response.status_code == 302 and response["Location"] == f"/review/samples/{second}/"
    follow = browser_client.get(response["Location"]).content.decode()
    assert f"Approved sample {first}." in follow


def test_a_stale_form_is_told_who_decided_and_nothing_changes(make_samples, browser_client, second_reviewer):
    from review.services.decisions import sample_decide

    make_samples(1)
    pk = ids()[0]
    sample_decide(sample_id=pk, reviewer=second_reviewer, action="reject", expected_version=1, reason="unsafe")
    response = browser_client.post(f"/review/samples/{pk}/decide/", {"action": "approve", "version": 1})
    assert response.status_code == 409
    assert "rita rejected it (unsafe or harmful)" in response.content.decode()
    assert Decision.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"action": "edit", "question": "", "response": "x", "version": 1}, 422, "The edited question is empty."),
        ({"action": "reject", "reason": "nope", "version": 1}, 422, "Unknown reason"),
        ({"action": "approve"}, 422, "Say which version"),
    ],
)
def test_bad_input_is_shown_on_the_screen(make_samples, browser_client, body, status, message):
    make_samples(1)
    pk = ids()[0]
    response = browser_client.post(f"/review/samples/{pk}/decide/", body)
    assert response.status_code == status and message in response.content.decode()
    assert not Decision.objects.exists()


def test_a_decision_on_a_sample_that_is_gone(make_samples, browser_client):
    make_samples(1)
    response = browser_client.post("/review/samples/999999/decide/", {"action": "approve", "version": 1})
    assert response.status_code == 302 and response["Location"] == "/review/"
    assert "Sample 999999 is gone" in browser_client.get("/review/").content.decode()
    htmx = browser_client.post(
        "/review/samples/999999/decide/", {"action": "approve", "version": 1}, headers={"HX-Request": "true"}
    )
    assert htmx.status_code == 404 and "is gone" in htmx.content.decode()


def test_htmx_decision_answers_with_the_next_sample_and_pushes_its_url(make_samples, browser_client):
    make_samples(1)
    first, second, third = ids()[:3]
    response = browser_client.post(
        f"/review/samples/{first}/decide/", {"action": "approve", "version": 1}, headers={"HX-Request": "true"}
    )
    html = response.content.decode()
    assert response["HX-Push-Url"] == f"/review/samples/{second}/"
    assert html.lstrip().startswith(f'<div id="review-screen" data-sample="{second}"')
    assert 'id="review-upcoming" hidden>' in html and f'data-sample="{third}"' in html  # rendered ahead


def test_bulk_confirmation_states_the_count_and_refuses_an_empty_match(make_samples, browser_client):
    make_samples(1)
    confirm = browser_client.get(
        "/review/bulk/?action=reject&path=compositional_skills/writing&picked=" + str(ids()[5])
    )
    page = confirm.content.decode()
    assert confirm.status_code == 200 and "reject 9 samples" in page and "minus the 1 you ticked" in page
    empty = browser_client.get("/review/bulk/?action=approve&path=nowhere")
    assert empty.status_code == 422 and "nothing to decide" in empty.content.decode()


def test_claim_with_nothing_left_says_so(make_samples, browser_client):
    make_samples(1)
    for pk in ids():
        ReviewItem.objects.filter(pk=pk).update(state="approved")
    response = browser_client.post("/review/claim/", {"size": 5}, follow=True)
    assert "Nothing is left to claim in this queue" in response.content.decode()


def test_queue_page_queries_do_not_grow_with_the_page(make_samples, browser_client, django_assert_max_num_queries):
    make_samples(2)
    with django_assert_max_num_queries(7):
        response = browser_client.get("/review/?path=compositional_skills&sort=-score")
    assert response.status_code == 200 and response.content.decode().count("data-pick") == 30


def test_the_run_page_shows_review_progress(make_samples, browser_client, reviewer):
    from review.services.decisions import sample_decide

    run = make_samples(1)
    sample_decide(sample_id=ids()[0], reviewer=reviewer, action="approve", expected_version=1)
    page = browser_client.get(f"/generation/runs/{run.pk}/").content.decode()
    assert 'id="review-progress"' in page and 'data-count="pending">14<' in page
    assert 'data-count="approved">1<' in page


def test_the_taxonomy_tree_shows_review_progress_per_leaf_and_folder(make_samples, browser_client, reviewer):
    from review.services.decisions import sample_decide

    make_samples(1)
    poems = ReviewItem.objects.filter(leaf_path="compositional_skills/writing/poems").order_by("pk")
    sample_decide(sample_id=poems[0].pk, reviewer=reviewer, action="approve", expected_version=1)
    sample_decide(sample_id=poems[1].pk, reviewer=reviewer, action="reject", expected_version=1)
    tree = browser_client.get("/api/tree/").json()

    def find(node, path):
        if node["path"] == path:
            return node
        return next((found for child in node["children"] if (found := find(child, path))), None)

    leaf = find(tree, "compositional_skills/writing/poems")
    folder = find(tree, "compositional_skills/writing")
    assert leaf["counters"]["review"] == {"approved": 1, "edited": 0, "rejected": 1, "pending": 3}
    assert folder["counters"]["review"] == {"approved": 1, "edited": 0, "rejected": 1, "pending": 8}
    page = browser_client.get("/taxonomy/?open=compositional_skills/writing/poems").content.decode()
    assert "counter-review-approved" in page and "Review: approved 1, edited 0, rejected 1, pending" in page


def test_generation_sample_pages_show_the_state_review_holds(
    make_samples, browser_client, reviewer, django_assert_max_num_queries
):
    from review.services.decisions import sample_decide

    make_samples(1)
    first, second = ids()[:2]
    sample_decide(sample_id=first, reviewer=reviewer, action="reject", expected_version=1)
    with django_assert_max_num_queries(8):
        listing = browser_client.get("/generation/samples/").content.decode()
    assert f'<a href="/review/samples/{first}/" class="badge bad">rejected</a>' in listing
    assert f'<a href="/review/samples/{second}/" class="badge">pending</a>' in listing
    page = browser_client.get(f"/generation/samples/{first}/").content.decode()
    assert f'<a href="/review/samples/{first}/" class="badge bad">rejected</a>' in page


def test_the_screen_shows_the_sample_beside_its_seeds_judges_teacher_prompts_and_the_duplicate_it_repeats(
    make_samples, browser_client
):
    from generation.models import Sample

    make_samples(1)
    first, second = Sample.objects.filter(leaf_path__endswith="poems").order_by("pk")[:2]
    Sample.objects.filter(pk=second.pk).update(duplicate_of=first)
    page = browser_client.get(f"/review/samples/{second.pk}/").content.decode()
    seeds = page.split('data-role="seeds"', 1)[1].split("</ol>", 1)[0]
    position = second.seed_indices[0]
    assert f"q{position + 1}" in seeds and f"a{position + 1}" in seeds and seeds.count('class="seed"') == 1
    scores = page.split('data-role="scores"', 1)[1].split("</table>", 1)[0]
    assert f'data-judge="pair"><th scope="row">pair</th><td class="num">{second.scores["pair"]}</td>' in scores
    assert second.rationales["pair"] in page and "skills_questions@1" in page and "pair_judge@1" in page
    assert "<code>teacher-model</code>" in page
    assert f'data-role="duplicate" href="/review/samples/{first.pk}/"' in page


def test_bulk_cancel_is_its_reviewers_or_an_operators_and_refused_once_the_job_is_done(
    make_samples, browser_client, reviewer, second_reviewer, operator, queued
):
    make_samples(1)
    job = bulk_create(reviewer=reviewer, action="approve", queue=Queue(), expected=15)
    assert bulk_step(job.pk, chunk=3)
    page = browser_client.get(f"/review/bulk/{job.pk}/").content.decode()
    assert 'id="bulk-cancel"' in page and f'hx-post="/review/bulk/{job.pk}/cancel/"' in page

    other = Client()
    other.force_login(second_reviewer)
    assert 'id="bulk-cancel"' not in other.get(f"/review/bulk/{job.pk}/").content.decode()
    refused = other.post(f"/review/bulk/{job.pk}/cancel/", follow=True)
    assert "only they can cancel it" in refused.content.decode()
    assert BulkJob.objects.get(pk=job.pk).status == "running"

    # An operator cancels it from the dashboard; what it decided stays.
    operations = Client()
    operations.force_login(operator)
    assert operations.post(f"/operations/bulk/{job.pk}/cancel/").status_code == 302
    job.refresh_from_db()
    assert (job.status, job.done, job.lease_owner) == ("cancelled", 3, "")
    assert ReviewItem.objects.filter(state="approved").count() == 3 and not bulk_step(job.pk, chunk=3)

    # Cancelled again through htmx: the panel comes back with the refusal, and the job as it is.
    again = browser_client.post(f"/review/bulk/{job.pk}/cancel/", headers={"HX-Request": "true"})
    html = again.content.decode()
    assert again.status_code == 409 and html.lstrip().startswith('<section class="panel" id="bulk-job"')
    assert "is cancelled; only a queued or running one can be cancelled" in html
    assert 'id="bulk-cancel"' not in html and 'id="bulk-undo"' in html and 'id="bulk-cancelled"' in html
