"""An import from the browser is a job on a real worker: the upload answers at once with the job's page, whose
progress bar htmx refreshes until the result page (created, updated, unchanged, every rejected file with line
and field); a second upload meanwhile is refused, naming the running import."""

import re

import pytest
from playwright.sync_api import expect

from curation.models import ImportJob, Leaf
from tests.browser.conftest import sign_in
from tests.curation.jobs import many_leaves, start_worker

pytestmark = pytest.mark.browser
LEAVES = 2000


@pytest.fixture(scope="module")
def worker(django_db_setup, django_db_blocker, tmp_path_factory):
    from django.conf import settings

    process = start_worker("browser-importer", tmp_path_factory.mktemp("importer"), settings)
    yield process
    process.kill()


def upload(page, data: bytes, name: str = "many.tar.gz") -> None:
    page.goto("/taxonomy/import/")
    page.set_input_files("#id_archive_archive", files=[{"name": name, "mimeType": "application/gzip", "buffer": data}])
    page.locator("#import-archive").get_by_role("button", name="Import archive").click()


def test_an_upload_shows_its_progress_then_its_result_and_a_second_meanwhile_is_refused(
    context, page, curator, demo, worker
):
    sign_in(page, curator)
    upload(page, many_leaves(LEAVES, broken=1))

    expect(page).to_have_url(re.compile(r"/taxonomy/import/jobs/\d+/$"))
    job = ImportJob.objects.get()
    expect(page.locator("#import-progress .progress-bar")).to_be_visible()
    expect(page.locator('#import-job[data-status="running"]')).to_be_visible(timeout=60_000)

    other = context.new_page()
    upload(other, many_leaves(2), "second.tar.gz")
    expect(other.locator("#import-errors")).to_contain_text(f"Import {job.pk} of upload many.tar.gz is running")
    assert ImportJob.objects.count() == 1

    # htmx polls the job's page until the import is written, then goes to its result.
    expect(page).to_have_url(re.compile(r"/taxonomy/import/\d+/$"), timeout=120_000)
    expect(page.locator('[data-count="created"]')).to_have_text(str(LEAVES - 1))
    expect(page.locator('[data-count="rejected"]')).to_have_text("1")
    row = page.locator("#import-problems tbody.problem-file tr")
    expect(row).to_have_count(1)
    expect(row.locator("th")).to_have_text(f"compositional_skills/many/leaf_{LEAVES - 1:05d}/qna.yaml")
    expect(row.locator("td").nth(0)).to_have_text("1")
    expect(row.locator("td").nth(1)).to_have_text("created_by")
    job.refresh_from_db()
    assert (job.status, job.leaves_validated, job.leaves_written) == ("succeeded", LEAVES, LEAVES - 1)
    assert Leaf.objects.count() == LEAVES - 1 + 4  # the demo's four, untouched
