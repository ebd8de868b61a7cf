"""The review gallery in a real browser (Debian's chromium via selenium, offline): it shows the
flipped images, and its controls download a decisions.csv that `--apply` accepts."""

import csv
import os
import shutil

import pytest
from helpers import WAIT_S, make_tree, run_cli, wait_for, write_config
from test_serve_browser import CHROMEDRIVER, CHROMIUM, browser, downloads  # noqa: F401

pytestmark = [
    pytest.mark.slow,  # trains 3 fold models and starts a browser
    pytest.mark.skipif(
        not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
        reason="needs Debian's chromium and chromium-driver",
    ),
]
SCREENSHOT = os.environ.get("CNNCLF_REVIEW_SCREENSHOT", "/tmp/h/review_gallery.png")


def test_gallery_downloads_decisions(tmp_path, browser, downloads):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    train = make_tree(tmp_path / "data", n_classes=3, n_train=20, with_test=False) / "training_set"
    shutil.move(train / "hstripes" / "hstripes_002.bmp", train / "vstripes" / "hstripes_002.bmp")
    config = write_config(
        tmp_path / "r.yaml",
        tmp_path / "data",
        data={"train_dir": str(train), "test_dir": None, "image_size": [16, 16], "batch_size": 8},
        augment={"rescale": "1/255"},
        model={
            "conv_blocks": [{"filters": 8, "kernel_size": 3, "pool_size": 2}],
            "dense_units": [16],
        },
        train={"epochs": 6, "seed": 7, "learning_rate": 0.01},
    )
    out = tmp_path / "out"
    assert run_cli("review", "--config", config, "--folds", 3, "--out", out).exit_code == 0
    browser.get((out / "index.html").as_uri())
    cards = browser.find_elements(By.CSS_SELECTOR, "#label .card")
    assert cards and "hstripes_002.bmp" in cards[0].text
    assert browser.find_element(By.ID, "confusion").is_displayed()
    browser.find_element(By.ID, "accept").click()
    Select(browser.find_elements(By.CSS_SELECTOR, "#label select")[0]).select_by_value(
        "relabel:hstripes"
    )
    if os.path.isdir(os.path.dirname(SCREENSHOT)):
        browser.save_screenshot(SCREENSHOT)
    browser.find_element(By.ID, "download").click()
    saved = wait_for(lambda: list(downloads.glob("decisions.csv")), "decisions.csv", WAIT_S)[0]
    rows = list(csv.DictReader(saved.open()))
    assert rows[0]["action"] == "relabel" and rows[0]["label"] == "hstripes"
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    shutil.copy(saved, out / "decisions.csv")
    result = run_cli("review", "--apply", out / "decisions.csv", "--dry-run")
    assert result.exit_code == 0, result.output
