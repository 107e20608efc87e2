"""The browser page in a real headless Chromium (Debian's, driven by Selenium): its fake microphone plays the
bundled sample into the realtime WebSocket, and the upload form transcribes a file."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from parakeet_serve.engine import NemoEngine
from parakeet_serve.warmup import sample_path
from tests.conftest import LoopThread, Served, start_server
from tests.test_cli import free_port

SAMPLE_TEXT = sample_path().with_suffix(".txt").read_text().strip()
SAMPLE_END = " ".join(SAMPLE_TEXT.split()[-3:])  # the fake microphone may cut the first loop's start


@pytest.fixture(scope="module")
def demo(loop_thread: LoopThread, demo_engine: NemoEngine) -> Iterator[Served]:
    served = start_server(loop_thread, demo_engine, model_id="demo", http_port=free_port(), max_streams=4)
    yield served
    served.stop()


@pytest.fixture(scope="module")
def microphone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the fake microphone plays (on a loop): the sample, then silence so the utterance ends."""
    audio, rate = sf.read(sample_path(), dtype="float32")
    path = tmp_path_factory.mktemp("mic") / "mic.wav"
    sf.write(path, np.concatenate([np.zeros(rate // 2, np.float32), audio, np.zeros(3 * rate, np.float32)]), rate)
    return path


@pytest.fixture
def browser(microphone: Path, tmp_path: Path) -> Iterator[webdriver.Chrome]:
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver:
        pytest.fail("chromium and chromedriver are not installed: run tests/tools/install-system-tools.sh")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--no-first-run",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-audio-capture={microphone}", "--autoplay-policy=no-user-gesture-required",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,900"):
        options.add_argument(flag)
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    try:
        yield chrome
    finally:
        chrome.quit()


def test_the_microphone_streams_and_the_page_shows_the_transcript(demo: Served, browser: webdriver.Chrome,
                                                                  tmp_path: Path) -> None:
    browser.get(f"http://127.0.0.1:{demo.app.http.port}/")
    WebDriverWait(browser, 20).until(lambda b: "demo" in b.find_element(By.ID, "model").text)
    browser.find_element(By.ID, "start").click()
    # The fake microphone loops its file from wherever it is when capture starts, so the first utterance
    # may be cut; the next loops are whole.
    def heard_the_sample(b: webdriver.Chrome) -> str | None:
        text = b.find_element(By.ID, "finals").text
        return text if SAMPLE_END in text.lower() else None

    assert WebDriverWait(browser, 90).until(heard_the_sample)
    assert browser.save_screenshot(str(tmp_path / "page.png"))  # the README's docs/page.png came from here


def test_the_upload_form_shows_the_text_and_word_times(demo: Served, browser: webdriver.Chrome) -> None:
    browser.get(f"http://127.0.0.1:{demo.app.http.port}/")
    browser.find_element(By.ID, "file").send_keys(str(sample_path()))
    browser.find_element(By.CSS_SELECTOR, "#upload button").click()
    WebDriverWait(browser, 60).until(lambda b: b.find_element(By.ID, "words").text or None)
    assert browser.find_element(By.ID, "file-text").text.lower().rstrip(".") == SAMPLE_TEXT
    assert SAMPLE_TEXT.split()[-1] in browser.find_element(By.ID, "words").text


def test_stop_in_the_middle_of_an_utterance_keeps_its_words(demo: Served, browser: webdriver.Chrome) -> None:
    """Stop commits what was heard and waits for its transcript before closing: the grey words become final."""
    browser.get(f"http://127.0.0.1:{demo.app.http.port}/")
    WebDriverWait(browser, 20).until(lambda b: "demo" in b.find_element(By.ID, "model").text)
    browser.find_element(By.ID, "start").click()
    heard = WebDriverWait(browser, 60, poll_frequency=0.05).until(
        lambda b: len(text.split()) >= 2 and text if (text := b.find_element(By.ID, "interim").text) else None)
    browser.find_element(By.ID, "stop").click()
    WebDriverWait(browser, 30).until(lambda b: b.find_element(By.ID, "mic-status").text == "Stopped.")
    assert browser.find_element(By.ID, "interim").text == ""
    finals = browser.find_element(By.ID, "finals").text
    assert heard.split()[0] in finals.split(), (heard, finals)
