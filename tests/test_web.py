"""The web page in a real headless Chromium (Debian's chromium + chromedriver, driven by Selenium)
against a real `castfinder serve`: add a clip, search with refs photos while it ingests, check
thumbnails and timeline marks against truth.json, play a shot, show an API error in words, name a
cast cluster. A screenshot of the results goes to out/artifacts/."""

from __future__ import annotations

import shutil
import time

import pytest

from conftest import DEV, ROOT, clip, truth
from castfinder.index.evaluation import relevant_shots, true_shot_at
from service_helpers import Server

ARTIFACTS = ROOT / "out" / "artifacts"


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    assert shutil.which("chromium") and shutil.which("chromedriver"), "installed by scripts/setup.sh"
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1600",
                "--autoplay-policy=no-user-gesture-required"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("web") / "index", token="web-token")
    yield srv
    srv.stop()


def wait_for(fn, timeout=120, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_search_page_end_to_end(browser, server, tmp_path):
    from selenium.webdriver.common.by import By
    d = browser
    d.get(server.url + "/")
    assert d.title == "castfinder"
    # the server wants a token: the page asks for it, then works
    wait_for(lambda: d.find_element(By.ID, "token-box").is_displayed(), 20, "the token box")
    d.find_element(By.ID, "token").send_keys(server.token)
    d.find_element(By.ID, "token-save").click()

    # every form control has a label (keyboard and screen-reader use)
    for el in d.find_elements(By.CSS_SELECTOR, "input:not([type=checkbox]), select"):
        if el.get_attribute("id"):
            assert d.find_elements(By.CSS_SELECTOR, f"label[for='{el.get_attribute('id')}']"), el.get_attribute("id")

    # add the clip through the form; the videos table shows live progress
    d.find_element(By.ID, "source").send_keys(str(clip("friends")))
    d.find_element(By.CSS_SELECTOR, "#add-form button[type=submit]").click()
    row = wait_for(lambda: d.find_elements(By.CSS_SELECTOR, "#videos tbody tr[data-video]"), 30, "the video row")[0]
    video_id = row.get_attribute("data-video")

    # search while it ingests: three Joey photos
    photos = sorted((DEV / "friends" / "refs" / "Joey").iterdir())
    d.find_element(By.ID, "photos").send_keys("\n".join(str(p) for p in photos))
    d.find_element(By.ID, "character").send_keys("Joey")
    assert len(d.find_elements(By.CSS_SELECTOR, "#photo-list li")) == 3
    wait_for(lambda: server.client.get(f"/videos/{video_id}").json()["vectors"] > 0, 120, "first vectors")
    d.find_element(By.CSS_SELECTOR, "#search-form button[type=submit]").click()
    wait_for(lambda: d.find_elements(By.CSS_SELECTOR, "#results li"), 60, "first results")
    # the page re-asks while ingest runs: wait until ingest is done and the results have settled
    wait_for(lambda: server.client.get(f"/videos/{video_id}").json()["status"] == "done", 300, "ingest to finish")
    wait_for(lambda: "ingest running" not in d.find_element(By.ID, "progress-note").text, 30, "the last refresh")
    time.sleep(1)

    cards = d.find_elements(By.CSS_SELECTOR, "#results li")
    t = truth("friends")
    relevant = relevant_shots(t, "Joey")
    found = [true_shot_at(t, (float(c.get_attribute("data-start")) + float(c.get_attribute("data-end"))) / 2) for c in cards]
    assert set(found[:len(relevant)]) == relevant, (found, relevant)          # true shots first
    # thumbnails loaded (real JPEGs through the token in the URL), each with an alt text
    imgs = d.find_elements(By.CSS_SELECTOR, "#results img")
    wait_for(lambda: all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i) for i in imgs),
             60, "thumbnails")
    assert all(i.get_attribute("alt") for i in imgs)
    # one timeline mark per result, placed at its start time
    marks = d.find_elements(By.CSS_SELECTOR, "#timeline .mark")
    assert len(marks) == len(cards)
    first = cards[0]
    left = float(d.execute_script("return parseFloat(arguments[0].style.left)",
                                  d.find_element(By.CSS_SELECTOR, f"#timeline .mark[data-shot='{first.get_attribute('data-shot')}']")))
    duration = server.client.get(f"/videos/{video_id}").json()["duration_s"]
    assert abs(left - 100 * float(first.get_attribute("data-start")) / duration) < 0.5
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    d.save_screenshot(str(ARTIFACTS / "web-results.png"))

    # clicking a result plays that shot from its start
    first.find_element(By.TAG_NAME, "button").click()
    wait_for(lambda: d.find_element(By.ID, "player-box").is_displayed(), 10, "the player")
    current = wait_for(lambda: d.execute_script("const p = document.getElementById('player');"
                                                " return p.readyState >= 1 ? p.currentTime + 1e-6 : 0"), 30, "seek")
    assert abs(current - float(first.get_attribute("data-start"))) < 1.0

    # an API error is shown in words: a file that is not an image
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    d.find_element(By.ID, "photos").clear()
    d.find_element(By.ID, "photos").send_keys(str(bad))
    d.find_element(By.CSS_SELECTOR, "#search-form button[type=submit]").click()
    err = wait_for(lambda: d.find_element(By.ID, "error").is_displayed() and d.find_element(By.ID, "error").text, 30, "error")
    assert "not a readable image" in err
    d.save_screenshot(str(ARTIFACTS / "web-error.png"))

    # the cast: face strips, then a name
    d.find_element(By.ID, "cast-load").click()
    clusters = wait_for(lambda: d.find_elements(By.CSS_SELECTOR, "#cast li"), 120, "the cast")
    assert len(clusters) >= 4
    strip = clusters[0].find_element(By.TAG_NAME, "img")
    wait_for(lambda: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", strip), 60, "a face strip")
    box = clusters[0].find_element(By.TAG_NAME, "input")
    box.send_keys("Lead")
    clusters[0].find_element(By.TAG_NAME, "button").click()
    wait_for(lambda: "is now" in d.find_element(By.ID, "status").text, 30, "the naming to be confirmed")
    assert server.client.get(f"/videos/{video_id}/cast").json()["clusters"][0]["name"] == "Lead"
    d.save_screenshot(str(ARTIFACTS / "web-cast.png"))
