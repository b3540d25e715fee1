"""The page of the HTTP door in a real headless browser: Debian's chromium, driven by Selenium through
Debian's chromedriver (scripts/install.sh installs both as root; nothing is downloaded)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import running

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
if CHROMIUM is None or DRIVER is None:
    pytest.skip(
        "no browser: install Debian's chromium and chromium-driver (scripts/install.sh does, as root)",
        allow_module_level=True,
    )
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in rnnmt[dev]")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

PARAGRAPH = "El perro come pan. Un gato bebe agua.\nEl niño ve pan."
TRANSLATED = "The dog eats bread. A cat drinks water.\nThe boy sees bread."


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def text_of(browser: Any, element_id: str) -> str:
    return browser.find_element(By.ID, element_id).text


def test_the_page_translates_a_paragraph_and_shows_errors_with_the_keyboard_only(
    browser: Any, model_dir: Path
) -> None:
    with running(model_dir, workers=1, http_port=0) as s:
        port = s.server.http_port
        browser.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda b: b.find_element(By.ID, "model").get_attribute("value") == "toy")
        source = browser.find_element(By.ID, "source")
        source.click()
        source.send_keys(PARAGRAPH)
        source.send_keys(Keys.CONTROL, Keys.ENTER)  # translate from the keyboard
        wait.until(lambda b: text_of(b, "result") not in ("", "…"))
        assert text_of(browser, "result") == TRANSLATED
        assert text_of(browser, "error") == ""

        # Tab to the alternatives, pick 3 with the arrow keys, Tab to the button, Enter.
        source.send_keys(Keys.TAB, Keys.TAB, Keys.ARROW_DOWN, Keys.TAB, Keys.TAB, Keys.ENTER)
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#alternatives li")) == 2)
        assert all("(" in item.text for item in browser.find_elements(By.CSS_SELECTOR, "#alternatives li"))

        source.clear()
        source.send_keys("perro " * 300)  # over the model's limit as one text (alternatives: no splitting)
        source.send_keys(Keys.CONTROL, Keys.ENTER)
        wait.until(lambda b: text_of(b, "error") != "")
        assert text_of(browser, "error").startswith("INVALID_ARGUMENT: texts[0] is")
        assert text_of(browser, "result") == ""
