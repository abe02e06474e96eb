"""The portals in a real browser: Debian's Chromium, headless, driven by Debian's chromedriver.

One story across the roles, over HTTPS (so the session cookie is a real Secure cookie): the
supervisor signs in with the one-time password and changes it, creates an organisation with
its manager and overrides one service setting for it; the manager signs in, adds a user and
a device for them, queues a lock and sees it queued; the device owner signs in and sees the
device and the queued lock in My devices. The REST API confirms each step took effect.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import trio
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from .conftest import RunningService, bearer
from .world import MANAGER_PASSWORD

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SUPERVISOR_PASSWORD = "supervisor's own secret"
OWNER_PASSWORD = "owner's own secret 1"

pytestmark = pytest.mark.skipif(
    not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)),
    reason="needs Debian's chromium and chromium-driver (scripts/test installs them)",
)


@contextmanager
def chromium() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="emm-chromium-")
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",  # this machine has no network to talk to
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--no-first-run",
        "--ignore-certificate-errors",  # the service's own CA is not in this profile
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _detached(element: WebElement) -> bool:
    """The element's document is gone. Chromium reports that either as a stale reference or,
    mid-navigation, as "node does not belong to the document": both mean the same here."""
    try:
        element.tag_name  # noqa: B018  # a round trip to the browser
    except WebDriverException:
        return True
    return False


class Browser:
    def __init__(self, driver: WebDriver, base: str) -> None:
        self.driver = driver
        self.base = base

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def fill(self, field_id: str, value: str) -> None:
        element = self.driver.find_element(By.ID, field_id)
        element.clear()
        element.send_keys(value)

    def press(self, text: str, within: WebElement | None = None) -> None:
        """Click the button with this text and wait for the page it leads to."""
        page = self.driver.find_element(By.TAG_NAME, "html")
        (within or self.driver).find_element(
            By.XPATH, f".//button[starts-with(normalize-space(), '{text}')]"
        ).click()
        self._arrived(page)

    def _arrived(self, page: WebElement) -> None:
        """The click has left ``page`` and the next page has finished loading."""
        wait = WebDriverWait(self.driver, 15)
        wait.until(lambda _: _detached(page))
        wait.until(lambda d: d.execute_script("return document.readyState") == "complete")

    def follow(self, link_text: str) -> None:
        page = self.driver.find_element(By.TAG_NAME, "html")
        self.driver.find_element(By.LINK_TEXT, link_text).click()
        self._arrived(page)

    def flash(self) -> str:
        return self.driver.find_element(By.CSS_SELECTOR, ".flash").text

    def text(self) -> str:
        return self.driver.find_element(By.TAG_NAME, "main").text

    def sign_in(self, organisation: str, login: str, password: str) -> None:
        self.open("/sign-in")
        self.fill("organisation", organisation)
        self.fill("login", login)
        self.fill("password", password)
        self.press("Sign in")

    def change_password(self, current: str, new: str) -> None:
        assert self.driver.current_url.endswith("/password"), self.driver.current_url
        self.fill("current_password", current)
        self.fill("new_password", new)
        self.fill("repeat_password", new)
        self.press("Change password")

    def sign_out(self) -> None:
        self.press("Sign out")
        self.driver.delete_all_cookies()


def story(running: RunningService) -> dict[str, str]:
    """Runs in a worker thread (Selenium blocks) while the service runs in the test's loop."""
    with chromium() as driver:
        try:
            return _story(Browser(driver, running.https_url), running)
        except Exception as exc:
            # Say where the browser was: the page tells more than a stack trace.
            exc.add_note(
                f"at {driver.current_url}:\n{driver.find_element(By.TAG_NAME, 'body').text}"
            )
            raise


def _story(browser: Browser, running: RunningService) -> dict[str, str]:
    driver = browser.driver
    found: dict[str, str] = {}
    # The supervisor: one-time password, then a real one.
    browser.sign_in("", "supervisor", running.supervisor_password)
    browser.change_password(running.supervisor_password, SUPERVISOR_PASSWORD)
    assert "password has been changed" in browser.flash()
    cookie = driver.get_cookie("emm_session")
    assert cookie and cookie["secure"] and cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"

    # ...creates an organisation with its first manager...
    browser.open("/admin/organisations/new")
    browser.fill("code", "acme")
    browser.fill("short_name", "Acme Ltd")
    browser.fill("licences", "10")
    browser.fill("first_manager_password", MANAGER_PASSWORD)
    browser.press("Create organisation")
    assert "Acme Ltd" in browser.text()

    # ...and overrides one service setting for it.
    browser.open("/admin/o/acme/config/services")
    section = driver.find_element(By.ID, "oma_dm")
    section.find_element(By.ID, "oma_dm-system").click()  # Use system-wide settings: off
    interval = section.find_element(By.ID, "oma_dm-connection_interval")
    interval.clear()
    interval.send_keys("15")
    browser.press("Save OMA DM", within=section)
    assert "settings saved" in browser.flash()
    browser.sign_out()

    # The manager adds a user with a password of the manager's choosing...
    browser.sign_in("acme", "admin", MANAGER_PASSWORD)
    browser.open("/admin/o/acme/accounts/new")
    browser.fill("login", "jane.doe")
    browser.fill("display_name", "Jane Doe")
    driver.find_element(By.CSS_SELECTOR, "input[name=password_from][value=chosen]").click()
    browser.fill("password", OWNER_PASSWORD)
    browser.press("Create account")
    assert "jane.doe" in browser.text()

    # ...and a device for her...
    browser.open("/admin/o/acme/devices/new")
    browser.fill("name", "Jane's Pixel")
    Select(driver.find_element(By.ID, "platform")).select_by_value("android")
    Select(driver.find_element(By.ID, "protocol")).select_by_value("wsdm")
    owner = Select(driver.find_element(By.ID, "owner"))
    owner.select_by_visible_text(next(o.text for o in owner.options if "jane.doe" in o.text))
    browser.press("Create device")

    # ...queues a lock on it and sees it queued.
    browser.open("/admin/o/acme/devices")
    browser.follow("Jane's Pixel")
    found["device_url"] = driver.current_url
    Select(driver.find_element(By.ID, "command-kind")).select_by_value("lock")
    browser.press("Queue command")
    assert "lock queued" in browser.flash()
    assert "queued" in driver.find_element(By.CSS_SELECTOR, ".badge.queued").text
    browser.sign_out()

    # The device owner sees the device and the queued lock in My devices.
    browser.sign_in("acme", "jane.doe", OWNER_PASSWORD)
    assert driver.current_url.endswith("/my/devices"), driver.current_url
    assert "Jane's Pixel" in browser.text()
    browser.follow("Jane's Pixel")
    assert "lock" in browser.text() and "queued" in browser.text()
    found["owner_page"] = browser.text()
    return found


async def test_the_roles_story_in_a_real_browser(running: RunningService) -> None:
    found = await trio.to_thread.run_sync(story, running)
    assert "Jane's Pixel" in found["owner_page"]
    # The REST API agrees with what the browser saw.
    async with httpx.AsyncClient(base_url=running.http_url, timeout=30) as client:
        token = await client.post(
            "/api/v1/auth/token", json={"login": "supervisor", "password": SUPERVISOR_PASSWORD}
        )
        auth = bearer(token.json()["token"])
        settings = await client.get("/api/v1/organisations/acme/config/services", headers=auth)
        interval = settings.json()["services"]["oma_dm"]["effective"]["connection_interval"]
        assert interval == {"value": 15, "source": "organisation"}
        devices = await client.get("/api/v1/organisations/acme/devices", headers=auth)
        (device,) = devices.json()["items"]
        assert device["name"] == "Jane's Pixel"
        commands = await client.get(
            f"/api/v1/organisations/acme/devices/{device['id']}/commands", headers=auth
        )
        assert [(c["kind"], c["state"]) for c in commands.json()["items"]] == [("lock", "queued")]
