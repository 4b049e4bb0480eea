"""The annotation page in a real browser (Debian's Chromium through Selenium): ranking by
keyboard and by drag, ties, cannot-rank, skip, undo, two annotators at once, escaping; each
checked against what the database holds."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from rankrm.annotate.schema import Assignment
from rankrm.annotate.store import Store
from rankrm.annotate.tasks import TaskSpec
from rankrm.annotate.web import AppSettings
from tests.annotate.conftest import AppServer, chrome, open_store, serving

SCREENSHOT_DIR = "RANKRM_SCREENSHOT_DIR"  # make screenshot: docs/annotate.png
XSS = '<script>document.title="pwned"</script><img id="injected" src=x>'
TASKS = [
    TaskSpec(
        "chat",
        [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "How do I reverse a list in Python?"},
        ],
        (
            "Use `reversed(xs)` for an iterator, or `xs[::-1]` for a new list.",
            "xs.reverse() reverses in place and returns None:\n\n```python\nxs = [1, 2, 3]\n"
            "xs.reverse()\nprint(xs)  # [3, 2, 1]\n```",
            "Lists cannot be reversed.",
            "sorted(xs, reverse=True) " + "(that sorts, it does not reverse) " * 30,
        ),
    ),
    TaskSpec("xss", "Which is safest?", (XSS, "plain text", "another")),
    TaskSpec("third", "Say hello.", ("hello", "hi")),
]


@pytest.fixture
def app(sqlite_url: str) -> Iterator[AppServer]:
    store = open_store(sqlite_url, overlap=1)
    store.load(TASKS, "tasks.jsonl")
    guidelines = "Rank by helpfulness first, then correctness.\nTie responses that are equal."
    with serving(store, AppSettings(guidelines=guidelines)) as server:
        yield server


@pytest.fixture
def browser() -> Iterator[Any]:
    driver = chrome()
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: Any, condition: Any, seconds: float = 10) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds).until(condition)


def login(driver: Any, url: str, name: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url)
    wait(driver, lambda d: d.find_element(By.ID, "login").is_displayed())
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.CSS_SELECTOR, "#login button").click()
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".card"))


def shown_groups(driver: Any) -> list[list[int]]:
    """The ranking as the page shows it: groups of response indices, best first."""
    script = (
        "return Array.from(document.querySelectorAll('#ranking .group')).map(g => "
        "Array.from(g.querySelectorAll('.card')).map(c => Number(c.dataset.index)))"
    )
    groups: list[list[int]] = driver.execute_script(script)
    return groups


def shown_task(driver: Any) -> str:
    text: str = driver.execute_script("return task && task.task_id")
    return text


def stored(store: Store, task_id: str) -> list[tuple[str, Any, str | None]]:
    with store.sessions() as session:
        rows = session.execute(
            select(Assignment.status, Assignment.ranking, Assignment.reason).where(
                Assignment.task_id == task_id
            )
        )
        return [(s, r, why) for s, r, why in rows]


def submit_and_wait(driver: Any, task_id: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "submit").click()
    wait(driver, lambda d: shown_task(d) != task_id)


def card(driver: Any, index: int) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f'.card[data-index="{index}"]')


def test_ranking_by_keyboard_with_a_tie_is_what_the_database_holds(
    app: AppServer, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    login(browser, app.url, "ann")
    assert shown_task(browser) == "chat"
    assert "concise assistant" in browser.find_element(By.ID, "prompt").text
    assert browser.find_element(By.ID, "guidelines").is_displayed()
    start = shown_groups(browser)
    assert sorted(i for g in start for i in g) == [0, 1, 2, 3]
    # Put response 2 (the wrong one) last with a digit, response 0 first, then tie 1 with 0.
    card(browser, 2).click()
    card(browser, 2).send_keys("4")
    card(browser, 0).click()
    card(browser, 0).send_keys("1")
    assert shown_groups(browser)[0] == [0] and shown_groups(browser)[-1] == [2]
    card(browser, 1).click()
    card(browser, 1).send_keys("2")
    card(browser, 1).send_keys("t")
    assert shown_groups(browser)[0] == [0, 1]
    card(browser, 3).click()
    card(browser, 3).send_keys(Keys.SHIFT + Keys.ARROW_DOWN)  # below 2, then back above it
    assert shown_groups(browser)[-1] == [3]
    card(browser, 3).send_keys(Keys.SHIFT + Keys.ARROW_UP)
    expected = [[0, 1], [3], [2]]
    assert shown_groups(browser) == expected
    shot = Path(os.environ.get(SCREENSHOT_DIR) or tmp_path) / "annotate.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    browser.find_element(By.TAG_NAME, "body").screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    card(browser, 3).send_keys(Keys.ENTER)
    wait(browser, lambda d: shown_task(d) == "xss")
    assert stored(app.store, "chat") == [("submitted", expected, None)]


def test_ranking_by_drag_and_tie_by_dropping_on_the_middle(app: AppServer, browser: Any) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    login(browser, app.url, "ann")

    def drag(index: int, onto: int, where: str) -> None:
        bar = card(browser, index).find_element(By.CSS_SELECTOR, ".bar")
        target = card(browser, onto)
        height = target.size["height"]
        dy = {"before": -height // 2 + 4, "tie": 0, "after": height // 2 - 4}[where]
        ActionChains(browser).click_and_hold(bar).move_by_offset(0, 5).move_to_element_with_offset(
            target, 0, dy
        ).release().perform()

    first = shown_groups(browser)[0][0]
    drag(2, first, "before") if first != 2 else None
    assert shown_groups(browser)[0] == [2]
    drag(0, 3, "after")
    drag(0, 3, "tie")
    groups = shown_groups(browser)
    assert [3, 0] in groups or [0, 3] in groups
    assert groups[0] == [2]
    submit_and_wait(browser, "chat")
    assert stored(app.store, "chat") == [("submitted", groups, None)]


def test_cannot_rank_skip_and_undo_from_the_page(app: AppServer, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    login(browser, app.url, "ann")
    browser.find_element(By.ID, "cannot").click()
    browser.find_element(By.ID, "reason").send_keys("The question is ambiguous.")
    browser.find_element(By.CSS_SELECTOR, "#cannot-form button[type=submit]").click()
    wait(browser, lambda d: shown_task(d) == "xss")
    assert stored(app.store, "chat") == [("cannot_rank", None, "The question is ambiguous.")]
    browser.find_element(By.ID, "skip").click()
    wait(browser, lambda d: shown_task(d) == "third")
    assert stored(app.store, "xss")[0][0] == "skipped"
    browser.find_element(By.ID, "undo").click()  # the skip of 'xss' comes back
    wait(browser, lambda d: shown_task(d) == "xss")
    assert stored(app.store, "xss")[0][0] == "active"
    submit_and_wait(browser, "xss")
    submit_and_wait(browser, "third")
    wait(browser, lambda d: d.find_element(By.ID, "done").is_displayed())
    assert "3 / 3 tasks complete" in browser.find_element(By.ID, "progress").text


def test_a_response_holding_html_shows_as_text(app: AppServer, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    login(browser, app.url, "ann")
    submit_and_wait(browser, "chat")
    assert shown_task(browser) == "xss"
    texts = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".card .text")]
    assert XSS in texts
    assert browser.title == "rankrm annotate"
    assert not browser.find_elements(By.ID, "injected")


def test_two_annotators_at_once_get_different_tasks(app: AppServer) -> None:
    first, second = chrome(), chrome()
    try:
        login(first, app.url, "ann")
        login(second, app.url, "bob")
        a, b = shown_task(first), shown_task(second)
        assert a != b
        submit_and_wait(first, a)
        submit_and_wait(second, b)
        assert stored(app.store, a)[0][0] == stored(app.store, b)[0][0] == "submitted"
    finally:
        first.quit()
        second.quit()
