"""The web page at /, in a real headless Chromium (system package) driven by Playwright,
against a real uvicorn. Screenshots go to tests/screenshots/ (gitignored)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest

from jobtrail.worker.runtime import PLAYBOOKS_ENV
from support.live import Live, free_port, live_server
from support.live import server_config as make_config
from support.redis_server import redis_server, workers
from support.requirements import missing
from support.waits import epoch, wait_until

pytestmark = pytest.mark.timeout(120)

CHROMIUM = os.environ.get("JOBTRAIL_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(__file__).parent / "screenshots"
PLAYBOOKS = Path(__file__).parent / "playbooks"
RECAP = ("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored")

try:
    from playwright.sync_api import (
        Browser,
        BrowserContext,
        Page,
        Route,
        expect,
        sync_playwright,
    )
except ImportError:  # pragma: no cover - CI installs it with the dev extra
    sync_playwright = None  # type: ignore[assignment]


def test_the_page_and_its_assets_are_served_with_a_strict_csp(live: Live) -> None:
    page = live.http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert '<script src="/web/app.js">' in page.text
    script = live.http.get("/web/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", script.text)
    assert live.http.get("/web/app.css").status_code == 200
    assert live.http.get("/web/../pyproject.toml").status_code == 404


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if sync_playwright is None:
        missing("playwright is not installed", "tests/run.sh installs it (the dev extra)")
    if not os.path.exists(CHROMIUM):
        where = f"no Chromium at {CHROMIUM} (JOBTRAIL_CHROMIUM names another)"
        missing(where, "tests/run.sh installs it (apt-get install -y chromium)")
    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(15_000)
    try:
        yield page
    finally:
        context.close()  # closes its EventSources before the server stops
    assert not errors, f"script errors on the page: {errors}"


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def pwned(page: Page) -> Any:
    return page.evaluate("() => window.__pwned")


def test_a_running_jobs_lines_appear_live_and_the_level_filter_works(
    live: Live, page: Page, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    job = live.submit("ticker", path=str(gate), interval=0.05)
    job_id = job["job_id"]
    page.goto(f"{live.url}/#/jobs/{job_id}")
    expect(page.locator("#job-title")).to_have_text(job_id)
    expect(page.locator("#log .line", has_text="tick 3").first).to_be_visible()
    assert live.job(job_id)["status"] == "running", "the lines came while it ran"
    expect(page.locator("#job-status")).to_have_text("running")
    newest = page.locator("#log .line").last
    expect(newest).not_to_have_text(re.compile("tick [0-3]$"))  # more keep arriving
    shot(page, "job-running")

    page.select_option("#level", "WARNING")
    lines = page.locator("#log .line")
    expect(lines.first).to_be_visible()
    count_before = lines.count()
    expect(lines).not_to_have_count(count_before)  # live lines keep coming at this level
    levels = set(page.eval_on_selector_all("#log .line", "rows => rows.map(r => r.dataset.level)"))
    assert levels == {"WARNING", "ERROR"}, levels
    shot(page, "job-level-warning")

    page.fill("#search", "tick 1")  # the server searches the whole log, at this level too
    expect(page.locator("#search-info")).to_have_text(re.compile(r"^\d+ match"))
    page.press("#search", "Enter")
    expect(page.locator("#search-info")).to_have_text(re.compile(r"^1 of \d+$"))
    expect(page.locator("#log .line.current .msg")).to_have_text(re.compile("^tick 1"))
    page.fill("#search", "")
    expect(page.locator("#search-info")).to_have_text("")

    page.click("#pause")
    expect(page.locator("#pause")).to_have_text("Resume")
    frozen = lines.count()
    page.wait_for_timeout(400)
    assert lines.count() == frozen, "paused: the view does not change"
    page.click("#pause")
    expect(lines).not_to_have_count(frozen)

    gate.touch()
    expect(page.locator("#job-status")).to_have_text("completed")
    expect(page.locator("#failure")).to_be_hidden()
    shot(page, "job-completed")


def test_a_failed_job_shows_its_digest_on_top(live: Live, page: Page) -> None:
    job = live.submit("fail_digest")
    live.wait(job["job_id"])
    page.goto(f"{live.url}/#/jobs/{job['job_id']}")
    expect(page.locator("#failure")).to_be_visible()
    expect(page.locator("#failure-error")).to_have_text("deploy failed: task 'restart app' on web1")
    field = page.locator("#failure-fields dd")
    expect(field.and_(page.locator("[data-key=host]"))).to_have_text("web1")
    expect(field.and_(page.locator("[data-key=task]"))).to_have_text("restart app")
    expect(field.and_(page.locator("[data-key=rc]"))).to_have_text("3")
    expect(field.and_(page.locator("[data-key=play]"))).to_have_text("deploy <b>web</b>")
    expect(field.and_(page.locator("[data-key=stderr]"))).to_contain_text(
        "<script>window.__pwned = 3</script>"
    )
    expect(page.locator("#job-status")).to_have_text("failed")
    expect(page.locator("#log .line", has_text="task failed on web1")).to_be_visible()
    assert page.locator("#failure b, #failure script").count() == 0
    assert pwned(page) is None
    shot(page, "job-failed-digest")


def test_html_in_messages_and_params_is_shown_as_text(live: Live, page: Page) -> None:
    extra = '<svg onload="window.__pwned = 4"></svg>'
    job = live.submit("html_message", extra=extra)
    live.wait(job["job_id"])
    page.goto(f"{live.url}/#/jobs/{job['job_id']}")
    messages = page.locator("#log .line .msg")
    expect(messages.first).to_have_text("<script>window.__pwned = 1</script> and <b>bold</b>")
    expect(messages.nth(1)).to_have_text(f'<img src="x" onerror="window.__pwned = 2"> {extra}')
    expect(messages.nth(2)).to_have_text("&lt;not an entity&gt; & <i>italic</i>")
    expect(page.locator("#job-meta")).to_contain_text("<svg onload=")
    assert page.locator("#log script, #log img, #log svg, #log b, #job-meta svg").count() == 0
    assert pwned(page) is None
    shot(page, "job-html-as-text")


def test_the_job_list_and_the_submit_form(live: Live, page: Page) -> None:
    page.goto(f"{live.url}/")
    page.click("#submit-box summary")
    page.select_option("#submit-type", "levels")
    page.fill("#submit-params input[name=count]", "25")
    page.fill("#submit-params input[name=errors_every]", "5")
    shot(page, "submit-form")
    page.click("#submit-button")
    page.wait_for_url(re.compile(r"#/jobs/levels-[0-9a-f]{12}$"))
    job_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#job-status")).to_have_text("completed")
    expect(page.locator("#log .line", has_text="info 24")).to_be_visible()
    assert live.job(job_id)["params"] == {"errors_every": 5, "count": 25}

    page.goto(f"{live.url}/#/")
    row = page.locator(f"#jobs-body tr[data-job-id='{job_id}']")
    expect(row).to_contain_text("completed")
    expect(row).to_contain_text("levels")
    live.submit("sleep", seconds=0.05, steps=1)
    expect(page.locator("#jobs-body tr", has_text="sleep").first).to_be_visible()  # live list
    shot(page, "job-list")

    page.select_option("#submit-type", "typed")
    page.click("#submit-button")  # count is required: the browser asks for it
    assert page.url.endswith("#/")
    page.fill("#submit-params input[name=count]", "2")
    page.fill("#submit-params input[name=flags]", "oops")  # not a list: the 422 is shown
    page.click("#submit-button")
    expect(page.locator("#submit-error")).to_contain_text("flags")


def test_a_10mb_log_opens_with_a_window_and_pages_older(live: Live, page: Page) -> None:
    job = live.submit("levels", count=80_000)
    live.wait(job["job_id"], timeout=90)
    size = sum(p.stat().st_size for p in Path(live.server.log_file(job["job_id"])).glob("*.jsonl"))
    assert size > 8_000_000, size
    page.goto(f"{live.url}/#/jobs/{job['job_id']}")
    expect(page.locator("#log .line", has_text="info 79999")).to_be_visible()
    lines = page.locator("#log .line")
    assert lines.count() == 2000, "only a window of the newest lines is rendered"
    page.click("#older")
    expect(lines).to_have_count(4000)
    assert lines.first.get_attribute("data-seq") == str(80_005 - 4000 + 1)
    download = page.locator("#download").get_attribute("href")
    assert download == f"/api/jobs/{job['job_id']}/logs/download"
    shot(page, "job-10mb")


def test_with_a_token_the_page_asks_for_it_and_keeps_it_in_a_cookie(
    tmp_path: Path, browser: Browser
) -> None:
    token = "page-token-123"
    with live_server(make_config(tmp_path / "home", token=token)) as srv:
        import httpx

        assert httpx.get(f"{srv.url}/").status_code == 200, "the page loads to ask for the token"
        assert httpx.get(f"{srv.url}/api/jobs").status_code == 401
        headers = {"Authorization": f"Bearer {token}"}
        job = httpx.post(
            f"{srv.url}/api/jobs", json={"type": "levels", "params": {"count": 3}}, headers=headers
        ).json()
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(f"{srv.url}/#/jobs/{job['job_id']}")
            expect(page.locator("#token-dialog")).to_be_visible()
            page.fill("#token", "wrong")
            page.click("#token-form button")
            expect(page.locator("#token-message")).to_contain_text("refused")
            page.fill("#token", token)
            page.click("#token-form button")
            expect(page.locator("#token-dialog")).to_be_hidden()
            expect(page.locator("#job-status")).to_have_text("completed")
            expect(page.locator("#log .line", has_text="info 2")).to_be_visible()
            cookie = next(c for c in context.cookies() if c["name"] == "jobtrail_token")
            assert cookie["value"] == token and cookie["sameSite"] == "Strict"
            shot(page, "token-accepted")
        finally:
            context.close()


def offline_context(browser: Browser, **options: Any) -> tuple[BrowserContext, list[str]]:
    """A context whose requests reach 127.0.0.1 only, as on a machine with no internet;
    the list collects every request that tried to leave."""
    context = browser.new_context(**options)
    outside: list[str] = []

    def loopback_only(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", loopback_only)
    return context, outside


def test_docs_render_offline_with_swagger_ui_served_by_the_server(
    live: Live, browser: Browser
) -> None:
    response = live.http.get("/docs")
    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    assert "script-src 'self' 'sha256-" in csp and "unsafe-inline" not in csp
    assert "connect-src 'self'" in csp and "style-src 'self'" in csp
    assert "cdn" not in response.text and "https://" not in response.text
    for path, kind in (
        ("/web/docs/swagger-ui-bundle.js", "javascript"),
        ("/web/docs/swagger-ui.css", "text/css"),
        ("/web/docs/favicon.png", "image/png"),
    ):
        asset = live.http.get(path)
        assert asset.status_code == 200 and kind in asset.headers["content-type"], path
    assert live.http.get("/web/docs/redoc.standalone.js").status_code == 404, "only what /docs uses"
    assert live.http.get("/redoc").status_code == 404, "one docs UI: ReDoc needs inline styles"

    context, outside = offline_context(browser)
    try:
        page = context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        page.on("console", lambda msg: msg.type == "error" and problems.append(msg.text))
        page.goto(f"{live.url}/docs")
        operation = page.locator(".opblock", has_text="/api/jobs/{job_id}/logs/stream")
        expect(operation.first).to_be_visible()
        assert page.locator(".opblock").count() >= 8, "every operation is listed"
        health = page.locator(".opblock", has_text="/api/health")
        health.locator(".opblock-summary").click()
        health.locator("button.try-out__btn").click()
        health.locator("button.execute").click()
        expect(health.locator(".responses-wrapper .live-responses-table")).to_contain_text("ok")
        shot(page, "docs-offline")
        assert outside == [], f"the docs page reached out: {outside}"
        assert problems == [], f"errors or CSP refusals on the docs page: {problems}"
    finally:
        context.close()


def test_with_a_token_the_docs_use_the_cookie_the_page_sets(
    tmp_path: Path, browser: Browser
) -> None:
    token = "docs-token-456"
    with live_server(make_config(tmp_path / "home", token=token)) as srv:
        import httpx

        assert httpx.get(f"{srv.url}/web/docs/swagger-ui-bundle.js").status_code == 200
        assert httpx.get(f"{srv.url}/docs").status_code == 401
        context, outside = offline_context(browser)
        try:
            page = context.new_page()
            page.goto(f"{srv.url}/")
            expect(page.locator("#token-dialog")).to_be_visible()
            page.fill("#token", token)
            page.click("#token-form button")
            expect(page.locator("#token-dialog")).to_be_hidden()
            page.click("a.docs-link")
            page.wait_for_url(f"{srv.url}/docs")
            expect(page.locator(".opblock", has_text="/api/jobs").first).to_be_visible()
            jobs = page.locator(".opblock-get:has([data-path='/api/jobs'])")
            jobs.locator(".opblock-summary").click()
            jobs.locator("button.try-out__btn").click()
            jobs.locator("button.execute").click()
            expect(jobs.locator(".live-responses-table tbody .response-col_status")).to_have_text(
                re.compile("^200")
            )
            assert outside == []
        finally:
            context.close()


def test_times_are_shown_in_the_browsers_zone_with_the_zone_named(
    live: Live, browser: Browser
) -> None:
    job = live.submit("levels", count=3)
    done = live.wait(job["job_id"])
    record = live.logs(job["job_id"], format="json")["logs"][0]
    tokyo = ZoneInfo("Asia/Tokyo")

    def in_tokyo(iso: str) -> datetime:
        return datetime.fromtimestamp(epoch(iso), tz=tokyo)

    created = in_tokyo(done["created_at"]).strftime("%Y-%m-%d %H:%M:%S GMT+9")
    line = in_tokyo(record["timestamp"])
    line_time = f"{line:%H:%M:%S}.{line.microsecond // 1000:03d} GMT+9"

    context = browser.new_context(timezone_id="Asia/Tokyo", locale="en-US")
    try:
        page = context.new_page()
        page.goto(f"{live.url}/#/jobs/{job['job_id']}")
        expect(page.locator("#job-status")).to_have_text("completed")
        meta = page.locator("#job-meta")
        expect(meta.locator("dt:text-is('created') + dd")).to_have_text(created)
        expect(meta.locator("dt:text-is('ended') + dd")).to_contain_text(" GMT+9")
        first = page.locator(f"#log .line[data-seq='{record['seq']}']")
        expect(first.locator(".ts")).to_have_text(line_time)
        assert line.strftime("%Y-%m-%d") in (first.get_attribute("title") or "")
        shot(page, "job-times-tokyo")
        page.goto(f"{live.url}/#/")
        age = page.locator(f"#jobs-body tr[data-job-id='{job['job_id']}'] td").nth(5)
        expect(age).to_have_attribute("title", created)
    finally:
        context.close()


def test_required_params_are_marked_and_a_422_for_a_missing_one_is_shown(
    live: Live, page: Page
) -> None:
    page.goto(f"{live.url}/")
    page.click("#submit-box summary")
    page.select_option("#submit-type", "typed")
    count = page.locator("#submit-params input[name=count]")
    expect(count).to_have_attribute("required", "")
    label = page.locator("#submit-params label", has=page.locator("input[name=count]"))
    expect(label.locator(".param-name")).to_have_text("count *")
    expect(page.locator("#submit-params input[name=name]")).not_to_have_attribute("required", "")
    # a browser that does not check the form first still gets the API's own word for it
    page.evaluate("() => { document.getElementById('submit-form').noValidate = true; }")
    page.click("#submit-button")
    expect(page.locator("#submit-error")).to_contain_text("count: required parameter is missing")
    assert page.url.endswith("/"), "no job was submitted"


def test_a_followed_job_says_when_the_server_stops(tmp_path: Path, browser: Browser) -> None:
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    home, tests = tmp_path / "home", Path(__file__).parent
    serve = subprocess.Popen(
        [
            *(sys.executable, "-m", "jobtrail.cli", "serve", "--port", str(port), "--workers", "1"),
            *("--home", str(home), "--app-dir", str(tests), "--jobs-module", "jobs_fixture"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    context = browser.new_context()
    try:
        wait_until(lambda: _healthy(url), timeout=30, what="jobtrail serve is up")
        body = {"type": "ticker", "params": {"path": str(tmp_path / "gate"), "interval": 0.05}}
        job = httpx.post(f"{url}/api/jobs", json=body).json()
        page = context.new_page()
        page.goto(f"{url}/#/jobs/{job['job_id']}")
        expect(page.locator("#log .line", has_text="tick 2").first).to_be_visible()
        expect(page.locator("#conn")).to_have_text("live")
        serve.send_signal(signal.SIGTERM)
        # the stream ends with the server's word for it, not as a dropped connection
        expect(page.locator("#conn")).to_have_text("the server is stopping: reconnecting…")
        shot(page, "job-server-stopping")
        assert serve.wait(20) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it got
    finally:
        context.close()
        if serve.poll() is None:
            serve.kill()
            serve.wait(10)


def _healthy(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/api/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_job_being_cancelled_reads_cancelling_until_it_has_stopped(
    live: Live, page: Page, tmp_path: Path
) -> None:
    job = live.submit("slow_to_stop", path=str(tmp_path / "never"), cleanup=2.0)
    job_id = job["job_id"]
    live.wait(job_id, statuses=("running",))
    page.goto(f"{live.url}/#/jobs/{job_id}")
    expect(page.locator("#log .line", has_text="waiting for").first).to_be_visible()
    expect(page.locator("#job-status")).to_have_text("running")
    answer = live.http.post(f"/api/jobs/{job_id}/cancel").json()
    assert answer["status"] == "running" and answer["cancel_requested"] is True
    expect(page.locator("#job-status")).to_have_text("cancelling…")
    expect(page.locator("#log .line", has_text="cleaning up").first).to_be_visible()
    page.goto(f"{live.url}/#/")
    row = page.locator(f"#jobs-body tr[data-job-id='{job_id}'] .status")
    expect(row).to_have_text(re.compile("^cancell"))  # cancelling…, then cancelled
    expect(row).to_have_text("cancelled", timeout=15_000)


def test_the_playbook_is_required_and_offered_from_the_servers_playbooks(
    live: Live, page: Page
) -> None:
    playbooks = live.http.get("/api/playbooks").json()["playbooks"]
    assert "demo.yml" in playbooks
    page.goto(f"{live.url}/")
    page.click("#submit-box summary")
    page.select_option("#submit-type", "ansible_playbook")
    playbook = page.locator("#submit-params input[name=playbook]")
    expect(playbook).to_have_attribute("required", "")
    expect(playbook).to_have_attribute("list", "playbook-list")
    expect(page.locator("#playbook-list option")).to_have_count(len(playbooks))
    options = page.eval_on_selector_all("#playbook-list option", "os => os.map(o => o.value)")
    assert options == playbooks
    page.click("#submit-button")  # the browser asks for it
    assert page.url.endswith("/")
    page.evaluate("() => { document.getElementById('submit-form').noValidate = true; }")
    page.click("#submit-button")
    expect(page.locator("#submit-error")).to_contain_text("playbook")
    expect(page.locator("#submit-error")).to_contain_text("demo.yml")  # the 422 lists them
    shot(page, "submit-playbook-missing")


# -- issue 14: search, fields, durations, root causes, playbook tables, cancel and rerun ---------
def opened_job(page: Page, old_id: str) -> str:
    """The id of the job the page went to from `old_id`'s page (a rerun)."""
    page.wait_for_url(
        lambda url: (
            re.search(r"#/jobs/[a-z_]+-[0-9a-f]{12}$", url) is not None
            and not url.endswith(f"/{old_id}")
        )
    )
    return page.url.rsplit("/", 1)[1]


def small_search_pages(route: Route) -> None:
    """The page's search requests, asking the real server for 7 matches at a time."""
    route.continue_(url=re.sub(r"([?&])max=\d+", r"\g<1>max=7", route.request.url))


def test_search_counts_matches_in_the_whole_log_and_jumps_to_one_not_loaded(
    live: Live, page: Page
) -> None:
    job = live.submit("levels", count=6000)
    job_id = job["job_id"]
    live.wait(job_id, timeout=60)
    page.goto(f"{live.url}/#/jobs/{job_id}")
    expect(page.locator("#log .line", has_text="info 5999")).to_be_visible()
    lines = page.locator("#log .line")
    assert lines.count() == 2000 and int(lines.first.get_attribute("data-seq") or 0) > 4000
    info = page.locator("#search-info")

    # "info 12", "info 120".."info 129", "info 1200".."info 1299": none of them is loaded
    page.fill("#search", "info 12")
    expect(info).to_have_text("111 matches")
    page.press("#search", "Enter")
    expect(info).to_have_text("1 of 111")
    current = page.locator("#log .line.current")
    expect(current.locator(".msg")).to_have_text("info 12")
    expect(current.locator(".msg mark")).to_have_text("info 12")
    expect(current).to_be_in_viewport()
    assert lines.count() <= 2000 and lines.first.get_attribute("data-seq") == "1", "its context"
    expect(page.locator("#newest")).to_be_visible()  # the view stopped following
    shot(page, "search-jump")
    page.click("#search-next")
    expect(info).to_have_text("2 of 111")
    expect(current.locator(".msg")).to_have_text("info 120")
    assert page.locator("#log .line.match").count() == 111, "every loaded match is marked"
    page.click("#search-prev")
    expect(info).to_have_text("1 of 111")
    download = page.locator("#download").get_attribute("href") or ""
    assert download == f"/api/jobs/{job_id}/logs/download?q=info+12"
    matching = live.http.get(download).text.splitlines()
    assert len(matching) == 111 and all("info 12" in line for line in matching)

    page.fill("#search", "INFO 12")
    expect(info).to_have_text("no matches")
    page.check("#search-case")
    expect(info).to_have_text("111 matches")
    page.uncheck("#search-case")
    page.check("#search-regex")
    page.fill("#search", r"^info 12\d$")
    expect(info).to_have_text("10 matches")
    page.press("#search", "Enter")
    expect(current.locator(".msg")).to_have_text("info 120")

    page.fill("#search", "info (")  # the 422's own words, as the API gives them
    detail = live.http.get(
        f"/api/jobs/{job_id}/logs/search", params={"q": "info (", "regex": "true"}
    )
    assert detail.status_code == 422
    expect(info).to_have_text(detail.json()["detail"])
    expect(info).to_have_class(re.compile(r"\berror\b"))
    shot(page, "search-bad-regex")

    # past the first page of matches: the page asks for the next one (pages of 7 here)
    page.route(re.compile(r"/logs/search\?"), small_search_pages)
    page.uncheck("#search-regex")
    page.fill("#search", "info 1")  # info 1, info 10..19, info 100..199, info 1000..1999
    expect(info).to_have_text("1111 matches")
    for n in range(1, 10):
        page.press("#search", "Enter")
        expect(info).to_have_text(f"{n} of 1111")
    expect(current.locator(".msg")).to_have_text("info 17")
    page.press("#search", "Shift+Enter")
    expect(info).to_have_text("8 of 1111")
    expect(current.locator(".msg")).to_have_text("info 16")

    page.fill("#search", "")
    page.click("#newest")
    expect(page.locator("#log .line", has_text="info 5999")).to_be_visible()
    expect(page.locator("#newest")).to_be_hidden()
    assert page.locator("#log .line.match").count() == 0


def test_next_finds_the_matches_a_running_job_wrote_after_the_search(
    live: Live, page: Page, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    try:
        job = live.submit("ticker", path=str(gate), interval=0.02)
        page.goto(f"{live.url}/#/jobs/{job['job_id']}")
        expect(page.locator("#log .line", has_text="tick 3").first).to_be_visible()
        info = page.locator("#search-info")
        page.check("#search-regex")
        page.fill("#search", "^tick [0-9]*3$")  # tick 3, 13, 23, ...: the n-th is tick 10n-7
        expect(info).to_have_text(re.compile(r"^\d+ match"))
        total = int((info.text_content() or "").split()[0])
        for n in range(1, total + 1):
            page.press("#search", "Enter")
            expect(info).to_have_text(f"{n} of {total}")
        newer = f"tick {10 * (total + 1) - 7}"
        expect(page.locator("#log .line .msg", has_text=re.compile(f"^{newer}$"))).to_be_visible()
        expect(page.locator("#search-next")).to_be_enabled()
        page.click("#search-next")
        expect(info).to_have_text(re.compile(f"^{total + 1} of \\d+$"))
        expect(page.locator("#log .line.current .msg")).to_have_text(newer)
    finally:
        gate.touch()


def test_fields_show_as_chips_and_a_click_on_one_filters_the_log(live: Live, page: Page) -> None:
    job = live.submit("fielded", count=9)
    job_id = job["job_id"]
    live.wait(job_id)
    page.goto(f"{live.url}/#/jobs/{job_id}")
    line = page.locator("#log .line", has_text="try 0")
    expect(line.locator(".msg")).to_have_text("try 0")  # the chips come after the message
    expect(line.locator(".chip")).to_have_text(["attempt=1", "user=u0", "ok=false"])
    cut = page.locator("#log .line", has_text="many").locator(".chip.cut")
    expect(cut).to_have_text(re.compile(r"^\d+ more fields cut$"))
    expect(page.locator("#log .line", has_text="plain, no fields").locator(".chip")).to_have_count(
        0
    )
    shot(page, "fields-chips")

    page.locator("#log .line", has_text="try 2").locator(".chip", has_text="attempt=3").click()
    expect(page.locator("#field-filters .chip")).to_have_text(["attempt=3 ✕"])
    messages = page.locator("#log .line .msg")
    # attempt 3 as a number, and "3" as a string: field=attempt:3 compares their text
    expect(messages).to_have_text(["try 2", "try 5", "try 8", "a long value"])
    download = page.locator("#download").get_attribute("href") or ""
    assert download == f"/api/jobs/{job_id}/logs/download?field=attempt%3A3"
    assert len(live.http.get(download).text.splitlines()) == 4
    page.locator("#log .line", has_text="try 5").locator(".chip", has_text="user=u1").click()
    expect(messages).to_have_text(["try 5"])  # both must hold
    shot(page, "fields-filtered")
    page.locator("#field-filters .chip", has_text="attempt=3").click()
    expect(page.locator("#field-filters .chip")).to_have_text(["user=u1 ✕"])
    expect(messages).to_have_text(["try 1", "try 3", "try 5", "try 7"])
    page.locator("#field-filters .chip").click()
    expect(messages.filter(has_text="try")).to_have_count(9)
    assert page.locator("#download").get_attribute("href") == f"/api/jobs/{job_id}/logs/download"


def test_jobs_show_their_duration_in_the_list_and_the_header(live: Live, page: Page) -> None:
    job = live.submit("sleep", seconds=1.2, steps=2)
    done = live.wait(job["job_id"])
    assert done["duration_s"] >= 1.2
    page.goto(f"{live.url}/#/jobs/{job['job_id']}")
    expect(page.locator("#job-status")).to_have_text("completed")
    expect(page.locator("#job-duration")).to_have_text(f"{done['duration_s']:.1f} s")
    page.goto(f"{live.url}/#/")
    row = page.locator(f"#jobs-body tr[data-job-id='{job['job_id']}'] td.duration")
    expect(row).to_have_text(f"{done['duration_s']:.1f} s")


def test_the_root_cause_of_a_failed_python_job_is_in_the_digest(live: Live, page: Page) -> None:
    job = live.submit("root_cause", how="from")
    done = live.wait(job["job_id"])
    assert done["status"] == "failed" and done["failure"]["kind"] == "exception"
    page.goto(f"{live.url}/#/jobs/{job['job_id']}")
    expect(page.locator("#failure")).to_be_visible()
    expect(page.locator("#failure-error")).to_have_text(done["error"])
    root = (
        "ConnectionError: could not connect to postgres://db.internal:5432/inv: connection refused"
    )
    field = page.locator("#failure-fields dd")
    expect(field.and_(page.locator("[data-key=root-cause]"))).to_have_text(root)
    chain = page.locator("#failure-fields [data-key=causes] li")
    expect(chain).to_have_text(["RuntimeError: inventory unavailable", root])
    frame = done["failure"]["frame"]
    assert frame["file"].endswith("jobs_fixture.py") and frame["function"] == "_connect"
    where = f"{frame['file']}:{frame['line']} in _connect"
    expect(field.and_(page.locator("[data-key=frame]"))).to_have_text(where)
    shot(page, "job-root-cause")


def test_cancel_and_rerun_buttons_open_the_new_job(live: Live, page: Page, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    try:
        job = live.submit("ticker", path=str(gate), interval=0.05)
        job_id = job["job_id"]
        page.goto(f"{live.url}/#/jobs/{job_id}")
        expect(page.locator("#log .line", has_text="tick 2").first).to_be_visible()
        expect(page.locator("#rerun")).to_be_hidden()
        cancel = page.locator("#cancel")
        expect(cancel).to_be_enabled()
        cancel.click()
        expect(page.locator("#job-status")).to_have_text("cancelled")
        expect(cancel).to_be_hidden()
        assert live.job(job_id)["status"] == "cancelled"

        page.click("#rerun")
        new_id = opened_job(page, job_id)
        meta = page.locator("#job-meta")
        expect(meta.locator("dt:text-is('rerun of') + dd a")).to_have_text(job_id)
        expect(page.locator("#job-status")).to_have_text("running")
        again = live.job(new_id)
        assert again["rerun_of"] == job_id and again["params"] == job["params"]
        assert live.job(job_id)["reruns"] == [new_id]
        shot(page, "job-rerun")
        page.click(f"#job-meta a:text-is('{job_id}')")  # back to the first: it lists its rerun
        expect(meta.locator("dt:text-is('reruns') + dd a")).to_have_text(new_id)
    finally:
        gate.touch()


def test_a_rerun_of_a_job_with_secret_params_asks_for_them(live: Live, page: Page) -> None:
    job = live.submit("leaky", user="bob", password="hunter2-rerun", api_token="tok-4d2a9e1f")
    job_id = job["job_id"]
    assert live.wait(job_id)["params"]["password"] == "********", "never stored"
    page.goto(f"{live.url}/#/jobs/{job_id}")
    page.click("#rerun")
    refused = live.http.post(f"/api/jobs/{job_id}/rerun", json={})
    assert refused.status_code == 422
    expect(page.locator("#action-error")).to_have_text(f"cannot rerun: {refused.json()['detail']}")
    inputs = page.locator("#rerun-secret-fields input")
    expect(inputs).to_have_count(2)
    assert inputs.evaluate_all("xs => xs.map(x => [x.name, x.type])") == [
        ["password", "password"],
        ["api_token", "password"],
    ]
    shot(page, "rerun-asks-for-secrets")
    page.fill("#rerun-secret-fields input[name=password]", "hunter2-again")
    page.fill("#rerun-secret-fields input[name=api_token]", "tok-77aa00bb")
    page.click("#rerun-secrets-submit")
    new_id = opened_job(page, job_id)
    expect(page.locator("#job-status")).to_have_text("completed")
    expect(page.locator("#rerun-secrets")).to_be_hidden()
    again = live.job(new_id)
    assert again["rerun_of"] == job_id and again["params"]["user"] == "bob"
    text = live.http.get(f"/api/jobs/{new_id}/logs/download").text
    assert "with password ********" in text and "hunter2" not in text


def test_a_running_jobs_cancel_button_is_disabled_while_it_stops(
    live: Live, page: Page, tmp_path: Path
) -> None:
    job = live.submit("slow_to_stop", path=str(tmp_path / "never"), cleanup=2.0)
    job_id = job["job_id"]
    live.wait(job_id, statuses=("running",))
    page.goto(f"{live.url}/#/jobs/{job_id}")
    expect(page.locator("#log .line", has_text="waiting for").first).to_be_visible()
    page.click("#cancel")
    expect(page.locator("#job-status")).to_have_text("cancelling…")
    expect(page.locator("#cancel")).to_be_disabled()
    expect(page.locator("#cancel")).to_have_text("Cancelling…")
    expect(page.locator("#job-status")).to_have_text("cancelled", timeout=15_000)
    expect(page.locator("#cancel")).to_be_hidden()
    expect(page.locator("#rerun")).to_be_visible()


@pytest.fixture(scope="module")
def playbooks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A server whose playbooks are tests/playbooks (as tests/test_ansible.py's)."""
    saved = os.environ.get(PLAYBOOKS_ENV)
    try:
        config = make_config(tmp_path_factory.mktemp("home"), playbooks=PLAYBOOKS)
        with live_server(config) as running:
            yield running
    finally:  # the service exports the dir to os.environ: don't leak it into other modules
        if saved is None:
            os.environ.pop(PLAYBOOKS_ENV, None)
        else:
            os.environ[PLAYBOOKS_ENV] = saved


def test_a_playbooks_host_recap_and_slowest_tasks_show_and_its_failed_hosts_rerun(
    playbooks: Live, page: Page
) -> None:
    inventory = "localhost,no-such-host.invalid,"
    job = playbooks.submit("ansible_playbook", playbook="unreachable.yml", inventory=inventory)
    job_id = job["job_id"]
    done = playbooks.wait(job_id, timeout=90)
    assert done["status"] == "failed"
    hosts = playbooks.http.get(f"/api/jobs/{job_id}/hosts").json()["hosts"]
    tasks = playbooks.http.get(f"/api/jobs/{job_id}/tasks").json()["tasks"]
    page.goto(f"{playbooks.url}/#/jobs/{job_id}")
    expect(page.locator("#playbook")).to_be_visible()
    recap = page.locator("#hosts-body tr")
    expect(recap).to_have_count(len(hosts))
    for host in hosts:  # the PLAY RECAP's numbers, as the API has them
        row = page.locator(f"#hosts-body tr[data-host='{host['host']}']")
        cells = [row.locator(f"td[data-key={key}]") for key in RECAP]
        for cell, key in zip(cells, RECAP, strict=True):
            expect(cell).to_have_text(str(host[key]))
    bad = page.locator("#hosts-body tr.bad")
    expect(bad).to_have_count(1)  # the unreachable host is the one highlighted
    expect(bad.locator("td.host")).to_have_text("no-such-host.invalid")
    expect(bad.locator("td[data-key=unreachable]")).to_have_text("1")
    expect(page.locator("#hosts-body tr[data-host=localhost] td[data-key=ok]")).to_have_text("1")

    slowest = sorted(
        (t for t in tasks if t["duration_s"] is not None), key=lambda t: -t["duration_s"]
    )[:10]
    rows = page.locator("#tasks-body tr")
    expect(rows).to_have_count(len(slowest))
    expect(rows.locator("td.host")).to_have_text([t["host"] for t in slowest])
    expect(rows.first.locator("td.task")).to_have_text("Ping it")
    expect(page.locator("#running-now")).to_be_hidden()
    shot(page, "playbook-recap")

    page.click("#rerun-failed")
    new_id = opened_job(page, job_id)
    again = playbooks.job(new_id)
    assert again["rerun_of"] == job_id
    assert again["params"]["limit"] == "no-such-host.invalid"
    assert again["params"]["inventory"] == inventory
    expect(page.locator("#job-meta")).to_contain_text("no-such-host.invalid")
    playbooks.wait(new_id, timeout=90)


def test_a_running_playbook_shows_the_hosts_it_is_acting_on_now(
    playbooks: Live, page: Page
) -> None:
    job = playbooks.submit("ansible_playbook", playbook="slow.yml", inventory="localhost,")
    job_id = job["job_id"]
    try:
        page.goto(f"{playbooks.url}/#/jobs/{job_id}")
        now = page.locator("#running-list li")
        expect(now).to_have_text(["Slow play: Sleep for a long time on localhost"], timeout=60_000)
        expect(page.locator("#tasks-body tr td.task")).to_have_text(["Started"])
        shot(page, "playbook-running")
        page.click("#cancel")
        expect(page.locator("#job-status")).to_have_text("cancelled", timeout=30_000)
        expect(page.locator("#running-now")).to_be_hidden()
    finally:
        playbooks.http.post(f"/api/jobs/{job_id}/cancel")


def test_in_distributed_mode_the_page_searches_filters_by_a_field_and_reruns(
    tmp_path: Path, page: Page
) -> None:
    with (
        redis_server(tmp_path / "redis") as rs,
        workers(rs.url, count=2),
        live_server(make_config(tmp_path / "home", backend=rs.url)) as live,
    ):
        job = live.submit("fielded", count=9)
        job_id = job["job_id"]
        live.wait(job_id)
        page.goto(f"{live.url}/#/jobs/{job_id}")
        expect(page.locator("#job-status")).to_have_text("completed")
        page.fill("#search", "try")
        expect(page.locator("#search-info")).to_have_text("9 matches")
        page.locator("#log .line", has_text="try 2").locator(".chip", has_text="attempt=3").click()
        messages = page.locator("#log .line .msg")
        expect(messages).to_have_text(["try 2", "try 5", "try 8", "a long value"])
        expect(page.locator("#search-info")).to_have_text("3 matches")  # within the filter
        page.press("#search", "Enter")
        expect(page.locator("#log .line.current .msg")).to_have_text("try 2")
        expect(page.locator("#job-duration")).not_to_have_text("")
        shot(page, "distributed-search-fields")

        failed = live.submit("root_cause", how="from")
        live.wait(failed["job_id"])
        page.goto(f"{live.url}/#/jobs/{failed['job_id']}")
        expect(page.locator("#failure-fields [data-key=root-cause]")).to_have_text(
            re.compile("^ConnectionError: could not connect to ")
        )
        page.click("#rerun")
        new_id = opened_job(page, failed["job_id"])
        expect(page.locator("#job-status")).to_have_text("failed")
        assert live.job(new_id)["rerun_of"] == failed["job_id"]
        assert live.job(failed["job_id"])["reruns"] == [new_id]
