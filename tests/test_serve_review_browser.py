"""The review gallery served by `cnnclf serve --review`, in a real browser (Debian's chromium
via selenium, offline): marks saved into the review folder, restored on reload, and applied
by `cnnclf review --apply`; behind a token, the page asks for it first."""

import os

import pytest
from helpers import WAIT_S, run_cli, wait_for
from review_folder import make_review
from test_serve_browser import CHROMEDRIVER, CHROMIUM, browser, downloads  # noqa: F401
from test_serve_review import start_review_server, stop

pytestmark = [
    pytest.mark.slow,  # starts a server and a browser
    pytest.mark.skipif(
        not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
        reason="needs Debian's chromium and chromium-driver",
    ),
]
SCREENSHOT = os.environ.get("CNNCLF_SERVE_REVIEW_SCREENSHOT", "/tmp/h/serve_review.png")


def card(page, section: str, name: str):
    from selenium.webdriver.common.by import By

    cards = page.find_elements(By.CSS_SELECTOR, f"#{section} .card")
    return next(c for c in cards if name in c.get_attribute("data-path"))


def choose(page, section: str, name: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(card(page, section, name).find_element(By.TAG_NAME, "select")).select_by_value(value)


def chosen(page, section: str, name: str) -> str:
    from selenium.webdriver.common.by import By

    return card(page, section, name).find_element(By.TAG_NAME, "select").get_attribute("value")


def status(page) -> str:
    from selenium.webdriver.common.by import By

    return page.find_element(By.ID, "status").text


def test_marks_saved_restored_and_applied(tmp_path, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    folder, train = make_review(tmp_path)
    browser.get((folder / "index.html").as_uri())  # offline: Download only
    assert not browser.find_element(By.ID, "save").is_displayed()
    assert browser.find_element(By.ID, "download").is_displayed()
    process, url = start_review_server("--review", folder)
    try:
        browser.get(url + "/review/")
        assert browser.find_element(By.ID, "save").is_displayed()
        choose(browser, "label", "hstripes_001", "relabel:vstripes")
        choose(browser, "ambiguous", "checker_002", "remove")
        # One image on two cards: both follow, and it is one row (here: none, kept).
        choose(browser, "near_duplicate", "vstripes_003", "remove")
        assert chosen(browser, "outlier", "vstripes_003") == "remove"
        choose(browser, "outlier", "vstripes_003", "keep")
        assert chosen(browser, "near_duplicate", "vstripes_003") == "keep"
        assert browser.find_element(By.ID, "count").text == "2 decisions"
        browser.find_element(By.ID, "save").click()
        wait_for(lambda: "saved 2 decisions" in status(browser), "the page to say saved", 30)
        if os.path.isdir(os.path.dirname(SCREENSHOT)):
            browser.execute_script("window.scrollTo(0, 0)")  # the bar and the relabelled card
            browser.save_screenshot(SCREENSHOT)
        browser.refresh()
        wait_for(lambda: "restored 2 saved decisions" in status(browser), "the marks back", 30)
        assert chosen(browser, "label", "hstripes_001") == "relabel:vstripes"
        assert chosen(browser, "ambiguous", "checker_002") == "remove"
        assert chosen(browser, "outlier", "vstripes_003") == "keep"
        assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    finally:
        stop(process)
    result = run_cli("review", "--apply", folder / "decisions.csv", "--dry-run")
    assert result.exit_code == 0, result.output
    moves = [line for line in result.output.splitlines() if ": move " in line]
    assert len(moves) == 2, result.output
    assert f"{train}/hstripes/hstripes_001.png -> {train}/vstripes/hstripes_001.png" in moves[0]
    assert f"{train}/checker/checker_002.bmp -> " in moves[1] and "_removed" in moves[1]


def test_behind_a_token_the_page_asks_for_it_then_saves(tmp_path, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    folder, _ = make_review(tmp_path)
    (tmp_path / "token").write_text("s3cret\n")
    process, url = start_review_server("--review", folder, "--token-file", tmp_path / "token")
    try:
        browser.get(url + "/review/")
        assert not browser.find_elements(By.CSS_SELECTOR, ".card")
        browser.find_element(By.ID, "token").send_keys("wrong")
        browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
        wait_for(
            lambda: "wrong token" in browser.find_element(By.ID, "error").text, "a refusal", 30
        )
        browser.find_element(By.ID, "token").clear()
        browser.find_element(By.ID, "token").send_keys("s3cret")
        browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".card"), "the gallery", WAIT_S)
        choose(browser, "label", "hstripes_001", "remove")
        browser.find_element(By.ID, "save").click()
        wait_for(lambda: "saved 1 decision " in status(browser), "the page to say saved", 30)
    finally:
        stop(process)
    assert "hstripes_001.png,remove," in (folder / "decisions.csv").read_text()
