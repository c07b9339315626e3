"""Review as reviewers live it, in headless Chromium: the keyboard flow, a bulk decision by filter with its
confirmation and undo, a bulk job cancelled part way from its page, and a second reviewer told of a conflict."""

import re

import pytest
from playwright.sync_api import expect

from review.models import BulkJob, ReviewItem
from review.services.bulk import bulk_step, bulk_undo_run
from tests.browser.conftest import htmx_idle, sign_in

pytestmark = pytest.mark.browser
POEMS = "compositional_skills/writing/poems"


def current_id(page) -> int:
    return int(page.locator("#review-current article").get_attribute("data-sample"))


def state(pk: int) -> str:
    return ReviewItem.objects.get(pk=pk).state


def test_a_reviewer_approves_rejects_edits_and_undoes_from_the_keyboard(page, transactional_db, reviewer, make_samples):
    make_samples(2)
    sign_in(page, reviewer, start=f"/review/?path={POEMS}")
    page.click("#start-review")
    expect(page.locator("#review-current article")).to_be_visible()
    htmx_idle(page)
    expect(page.locator("#review-shortcuts")).to_contain_text("Approve")
    page.evaluate("window.__sameDocument = true")
    first = current_id(page)

    page.keyboard.press("a")
    expect(page.locator("#review-notice")).to_have_text(f"Approved sample {first}.")
    htmx_idle(page)
    second = current_id(page)
    assert second != first and state(first) == "approved"

    page.keyboard.press("r")
    reason = page.locator("#review-current select[data-role=reason]")
    expect(reason).to_be_focused()
    reason.select_option("off_topic")
    page.keyboard.press("Enter")
    expect(page.locator("#review-notice")).to_have_text(f"Rejected sample {second}.")
    htmx_idle(page)
    third = current_id(page)
    assert ReviewItem.objects.get(pk=second).decision.reason == "off_topic"

    page.keyboard.press("e")
    answer = page.locator("#review-current textarea[data-role=edit-response]")
    expect(page.locator("#review-current textarea[data-role=edit-question]")).to_be_focused()
    answer.fill(answer.input_value().replace("Answer", "Reply", 1))
    answer.press("Control+Enter")
    expect(page.locator("#review-notice")).to_have_text(f"Edited and approved sample {third}.")
    htmx_idle(page)
    assert state(third) == "edited"

    page.keyboard.press("k")  # back to the edited one: its word diff against the original
    expect(page.locator("#review-current article")).to_have_attribute("data-sample", str(third))
    htmx_idle(page)
    expect(page.locator("#review-current [data-role=diff] ins").first).to_have_text("Reply ")
    expect(page.locator("#review-current [data-role=diff] del").first).to_have_text("Answer ")

    page.keyboard.press("u")
    expect(page.locator("#review-notice")).to_contain_text(f"Took back your edit of sample {third}")
    htmx_idle(page)
    expect(page.locator("#review-current article")).to_have_attribute("data-state", "pending")
    htmx_idle(page)
    page.keyboard.press("u")
    expect(page.locator("#review-notice")).to_contain_text(f"Took back your rejection of sample {second}")
    htmx_idle(page)
    assert (state(third), state(second), state(first)) == ("pending", "pending", "approved")

    page.keyboard.press("?")
    expect(page.locator("#review-help")).to_be_visible()
    assert page.evaluate("window.__sameDocument") is True  # every step above without a page load


def test_bulk_approve_by_filter_states_the_count_and_is_undone_as_a_whole(
    page, transactional_db, reviewer, make_samples, eager
):
    make_samples(2)
    sign_in(page, reviewer, start="/review/?path=compositional_skills/writing")
    kept_out = int(page.locator("#queue-table tbody tr").first.get_attribute("data-sample"))
    page.locator("#queue-table tbody tr").first.locator("input[data-pick]").check()
    page.select_option("#bulk-action", "approve")
    page.click("#bulk-submit")
    expect(page.locator("#bulk-count")).to_contain_text("approve 19 samples")
    expect(page.locator("#bulk-count")).to_contain_text("minus the 1 you ticked")
    page.click("#bulk-go")
    page.wait_for_url(re.compile(r"/review/bulk/\d+/"))
    expect(page.locator("#bulk-status")).to_have_text("done")
    expect(page.locator("#bulk-done")).to_have_text("19")
    assert ReviewItem.objects.filter(state="approved").count() == 19 and state(kept_out) == "pending"

    page.click("#bulk-undo")
    expect(page.locator("#bulk-status")).to_have_text("undone")
    assert BulkJob.objects.get().status == "undone"
    assert ReviewItem.objects.filter(state="pending").count() == 30


def test_a_bulk_job_cancelled_from_its_page_keeps_what_it_decided_and_is_undone(
    page, transactional_db, reviewer, make_samples, queued
):
    make_samples(2)  # 30 pending samples; no worker takes the job: the test works its chunks
    sign_in(page, reviewer, start="/review/")
    page.select_option("#bulk-action", "approve")
    page.click("#bulk-submit")
    expect(page.locator("#bulk-count")).to_contain_text("approve 30 samples")
    page.click("#bulk-go")
    page.wait_for_url(re.compile(r"/review/bulk/\d+/"))
    expect(page.locator("#bulk-status")).to_have_text("queued")
    job = BulkJob.objects.get()
    assert bulk_step(job.pk, chunk=5) and bulk_step(job.pk, chunk=5)  # two chunks, as a worker would
    expect(page.locator("#bulk-done")).to_have_text("10")  # the page follows the job (htmx, every second)
    expect(page.locator("#bulk-status")).to_have_text("running")
    page.evaluate("window.__sameDocument = true")

    page.click("#bulk-cancel")
    expect(page.locator("#bulk-status")).to_have_text("cancelled")
    expect(page.locator("#bulk-cancelled")).to_contain_text("Cancelled after 10 of 30 decisions")
    expect(page.locator("#bulk-events li").first).to_contain_text("Cancelled by rene")
    expect(page.locator("#bulk-cancel")).to_have_count(0)
    assert page.evaluate("window.__sameDocument") is True  # swapped in place, no page load
    job.refresh_from_db()
    assert (job.status, job.done) == ("cancelled", 10)
    assert not bulk_step(job.pk, chunk=5)  # a worker finds nothing more to do
    assert ReviewItem.objects.filter(state="approved").count() == 10

    page.click("#bulk-undo")
    expect(page.locator("#bulk-status")).to_have_text("undoing")
    bulk_undo_run(job_id=job.pk, chunk=5)
    expect(page.locator("#bulk-status")).to_have_text("undone")
    expect(page.locator("#bulk-undone")).to_have_text("10")
    assert ReviewItem.objects.filter(state="pending").count() == 30


def test_a_second_reviewer_is_told_of_the_conflict(
    browser, live_server, transactional_db, reviewer, second_reviewer, make_samples
):
    make_samples(1)
    pk = ReviewItem.objects.order_by("pk").first().pk
    pages = []
    for user in (reviewer, second_reviewer):
        context = browser.new_context(base_url=live_server.url)
        context.set_default_timeout(10_000)
        page = context.new_page()
        sign_in(page, user, start=f"/review/samples/{pk}/")
        pages.append(page)
    first, second = pages
    first.keyboard.press("r")
    first.locator("#review-current select[data-role=reason]").select_option("incorrect")
    first.keyboard.press("Enter")
    expect(first.locator("#review-notice")).to_have_text(f"Rejected sample {pk}.")

    second.keyboard.press("a")
    error = second.locator("#review-error")
    expect(error).to_contain_text("rene rejected it (incorrect answer)")
    expect(error).to_contain_text("Nothing was saved")
    expect(second.locator("#review-current article")).to_have_attribute("data-sample", str(pk))
    assert state(pk) == "rejected"
    for page in pages:
        page.context.close()
