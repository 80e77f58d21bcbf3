"""Headless Chromium (Debian's package) driven by Playwright, and screenshots for people to look at."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps dialling Google, which this closed network refuses.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def launch_browser():
    """Start Playwright and a headless Chromium; return (playwright, browser)."""
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
    except Exception:
        playwright.stop()
        raise
    return playwright, browser


def stop_browser(playwright, browser) -> None:
    """Close the browser and stop Playwright."""
    browser.close()
    playwright.stop()


def screenshot(page, name: str) -> Path:
    """Save a full-page PNG of `page` as test-artifacts/screenshots/NAME.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def user_data_dir() -> str:
    """A fresh, empty profile folder."""
    return tempfile.mkdtemp(prefix="authsvc-chromium-")
