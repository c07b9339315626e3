"""Real headless Chromium against pytest-django's live server, signed in through the login form.

The live server runs in a thread on a transactional test database, so each test imports the demo taxonomy
again and the role fixtures of tests/conftest.py make the users.
"""

import os
import re
from pathlib import Path

import pytest

from tests.conftest import DEMO

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
VIEWPORT = {"width": 1280, "height": 800}
TIMEOUT_MS = 10_000


# Launched once for all the browser tests, and closed after the last of them (package, not session, scope):
# Playwright's sync API keeps an asyncio loop running in the main thread while it is open, and every later
# `asyncio.run()` in the suite (generation, eager Celery tasks) would fail with "cannot be called from a
# running event loop".
@pytest.fixture(scope="package")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: run scripts/install_chromium.sh (CI installs it)")
    from playwright.sync_api import sync_playwright

    # That running loop also makes Django refuse ORM calls from the tests' own fixtures (SynchronousOnlyOperation);
    # the live server's thread never sees it.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def context(browser, live_server):
    context = browser.new_context(base_url=live_server.url, viewport=VIEWPORT, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    yield context
    context.close()


@pytest.fixture
def page(context):
    return context.new_page()


@pytest.fixture
def demo(transactional_db, curator):
    """The demo taxonomy (4 leaves under the three roots), imported by the curator."""
    from curation.services import ImportSource, taxonomy_import

    return taxonomy_import(source=ImportSource.directory(DEMO), user=curator, from_shell=True)


def sign_in(page, user, *, start: str = "/taxonomy/") -> None:
    """Open `start`, get sent to the login form, fill it in as `user` (the conftest's "pw-<name>" password)."""
    from playwright.sync_api import expect

    page.goto(start)
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next="))
    page.get_by_label("User name").fill(user.username)
    page.get_by_label("Password").fill(f"pw-{user.username}")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".user-name")).to_have_text(user.username)


@pytest.fixture
def curator_page(page, curator, demo):
    sign_in(page, curator)
    return page


def htmx_idle(page) -> None:
    """Wait until htmx has no request in flight and has settled what it swapped in: only then does new content
    carry its hx-* handlers (a folder clicked before that opens without loading its children)."""
    page.wait_for_function(
        "() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling, .htmx-added')"
    )


def open_folder(page, path: str) -> None:
    """Click a folder of the tree open and wait until its children have loaded and htmx has processed them."""
    from playwright.sync_api import expect

    folder = page.locator(f'details[data-path="{path}"]')
    folder.locator("> summary").click()
    expect(folder).to_have_attribute("open", "")
    # The placeholder ("Show …" link) is not a tree-node; the loaded children are.
    expect(folder.locator("> .tree-children > li.tree-node").first).to_be_visible()
    htmx_idle(page)


from tests.support.review import eager, make_samples, second_reviewer  # noqa: E402, F401 - the review fixtures
