"""A headless Chromium driven by Selenium, for the chat page's tests; skips when absent."""
from __future__ import annotations

import os
from pathlib import Path

from helpers import wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL_HINT = "apt-get install -y chromium chromium-driver"
# Selenium Manager must never try to fetch a browser or driver: nothing is downloaded here.
os.environ.setdefault("SE_OFFLINE", "true")
os.environ.setdefault("SE_AVOID_STATS", "true")


def missing_reason() -> str | None:
    """Why no browser test can run here, or None when everything is installed."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -r requirements_dev.txt)"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} is missing ({INSTALL_HINT})"
    return None


def chromium_driver(profile: Path, width: int = 1000, height: int = 800):
    """A headless Chromium with its own profile folder, talking to no one but the page."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-extensions", "--disable-default-apps",
                f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    return driver


class Page:
    """The chat page in a browser: its hooks, waits, and a screenshot for every state."""

    def __init__(self, driver, url: str, shots: Path):
        self.driver, self.url, self.shots = driver, url, shots
        self.last_shot: Path | None = None

    def open(self, token: str | None = None) -> "Page":
        """Load the page with a clean local storage, the token passed in the fragment if given."""
        self.driver.get(self.url + "/static/favicon.svg")  # same origin, so storage can be cleared
        self.driver.execute_script("localStorage.clear()")
        self.driver.get(self.url + "/" + (f"#token={token}" if token else ""))
        self.wait(lambda: self.js("return document.readyState") == "complete", "page load")
        return self

    def js(self, script: str, *args):
        """Run script in the page and return its value."""
        return self.driver.execute_script(script, *args)

    def find(self, testid: str):
        """The element with this data-testid."""
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, f"[data-testid={testid}]")

    def answers(self) -> list:
        """The assistant messages, oldest first."""
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, "[data-testid=assistant-message]")

    def answer_text(self, index: int = -1) -> str:
        """The text of an assistant message (the model's words only), "" when there is none."""
        answers = self.answers()
        return self.js("return arguments[0].querySelector('.text').textContent",
                       answers[index]) if answers else ""

    def answer_state(self, index: int = -1) -> str | None:
        """data-state of an assistant message (None when there is none yet)."""
        answers = self.answers()
        return answers[index].get_attribute("data-state") if answers else None

    def set_field(self, testid: str, value: str) -> None:
        """Replace a field's value as a user would, firing its input and change events."""
        field = self.find(testid)
        if not field.is_displayed():  # in the closed Settings panel: open it as a user would
            self.driver.find_element("css selector", "#settings summary").click()
        field.clear()
        field.send_keys(value)
        self.js("arguments[0].dispatchEvent(new Event('change'))", field)

    def ask(self, prompt: str) -> None:
        """Type a prompt and press Enter, as a user sends one."""
        from selenium.webdriver.common.keys import Keys

        box = self.find("prompt")
        box.send_keys(prompt)
        box.send_keys(Keys.ENTER)

    def shot(self, name: str) -> Path:
        """Save a screenshot of the page as it is now."""
        self.last_shot = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(self.last_shot))
        return self.last_shot

    def wait(self, predicate, what: str, timeout: float = 20.0):
        """Poll predicate until truthy; fail with a screenshot's path after timeout seconds."""
        if wait_for(predicate, timeout):
            return
        path = self.shot("timeout-" + "".join(c if c.isalnum() else "-" for c in what)[:40])
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; "
                             f"screenshot: {path}; page text: {self.find('messages').text[-500:]!r}")

    def check(self, condition: bool, what: str, name: str) -> None:
        """Assert condition, with a fresh screenshot's path in the message when it fails."""
        if not condition:
            raise AssertionError(f"{what}; screenshot: {self.shot('failed-' + name)}")

