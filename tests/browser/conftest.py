"""Browser tests: the real app served over HTTP and driven by headless Chromium.

The app is the same one the web tests use (`app` from tests/conftest.py: the test Config
and the test database), served by werkzeug in a background thread so a real browser talks
to it over a socket. Chromium is Debian's /usr/bin/chromium, driven by Playwright's sync
API; Playwright's own browser download is never used (it needs a network this machine
does not have). Without /usr/bin/chromium the tests skip with a reason that .ci/run
refuses, so CI cannot go green without them.

Screenshots go to test-artifacts/screenshots/ (gitignored; CI keeps them), one at each key
step through the `shot` fixture and one automatically when a test fails.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from tests.conftest import TEST_PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
SKIP_REASON = "needs /usr/bin/chromium (browser tests)"

# As root Chromium needs --no-sandbox. The network flags stop Chromium from calling
# Google's services at start: this machine's closed network refuses those connections,
# and the retries slow every launch down.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# A desktop at a reception counter; wide enough for the top bar to stay on one line.
VIEWPORT = {"width": 1280, "height": 800}


@dataclass
class LiveServer:
    url: str
    # Requests the pages made to anywhere but the live server (CDNs, fonts, analytics).
    # HMS must work on a hospital LAN without internet, so each one fails the test.
    external_requests: list[str] = field(default_factory=list)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Keep each phase's report on the item, so the `page` fixture can tell at teardown
    # whether the test failed and take a screenshot of the page as it was.
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"_hms_report_{report.when}", report)


@pytest.fixture
def live_server(app):
    """The test app on 127.0.0.1 at a free port, for the duration of one test.

    threaded=True because a browser fetches the page, its stylesheet and the favicon in
    parallel. Function scope, like `app`: every test gets empty tables and a fresh app.
    """
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="hms-live-server", daemon=True)
    thread.start()
    try:
        yield LiveServer(url=f"http://127.0.0.1:{server.server_port}")
    finally:
        # Stop serving before the autouse table cleanup runs, so no request is mid-way.
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the whole session (a launch costs about a second)."""
    if not CHROMIUM.exists():
        pytest.skip(reason=SKIP_REASON)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, live_server, request, screenshot_dir):
    """A fresh browser context (no cookies) on the live server; relative URLs work.

    Requests leaving the live server are aborted and recorded; the test errors at
    teardown if there were any.
    """
    from playwright.sync_api import expect

    expect.set_options(timeout=10_000)
    context = browser.new_context(base_url=live_server.url, viewport=VIEWPORT, locale="en-GB",
                                  timezone_id="Asia/Karachi")

    def only_local(route):
        url = route.request.url
        if url.startswith(live_server.url) or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            live_server.external_requests.append(url)
            route.abort()

    context.route("**/*", only_local)
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    yield pg
    call_report = getattr(request.node, "_hms_report_call", None)
    if call_report is not None and call_report.failed:
        pg.screenshot(path=str(screenshot_dir / f"{_slug(request.node.name)}-FAILED.png"), full_page=True)
    context.close()
    assert not live_server.external_requests, (
        f"pages requested resources outside HMS (must work offline): {live_server.external_requests}")


@pytest.fixture(scope="session")
def screenshot_dir(request) -> Path:
    path = request.config.rootpath / "test-artifacts" / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def shot(page, request, screenshot_dir):
    """shot("step") saves a full-page PNG named <test>-<nn>-<step>.png, numbered in order."""
    counter = iter(range(1, 100))
    base = _slug(request.node.name)

    def take(step: str) -> Path:
        path = screenshot_dir / f"{base}-{next(counter):02d}-{_slug(step)}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


@pytest.fixture
def log_in(page):
    """log_in(username) logs in through the real login page and waits for the home page."""

    def do(username: str, password: str = TEST_PASSWORD) -> None:
        page.goto("/login")
        page.locator("input[name=username]").fill(username)
        page.locator("input[name=password]").fill(password)
        page.locator("input[name=password]").press("Enter")
        page.wait_for_url(re.compile(r"/$"))

    return do
