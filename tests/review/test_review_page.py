"""review_page.py: the editable review page, driven end to end in a real headless Chromium
(Debian's `chromium` + `chromium-driver`, through Selenium; nothing is downloaded): correct
two labels by keyboard and one by mouse, confirm one, reload, download review.csv, import it.

Without a browser the browser tests skip, saying why; under CI (the CI variable set) a
missing browser fails them instead (.ci/run installs it).
"""
import json
import math
import os
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import review
from safehil.review import review_page
from safehil.core.spreadsheet import protect_cell, unprotect_cell

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVER = "chromedriver"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """(a headless Chromium WebDriver, its download folder)."""
    binary = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    driver_path = shutil.which(DRIVER)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        webdriver = None
    missing = [what for what, found in (("chromium", binary), ("chromedriver", driver_path),
                                        ("the selenium package", webdriver)) if not found]
    if missing:
        reason = (f"review page browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver; "
                  "pip install -r requirements.txt)")
        if in_ci():
            pytest.fail(f"CI is set but {reason}")
        pytest.skip(reason)
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    yield driver, downloads
    driver.quit()


@pytest.fixture(scope="module")
def batch(checkpoint_pair, tmp_path_factory):
    """An exported review folder of the pair on the test split (24 images, no thresholds)."""
    a, b = checkpoint_pair
    out = tmp_path_factory.mktemp("page") / "batch"
    assert review.cli(["export", "--checkpoints", f"{a},{b}", "--split", "test", "--T", "4",
                       "--display_size", "48", "--device", "cpu", "--out_dir", str(out)]) == 0
    return out


def open_page(driver, folder: Path):
    driver.get((folder / "review.html").resolve().as_uri())
    wait_for(lambda: driver.find_elements("css selector", ".card"), "the page shows no card")


def wait_for(condition, message: str, timeout: float = 10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(message)


def press(driver, key: str):
    from selenium.webdriver.common.action_chains import ActionChains
    ActionChains(driver).send_keys(key).perform()


def test_page_corrects_by_keyboard_and_mouse_keeps_it_across_a_reload_and_downloads_what_import_takes(
        browser, batch, tmp_path):
    from selenium.webdriver.common.keys import Keys
    driver, downloads = browser
    batch = Path(shutil.copytree(batch, tmp_path / "batch"))  # the import below writes into the folder
    meta = json.loads((batch / "review_meta.json").read_text())
    classes = meta["class_names"]
    rows = review.read_review_csv(batch / "review.csv")
    predicted = rows["predicted_label"].tolist()

    def other(i):  # a class that is not row i's prediction, and the digit key that picks it
        c = (classes.index(predicted[i]) + 1) % len(classes)
        return classes[c], str(c + 1)

    open_page(driver, batch)
    driver.execute_script("localStorage.clear()")
    driver.refresh()
    open_page(driver, batch)
    assert len(driver.find_elements("css selector", ".card")) == 24  # one page of 24
    # keyboard: rows 0 and 1 corrected by digit (each moves on), row 2 confirmed with Enter, row 3 skipped
    label_0, key_0 = other(0)
    label_1, key_1 = other(1)
    press(driver, key_0)
    press(driver, key_1)
    press(driver, Keys.ENTER)
    press(driver, Keys.ARROW_RIGHT)
    assert driver.execute_script("return shown[active]") == 4  # the next card is the active one
    # mouse: row 5 corrected by clicking a class button on its card
    label_5, _ = other(5)
    driver.find_element("css selector", f'.card[data-row="5"] button[data-label="{label_5}"]').click()
    progress = driver.find_element("id", "progress")
    assert progress.get_attribute("data-reviewed") == "4" and "3 corrected" in progress.text
    assert "confirmed" in driver.find_element("css selector", '.card[data-row="2"]').get_attribute("class")

    driver.refresh()  # the decisions survive a reload (local storage, keyed by the batch)
    open_page(driver, batch)
    # the cards can be drawn before the restored decisions are counted: wait for the count, as a person would
    wait_for(lambda: driver.find_element("id", "progress").get_attribute("data-reviewed") == "4",
             "the decisions did not survive the reload")
    assert f"corrected to {label_1}" in driver.find_element("css selector", '.card[data-row="1"]').text

    # filters: referred only, one predicted class, paging
    driver.find_element("id", "f-referred").click()
    assert len(driver.find_elements("css selector", ".card")) == int((rows["referred"] == "True").sum())
    driver.find_element("id", "f-referred").click()
    from selenium.webdriver.support.ui import Select
    Select(driver.find_element("id", "f-class")).select_by_value(predicted[0])
    assert len(driver.find_elements("css selector", ".card")) == predicted.count(predicted[0])
    Select(driver.find_element("id", "f-class")).select_by_value("")
    Select(driver.find_element("id", "f-size")).select_by_value("12")
    assert len(driver.find_elements("css selector", ".card")) == 12
    press(driver, "]")
    assert driver.execute_script("return page") == 1 and len(driver.find_elements("css selector", ".card")) == 12

    for stale in downloads.glob("*"):
        stale.unlink()
    driver.find_element("id", "download").click()
    got = wait_for(lambda: [p for p in downloads.glob("*.csv")], "no review.csv was downloaded")[0]
    wait_for(lambda: not list(downloads.glob("*.crdownload")), "the download did not finish")

    # byte for byte what review.py writes for the same decisions (the 4 reviewed rows, in order)
    expected = rows.iloc[[0, 1, 2, 5]].copy()
    expected["corrected_label"] = [label_0, label_1, "", label_5]
    review.write_review_csv(tmp_path / "expected.csv", expected)
    assert got.read_bytes() == (tmp_path / "expected.csv").read_bytes()

    # the operator saves it into the batch folder and imports it
    shutil.copy(got, batch / "review.csv")
    split_csv = tmp_path / "labelled.csv"
    assert review.cli(["import", "--review_csv", str(batch / "review.csv"), "--split_csv", str(split_csv)]) == 0
    added = pd.read_csv(split_csv, dtype=str, keep_default_na=False)
    assert added["path"].tolist() == rows["path"].iloc[[0, 1, 2, 5]].tolist()
    assert added["label"].tolist() == [label_0, label_1, predicted[2], label_5]
    assert (added["split"] == "train").all()
    report = json.loads((batch / "review.import.json").read_text())
    assert report["corrected"] == 3 and report["confirmed"] == 1


def test_page_csv_writer_guards_and_quotes_cells_exactly_like_review_py(browser, batch, tmp_path):
    driver, _ = browser
    open_page(driver, batch)
    nasty = ["=cmd|' /C calc'!A0", "@SUM(A1)", "+1", "-1", "'quoted", "\tTab", "\rcr", "a,b", 'say "x"',
             "two\nlines", "plain", "", " spaced ", "ünï ✓"]
    guarded = driver.execute_script("return arguments[0].map(protectCell)", nasty)
    assert guarded == [protect_cell(v) for v in nasty]
    assert driver.execute_script("return arguments[0].map(v => unprotectCell(protectCell(v)))", nasty) == \
        [unprotect_cell(protect_cell(v)) for v in nasty]
    # a whole CSV through the page's writer against pandas + the formula guard
    frame = pd.DataFrame({"label": nasty, "score": [float(i) / 4 for i in range(len(nasty))]})
    path = review.atomic_write_spreadsheet_csv(tmp_path / "py.csv", frame, numeric_columns=("score",))
    python_lines = path.read_bytes().decode("utf-8")
    page_lines = driver.execute_script(
        "const rows = arguments[0]; return [csvLine(['label', 'score'])].concat("
        "rows.map(r => csvLine([protectCell(r[0]), r[1]]))).join('\\n') + '\\n'",
        [[v, repr(s)] for v, s in zip(frame["label"], frame["score"])])
    assert page_lines == python_lines


def test_page_batch_holds_the_csv_cells_and_pictures_at_the_model_input_size(batch, checkpoint_pair):
    html = (batch / "review.html").read_text(encoding="utf-8")
    data = review_page.read_page_batch(batch / "review.html")
    header, cells, newline = review_page.read_csv_cells(batch / "review.csv")
    assert data["header"] == header == list(review.REVIEW_COLUMNS) and data["rows"] == cells and newline == "\n"
    size = torch.load(checkpoint_pair[0], weights_only=True)["image_size"]
    assert {tuple(c["size"]) for c in data["cards"]} == {(size, size)}  # as model A saw it, not --display_size
    inside = ("data:image/png;base64,", "data:image/jpeg;base64,")
    assert all(c["picture"].startswith(inside) for c in data["cards"])
    assert all(len(c["overlays"]) == 2 and all(o["heat"].startswith(inside) for o in c["overlays"])
               for c in data["cards"])
    assert all(c["second"] in data["class_names"] and c["second"] != p for c, p in
               zip(data["cards"], (r[header.index("predicted_label")] for r in cells)))
    assert all(0 < c["second_confidence"] <= c["confidence"] <= 1 for c in data["cards"])
    assert "http://" not in html and "https://" not in html  # nothing fetched


def test_second_choice_is_the_runner_up_class():
    probs = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]]).numpy()
    labels, values = review_page.second_choice(probs, ["a", "b", "c"])
    assert labels == ["c", "c"] and values == pytest.approx([0.2, 0.3])


def test_referral_reasons_name_each_part_of_the_rule_that_refers():
    rule = {"mode": "cascade", "threshold_a": 0.5, "threshold_b": 0.4, "certified": True}
    row = {"uncertainty": 0.7, "uncertainty_b": 0.1, "disagreement": "True", "predicted_label_b": "x"}
    reasons = review_page.referral_reasons(row, rule, "predictive entropy")
    assert reasons == ["referred: A's predictive entropy 0.700 is above its threshold 0.500",
                       "referred: the two models disagree (B says x)"]
    calm = review_page.referral_reasons({"uncertainty": 0.1, "uncertainty_b": math.nan, "disagreement": "False"},
                                        {**rule, "mode": "uncertainty_a"}, "predictive entropy")
    assert calm == ["not referred: A's within 0.500"]
    assert review_page.referral_reasons({"uncertainty": math.nan}, {**rule, "mode": "uncertainty_a"},
                                        "entropy") == ["referred: A's entropy is not a number"]


@pytest.fixture(scope="module")
def strip_batch(tiny_synthetic, tmp_path_factory):
    """A review folder written from pictures 16 x 64 (a strip, as a model on whole strips sees it)
    and grey ones, without a model (like the data-generation loop's steps)."""
    root, csv = tiny_synthetic
    paths = pd.read_csv(csv)["path"].tolist()[:3]
    rows = pd.DataFrame({"path": paths, "predicted_label": ["crazing", "-1", "=x"], "uncertainty": [0.5, 0.2, 0.1],
                         "disagreement": "", "referred": True, "risk": float("nan")})
    pictures = torch.randint(0, 256, (3, 3, 16, 64), dtype=torch.uint8)
    heat = {"saliency A": torch.rand(3, 16, 64)}
    meta = {"class_names": ["-1", "=x", "crazing"], "data_root": str(root), "source": "strips"}
    out = tmp_path_factory.mktemp("strips")
    review.write_review(out, rows, pictures, heat, meta, display_size=40)
    return out


def test_page_shows_a_strip_whole_at_its_aspect(browser, strip_batch):
    data = review_page.read_page_batch(strip_batch / "review.html")
    assert [c["size"] for c in data["cards"]] == [[64, 16]] * 3
    assert data["cards"][0]["reasons"] == ["strips: every image of it needs its label"]
    driver, _ = browser
    open_page(driver, strip_batch)
    img = driver.find_element("css selector", '.card[data-row="0"] img')
    canvas = driver.find_element("css selector", '.card[data-row="0"] canvas')
    assert img.size == {"width": 160, "height": 40} == canvas.size  # 40 px high, 4:1 like the strip
    wait_for(lambda: driver.execute_script(  # the overlay is drawn: the canvas holds the picture's pixels
        "const c = document.querySelector('.card canvas'); return c.width === 64 && c.height === 16 && "
        "c.getContext('2d').getImageData(0, 0, 64, 16).data.some(v => v > 0)"), "the saliency overlay was not drawn")


def test_grey_pictures_are_encoded_as_one_channel_and_colour_ones_as_three():
    from PIL import Image
    import base64
    import io
    def decoded(picture):
        uri = review_page.picture_data_uri(picture)
        return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    grey = torch.randint(0, 256, (1, 8, 20), dtype=torch.uint8)
    assert decoded(grey).size == (20, 8) and decoded(grey).mode == "L"
    assert decoded(grey.expand(3, -1, -1)).mode == "L"  # three equal channels: one
    colour = torch.randint(0, 256, (3, 8, 20), dtype=torch.uint8)
    assert decoded(colour).mode == "RGB"


def test_referral_words_give_the_certificate_or_why_there_is_none():
    rule = {"mode": "uncertainty_a", "threshold_a": 0.5, "threshold_b": math.inf, "certified": True,
            "certificate": "alpha = 0.01, delta = 0.05, n = 600 (certified)", "not_certified": []}
    words = review_page.referral_words(rule, {"thresholds": "th.json"})
    assert "model A's uncertainty is above its threshold" in words and "alpha = 0.01, delta = 0.05, n = 600" in words
    rule = {**rule, "certified": False, "not_certified": ["600 calibration images certify at best 0.005."]}
    words = review_page.referral_words(rule, {"thresholds": "th.json"})
    assert "NOT certified" in words and words.endswith("600 calibration images certify at best 0.005.")
