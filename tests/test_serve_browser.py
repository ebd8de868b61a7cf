"""The serve page in a real browser: Debian's chromium, driven by selenium, fully offline.

`.ci/run` installs `chromium` and `chromium-driver`; selenium is pointed at both, so its
selenium-manager never downloads a browser or a driver.
"""

import csv
import io
import json
import os
import shutil
from pathlib import Path

import pytest
from helpers import WAIT_S, communicate, run_cli, start_server, wait_for

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo"

pytestmark = [
    pytest.mark.slow,  # trains the demo model, starts a server and a browser
    pytest.mark.skipif(
        not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
        reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium "
        "chromium-driver; .ci/run does)",
    ),
]


@pytest.fixture(scope="module")
def demo_bundle(tmp_path_factory):
    """The demo config, 3 epochs: tells these sneakers from these ankle boots."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    result = run_cli(
        "train", "--config", REPO / "configs" / "demo.yaml", "--set", "train.epochs=3", "--out", out
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def downloads(tmp_path):
    folder = tmp_path / "downloads"
    folder.mkdir()
    return folder


@pytest.fixture
def browser(downloads):
    """Headless chromium that saves downloads to `downloads` and keeps the console log."""
    os.environ.setdefault("SE_OFFLINE", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        "--disable-gpu",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


SNEAKER = DEMO / "test_set" / "sneaker" / "sneaker_00009.png"
ANKLE_BOOT = DEMO / "test_set" / "ankle_boot" / "ankle_boot_00132.png"
NOTICE = "Research use only — not a diagnostic device."

# Holds the first /predict answer back, so that the second image's answer arrives first, and
# records the order the answers arrived in.
DELAY_FIRST_ANSWER = """
const original = window.fetch;
window.answered = [];
let first = true;
window.fetch = async (path, options) => {
  const predict = path === "/predict", hold = predict && first;
  if (predict) first = false;
  const response = await original(path, options);
  if (hold) await new Promise((resolve) => setTimeout(resolve, 1500));
  if (predict) window.answered.push(options.body.get("file").name);
  return response;
};
"""


def test_page_classifies_uploaded_images(demo_bundle, browser, downloads, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    images = {"sneaker": SNEAKER, "ankle_boot": ANKLE_BOOT}  # in upload order
    process, url = start_server(demo_bundle, "--name", "demo")
    try:
        browser.get(url)
        wait = WebDriverWait(browser, WAIT_S)
        wait.until(lambda d: "Classes" in d.find_element(By.ID, "card").text)
        card = browser.find_element(By.ID, "card").text
        assert "ankle_boot, sneaker" in card and "28×28 grayscale" in card
        assert "Validation accuracy" in card and "keras bundle" in card
        assert browser.find_element(By.ID, "threshold-box").is_displayed()
        notice = browser.find_element(By.ID, "notice")
        assert notice.is_displayed() and notice.text == NOTICE
        rule = browser.find_element(By.ID, "rule").text
        assert "P(sneaker) within 0.10 of the decision threshold" in rule

        browser.execute_script(DELAY_FIRST_ANSWER)
        browser.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in images.values()))
        done = "li.result[data-label], li.result[data-failed]"
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, done)) == 2)
        assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".error")] == []
        # The answers came back out of order; the cards stay in upload order, numbered.
        assert browser.execute_script("return window.answered") == [ANKLE_BOOT.name, SNEAKER.name]
        items = browser.find_elements(By.CSS_SELECTOR, "li.result")
        assert [i.find_element(By.CSS_SELECTOR, ".file").text for i in items] == [
            p.name for p in images.values()
        ]
        assert [i.find_element(By.CSS_SELECTOR, ".index").text for i in items] == ["#1", "#2"]
        for item, expected in zip(items, images):
            _check_confident(item, expected)

        _check_gradcam_and_zoom(browser, wait, tmp_path)
        ambiguous, threshold = _make_one_uncertain(browser, wait)
        _screenshot(browser, tmp_path, "results")
        _check_downloads(browser, downloads, ambiguous, threshold)
        assert _console_errors(browser) == []
    finally:
        process.terminate()
        communicate(process, "the server to exit after SIGTERM")
    assert process.returncode == 0


def _check_confident(item, expected: str) -> None:
    """A confident result: its label, bold, its bars in class order, and no badge."""
    from selenium.webdriver.common.by import By

    assert item.get_attribute("data-label") == expected
    label = item.find_element(By.CSS_SELECTOR, ".label")
    assert label.text.startswith(expected)
    assert int(label.value_of_css_property("font-weight")) >= 600
    assert item.get_attribute("data-uncertain") == "false"
    assert not item.find_elements(By.CSS_SELECTOR, ".badge")
    bars = item.find_elements(By.CSS_SELECTOR, ".bar[role=meter]")
    assert [b.get_attribute("data-class") for b in bars] == ["ankle_boot", "sneaker"]
    top = item.find_element(By.CSS_SELECTOR, f".bar[data-class={expected}]")
    assert float(top.get_attribute("aria-valuenow")) > 0.5
    assert "top" in top.get_attribute("class")


def _check_gradcam_and_zoom(browser, wait, tmp_path) -> None:
    """Grad-CAM by keyboard; a click enlarges it with its colour scale; Esc or a click closes."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    toggle = browser.find_element(By.ID, "gradcam")
    toggle.send_keys(Keys.SPACE)  # focus the checkbox, press space
    assert toggle.is_selected()
    wait.until(
        lambda d: (
            len(
                [
                    img
                    for img in d.find_elements(By.CSS_SELECTOR, "img.gradcam")
                    if d.execute_script("return arguments[0].naturalWidth", img)
                ]
            )
            == 2
        )
    )
    assert browser.find_element(By.ID, "gradcam-legend").is_displayed()
    assert not browser.find_elements(By.CSS_SELECTOR, ".error")

    dialog = browser.find_element(By.ID, "zoom")
    browser.find_element(By.CSS_SELECTOR, "li.result button.gradcam-zoom").click()
    wait.until(lambda d: dialog.get_attribute("open") is not None)
    image = browser.find_element(By.ID, "zoom-image")
    assert image.size["width"] > 400  # the 448-pixel-wide overlay, at least at its own size
    assert browser.find_element(By.ID, "zoom-legend").is_displayed()
    assert "Grad-CAM heatmap for sneaker_00009.png" in dialog.text
    _screenshot(browser, tmp_path, "zoom")
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)
    wait.until(lambda d: dialog.get_attribute("open") is None)

    browser.find_element(By.CSS_SELECTOR, "li.result button.thumb-zoom").click()
    wait.until(lambda d: dialog.get_attribute("open") is not None)
    assert image.size["width"] > 400  # the 28-pixel upload, scaled up
    assert not browser.find_element(By.ID, "zoom-legend").is_displayed()  # no heat map here
    _screenshot(browser, tmp_path, "zoom_image")
    dialog.click()
    wait.until(lambda d: dialog.get_attribute("open") is None)


def _make_one_uncertain(browser, wait) -> tuple[str, float]:
    """Moves the threshold next to the least sure image's P(sneaker): it turns uncertain."""
    from selenium.webdriver.common.by import By

    items = browser.find_elements(By.CSS_SELECTOR, "li.result")
    p = {
        i.find_element(By.CSS_SELECTOR, ".file").text: float(
            i.find_element(By.CSS_SELECTOR, ".bar[data-class=sneaker]").get_attribute(
                "aria-valuenow"
            )
        )
        for i in items
    }
    name = min(p, key=lambda n: abs(p[n] - 0.5))
    assert 0.02 <= p[name] <= 0.98, f"the demo model is too sure of both images: {p}"
    threshold = round(p[name], 2)
    # As dragging the slider would: set its value and fire the input event.
    browser.execute_script(
        "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'))",
        browser.find_element(By.ID, "threshold"),
        str(threshold),
    )
    item = next(i for i in items if i.find_element(By.CSS_SELECTOR, ".file").text == name)
    wait.until(lambda d: item.get_attribute("data-uncertain") == "true")
    badge = item.find_element(By.CSS_SELECTOR, ".badge")
    assert badge.is_displayed() and badge.text.lower() == "uncertain"
    assert "within 0.10 of the decision threshold" in badge.get_attribute("title")
    verdict = item.find_element(By.CSS_SELECTOR, ".verdict").text
    assert f"near the threshold {threshold:.2f}" in verdict
    label = item.find_element(By.CSS_SELECTOR, ".label")
    assert int(label.value_of_css_property("font-weight")) < 600  # not shown as confident
    others = [i for i in items if i != item]
    assert [i.get_attribute("data-uncertain") for i in others] == ["false"]
    assert browser.find_element(By.ID, "status").text == "2 image(s) classified, 1 uncertain."
    return name, threshold


def _check_downloads(browser, downloads: Path, ambiguous: str, threshold: float) -> None:
    """CSV and JSON, built in the page: upload order, labels, flags, every class's p."""
    from selenium.webdriver.common.by import By

    browser.find_element(By.ID, "download-csv").click()
    saved = wait_for(lambda: sorted(downloads.glob("demo-predictions-*.csv")), "the CSV file")
    rows = list(csv.DictReader(io.StringIO(saved[0].read_text(encoding="utf-8"))))
    assert [r["file"] for r in rows] == [SNEAKER.name, ANKLE_BOOT.name]
    assert [r["index"] for r in rows] == ["1", "2"]
    assert [r["uncertain"] for r in rows] == [str(r["file"] == ambiguous).lower() for r in rows]
    for row in rows:
        assert float(row["threshold"]) == threshold
        assert abs(float(row["p_ankle_boot"]) + float(row["p_sneaker"]) - 1) < 1e-3
        assert float(row["probability"]) == float(row["p_" + row["label"]])
        assert row["error"] == ""
    assert rows[0]["label"] == "sneaker"

    browser.find_element(By.ID, "download-json").click()
    saved = wait_for(lambda: sorted(downloads.glob("demo-predictions-*.json")), "the JSON file")
    exported = json.loads(saved[0].read_text(encoding="utf-8"))
    assert exported["model"] == "demo" and exported["notice"] == NOTICE
    assert exported["classes"] == ["ankle_boot", "sneaker"]
    results = exported["results"]
    assert [r["file"] for r in results] == [r["file"] for r in rows]
    assert [r["uncertain"] for r in results] == [r["uncertain"] == "true" for r in rows]
    assert [r["label"] for r in results] == [r["label"] for r in rows]
    assert all(set(r["probabilities"]) == {"ankle_boot", "sneaker"} for r in results)


def _console_errors(browser) -> list[str]:
    return [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def _screenshot(browser, tmp_path: Path, what: str) -> None:
    """A screenshot; CNNCLF_SCREENSHOTS=DIR keeps a copy, page_<what>.png, to look at."""
    shot = tmp_path / f"page_{what}.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("CNNCLF_SCREENSHOTS"):
        shutil.copy(shot, Path(os.environ["CNNCLF_SCREENSHOTS"]) / shot.name)


# (probabilities, classes, threshold, uncertain, label, words of the reason)
VERDICTS = [
    ((0.305, 0.3, 0.2, 0.195), "abcd", None, True, "a", "top class 30.5% is under 50.0%"),
    ((0.88, 0.06, 0.03, 0.03), "abcd", None, False, "a", ""),
    ((0.05, 0.55, 0.4), "abc", None, True, "b", "only 15.0 points ahead of c (40.0%)"),
    ((0.6, 0.3, 0.1), "abc", None, False, "a", ""),
    ((0.45, 0.55), "ab", 0.5, True, "b", "P(b) 0.550 is near the threshold 0.50"),
    ((0.3, 0.7), "ab", 0.5, False, "b", ""),
    ((0.96, 0.04), "ab", 0.05, True, "a", "(uncertain from 0.03 to 0.15)"),
    ((1.0, 0.0), "ab", 0.05, False, "a", ""),  # the band shrinks near 0: 0.00 is sure
]


def test_uncertain_rule_and_a_hidden_notice(demo_bundle, browser):
    """`--notice ''` shows no notice line; the page's uncertainty rule, case by case."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    process, url = start_server(demo_bundle, "--name", "demo", "--notice", "")
    try:
        browser.get(url)
        wait = WebDriverWait(browser, WAIT_S)
        wait.until(lambda d: "Classes" in d.find_element(By.ID, "card").text)
        assert not browser.find_element(By.ID, "notice").is_displayed()
        assert browser.execute_script("return state.card.notice") is None
        for probabilities, classes, threshold, uncertain, label, reason in VERDICTS:
            got = browser.execute_script(
                "return verdict(arguments[0], arguments[1], arguments[2])",
                dict(zip(classes, probabilities)),
                list(classes),
                threshold,
            )
            assert (got["uncertain"], got["label"]) == (uncertain, label), (probabilities, got)
            assert reason in got["reason"] and bool(got["reason"]) == uncertain, got
        assert _console_errors(browser) == []
    finally:
        process.terminate()
        communicate(process, "the server to exit after SIGTERM")
    assert process.returncode == 0


@pytest.fixture(scope="module")
def multi_label_data(tmp_path_factory):
    from multilabel_data import write_label_file

    folder = tmp_path_factory.mktemp("multilabel")
    write_label_file(folder, "train", 24, 0)
    write_label_file(folder, "test", 8, 100)
    return folder


def test_page_shows_every_label_of_a_multi_label_model(
    multi_label_data, browser, downloads, tmp_path
):
    """Every class's bar with its own threshold tick, the labels as chips, "(no label)", the
    uncertainty per class, and labels in the downloads."""
    from multilabel_data import CLASSES, train_multi_label
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    bundle = train_multi_label(multi_label_data, tmp_path)
    images = sorted((multi_label_data / "img").glob("test_*.png"))
    expected = {
        row["path"].rsplit("/", 1)[-1]: row
        for row in json.loads(
            run_cli("predict", "--model", bundle, "--format", "json", *images).stdout
        )
    }
    process, url = start_server(bundle, "--name", "tags")
    try:
        browser.get(url)
        wait = WebDriverWait(browser, WAIT_S)
        wait.until(lambda d: "Classes" in d.find_element(By.ID, "card").text)
        assert "each at or over its own threshold" in browser.find_element(By.ID, "card").text
        assert not browser.find_element(By.ID, "threshold-box").is_displayed()
        assert "of its own threshold" in browser.find_element(By.ID, "rule").text
        browser.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in images))
        done = "li.result[data-label], li.result[data-failed]"
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, done)) == len(images))
        for item in browser.find_elements(By.CSS_SELECTOR, "li.result"):
            row = expected[item.find_element(By.CSS_SELECTOR, ".file").text]
            chips = item.find_elements(By.CSS_SELECTOR, ".chip")
            assert [c.get_attribute("data-class") for c in chips] == row["labels"]
            if not row["labels"]:
                assert item.find_element(By.CSS_SELECTOR, ".label").text == "(no label)"
            bars = item.find_elements(By.CSS_SELECTOR, ".bar[role=meter]")
            assert [b.get_attribute("data-class") for b in bars] == list(CLASSES)
            for bar in bars:
                name = bar.get_attribute("data-class")
                mark = bar.find_element(By.CSS_SELECTOR, ".mark")
                assert mark.get_attribute("title") == f"threshold {row['thresholds'][name]:.2f}"
                assert ("top" in bar.get_attribute("class")) == (name in row["labels"])
            near = [c for c in CLASSES if _near(row["probabilities"][c], row["thresholds"][c])]
            assert item.get_attribute("data-uncertain") == str(bool(near)).lower(), (row, near)
        assert any(not r["labels"] for r in expected.values())  # "(no label)" was on show
        assert any(len(r["labels"]) > 1 for r in expected.values())
        _screenshot(browser, tmp_path, "multilabel")
        shot = tmp_path / "page_multilabel.png"
        if Path("/tmp/h").is_dir():
            shutil.copy(shot, "/tmp/h/page_multilabel.png")

        browser.find_element(By.ID, "download-csv").click()
        saved = wait_for(lambda: sorted(downloads.glob("tags-predictions-*.csv")), "the CSV file")
        rows = list(csv.DictReader(io.StringIO(saved[0].read_text(encoding="utf-8"))))
        assert [r["file"] for r in rows] == [p.name for p in images]
        for r in rows:
            assert r["labels"].split() == expected[r["file"]]["labels"]
            assert float(r["threshold_left"]) == pytest.approx(
                expected[r["file"]]["thresholds"]["left"]
            )
        browser.find_element(By.ID, "download-json").click()
        saved = wait_for(lambda: sorted(downloads.glob("tags-predictions-*.json")), "the JSON")
        results = json.loads(saved[0].read_text(encoding="utf-8"))["results"]
        assert [r["labels"] for r in results] == [expected[p.name]["labels"] for p in images]
        assert all(set(r["thresholds"]) == set(CLASSES) for r in results)
        assert _console_errors(browser) == []
    finally:
        process.terminate()
        communicate(process, "the server to exit after SIGTERM")
    assert process.returncode == 0


def _near(p: float, t: float) -> bool:
    """The page's band around a threshold (app.js UNCERTAIN.band, shrunk near 0 and 1)."""
    return t - min(0.1, t / 2) < p < t + min(0.1, (1 - t) / 2)


# (probabilities, thresholds, labels, uncertain classes)
MULTI_LABEL_VERDICTS = [
    ((0.9, 0.05), (0.5, 0.5), ["a"], []),
    ((0.55, 0.45), (0.5, 0.5), ["a"], ["a", "b"]),  # b may be a missing label
    ((0.2, 0.1), (0.5, 0.5), [], []),
    ((0.04, 0.9), (0.05, 0.5), ["b"], ["a"]),  # the band shrinks near 0: 0.04 is near 0.05
    ((0.0, 0.69), (0.05, 0.6), ["b"], ["b"]),
]


def test_multi_label_uncertain_rule(demo_bundle, browser):
    """The page's multi-label rule, case by case (a pure function, any model's page)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    process, url = start_server(demo_bundle, "--name", "demo")
    try:
        browser.get(url)
        WebDriverWait(browser, WAIT_S).until(
            lambda d: "Classes" in d.find_element(By.ID, "card").text
        )
        for probabilities, thresholds, labels, unsure in MULTI_LABEL_VERDICTS:
            got = browser.execute_script(
                "return multiLabelVerdict(arguments[0], ['a', 'b'], arguments[1])",
                dict(zip("ab", probabilities)),
                dict(zip("ab", thresholds)),
            )
            assert got["labels"] == labels and got["uncertainClasses"] == unsure, got
            assert got["uncertain"] == bool(unsure) and bool(got["reason"]) == bool(unsure)
            assert got["label"] == (", ".join(labels) or "(no label)")
    finally:
        process.terminate()
        communicate(process, "the server to exit after SIGTERM")
    assert process.returncode == 0


def test_page_asks_for_the_token_once(demo_bundle, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    image = DEMO / "test_set" / "sneaker" / "sneaker_00009.png"
    process, url = start_server(demo_bundle, "--token", "page-token")
    try:
        browser.get(url)
        wait = WebDriverWait(browser, WAIT_S)
        form = browser.find_element(By.ID, "token-form")
        wait.until(lambda d: form.is_displayed())
        field = browser.find_element(By.ID, "token")
        assert browser.switch_to.active_element == field  # focus is where typing goes
        field.send_keys("page-token\n")
        wait.until(lambda d: "Classes" in d.find_element(By.ID, "card").text)
        assert not form.is_displayed()
        browser.find_element(By.ID, "files").send_keys(str(image))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "li.result[data-label]"))
        assert (
            browser.find_element(By.CSS_SELECTOR, "li.result").get_attribute("data-label")
            == "sneaker"
        )
        assert not form.is_displayed()
    finally:
        process.terminate()
        communicate(process, "the server to exit after SIGTERM")
    assert process.returncode == 0
