"""The taxonomy curation pages as a curator and a reviewer use them: real clicks in headless Chromium.

Every test starts from the demo taxonomy (4 leaves) on the live server and signs in through the login form.
"""

import os
import re
import struct
import tarfile
from pathlib import Path

import pytest
from playwright.sync_api import expect

from curation.models import Leaf, LeafRevision
from curation.taxonomy import read_qna
from tests.browser.conftest import VIEWPORT, open_folder, sign_in
from tests.browser.screenshots import DOCS, make_screenshots

pytestmark = pytest.mark.browser

HAIKU = "compositional_skills/writing/freeform/haiku"
DEMO_LEAVES = {
    "compositional_skills/extraction/grounded/meeting_action_items",
    HAIKU,
    "foundational_skills/reasoning/arithmetic_word_problems",
    "knowledge/science/astronomy/solar_system_moons",
}


def open_haiku(page) -> Leaf:
    leaf = Leaf.objects.get(path=HAIKU)
    page.goto(f"/taxonomy/leaf/{leaf.pk}/")
    expect(page.locator("h1")).to_have_text("haiku")
    return leaf


def mark_page(page) -> None:
    """A flag in the page's JavaScript state: gone after a full reload, kept through htmx swaps."""
    page.evaluate("window.__sameDocument = true")


def assert_same_page(page) -> None:
    assert page.evaluate("window.__sameDocument === true"), "the page was reloaded instead of swapped by htmx"


def seed_question(page, position: int):
    return page.locator(f'form[data-seed-position="{position}"] textarea[name="question"]')


def test_signing_in_shows_the_tree_with_three_roots_and_counts(curator_page):
    page = curator_page
    expect(page).to_have_url(re.compile(r"/taxonomy/$"))
    expect(page.locator("h1")).to_have_text("Taxonomy")
    roots = page.locator("#tree-body > ul.tree > li > details > summary .folder-name")
    expect(roots).to_have_text(["compositional_skills", "foundational_skills", "knowledge"])
    counts = page.locator("#tree-body > ul.tree > li > details > summary .count")
    expect(counts).to_have_text(["2", "1", "1"])
    expect(page.locator("#count-leaves")).to_have_text("4")
    expect(page.locator("#count-invalid")).to_have_text("0")
    expect(page.locator('#taxonomy-counts dd[data-kind="compositional_skills"]')).to_have_text("2")
    expect(page.locator('#taxonomy-counts dd[data-kind="knowledge"]')).to_have_text("1")
    expect(page.locator("#tree-body .tree-leaf")).to_have_count(0)  # deeper folders load on demand


def test_expanding_folders_down_to_a_leaf_and_opening_it(curator_page):
    page = curator_page
    mark_page(page)
    for path in ("compositional_skills", "compositional_skills/writing", "compositional_skills/writing/freeform"):
        open_folder(page, path)
    assert_same_page(page)
    expect(page.locator('details[data-path="compositional_skills/extraction"]')).to_be_visible()

    leaf = page.locator('details[data-path="compositional_skills/writing/freeform"] .tree-leaf')
    expect(leaf).to_have_text("haiku")
    expect(leaf).to_have_attribute("data-valid", "true")
    leaf.click()
    expect(page).to_have_url(re.compile(r"/taxonomy/leaf/\d+/$"))
    expect(page.locator("h1")).to_have_text("haiku")
    expect(page.locator("#leaf-path")).to_have_text(HAIKU)
    expect(page.locator("[data-seed-position]")).to_have_count(6)


def test_search_filters_the_tree_as_you_type(curator_page):
    page = curator_page
    mark_page(page)
    page.locator("#tree-search").press_sequentially("skills")
    expect(page.locator("#tree-body .result-count")).to_contain_text("3 leaves match “skills”")
    results = page.locator("#tree-body .search-results .tree-leaf")
    expect(results).to_have_text(sorted(DEMO_LEAVES - {"knowledge/science/astronomy/solar_system_moons"}))
    expect(page).to_have_url(re.compile(r"[?&]q=skills"))

    page.locator("#tree-search").fill("haiku")
    expect(results).to_have_text([HAIKU])
    page.locator("#tree-search").fill("no-such-leaf")
    expect(page.locator("#tree-body .result-count")).to_contain_text("0 leaves match")
    expect(results).to_have_count(0)
    assert_same_page(page)

    page.get_by_role("link", name="Show the tree").click()
    expect(page.locator("#tree-body ul.tree > li")).to_have_count(3)


def test_an_edited_field_is_saved_and_listed_in_the_history_with_its_author(curator_page, curator):
    page = curator_page
    leaf = open_haiku(page)
    revision = leaf.revision
    text = "Writing a haiku: three lines of five, seven and five syllables about one moment."
    page.locator("#id_task_description").fill(text)
    page.locator("#save-fields").click()
    expect(page.locator("#leaf-revision")).to_have_text(str(revision + 1))
    expect(page.locator("#leaf-validity .badge")).to_have_text("valid")

    page.reload()
    expect(page.locator("#id_task_description")).to_have_value(text)
    leaf.refresh_from_db()
    assert leaf.task_description == text
    assert leaf.updated_by == curator

    page.locator("#history-link").click()
    expect(page.locator("h1")).to_have_text("History of haiku")
    newest = page.locator("#revisions tbody tr").first
    expect(newest.locator("td").nth(0)).to_have_text(f"r{revision + 1}")
    expect(newest.locator("td").nth(1)).to_have_text("update")
    expect(newest.locator("td").nth(2)).to_have_text(curator.username)
    expect(newest.locator(".changes")).to_contain_text("task description")


def test_adding_a_seed_example_swaps_in_a_form_that_saves(curator_page):
    page = curator_page
    leaf = open_haiku(page)
    mark_page(page)
    page.locator("#add-seed").click()
    expect(page.locator("[data-seed-position]")).to_have_count(7)
    expect(page.locator("#seed-count")).to_have_text("7 seed examples.")
    expect(page.locator("#leaf-revision")).to_have_text(str(leaf.revision + 1))
    expect(page.locator("#leaf-validity .badge")).to_have_text("invalid")  # the new seed is still blank
    assert_same_page(page)

    new = page.locator('form[data-seed-position="6"]')
    expect(new.locator("h3")).to_have_text("Seed example 7")
    new.locator('textarea[name="question"]').fill("Write a haiku about a bicycle in the rain.")
    new.locator('textarea[name="answer"]').fill(
        "Wet spokes catch the light\npuddles part for the wheel\nhome at last\n"
    )
    new.locator(".save-seed").click()
    expect(page.locator("#leaf-revision")).to_have_text(str(leaf.revision + 2))
    expect(page.locator("#leaf-validity .badge")).to_have_text("valid")
    expect(page.locator(".field-error")).to_have_count(0)
    assert_same_page(page)

    page.reload()
    expect(page.locator("[data-seed-position]")).to_have_count(7)
    expect(seed_question(page, 6)).to_have_value("Write a haiku about a bicycle in the rain.")
    assert Leaf.objects.get(path=HAIKU).seeds.filter(question__contains="bicycle").count() == 1


def test_blanking_a_required_field_shows_the_problem_beside_it_and_the_leaf_turns_invalid(curator_page):
    page = curator_page
    leaf = open_haiku(page)
    beside = page.locator('#fe-task_description .field-error[data-field="task_description"]')
    expect(beside).to_have_count(0)

    page.locator("#id_task_description").fill("")
    expect(beside).to_be_visible()  # live validation: nothing saved yet
    expect(page.locator("#problems-heading")).to_contain_text("as typed, not saved")
    expect(page.locator("#leaf-validity .badge")).to_have_text("valid")
    assert Leaf.objects.get(pk=leaf.pk).revision == leaf.revision

    page.locator("#save-fields").click()
    expect(page.locator("#leaf-validity .badge")).to_have_text("invalid")
    expect(page.locator("#leaf-revision")).to_have_text(str(leaf.revision + 1))
    expect(beside).to_be_visible()

    page.goto("/taxonomy/?q=haiku")
    expect(page.locator(".search-results .tree-leaf")).to_have_attribute("data-valid", "false")
    expect(page.locator("#count-invalid")).to_have_text("1")


def test_seed_examples_move_down_and_up(curator_page):
    page = curator_page
    open_haiku(page)
    coffee = "Write a haiku about a cup of coffee early in the morning."
    storm = "Write a haiku about a summer thunderstorm."
    expect(seed_question(page, 0)).to_have_value(coffee)
    expect(seed_question(page, 1)).to_have_value(storm)
    seeds = page.locator("#seeds li.seed")
    expect(seeds.nth(0).locator(".move-up")).to_be_disabled()
    expect(seeds.nth(5).locator(".move-down")).to_be_disabled()
    mark_page(page)

    seeds.nth(0).locator(".move-down").click()
    expect(seed_question(page, 0)).to_have_value(storm)
    expect(seed_question(page, 1)).to_have_value(coffee)
    assert_same_page(page)
    page.reload()
    expect(seed_question(page, 1)).to_have_value(coffee)

    page.locator("#seeds li.seed").nth(1).locator(".move-up").click()
    expect(seed_question(page, 0)).to_have_value(coffee)
    expect(seed_question(page, 1)).to_have_value(storm)
    questions = list(Leaf.objects.get(path=HAIKU).seeds.order_by("position").values_list("question", flat=True))
    assert questions[:2] == [coffee, storm]


def test_export_downloads_a_taxonomy_whose_qna_files_are_valid(curator_page, tmp_path):
    page = curator_page
    with page.expect_download() as download_info:
        page.locator("#export-link").click()
    download = download_info.value
    assert download.suggested_filename == "taxonomy.tar.gz"
    archive = tmp_path / download.suggested_filename
    download.save_as(archive)

    folders = set()
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            assert member.isfile() and not member.name.startswith(("/", "..")), member.name
            if member.name.endswith("/qna.yaml"):
                qna = read_qna(tar.extractfile(member).read(), member.name)
                assert qna.valid, (member.name, [p.message for p in qna.problems])
                folders.add(member.name.removesuffix("/qna.yaml"))
        names = set(tar.getnames())
    assert folders == DEMO_LEAVES
    assert "knowledge/science/astronomy/solar_system_moons/solar_system_moons.md" in names
    assert f"{HAIKU}/attribution.txt" in names


def test_a_reviewer_sees_no_edit_controls_and_cannot_post_an_edit(page, reviewer, demo):
    sign_in(page, reviewer)
    expect(page.locator("#export-link")).to_be_visible()
    expect(page.locator("#new-leaf, #import-link")).to_have_count(0)

    leaf = open_haiku(page)
    controls = (
        "#save-fields, #add-seed, .save-seed, .move-up, .move-down, .delete-seed, #add-document, "
        "#move-leaf, #delete-leaf, .add-pair"
    )
    expect(page.locator(controls)).to_have_count(0)
    expect(page.locator("#leaf-form fieldset")).to_have_attribute("disabled", "")
    expect(page.locator("#id_task_description")).to_be_disabled()
    expect(page.locator('[hx-post*="/validate/"]')).to_have_count(0)

    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    response = page.request.post(
        f"/taxonomy/leaf/{leaf.pk}/update/",
        form={"revision": str(leaf.revision), "task_description": "hijacked"},
        headers={"X-CSRFToken": token},
    )
    assert response.status == 403
    assert "CSRF" not in response.text()  # refused for the role, not for a missing token
    assert Leaf.objects.get(pk=leaf.pk).task_description != "hijacked"
    assert LeafRevision.objects.filter(leaf=leaf).count() == 1


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", header[16:24])


def test_screenshots_of_tree_and_leaf(curator_page, tmp_path):
    out = DOCS if os.environ.get("LABWEB_SCREENSHOTS") == "docs" else tmp_path
    for shot in make_screenshots(curator_page, out):
        assert png_size(shot) == (VIEWPORT["width"], VIEWPORT["height"])
        assert shot.stat().st_size > 10_000, f"{shot} looks blank"
