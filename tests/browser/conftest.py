"""Browser tests: Playwright (sync API) in Debian's headless Chromium against pytest-django's live server,
with the real Postgres, Redis and Celery worker of the suite (tests/conftest.py).

Screenshots of every page go to test-artifacts/screenshots/ (gitignored); after each module they are
also copied, shrunk, to docs/images/screenshots/ (committed, for the README and the closing note).
"""
import os
import shutil
from pathlib import Path

import pytest

from fashionsite.paths import PROJECT_ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
SCREENSHOTS = PROJECT_ROOT / "test-artifacts" / "screenshots"
DOC_SCREENSHOTS = PROJECT_ROOT / "docs" / "images" / "screenshots"
VIEWPORT = {"width": 1280, "height": 900}


@pytest.fixture(scope="module")
def browser():
    """Chromium for one test module. Playwright's sync API keeps an event loop in this thread while it runs,
    so Django's guard against ORM calls from async code is lifted meanwhile (the calls are still synchronous
    and safe here), and only for these modules."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install chromium` (make test does it)")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous
    _copy_screenshots_to_docs()


@pytest.fixture
def new_page(browser, live_server):
    """new_page() -> a Page in a fresh browser context (its own cookies: one user each)."""
    contexts = []

    def make():
        context = browser.new_context(base_url=live_server.url, viewport=VIEWPORT)
        context.set_default_timeout(60_000)  # 2 shared cores
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def screenshot(page, name: str, full_page: bool = False) -> Path:
    path = SCREENSHOTS / f"{name}.png"
    page.wait_for_function("[...document.images].filter(img => img.getAttribute(\"src\")).every(img => img.complete && img.naturalWidth > 0)")
    page.screenshot(path=str(path), full_page=full_page)
    return path


def _copy_screenshots_to_docs(max_width: int = 960, max_height: int = 1300) -> None:
    """Shrunk (long pages cut at max_height), 256-colour copies: small enough to commit."""
    from PIL import Image

    DOC_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for source in sorted(SCREENSHOTS.glob("*.png")):
        with Image.open(source) as image:
            image = image.convert("RGB")
            if image.width > max_width:
                image = image.resize((max_width, round(image.height * max_width / image.width)), Image.LANCZOS)
            if image.height > max_height:
                image = image.crop((0, 0, image.width, max_height))
            image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(DOC_SCREENSHOTS / source.name, optimize=True)
    if not any(DOC_SCREENSHOTS.iterdir()):
        shutil.rmtree(DOC_SCREENSHOTS)
