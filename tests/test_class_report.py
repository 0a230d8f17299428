"""The class report in a real browser: Debian's headless Chromium, driven through chromedriver by Selenium.

It loads the self-contained file, clicks a failing cell, sees the failure's message, hint and the sequence
diagram of the exchange, and takes a screenshot."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from classes import FAST_LAB, LABS
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from grader import catalog
from grader.batch.jobs import not_graded
from grader.engine.runner import Options, grade
from grader.report.classhtml import to_html
from grader.spec.loader import load_spec

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    for tool in (CHROMIUM, CHROMEDRIVER):
        assert os.access(tool, os.X_OK), f"{tool} is missing: scripts/setup.sh installs chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def report(tmp_path: Path) -> Path:
    spec = load_spec(catalog.resolve(FAST_LAB))
    rows = [
        ("alice-reference", grade(spec, LABS / "reference" / FAST_LAB, Options(seed=1))),
        ("bob-strips", grade(spec, LABS / "fixtures" / FAST_LAB / "py-strips", Options(seed=1))),
        ("carol-exits-on-empty", grade(spec, LABS / "fixtures" / FAST_LAB / "py-exits-on-empty", Options(seed=1))),
        ("dave-empty", not_graded(spec, Path("/nowhere"), Options(), "empty", "the submission folder is empty")),
    ]
    path = tmp_path / "report.html"
    path.write_text(to_html(spec.title, spec.lab, rows), encoding="utf-8")
    return path


def test_click_a_failing_cell_and_see_the_exchange(browser: webdriver.Chrome, report: Path, tmp_path: Path) -> None:
    html = report.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "the report loads nothing from the network"
    browser.get(report.as_uri())
    wait = WebDriverWait(browser, 20)
    wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#matrix tr[data-student]")))
    rows = browser.find_elements(By.CSS_SELECTOR, "#matrix tr[data-student]")
    assert [r.get_attribute("data-student") for r in rows] == ["alice-reference", "bob-strips",
                                                                "carol-exits-on-empty", "dave-empty"]
    assert not rows[0].find_elements(By.CSS_SELECTOR, "button.cell")  # the reference: nothing to open
    assert "not graded (empty)" in rows[3].text
    rates = browser.find_element(By.ID, "rates").text
    assert re.search(r"\d+ of 3 \(\d+%\)", rates)  # failure rates over the three graded students

    detail = browser.find_element(By.ID, "detail")
    assert not detail.is_displayed()
    cell = rows[1].find_element(By.CSS_SELECTOR, "button.cell.failed")
    check = cell.get_attribute("data-check")
    cell.click()
    wait.until(expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, "#detail svg.seq")))
    text = detail.text
    assert f"bob-strips — {check}" in text
    assert "Hint:" in text
    arrows = browser.find_elements(By.CSS_SELECTOR, "#detail svg.seq g.event.sent line")
    replies = browser.find_elements(By.CSS_SELECTOR, "#detail svg.seq g.event.received line")
    assert arrows and replies, "the diagram shows what the grader sent and what the submission answered"
    labels = " ".join(e.text for e in browser.find_elements(By.CSS_SELECTOR, "#detail svg.seq text"))
    assert "grader" in labels and "submission" in labels and re.search(r"\d+ bytes?: ", labels)
    assert "selected" in (cell.get_attribute("class") or "")
    shot = tmp_path / "class-report.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    keep = os.environ.get("GRADER_SCREENSHOT")
    if keep:
        shutil.copy2(shot, keep)

    # the not-graded student opens its reason
    rows[3].find_element(By.CSS_SELECTOR, "button.cell").click()
    wait.until(lambda d: "dave-empty: not graded (empty)" in d.find_element(By.ID, "detail").text)
