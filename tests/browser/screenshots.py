"""The README's screenshots, taken of the demo taxonomy at 1280x800 by `test_screenshots_of_tree_and_leaf`.

Refresh the committed ones with `LABWEB_SCREENSHOTS=docs pytest tests/browser -k screenshots`; without it
the test writes them to a temporary folder, so that a test run leaves the working tree clean.
"""

from pathlib import Path

from tests.browser.conftest import VIEWPORT, open_folder

DOCS = Path(__file__).resolve().parents[2] / "docs"
OPEN_LEAF = "compositional_skills/writing/freeform/haiku"


def make_screenshots(page, out_dir: Path) -> tuple[Path, Path]:
    """The tree with every folder of the demo open, and the haiku leaf's editor; `page` is signed in."""
    from playwright.sync_api import expect

    out_dir.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size(VIEWPORT)
    page.goto(f"/taxonomy/?open={OPEN_LEAF}")
    for _ in range(20):  # open the other folders one by one: each loads its children (htmx) when toggled
        closed = page.locator("#tree-body details:not([open])")
        if not closed.count():
            break
        open_folder(page, closed.first.get_attribute("data-path"))
    expect(page.locator("#tree-body details:not([open])")).to_have_count(0)
    expect(page.locator("#tree-body .load-link")).to_have_count(0)
    page.evaluate("document.activeElement.blur()")  # no focus ring on the folder clicked last
    page.mouse.move(0, VIEWPORT["height"] - 1)
    tree = out_dir / "screenshot-tree.png"
    page.screenshot(path=tree)

    page.locator(".tree-file a.tree-leaf", has_text="haiku").click()
    expect(page.locator("h1")).to_have_text("haiku")
    leaf = out_dir / "screenshot-leaf.png"
    page.screenshot(path=leaf)
    return tree, leaf
