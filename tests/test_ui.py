"""`lookalike ui` in a real browser: Debian's Chromium, headless, driven by Selenium."""

from __future__ import annotations

import os
import re
import socket
import urllib.request
from pathlib import Path

import pytest
from conftest import tiny_clip_table
from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from builders import cropped_query, odd_images, product_photo
from running import TIMEOUT, RunningCommand, free_port, lookalike

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


class RunningUI(RunningCommand):
    """``lookalike ui`` on a free port, its output in ``ui.log``."""

    def __init__(self, workspace):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(workspace, "ui", ("--port", str(self.port)), "ui.log")
        try:
            self.wait_for(self.healthy, "the ui to start")
        except BaseException:
            self.kill()
            raise

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as response:
                return response.read() == b"ok"
        except OSError:
            return False


@pytest.fixture
def ui(workspace):
    running = RunningUI(workspace)
    yield running
    assert running.stop() == 0  # SIGTERM stops Streamlit cleanly


def chromium(profile: Path) -> webdriver.Chrome:
    """Debian's Chromium, headless, its profile in ``profile``."""
    assert Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(), (
        "Debian's chromium and chromium-driver are needed (.ci/run installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Headless, and nothing that would reach for the network this machine does not have.
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", f"--user-data-dir={profile}", "--window-size=1600,1300"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture
def browser(tmp_path):
    driver = chromium(tmp_path / "chromium")
    yield driver
    driver.quit()


def wait_for(browser, condition, what: str, timeout: float = TIMEOUT):
    try:
        # A panel that re-renders while it is read leaves stale elements: look again.
        return WebDriverWait(browser, timeout, poll_frequency=0.25, ignored_exceptions=(
            NoSuchElementException, StaleElementReferenceException)).until(condition)
    except WebDriverException:
        pytest.fail(f"the page never showed {what}; it shows:\n"
                    + body_text(browser)[:3000])


def image_alts(driver) -> list[str]:
    """The alt text of every image on the page: the app names each image by its path."""
    try:
        return [img.get_attribute("alt") or "" for img in driver.find_elements(By.TAG_NAME, "img")]
    except StaleElementReferenceException:  # the page re-rendered while read; look again
        return []


def ranked_first(driver) -> str | None:
    first = [alt for alt in image_alts(driver) if alt.startswith("rank 1: ")]
    return first[0].removeprefix("rank 1: ") if first else None


def click(browser, by: str, selector: str, what: str) -> None:
    """Click the element, looking it up again if the panel it is in re-renders meanwhile
    (the catalogue panels refresh every few seconds)."""
    def clicked(driver) -> bool:
        try:
            driver.find_element(by, selector).click()
            return True
        except WebDriverException:
            return False

    wait_for(browser, clicked, what)


def body_text(driver) -> str:
    return driver.find_element(By.TAG_NAME, "body").text


UPLOADER = ".st-key-upload input[type=file]"


def upload(browser, path: Path) -> None:
    browser.find_element(By.CSS_SELECTOR, UPLOADER).send_keys(str(path))


@pytest.fixture
def backend(request, workspace) -> str:
    """The workspace's database: SQLite unless a test asks for "postgresql" (indirect)."""
    kind = getattr(request, "param", "sqlite")
    if kind == "postgresql":
        workspace.write_config(database=request.getfixturevalue("database"))
    return kind


@pytest.fixture
def indexed(workspace, catalogue, backend):
    """The test catalogue, one file that is not an image, indexed by `lookalike index`."""
    workspace.add_catalogue(catalogue)
    (workspace.images / "notes.jpg").write_text("not a photo")
    result = lookalike(workspace, "index")
    assert result.returncode == 0, result.stderr
    return workspace


@pytest.mark.slow
def test_an_uploaded_photo_shows_its_catalogue_item_first(indexed, ui, browser, tmp_path):
    query = tmp_path / "shopper.jpg"
    cropped_query(product_photo(5)).save(query)
    browser.get(ui.url)
    wait_for(browser, lambda d: "item05.jpg" in image_alts(d), "the catalogue")
    upload(browser, query)
    assert wait_for(browser, ranked_first, "a ranked answer") == "item05.jpg"
    alts = image_alts(browser)
    assert "what the model saw" in alts and "query: shopper.jpg" in alts
    caption = "What the model saw: plain background cut out by its colour, padded to 224 px"
    assert caption in body_text(browser)
    # ResNet-18 reads no words: the box for them is there, greyed out.
    assert browser.find_element(By.CSS_SELECTOR, ".st-key-words input").get_attribute("disabled")
    assert len([alt for alt in alts if alt.startswith("rank ")]) == 10  # [query] k
    page = body_text(browser)
    assert re.search(r"#1 · 0\.9\d\d\nitem05\.jpg", page), page  # rank, similarity, path
    assert "Images indexed\n12" in page
    assert "Answered by this page's own index (12 images)" in page
    # The failed file and its error, as the store has them.
    assert "Failed files\n1" in page
    click(browser, By.XPATH, "//summary[contains(., 'Failed files (1)')]", "the failed files")
    wait_for(browser, lambda d: "notes.jpg: not an image Pillow can read" in body_text(d),
             "the failed file's error")
    screenshot = tmp_path / "ui-upload.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A file that is not a photo gets its one-line error; the page keeps working.
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    upload(browser, notes)
    wait_for(browser, lambda d: "notes.txt: not an image Pillow can read" in body_text(d),
             "the upload's error")
    assert ranked_first(browser) is None

    # A big-endian 16-bit TIFF (it once ended in a raw exception) is answered like any photo.
    deep = tmp_path / "deep.tif"
    deep.write_bytes(odd_images()["tiff-16-bit-big-endian.tif"])
    upload(browser, deep)
    wait_for(browser, ranked_first, "the TIFF's answer")
    page = body_text(browser)
    assert "What the model saw: plain background cut out by its colour, padded to 224" in page
    assert "Error" not in page and "Traceback" not in page

    # The catalogue browser filters by path.
    browser.find_element(By.CSS_SELECTOR, ".st-key-contains input").send_keys("item1\n")
    wait_for(browser, lambda d: sorted(a for a in image_alts(d) if a.endswith(".jpg")
                                       and ":" not in a) == ["item10.jpg", "item11.jpg"],
             "the filtered catalogue")
    assert "2 images whose path contains “item1”" in body_text(browser)


@pytest.fixture
def clip_indexed(workspace, catalogue, tiny_clip_files):
    """Six catalogue photos indexed by a CLIP embedder (the tiny test model)."""
    workspace.write_config(pipeline={"embedder": "clip", "remover": "none"},
                           clip=tiny_clip_table(tiny_clip_files))
    workspace.add_catalogue(catalogue, 6)
    result = lookalike(workspace, "index")
    assert result.returncode == 0, result.stderr
    return workspace


@pytest.mark.slow
def test_words_typed_in_the_page_are_answered_with_a_clip_embedder(clip_indexed, ui, browser,
                                                                   service_factory):
    browser.get(ui.url)
    wait_for(browser, lambda d: "item05.jpg" in image_alts(d), "the catalogue")
    words = browser.find_element(By.CSS_SELECTOR, ".st-key-words input")
    assert not words.get_attribute("disabled")
    words.send_keys("red floral summer dress\n")
    wait_for(browser, ranked_first, "a ranked answer")
    page = body_text(browser)
    assert "“red floral summer dress”" in page
    assert len([alt for alt in image_alts(browser) if alt.startswith("rank ")]) == 6
    assert "what the model saw" not in image_alts(browser)

    # With a service answering HTTP on the same database, the page asks it for the words.
    port = free_port()
    clip_indexed.config.write_text(clip_indexed.config.read_text()
                                   + f'\n[http]\nlisten = "127.0.0.1:{port}"\n')
    service = service_factory()
    wait_for(browser, lambda d: f"Answered by the service at http://127.0.0.1:{port}"
             in body_text(d), "the page asking the service")
    words = browser.find_element(By.CSS_SELECTOR, ".st-key-words input")
    words.send_keys(Keys.CONTROL, "a")
    words.send_keys("black leather boots\n")
    wait_for(browser, lambda d: "“black leather boots”" in body_text(d) and ranked_first(d),
             "the service's answer")
    assert len([alt for alt in image_alts(browser) if alt.startswith("rank ")]) == 6
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    asked = re.search(r'lookalike_request_seconds_count\{route="/query"\} (\S+)', metrics)
    assert asked and float(asked.group(1)) >= 1  # the words went to the service
    assert service.stop() == 0


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_a_catalogue_item_and_a_new_arrival_are_found_without_a_restart(
        indexed, ui, browser, service_factory, tmp_path):
    browser.get(ui.url)
    wait_for(browser, lambda d: "item03.jpg" in image_alts(d), "the catalogue")
    assert "Service not running" in body_text(browser)
    assert "Answered by this page's own index" in body_text(browser)
    click(browser, By.CSS_SELECTOR, ".st-key-find-item03-jpg button", "item03's button")
    assert wait_for(browser, ranked_first, "a ranked answer") == "item03.jpg"
    assert "(the query itself)" in body_text(browser)

    # The service indexes what arrives while the page is open, and answers it over HTTP.
    port = free_port()
    indexed.config.write_text(indexed.config.read_text()
                              + f'\n[http]\nlisten = "127.0.0.1:{port}"\n')
    service = service_factory()
    wait_for(browser, lambda d: "Service running (pid" in body_text(d), "the running service")
    wait_for(browser, lambda d: f"Answered by the service at http://127.0.0.1:{port}"
             in body_text(d), "the page asking the service")
    product_photo(12).save(indexed.images / "new-arrival.jpg", quality=92)
    wait_for(browser, lambda d: "new-arrival.jpg" in image_alts(d), "the new arrival")
    wait_for(browser, lambda d: "Images indexed\n13" in body_text(d), "the new count")
    query = tmp_path / "new-arrival-photo.jpg"
    cropped_query(product_photo(12)).save(query)
    upload(browser, query)
    assert wait_for(browser, lambda d: ranked_first(d) == "new-arrival.jpg" or None,
                    "the new arrival ranked first")
    browser.save_screenshot(str(tmp_path / "ui-new-arrival.png"))
    assert service.stop() == 0


def test_ui_serves_on_loopback_only_with_the_chosen_config(workspace, run_cli, monkeypatch):
    started = []
    monkeypatch.setattr(os, "execve", lambda *call: started.append(call))
    result = run_cli("ui", "--port", str(free_port()))
    assert result.exit_code == 0, result.output
    [(_, argv, env)] = started
    assert argv[1:4] == ["-m", "streamlit", "run"] and Path(argv[4]).name == "ui.py"
    assert "--server.address=127.0.0.1" in argv and "--browser.gatherUsageStats=false" in argv
    assert env["LOOKALIKE_CONFIG"] == str(workspace.config)


def test_ui_refuses_a_missing_model_or_a_busy_port_in_one_line(workspace, run_cli, monkeypatch):
    monkeypatch.setattr(os, "execve", lambda *call: pytest.fail("Streamlit was started"))
    workspace.write_config(resnet18={"weights": "imagenet"})
    result = run_cli("ui")
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "resnet18 model file not found at" in result.output

    workspace.write_config()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("ui", "--port", str(port))
    assert result.exit_code == 1 and result.output.strip() == (
        f"Error: cannot serve on 127.0.0.1:{port}: Address already in use; choose another --port")
    assert run_cli("ui", "--port", "0").exit_code == 2
