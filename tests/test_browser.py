"""The built book in a real browser: every page in the toc loads without page errors, and every chapter shows
its exercises, collapsed solutions and figures, and no cell errors.

Needs the built HTML (``make book``; or ``BOOK_HTML_DIR``) and Chromium with its driver: Debian's
``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``, ``/usr/bin/chromedriver``), or other paths in
``CHROME_BINARY`` and ``CHROMEDRIVER``. Without them the tests skip on a laptop and fail under ``CI=true``.
Nothing here touches the network: the book is served from 127.0.0.1, and Selenium Manager is kept offline.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, load_tool, skip_or_fail

pytestmark = [pytest.mark.book, pytest.mark.browser]

CHROME = os.environ.get("CHROME_BINARY") or "/usr/bin/chromium"
CHROMEDRIVER = os.environ.get("CHROMEDRIVER") or "/usr/bin/chromedriver"
CHROME_ARGS = ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
               "--disable-background-networking", "--disable-component-update", "--no-first-run",
               "--disable-sync", "--window-size=1280,1024"]

# SEVERE console lines that are expected offline (AUTHORING.md); anything else is a real page error.
EXPECTED_SEVERE = [
    re.compile(r"^https?://(?!127\.0\.0\.1[:/]|localhost[:/])\S+ .*net::ERR_"),  # CDN scripts, offline
    re.compile(r"Identifier 'THEBE_JS_URL' has already been declared"),       # sphinx-thebe, twice injected
    re.compile(r"invalid theme mode"),                                         # pydata theme, first load
    re.compile(r"/favicon\.ico - Failed to load resource: .*status of 404"),  # no favicon over HTTP
]
ERROR_NAME = re.compile(r"\b\w*(Error|Exception)\b")

edition = load_tool("student_edition")
TOC_PAGES = edition.toc_entries(yaml.safe_load((ROOT / "_toc.yml").read_text()))
CHAPTER_PAGES = [entry for entry in TOC_PAGES if entry.startswith("chapters/")]


# ---- fixtures: the browser and the server ---------------------------------------------------------------
@pytest.fixture(scope="session")
def driver(tmp_path_factory):
    missing = [path for path in (CHROME, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        skip_or_fail(f"no {' or '.join(missing)}: install Debian packages chromium and chromium-driver "
                     f"(or set CHROME_BINARY and CHROMEDRIVER)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager reach for the network
    options = webdriver.ChromeOptions()
    options.binary_location = CHROME
    for arg in CHROME_ARGS + [f"--user-data-dir={tmp_path_factory.mktemp('chrome-profile')}"]:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    browser.set_page_load_timeout(60)
    yield browser
    browser.quit()


@pytest.fixture(scope="session")
def site(built_html):
    from mlops_lab.servers import BackgroundServer

    command = [sys.executable, "-m", "http.server", "{port}", "--bind", "127.0.0.1", "--directory", str(built_html)]
    with BackgroundServer(command, name="book-html", health_path="/index.html") as server:
        yield server.url


def open_page(driver, site: str, html: Path, entry: str) -> list[dict]:
    """Load ``entry``'s page and wait until its scripts have run; return its SEVERE console entries."""
    from selenium.webdriver.support.ui import WebDriverWait

    assert (html / f"{entry}.html").is_file(), f"{entry} is in _toc.yml but {entry}.html was not built"
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(f"{site}/{entry}.html")
    wait = WebDriverWait(driver, 20)
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
    if driver.find_elements("css selector", ".dropdown.admonition"):  # sphinx-togglebutton has collapsed them
        wait.until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('.dropdown.admonition')].every(e => e.classList.contains('toggle'))"))
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def unexpected(entries: list[dict]) -> list[str]:
    return [entry["message"] for entry in entries
            if not any(pattern.search(entry["message"]) for pattern in EXPECTED_SEVERE)]


# ---- every page ------------------------------------------------------------------------------------------
def test_index_leads_to_the_book(driver, site, built_html):
    open_page(driver, site, built_html, "index")
    assert driver.title.strip() and driver.find_element("css selector", "main").text.strip(), \
        "index.html does not lead to the book's landing page"


@pytest.mark.parametrize("entry", TOC_PAGES)
def test_page_loads_cleanly(driver, site, built_html, entry):
    severe = open_page(driver, site, built_html, entry)
    assert driver.title.strip(), f"{entry}: empty <title>"
    main = driver.find_element("css selector", "main")
    assert len(main.text.strip()) > 100, f"{entry}: the main content is (nearly) empty"
    errors = unexpected(severe)
    assert not errors, f"{entry}: console errors:\n" + "\n".join(errors)


# ---- every chapter ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("entry", CHAPTER_PAGES)
def test_chapter_page(driver, site, built_html, entry):
    open_page(driver, site, built_html, entry)
    find = driver.find_elements
    exercises = find("css selector", "div.exercise")
    assert len(exercises) >= 3, f"{entry}: {len(exercises)} exercise blocks; at least 3 expected"

    solutions = find("css selector", "div.solution")
    assert len(solutions) == len(exercises), f"{entry}: {len(solutions)} solutions for {len(exercises)} exercises"
    for solution in solutions:
        name = solution.get_attribute("id")
        classes = solution.get_attribute("class").split()
        assert "dropdown" in classes and "toggle-hidden" in classes, f"{entry}: solution {name} is not collapsed"
        title = solution.find_element("css selector", ".admonition-title")
        body = solution.find_elements("xpath", "./*[not(contains(@class, 'admonition-title'))]")
        assert title.is_displayed() and body, f"{entry}: solution {name} has no title or no body"
        assert not any(part.is_displayed() for part in body), f"{entry}: solution {name} shows its content"

    widths = driver.execute_script(
        "return [...document.querySelectorAll('.cell_output img')].map(i => i.complete ? i.naturalWidth : 0)")
    assert any(width > 0 for width in widths), f"{entry}: no rendered figure from a notebook output ({widths})"

    wide = driver.execute_script(
        "return [...document.querySelectorAll('div.cell_input pre, div.cell_output pre')]"
        ".filter(p => p.scrollWidth > p.clientWidth + 1).map(p => p.textContent.split('\\n')[0].slice(0, 60))")
    assert not wide, f"{entry}: code wider than the page (a horizontal scrollbar): {wide[:3]}"
    assert driver.execute_script("return document.documentElement.scrollWidth <= document.documentElement.clientWidth"), \
        f"{entry}: the page scrolls sideways"
    folded = driver.execute_script(
        "const c = document.querySelector('div.cell.tag_hide-input'); return c && !!c.querySelector('details, .toggle')")
    assert folded, f"{entry}: the bootstrap cell's input is not folded behind a toggle"

    assert not find("css selector", ".cell_output .traceback, .output.traceback, .output.error"), \
        f"{entry}: a cell shows an error output"
    outputs = " ".join(element.text for element in find("css selector", ".cell_output"))
    assert "Traceback (most recent call last)" not in outputs, f"{entry}: a cell output shows a traceback"
    red = [span.text for span in find("css selector", ".cell_output .ansi-red-fg, .cell_output .-Color-Red, "
                                                      ".cell_output .ansi-red-intense-fg")]
    assert not [text for text in red if ERROR_NAME.search(text)], f"{entry}: an error in red in an output: {red}"


def test_console_filter_is_narrow():
    """Only the known offline noise is forgiven; a local script error is not."""
    expected = ["https://cdn.jsdelivr.net/npm/x.js - Failed to load resource: net::ERR_NAME_NOT_RESOLVED",
                "http://127.0.0.1:8000/favicon.ico - Failed to load resource: the server responded with a status of 404 (File not found)"]
    real = ["http://127.0.0.1:8000/_static/x.js - Failed to load resource: net::ERR_CONNECTION_REFUSED",
            "http://127.0.0.1:8000/chapters/01.html 12:5 Uncaught TypeError: x is undefined",
            "http://127.0.0.1:8000/_images/fig.png - Failed to load resource: the server responded with a status of 404"]
    assert unexpected([{"message": m} for m in expected + real]) == real
