"""The chat page in a real headless Chromium, through the proxy: on the mock, and on the real model."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from browser import Page, chromium_driver, missing_reason
from helpers import (MODEL, SECRET, api_server, health, health_status, make_token, start_proxy,
                     wait_for)
from inference_api.http.solve.extract import math_answer
from inference_api.mock.text import mock_answer
from net import free_port
from processes import REPO

pytestmark = pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason()))


@pytest.fixture(scope="module")
def slow_mock():
    """A mock API slow enough (40 ms a token) that streaming and stopping can be watched; its
    math template is the problem alone, so that a problem can make the mock write a box."""
    server = api_server({"MOCK_MODEL": "1", "MOCK_STEP_MS": "40", "DRAIN_TIMEOUT_S": "0",
                         "SOLVE_MATH_PROMPT": "{problem}"})
    server.start(timeout=60)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mock_chat(slow_mock):
    """The proxy, serving the page, in front of the slow mock."""
    with start_proxy(slow_mock.url) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    """One headless Chromium for the module (it takes seconds to start)."""
    driver = chromium_driver(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


@pytest.fixture
def page(driver, mock_chat, tmp_path):
    """The page on the mock stack, in a desktop-sized window, screenshots in tmp_path."""
    driver.set_window_size(1000, 800)
    return Page(driver, mock_chat.url, tmp_path)


def wait_answer(page: Page, state: str, what: str, timeout: float = 30.0) -> None:
    """Wait until the last assistant message reaches state."""
    page.wait(lambda: page.answer_state() == state, what, timeout)


def mock_chat_prompt(*turns: tuple[str, str]) -> str:
    """The prompt the mock's chat template makes of these (role, content) turns."""
    return "".join(f"{role}: {content}\n" for role, content in turns) + "assistant:"


@pytest.mark.processes
def test_page_loads_with_the_token_from_the_fragment_and_hides_it(page):
    token = make_token()
    page.open(token)
    page.wait(lambda: page.find("model-name").text == MODEL, "the model's name")
    page.shot("loaded")
    page.check("#" not in page.driver.current_url, f"fragment left in {page.driver.current_url}",
               "fragment")
    page.check(page.js("return localStorage.getItem('chat.token')") == token,
               "token not kept in local storage", "storage")
    page.check(page.find("token").get_attribute("value") == token, "token field empty", "field")
    # Shift+Enter is a new line in the box, not a send.
    from selenium.webdriver.common.keys import Keys
    page.find("prompt").send_keys("one", Keys.SHIFT, Keys.ENTER, Keys.SHIFT, "two")
    page.check(page.find("prompt").get_attribute("value") == "one\ntwo" and not page.answers(),
               "Shift+Enter did not insert a new line", "shift-enter")


@pytest.mark.processes
def test_an_answer_streams_in_visible_steps_with_its_timings(page):
    page.open(make_token())
    page.set_field("max-tokens", "60")
    page.ask("tell me about streaming")
    page.wait(lambda: page.answer_state() == "streaming", "the answer to start")
    lengths = []
    while page.answer_state() == "streaming":
        lengths.append(len(page.answer_text()))
    page.shot("streaming-done")
    growths = sum(1 for a, b in zip(lengths, lengths[1:]) if b > a)
    page.check(growths >= 3, f"text grew only {growths} times while streaming: {lengths}", "growth")
    wait_answer(page, "done", "the answer to finish")
    expected = mock_answer(mock_chat_prompt(("user", "tell me about streaming")), 60)
    page.check(page.answer_text() == expected, f"answer {page.answer_text()!r}", "answer")
    meta = page.answers()[-1].find_element("css selector", ".meta").text
    page.check("first token" in meta and "60 tokens" in meta and "tokens/s" in meta,
               f"stats missing: {meta!r}", "meta")
    page.shot("finished-answer")


@pytest.mark.processes
def test_stop_ends_the_answer_and_the_server_frees_the_row(page, slow_mock):
    page.open(make_token())
    page.set_field("max-tokens", "1000")
    page.ask("a long answer please")
    page.wait(lambda: len(page.answer_text()) > 40, "some text before stopping")
    # busy_rows comes with the backend's heartbeat: it may lag the stream a little.
    page.check(wait_for(lambda: health(slow_mock)["busy_rows"] >= 1, timeout=10),
               "no busy row while streaming", "busy")
    page.shot("before-stop")
    page.find("stop").click()
    wait_answer(page, "stopped", "the stopped state", timeout=10)
    page.shot("stopped")
    assert wait_for(lambda: health(slow_mock)["busy_rows"] == 0, timeout=10), \
        f"the row was not freed: {health(slow_mock)}; screenshot: {page.last_shot}"
    page.check(page.find("send").is_enabled() and not page.find("stop").is_enabled(),
               "buttons not reset after Stop", "buttons")


@pytest.mark.processes
def test_a_second_turn_sends_the_first_and_the_system_prompt(page):
    page.open(make_token())
    page.set_field("system", "Be brief")
    page.set_field("max-tokens", "30")
    page.ask("zebra")
    wait_answer(page, "done", "the first answer")
    first = page.answer_text()
    page.check(first == mock_answer(mock_chat_prompt(("system", "Be brief"), ("user", "zebra")), 30),
               f"first answer {first!r}", "first")
    page.ask("yak")
    page.wait(lambda: len(page.answers()) == 2 and page.answer_state() == "done", "the second answer")
    page.shot("second-turn")
    # The mock answers with the words of the whole prompt it was given: the history included.
    prompt = mock_chat_prompt(("system", "Be brief"), ("user", "zebra"), ("assistant", first),
                              ("user", "yak"))
    page.check(page.answer_text() == mock_answer(prompt, 30), f"second answer {page.answer_text()!r}",
               "second")
    page.find("new-chat").click()
    page.check(not page.answers(), "New chat left messages", "new-chat")
    page.ask("yak")
    wait_answer(page, "done", "the answer in the new chat")
    page.check(page.answer_text() == mock_answer(
        mock_chat_prompt(("system", "Be brief"), ("user", "yak")), 30),
        f"new chat carried history: {page.answer_text()!r}", "fresh")


def choose_mode(page: Page, mode: str) -> None:
    """Pick a mode in the selector, as a user does."""
    from selenium.webdriver.support.ui import Select

    Select(page.find("mode")).select_by_value(mode)


WATCH_ANSWER = """
    window.answerSteps = [];
    new MutationObserver(() => {
        const answers = document.querySelectorAll("[data-testid=assistant-message]");
        const last = answers[answers.length - 1];
        if (last) window.answerSteps.push([last.querySelector(".text").textContent.length,
                                           !!last.querySelector("[data-testid=extracted]")]);
    }).observe(document.getElementById("messages"),
               {childList: true, subtree: true, characterData: true});
"""


def extracted(page: Page) -> tuple[str, str, int]:
    """(data-found, text, child elements) of what the last answer shows as read from it."""
    value = page.answers()[-1].find_element("css selector", "[data-testid=extracted-value]")
    return (page.answers()[-1].find_element("css selector", "[data-testid=extracted]")
            .get_attribute("data-found"), page.js("return arguments[0].textContent", value),
            page.js("return arguments[0].children.length", value))


@pytest.mark.processes
def test_math_mode_streams_the_solution_then_shows_its_answer_as_text(page):
    page.open(make_token())
    choose_mode(page, "math")
    page.check(page.find("prompt").get_attribute("placeholder").startswith("A math problem"),
               "the message box does not say it takes a problem", "placeholder")
    page.set_field("max-tokens", "40")
    problem = "What is 6 times 7? \\boxed{<b>42</b>}"  # markup the page must show as text
    # Every change of the conversation, as the page makes it: (solution's length, answer shown).
    page.js(WATCH_ANSWER)
    page.ask(problem)
    wait_answer(page, "done", "the solution to finish")
    page.shot("math-mode")
    steps = page.js("return window.answerSteps")
    growing = [length for length, shown in steps if not shown]
    page.check(len(set(growing)) >= 3 and steps[-1][1] and growing == sorted(growing),
               f"the solution did not stream before its answer: {steps}", "streamed")
    solution = mock_answer(mock_chat_prompt(("user", problem)), 40)
    page.check(page.answer_text() == solution, f"solution {page.answer_text()!r}", "solution")
    found, text, children = extracted(page)
    page.check(found == "true" and text == math_answer(solution) == "<b>42</b>" and not children,
               f"answer shown as {found!r} {text!r} with {children} elements", "answer")
    meta = page.answers()[-1].find_element("css selector", ".meta").text
    page.check("40 tokens" in meta, f"stats missing: {meta!r}", "meta")
    # A coding problem whose solution has no code says so; neither joins the conversation.
    choose_mode(page, "coding")
    page.set_field("max-tokens", "5")
    page.ask("print hi")
    wait_answer(page, "done", "the coding solution")
    found, text, _ = extracted(page)
    page.check(found == "false" and text.startswith("No code found"), f"code shown as {text!r}",
               "no-code")
    choose_mode(page, "chat")
    page.ask("yak")
    wait_answer(page, "done", "the chat answer")
    page.check(page.answer_text() == mock_answer(mock_chat_prompt(("user", "yak")), 5),
               f"the problems leaked into the chat: {page.answer_text()!r}", "chat-after")


@pytest.mark.processes
def test_a_wrong_token_is_explained_in_words(page):
    page.open(make_token(secret="another-secret-" + "x" * 40))
    page.ask("hello")
    wait_answer(page, "error", "the 401 error")
    page.shot("wrong-token")
    error = page.answers()[-1].find_element("css selector", ".error").text
    page.check("token was refused" in error and "signature" in error, f"error {error!r}", "401")
    page.check(page.js("return document.activeElement.dataset.testid") == "token",
               "focus not moved to the token field", "focus")
    page.check(page.find("prompt").get_attribute("value") == "hello",
               "the failed prompt was not put back", "prompt-back")


@pytest.mark.processes
def test_a_refused_request_shows_the_servers_message(page):
    page.open(make_token())
    page.set_field("max-tokens", "100000")
    page.ask("too much")
    wait_answer(page, "error", "the 400 error")
    page.shot("refused")
    error = page.answers()[-1].find_element("css selector", ".error").text
    page.check(error.startswith("The request was refused:") and "max_tokens" in error,
               f"error {error!r}", "400")


@pytest.mark.processes
def test_the_page_fits_a_phone_sized_window(page):
    page.driver.set_window_size(390, 844)
    page.open(make_token())
    page.set_field("max-tokens", "20")
    page.ask("small screen")
    wait_answer(page, "done", "the answer")
    page.shot("phone")
    overflow = page.js("return document.documentElement.scrollWidth - window.innerWidth")
    page.check(overflow <= 0, f"the page scrolls sideways by {overflow}px", "phone")


@pytest.fixture(scope="module")
def stub_chat(upstream):
    """The proxy, serving the page, in front of the stub whose chat streams end as asked."""
    with start_proxy(upstream.url) as proxy:
        yield proxy


@pytest.mark.processes
@pytest.mark.parametrize("ending, words", [
    ("fail", "The model failed in the middle of the answer: the generation failed: stub"),
    ("cut", "The answer was cut off"),
    ("busy", "The server is busy (too many prompts wait). Try again in 7 seconds."),
])
def test_a_failing_answer_is_explained_in_words(driver, stub_chat, tmp_path, ending, words):
    driver.set_window_size(1000, 800)
    page = Page(driver, stub_chat.url, tmp_path).open(make_token())
    page.ask(ending)
    wait_answer(page, "error", f"the {ending} error")
    page.shot(f"error-{ending}")
    error = page.answers()[-1].find_element("css selector", ".error").text
    page.check(words in error, f"error {error!r}", ending)
    # What came before the failure stays on screen.
    page.check(page.answer_text() == ("" if ending == "busy" else "one two "),
               f"text {page.answer_text()!r}", f"{ending}-text")


SSE_CASES = [
    # (chunks as the network could cut them, the data of each event)
    (["data: a\n\n"], ["a"]),
    (["da", "ta: a", "\n", "\ndata: b\n\n"], ["a", "b"]),
    (["data: a\r", "\n\r\n", "data:b\r\rdata: c\n", "data: d\n\n"], ["a", "b", "c\nd"]),
    ([": keep-alive\n\n", "event: x\nid: 1\ndata: {\"k\": 1}\n\n"], ['{"k": 1}']),
    (["data: complete\n\ndata: cut off"], ["complete"]),
]


@pytest.mark.processes
def test_the_sse_reader_finds_events_across_chunk_boundaries(page):
    page.open(make_token())
    script = """
        const [cases, done] = [arguments[0], arguments[arguments.length - 1]];
        import("/static/sse.js").then(({ sseEvents }) => Promise.all(cases.map(async (chunks) => {
            const bytes = new TextEncoder().encode(chunks.join(""));
            const cuts = chunks.map((c, i) => new TextEncoder().encode(chunks.slice(0, i + 1).join("")).length);
            const body = new ReadableStream({ start(controller) {
                let from = 0;
                for (const to of cuts) { controller.enqueue(bytes.slice(from, to)); from = to; }
                controller.close();
            } });
            const seen = [];
            for await (const data of sseEvents(body)) seen.push(data);
            return seen;
        }))).then(done, (err) => done(String(err)));
    """
    seen = page.driver.execute_async_script(script, [chunks for chunks, _ in SSE_CASES])
    assert seen == [events for _, events in SSE_CASES], json.dumps(seen)
    # A character split between two reads comes out whole.
    split = page.driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        import("/static/sse.js").then(async ({ sseEvents }) => {
            const bytes = new TextEncoder().encode("data: é\\n\\n");
            const body = new ReadableStream({ start(c) {
                c.enqueue(bytes.slice(0, 7)); c.enqueue(bytes.slice(7)); c.close(); } });
            const seen = [];
            for await (const data of sseEvents(body)) seen.push(data);
            done(seen);
        });
    """)
    assert split == ["é"]


@pytest.mark.processes
def test_the_address_make_run_prints_opens_the_page_with_its_token(driver, tmp_path):
    proxy_port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "JWT_SECRET"}
    env.update(MOCK_MODEL="1", MOCK_STEP_MS="5", SERVICE_PORT=str(free_port()),
               PROXY_PORT=str(proxy_port), PROXY_HOST="127.0.0.1",
               PROXY_METRICS_PORT=str(free_port()))
    with open(tmp_path / "run.log", "w") as log:
        run = subprocess.Popen([sys.executable, "scripts/run.py"], cwd=REPO, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=log)
    try:
        printed = ""
        while "Chat in the browser:" not in printed and run.poll() is None:
            printed += run.stdout.readline()
        url = re.search(r"Chat in the browser: (\S+)", printed).group(1)
        assert url.startswith(f"http://127.0.0.1:{proxy_port}/#token="), printed
        assert wait_for(lambda: health_status(f"http://127.0.0.1:{proxy_port}") == 200, timeout=60)
        driver.set_window_size(1000, 800)
        driver.get(url)
        page = Page(driver, f"http://127.0.0.1:{proxy_port}", tmp_path)
        page.wait(lambda: page.find("model-name").text == MODEL, "the model's name")
        page.check(page.find("token").get_attribute("value") == url.split("#token=")[1],
                   "the printed token is not in the token field", "run-token")
        page.check("#" not in driver.current_url, "fragment left in the address", "run-fragment")
        page.ask("hello")
        wait_answer(page, "done", "the answer")
        page.shot("make-run")
    finally:
        run.send_signal(signal.SIGTERM)
        run.wait(60)


@pytest.fixture(scope="module")
def real_chat(real_server):
    """The proxy, serving the page, in front of the real model."""
    with start_proxy(real_server.url) as proxy:
        yield proxy


@pytest.mark.slow
def test_the_page_gets_a_short_answer_from_the_real_model(driver, real_chat, tmp_path):
    driver.set_window_size(1000, 800)
    page = Page(driver, real_chat.url, tmp_path).open(make_token(secret=SECRET))
    page.wait(lambda: page.find("model-name").text == MODEL, "the model's name")
    page.set_field("max-tokens", "24")
    page.set_field("temperature", "0")
    page.ask("What is the capital of France?")
    wait_answer(page, "done", "the real model's answer", timeout=180)
    page.shot("real-model")
    page.check(len(page.answer_text().strip()) > 0, "empty answer", "real")


@pytest.mark.slow
def test_coding_mode_shows_the_real_models_code(driver, real_chat, tmp_path):
    driver.set_window_size(1000, 800)
    page = Page(driver, real_chat.url, tmp_path).open(make_token(secret=SECRET))
    page.wait(lambda: page.find("model-name").text == MODEL, "the model's name")
    choose_mode(page, "coding")
    page.set_field("max-tokens", "120")
    page.ask("Write a Python function is_even(n) that returns True when n is even.")
    wait_answer(page, "done", "the real model's solution", timeout=300)
    page.shot("real-model-coding")
    found, code, children = extracted(page)
    page.check(found == "true" and "def is_even" in code and code in page.answer_text()
               and not children, f"code shown as {found!r} {code!r}", "real-code")
