"""The browser page in headless Chromium, with a fake microphone fed from a WAV file.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium chromium-driver``) and the
``selenium`` package; skipped, saying so, only when Chromium is absent. The caller's WAV is real speech
from the local TTS (the testkit's energy VAD hears it; the testkit STT returns the scripted words).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.cloud_fixtures import cloud_fixture  # noqa: F401 (a pytest fixture, by name)
from tests.fakes import Behaviour, FakeOpenAI
from tests.simulators.server import RunningServer, free_port
from voxpipe.config.loader import parse_deployment
from voxpipe.web.app import create_app

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PAGE_TIMEOUT_SECS = 40

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None or shutil.which(CHROMEDRIVER) is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
)

DEPLOYMENT = """
name: web
agent:
  instructions: You are a scripted test agent.
  greeting: Welcome to the web agent.
vad: {provider: testkit_vad, start_secs: 0.1, stop_secs: 0.3}
turn: {strategy: silence, timeout_secs: 0.2}
stt: {provider: testkit_stt, options: {transcripts: ["what are your hours", "tell me more"]}}
llm:
  provider: testkit_llm
  options:
    replies:
      - {when: hours, say: "We are open nine to five."}
      - {when: more, say: "We also fix bicycles."}
      - {when: "*", say: "You said: {user}"}
tts: {provider: testkit_tts, options: {secs_per_char: 0.02}}
sessions: {store: sqlite, path: "DB"}
"""


def caller_wav(path: Path) -> Path:
    """Two questions with pauses long enough for the bot to answer (Chromium loops the file)."""
    from voxpipe.providers.builtin.local_tts import speak

    rate = 16000
    pause = np.zeros(int(3.5 * rate), dtype="<i2").tobytes()
    audio = pause + speak("What are your hours?", rate) + pause + speak("Tell me more.", rate) + pause * 2
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(audio)
    return path


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--autoplay-policy=no-user-gesture-required",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={caller_wav(tmp_path / 'caller.wav')}",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(PAGE_TIMEOUT_SECS)
    try:
        yield driver
    finally:
        driver.quit()


def lines(driver: object, role: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [item.text for item in driver.find_elements(By.CSS_SELECTOR, f"#transcript li.{role}")]


def wait_until(condition: object, timeout: float = PAGE_TIMEOUT_SECS) -> None:
    """Poll ``condition`` until it holds; an element the page has not made yet counts as not yet."""
    from selenium.common.exceptions import NoSuchElementException

    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except NoSuchElementException:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("the page did not show what was expected in time")
        time.sleep(0.2)


def test_browser_call_gets_a_token_shows_transcript_replies_and_latency_then_resumes(
    browser: object, tmp_path: Path, registry: object
) -> None:
    from selenium.webdriver.common.by import By

    db = tmp_path / "s.db"
    port = free_port()
    page = f"transport: {{browser: {{allowed_origins: ['http://127.0.0.1:{port}']}}}}\n"
    app = create_app([parse_deployment(DEPLOYMENT.replace("DB", str(db)) + page)], warm_up=False)
    with RunningServer(app, port) as server:
        browser.get(f"{server.url}/web/")
        wait_until(lambda: browser.find_element(By.ID, "title").text == "web")
        browser.find_element(By.ID, "call").click()
        wait_until(lambda: len(lines(browser, "assistant")) >= 3, timeout=60)
        assert lines(browser, "user")[:2] == ["what are your hours", "tell me more"]
        replies = lines(browser, "assistant")
        assert replies[0] == "Welcome to the web agent."
        assert replies[1].startswith("We are open nine to five.") and replies[1].endswith(" ms)")
        assert replies[2].startswith("We also fix bicycles.")
        kept = json.loads(browser.execute_script("return Object.values(sessionStorage)[0]"))
        session_id = kept["session_id"]  # chosen by the server, inside the signed token the tab keeps

        # Reload: the tab keeps its token, the server resumes the conversation (no second greeting).
        browser.refresh()
        wait_until(lambda: browser.find_element(By.ID, "title").text == "web")
        browser.find_element(By.ID, "call").click()
        wait_until(lambda: len(lines(browser, "assistant")) >= 1, timeout=60)
        assert lines(browser, "assistant")[0] != "Welcome to the web agent."
        browser.find_element(By.ID, "call").click()  # hang up
        time.sleep(1.0)

        # A token the server no longer takes (a restart with another secret): the call is refused with the
        # reason, the page drops the token, and the next press gets a fresh one (a new session: greeted).
        stale = json.dumps({"token": "e30.c2lnbmF0dXJl", "session_id": "x", "expires_at": time.time() + 3600})
        browser.execute_script("sessionStorage.setItem(Object.keys(sessionStorage)[0], arguments[0])", stale)
        browser.refresh()
        wait_until(lambda: browser.find_element(By.ID, "title").text == "web")
        browser.find_element(By.ID, "call").click()
        wait_until(
            lambda: "Call refused: session token refused: bad signature" in browser.find_element(By.ID, "status").text
        )
        browser.find_element(By.ID, "call").click()
        wait_until(lambda: lines(browser, "assistant")[:1] == ["Welcome to the web agent."], timeout=60)
        browser.find_element(By.ID, "call").click()  # hang up

        # The same page from an origin not listed (localhost is not 127.0.0.1): no token, no call.
        browser.get(f"http://localhost:{port}/web/")
        wait_until(lambda: browser.find_element(By.ID, "title").text == "web")
        browser.find_element(By.ID, "call").click()
        wait_until(lambda: "HTTP 403" in browser.find_element(By.ID, "status").text)
        assert not lines(browser, "assistant")

    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT message FROM messages WHERE call_id = ? ORDER BY seq", (session_id,))
        messages = [json.loads(row[0]) for row in rows]
    assert messages[:5] == [
        {"role": "assistant", "content": "Welcome to the web agent."},
        {"role": "user", "content": "what are your hours"},
        {"role": "assistant", "content": "We are open nine to five."},
        {"role": "user", "content": "tell me more"},
        {"role": "assistant", "content": "We also fix bicycles."},
    ]
    assert len(messages) > 5  # the resumed call added to the same conversation


#: The deployment above, with its TTS on the OpenAI fake (made to fail) and no backup.
FAILING_TTS = DEPLOYMENT.replace(
    "tts: {provider: testkit_tts, options: {secs_per_char: 0.02}}",
    'tts: {provider: openai, options: {api_key: "${OPENAI_API_KEY}", base_url: "${OPENAI_BASE_URL}"}}\n'
    'on_failure: {say: "Sorry, our line has a problem. Goodbye."}',
)
#: Records what the page asks the browser's own voice to say (headless Chromium has no voice to hear).
SPOKEN_PROBE = """
window.voxpipeSpoken = [];
const speakWithVoice = speechSynthesis.speak.bind(speechSynthesis);
speechSynthesis.speak = (utterance) => { window.voxpipeSpoken.push(utterance.text); speakWithVoice(utterance); };
"""


def test_browser_call_whose_tts_fails_shows_and_speaks_the_apology(
    browser: object, cloud: object, tmp_path: Path
) -> None:
    """The deployment's TTS answers 500 from the greeting on and there is no backup: the page shows
    ``on_failure``'s text and speaks it with the browser's own voice (the Web Speech API), within 2 s of the
    fault."""
    from selenium.webdriver.common.by import By

    with FakeOpenAI(Behaviour(api_key="test-key", fail_status=500, fail_count=1000)) as tts:
        environ = {"OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": tts.url + "/v1"}
        port = free_port()
        page = f"transport: {{browser: {{allowed_origins: ['http://127.0.0.1:{port}']}}}}\n"
        yaml = FAILING_TTS.replace("DB", str(tmp_path / "s.db")) + page
        app = create_app([parse_deployment(yaml, environ=environ)], warm_up=False)
        with RunningServer(app, port) as server:
            browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": SPOKEN_PROBE})
            browser.get(f"{server.url}/web/")
            wait_until(lambda: browser.find_element(By.ID, "title").text == "web")
            browser.find_element(By.ID, "call").click()
            apology = "Sorry, our line has a problem. Goodbye."
            wait_until(lambda: apology in lines(browser, "assistant"), timeout=20)
            shown_at = time.monotonic()
            spoken = browser.execute_script("return window.voxpipeSpoken")
            said = lines(browser, "assistant")
    faults = tts.requests("/v1/audio/speech")
    assert faults, "the greeting was never asked of the TTS"
    assert shown_at - faults[0]["time"] <= 2.0 + 0.2  # told within 2 s of the fault (the page is polled at 0.2 s)
    assert said == [apology]  # nothing else was shown: the greeting never played
    assert spoken == [apology]
