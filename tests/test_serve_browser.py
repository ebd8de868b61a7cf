"""The serve page in a real browser: Debian's chromium, driven by selenium, fully offline.

`.ci/run` installs `chromium` and `chromium-driver`; selenium is pointed at both, so its
selenium-manager never downloads a browser or a driver.
"""

import os
import shutil
from pathlib import Path

import pytest
from helpers import communicate, run_cli, start_server

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
def browser():
    os.environ.setdefault("SE_OFFLINE", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
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


def test_page_classifies_uploaded_images(demo_bundle, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    images = {
        "sneaker": DEMO / "test_set" / "sneaker" / "sneaker_00009.png",
        "ankle_boot": DEMO / "test_set" / "ankle_boot" / "ankle_boot_00132.png",
    }
    process, url = start_server(demo_bundle, "--name", "demo")
    try:
        browser.get(url)
        wait = WebDriverWait(browser, 60)
        wait.until(lambda d: "Classes" in d.find_element(By.ID, "card").text)
        card = browser.find_element(By.ID, "card").text
        assert "ankle_boot, sneaker" in card and "28×28 grayscale" in card
        assert "Validation accuracy" in card and "keras bundle" in card
        assert browser.find_element(By.ID, "threshold-box").is_displayed()

        browser.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in images.values()))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "li.result[data-label]")) == 2)
        for item in browser.find_elements(By.CSS_SELECTOR, "li.result"):
            name = item.find_element(By.CSS_SELECTOR, ".file").text
            expected = next(label for label, path in images.items() if path.name == name)
            assert item.get_attribute("data-label") == expected
            assert item.find_element(By.CSS_SELECTOR, ".label").text.startswith(expected)
            bars = item.find_elements(By.CSS_SELECTOR, ".bar[role=meter]")
            assert [b.get_attribute("data-class") for b in bars] == ["ankle_boot", "sneaker"]
            top = item.find_element(By.CSS_SELECTOR, f".bar[data-class={expected}]")
            assert float(top.get_attribute("aria-valuenow")) > 0.5
            assert "top" in top.get_attribute("class")

        # Grad-CAM by keyboard: focus the checkbox, press space.
        toggle = browser.find_element(By.ID, "gradcam")
        toggle.send_keys(Keys.SPACE)
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
        assert not browser.find_elements(By.CSS_SELECTOR, ".error")
        shot = tmp_path / "serve-page.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("CNNCLF_SCREENSHOT"):  # a copy to look at after the run
            shutil.copy(shot, os.environ["CNNCLF_SCREENSHOT"])
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
        wait = WebDriverWait(browser, 60)
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
