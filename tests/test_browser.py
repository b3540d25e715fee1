"""The page of the HTTP door in a real headless browser: Debian's chromium, driven by Selenium through
Debian's chromedriver (scripts/install.sh installs both as root; nothing is downloaded).

One browser and one server serve the module: the toy model (es→en), a copy of it that says it translates
en→es (so that there is a pair to swap to and two languages to detect between), and two copies that say
es→fr (a pair served by two models, the only one where the page shows a model list). Every wait is on a
state of the page (WebDriverWait), never on time.

``RNNMT_PAGE_SCREENSHOT=docs/page.png`` saves the 1,440 px layout's screenshot there (the README's).
"""

from __future__ import annotations

import os
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import relabelled_copies
from servers import running
from test_http import call

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
if CHROMIUM is None or DRIVER is None:
    pytest.skip(
        "no browser: install Debian's chromium and chromium-driver (scripts/install.sh does, as root)",
        allow_module_level=True,
    )
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in rnnmt[dev]")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

PARAGRAPH = "El perro come pan. Un gato bebe agua.\nEl niño ve pan."
TRANSLATED = "The dog eats bread. A cat drinks water.\nThe boy sees bread."
SCREENSHOT = os.environ.get("RNNMT_PAGE_SCREENSHOT", "")


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads: Path) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def port(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    copies = {
        "toy": {},
        "toy-en-es": {"source_language": "en", "target_language": "es"},
        "toy-es-fr": {"target_language": "fr"},
        "toy-es-fr-2": {"target_language": "fr"},
    }
    root = relabelled_copies(tmp_path_factory.mktemp("page_models"), model_dir / "toy", copies)
    with running(root, workers=1, http_port=0) as s:
        yield s.server.http_port


def opened(browser: Any, port: int, width: int = 1440, height: int = 900) -> WebDriverWait:
    """The page loaded afresh in a ``width`` × ``height`` viewport, once it lists the languages; returns a
    wait for what follows."""
    browser.get_log("browser")  # what earlier tests left
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
    )
    browser.get(f"http://127.0.0.1:{port}/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: len(Select(b.find_element(By.ID, "source-language")).options) > 1)
    return wait


def element(browser: Any, element_id: str) -> Any:
    return browser.find_element(By.ID, element_id)


def done(browser: Any) -> bool:
    """Whether the page has translated what is in the source pane (nothing pending, nothing in flight)."""
    return bool(element(browser, "result").get_attribute("aria-busy") == "false")


def translated(browser: Any, text: str) -> bool:
    """Whether the page shows ``text`` as the translation of what is in the source pane."""
    return done(browser) and element(browser, "result").text == text


def console_errors(browser: Any) -> list[str]:
    """The browser's console errors since the last call (each read empties the log)."""
    return [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def test_spanish_with_detect_language_comes_back_in_english_without_pressing_anything(
    browser: Any, port: int
) -> None:
    wait = opened(browser, port)
    assert Select(element(browser, "source-language")).first_selected_option.text == "Detect language"
    assert element(browser, "model-field").is_displayed() is False  # one model per pair: no model list
    element(browser, "source").send_keys(PARAGRAPH)
    wait.until(lambda b: translated(b, TRANSLATED))
    assert Select(element(browser, "source-language")).first_selected_option.text == "Spanish — detected"
    assert Select(element(browser, "target-language")).first_selected_option.text == "English"
    assert element(browser, "count").text == f"{len(PARAGRAPH)} characters"  # no limit: the count alone
    assert element(browser, "error").text == "" and not element(browser, "hint").is_displayed()

    # Copy; the test may read the clipboard (granting a set of permissions denies every other).
    clipboard = {
        "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"],
        "origin": f"http://127.0.0.1:{port}",
    }
    browser.execute_cdp_cmd("Browser.grantPermissions", clipboard)
    element(browser, "copy").click()
    wait.until(lambda b: b.find_element(By.ID, "copied").text == "Copied")
    assert browser.execute_async_script("navigator.clipboard.readText().then(arguments[0])") == TRANSLATED

    # Swap: the languages change places and the translation becomes the text to translate.
    element(browser, "swap").click()
    wait.until(lambda b: b.find_element(By.ID, "source").get_attribute("value") == TRANSLATED)
    source, target = Select(element(browser, "source-language")), Select(element(browser, "target-language"))
    assert (source.first_selected_option.text, target.first_selected_option.text) == ("English", "Spanish")
    status, answer = call(port, "/translate", {"q": TRANSLATED, "source": "en", "target": "es"})
    assert status == 200
    wait.until(lambda b: translated(b, answer["translatedText"]))  # what the server's en→es model says
    assert console_errors(browser) == []


def test_a_confident_detection_of_another_language_is_offered_as_a_fix(browser: Any, port: int) -> None:
    wait = opened(browser, port)
    Select(element(browser, "source-language")).select_by_value("en")
    element(browser, "source").send_keys(PARAGRAPH)
    wait.until(lambda b: b.find_element(By.ID, "hint").is_displayed())
    assert element(browser, "hint").text == "This looks like Spanish. Translate from Spanish?"
    element(browser, "hint-fix").click()
    wait.until(lambda b: translated(b, TRANSLATED))
    source, target = Select(element(browser, "source-language")), Select(element(browser, "target-language"))
    assert (source.first_selected_option.text, target.first_selected_option.text) == ("Spanish", "English")
    assert not element(browser, "hint").is_displayed()
    assert console_errors(browser) == []


def test_a_pair_served_by_two_models_shows_them(browser: Any, port: int) -> None:
    wait = opened(browser, port)
    Select(element(browser, "source-language")).select_by_value("es")
    Select(element(browser, "target-language")).select_by_value("fr")
    models = Select(element(browser, "model"))
    assert element(browser, "model-field").is_displayed()
    assert [o.text for o in models.options] == ["toy-es-fr (default)", "toy-es-fr-2"]
    models.select_by_index(1)  # translated by /v1/translate with that model
    element(browser, "source").send_keys("El gato ve leche.")
    wait.until(lambda b: translated(b, "The cat sees milk."))
    assert console_errors(browser) == []


def test_the_keyboard_alone_translates_and_picks_an_alternative(browser: Any, port: int) -> None:
    wait = opened(browser, port)
    keys = ActionChains(browser)

    def focused() -> str:
        return str(browser.switch_to.active_element.get_attribute("id"))

    keys.send_keys(Keys.TAB).perform()
    assert focused() == "source-language"
    keys.send_keys(Keys.ARROW_DOWN, Keys.ARROW_DOWN).perform()  # Detect language → English → Spanish
    assert Select(element(browser, "source-language")).first_selected_option.text == "Spanish"
    for expected in ("swap", "target-language", "text-tab", "source"):
        keys.send_keys(Keys.TAB).perform()
        assert focused() == expected
    keys.send_keys(PARAGRAPH).key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform()
    wait.until(lambda b: translated(b, TRANSLATED))

    keys.send_keys(Keys.TAB, Keys.TAB).perform()  # past the Translate button, to the first sentence
    sentence = browser.switch_to.active_element
    assert sentence.get_attribute("role") == "button" and sentence.text == "The dog eats bread."
    keys.send_keys(Keys.ENTER).perform()  # its alternatives, the first one focused
    assert element(browser, "alternatives").is_displayed()
    alternatives = [b.text for b in browser.find_elements(By.CSS_SELECTOR, "#alternatives-list button")]
    assert alternatives and "The dog eats bread." not in alternatives
    assert browser.switch_to.active_element.text == alternatives[0]
    keys.send_keys(Keys.ESCAPE).perform()  # closed, back on the sentence
    assert (
        not element(browser, "alternatives").is_displayed() and browser.switch_to.active_element == sentence
    )
    keys.send_keys(
        Keys.SPACE, Keys.ENTER
    ).perform()  # opened again; the first alternative replaces the sentence
    assert not element(browser, "alternatives").is_displayed()
    assert browser.switch_to.active_element.text == alternatives[0]
    assert element(browser, "result").text == TRANSLATED.replace("The dog eats bread.", alternatives[0])

    # The tabs: arrows move between them.
    keys.key_down(Keys.SHIFT).send_keys(Keys.TAB, Keys.TAB, Keys.TAB).key_up(Keys.SHIFT).perform()
    assert focused() == "text-tab"
    keys.send_keys(Keys.ARROW_RIGHT).perform()
    assert focused() == "files-tab" and element(browser, "file").is_displayed()
    assert not element(browser, "source").is_displayed()
    assert console_errors(browser) == []


def test_a_file_is_translated_and_downloaded(
    browser: Any, port: int, downloads: Path, tmp_path: Path
) -> None:
    wait = opened(browser, port)
    element(browser, "files-tab").click()
    assert ".txt" in element(browser, "formats").text and ".docx" in element(browser, "file").get_attribute(
        "accept"
    )
    letter = tmp_path / "letter.txt"
    letter.write_text("El perro come pan.\n\nUn gato bebe agua.\n", encoding="utf-8")
    element(browser, "file").send_keys(str(letter))
    element(browser, "translate-file").click()
    wait.until(lambda b: b.find_element(By.ID, "download").is_displayed())
    assert element(browser, "file-status").text == "Translated."
    assert element(browser, "download").text == "Download letter.txt (English)"
    element(browser, "download").click()
    saved = downloads / "letter.txt"
    wait.until(lambda _: saved.exists())  # Chrome writes letter.txt.crdownload, then renames it
    assert saved.read_text(encoding="utf-8") == "The dog eats bread.\n\nA cat drinks water.\n"
    assert console_errors(browser) == []


def test_an_error_from_the_server_is_shown_in_place(browser: Any, port: int) -> None:
    wait = opened(browser, port)
    element(browser, "source").send_keys("perro " * 300)  # one sentence over the model's limit
    wait.until(lambda b: done(b) and b.find_element(By.ID, "error").text != "")
    assert "texts[0]" in element(browser, "error").text and element(browser, "result").text == ""
    assert all("status of 400" in message for message in console_errors(browser))  # the refused call only


@pytest.mark.parametrize("width", [360, 1440])
def test_the_layout_fits_the_screen(browser: Any, port: int, width: int) -> None:
    wait = opened(browser, port, width, 800 if width < 600 else 640)
    element(browser, "source").send_keys(PARAGRAPH)
    wait.until(lambda b: translated(b, TRANSLATED))
    source, result = (pane.rect for pane in browser.find_elements(By.CSS_SELECTOR, ".pane"))
    if width < 600:  # stacked
        assert result["y"] >= source["y"] + source["height"]
    else:  # side by side
        assert result["y"] == source["y"] and result["x"] >= source["x"] + source["width"]
    if SCREENSHOT and width == 1440:
        browser.save_screenshot(SCREENSHOT)
    for tab in ("text-tab", "files-tab"):
        element(browser, tab).click()
        assert browser.execute_script(
            "return document.documentElement.scrollWidth <= document.documentElement.clientWidth"
        ), "the page scrolls sideways"
        controls = [
            c
            for c in browser.find_elements(By.CSS_SELECTOR, "select, textarea, input, button, a, output")
            if c.is_displayed()
        ]
        assert len(controls) >= 6
        for control in controls:
            box = control.rect
            assert box["width"] > 0 and box["height"] > 0, control.get_attribute("id")
            assert 0 <= box["x"] <= width - box["width"], (control.get_attribute("id"), box)
    assert console_errors(browser) == []


def test_the_page_keeps_the_key_for_the_tab_only(browser: Any, model_dir: Path) -> None:
    with running(model_dir, workers=1, http_port=0, auth_token="s3cret", allow_insecure_token=True) as s:
        wait = opened_without_languages(browser, s.server.http_port)
        assert element(browser, "token-form").is_displayed()
        wait.until(lambda b: b.find_element(By.ID, "notice").text.startswith("Cannot list the languages"))
        element(browser, "token").send_keys("s3cret", Keys.ENTER)
        wait.until(lambda b: len(Select(b.find_element(By.ID, "source-language")).options) > 1)
        assert element(browser, "notice").text == ""
        element(browser, "source").send_keys("El niño ve pan.")
        wait.until(lambda b: translated(b, "The boy sees bread."))
        stored = browser.execute_script("return [sessionStorage.getItem('rnnmt-token'), localStorage.length]")
        assert stored == ["s3cret", 0] and browser.get_cookies() == []
        browser.execute_script("sessionStorage.clear()")
    # Before the key: /languages and /v1/models refused (403, 401).
    assert all("status of 40" in message for message in console_errors(browser))


def test_the_page_counts_against_the_servers_character_limit(browser: Any, model_dir: Path) -> None:
    """With ``--char-limit``: the count shows the limit, and text over it is not sent but said so."""
    with running(model_dir, workers=1, http_port=0, char_limit=20) as s:
        wait = opened(browser, s.server.http_port)
        source = element(browser, "source")
        source.send_keys("El niño ve pan.")
        wait.until(lambda b: translated(b, "The boy sees bread."))
        assert element(browser, "count").text == "15 / 20"
        source.send_keys(" El perro.")
        wait.until(lambda b: done(b) and b.find_element(By.ID, "error").text != "")
        assert element(browser, "error").text == "The text is over the limit of 20 characters."
        assert element(browser, "count").text == "25 / 20" and element(browser, "result").text == ""
        assert s.metric("rnnmt_requests_total", method="HTTP /translate", code="INVALID_ARGUMENT") == 0
    assert console_errors(browser) == []


def opened_without_languages(browser: Any, port: int) -> WebDriverWait:
    browser.get(f"http://127.0.0.1:{port}/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: b.find_element(By.ID, "token-form").is_displayed())
    return wait


def test_the_page_needs_nothing_from_elsewhere(port: int) -> None:
    """Its script, style and icon are files of this server (the CSP allows no other: test_http_requests),
    which name no other server: the page works offline."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
        page = response.read().decode()
    assert "http://" not in page and "https://" not in page
    for path, kind in (
        ("/page.js", "text/javascript"),
        ("/page.css", "text/css"),
        ("/favicon.svg", "image/svg+xml"),
    ):
        assert f'"{path}"' in page
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
            assert response.headers["Content-Type"].startswith(kind)
            text = response.read().decode()
        assert "http" not in text.replace('xmlns="http://www.w3.org/2000/svg"', ""), path
