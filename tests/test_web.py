"""The web page (app/web): served with a strict CSP, local assets only, small; and driven in Debian's chromium
with Playwright over a hand-made GridEncoder (no model). Browser tests skip when chromium or playwright is
missing: ``apt-get install -y chromium && .venv/bin/pip install -e '.[dev]'`` enables them."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.web.routes import CSP, STATIC, prefers_html
from tests.app_fixtures import GridEncoder, make_settings, running_server, wait_ready, write_jsonl

ENABLE = "apt-get install -y chromium && .venv/bin/pip install -e '.[dev]'"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
TOPICS, LANGUAGES = ["A", "B"], ["ar", "de", "en", "ja"]
ASSETS = ["/ui", "/ui/static/app.js", "/ui/static/app.css"]


def web_app(tmp_path: Path, **overrides):
    from app.main import create_app

    rows = [{"id": f"{t}-{lang}", "text": f"{t} {lang}", "language": lang, "group": t}
            for t in TOPICS for lang in LANGUAGES]
    seed = write_jsonl(tmp_path / "grid.jsonl", rows)
    settings = make_settings(tmp_path, tmp_path / "unused-model", seed, calibration="center", **overrides)
    return create_app(settings, encoder=GridEncoder(TOPICS, LANGUAGES))


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with TestClient(web_app(tmp_path_factory.mktemp("web"))) as c:
        wait_ready(c)
        yield c


def test_page_and_assets_served_with_strict_csp(client):
    for path in ASSETS:
        response = client.get(path, headers={"Accept": "text/html"})
        assert response.status_code == 200, path
        csp = response.headers["content-security-policy"]
        assert csp == CSP
        assert "default-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert not re.search(r"https?://", csp)
    assert client.get("/ui").headers["content-type"].startswith("text/html")
    assert client.get("/ui/static/missing.js").status_code == 404


def test_assets_are_local_small_and_script_is_not_inline(client):
    html = client.get("/ui").text
    referenced = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert referenced and all(ref.startswith("/ui/static/") or ref.startswith("data:") for ref in referenced)
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline script"
    assert " style=" not in html and "<style" not in html
    total = 0
    for path in STATIC.iterdir():
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"https?://", text), path.name
        total += len(text.encode())
    assert total <= 150 * 1024, total


def test_root_stays_json_for_api_clients_and_sends_browsers_to_the_page(client):
    for accept in (None, "application/json", "*/*", "application/json, text/html;q=0.5"):
        headers = {"Accept": accept} if accept else {}
        response = client.get("/", headers=headers, follow_redirects=False)
        assert response.status_code == 200 and response.json()["name"] == "babelsearch", accept
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    response = client.get("/", headers={"Accept": browser}, follow_redirects=False)
    assert response.status_code == 307 and response.headers["location"] == "/ui"
    assert not prefers_html("text/html;q=0, application/json") and not prefers_html("text/html;q=bad")


def test_ui_routes_stay_out_of_the_openapi_schema(client):
    assert not [p for p in client.get("/openapi.json").json()["paths"] if p.startswith("/ui")]


# --- in a real browser ------------------------------------------------------------------------------------

def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(f"playwright is not installed: {ENABLE}")
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip(f"chromium is not installed: {ENABLE}")
    return sync_playwright


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    sync_playwright = _playwright()
    app = web_app(tmp_path_factory.mktemp("web-browser"), max_query_chars=40)
    with running_server(app, limit_s=180) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=30_000)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(10_000)
        foreign = []
        page.on("request", lambda r: None if r.url.startswith(base) or r.url.startswith("data:") else foreign.append(r.url))
        csp_errors = []
        page.on("console", lambda m: csp_errors.append(m.text) if "Content Security Policy" in m.text else None)
        yield page, base, foreign, csp_errors
        browser.close()


def _search(page, base, query_string):
    page.goto(f"{base}/ui?{query_string}")
    page.wait_for_selector("body[data-ready=true]")
    page.wait_for_selector("#results .hit")
    return page


def _ids(page, column=0):
    return page.locator(".column").nth(column).locator(".hit").evaluate_all("els => els.map(e => e.dataset.id)")


def test_search_in_the_browser(browser_page):
    page, base, foreign, csp_errors = browser_page
    _search(page, base, "q=A+de&ql=de")
    langs = set(page.locator(".hit").evaluate_all("els => els.map(e => e.lang)"))
    assert len(langs) >= 3
    assert page.locator('.hit[lang="ar"]').first.get_attribute("dir") == "rtl"
    assert page.locator('.hit[lang="de"]').first.get_attribute("dir") != "rtl"
    assert "ms" in page.locator(".latency").first.inner_text()
    assert "de" in page.locator("#status").inner_text()
    calibrated = _ids(page)
    page.wait_for_selector("body[data-paint-ms]")
    assert float(page.get_attribute("body", "data-paint-ms")) <= 300  # first result painted after the answer

    page.get_by_label("raw", exact=True).check()  # the switch: raw ranking differs (GridEncoder is biased)
    page.wait_for_function("() => document.querySelector('.column h3').textContent.startsWith('Raw')")
    raw = _ids(page)
    assert raw != calibrated and raw[:2] == ["A-de", "B-de"]
    assert "mode=raw" in page.url

    page.get_by_label("side by side").check()
    page.wait_for_function("() => document.querySelectorAll('.column').length === 2")
    assert _ids(page, 0) == raw and _ids(page, 1) == calibrated

    page.locator('.chip[data-lang="ja"]').click()  # chips filter, and the URL keeps the state
    page.wait_for_function("() => [...document.querySelectorAll('.hit')].every(e => e.lang === 'ja')")
    assert "langs=ja" in page.url
    page.reload()
    page.wait_for_selector("#results .hit")
    assert page.locator('.chip[data-lang="ja"]').get_attribute("aria-pressed") == "true"
    assert set(page.locator(".hit").evaluate_all("els => els.map(e => e.lang)")) == {"ja"}
    assert page.locator(".column").count() == 2
    assert not foreign and not csp_errors


def test_keyboard_only_search(browser_page):
    page, base, foreign, _ = browser_page
    page.goto(f"{base}/ui")
    page.wait_for_selector("body[data-ready=true]")
    page.keyboard.press("Tab")  # the first tab stop is the Search view tab; then Audit, Ingest, the query box
    for _ in range(3):
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.type("B en")
    page.keyboard.press("Enter")
    page.wait_for_selector("#results .hit")
    assert _ids(page)[0].startswith("B-") and "q=B+en" in page.url and not foreign


def test_api_error_is_shown(browser_page):
    page, base, foreign, _ = browser_page
    page.goto(f"{base}/ui")
    page.wait_for_selector("body[data-ready=true]")
    page.fill("#q", "A de " + "x" * 60)  # over max_query_chars = 40
    page.press("#q", "Enter")
    alert = page.get_by_role("alert")
    alert.wait_for(state="visible")
    assert "query" in alert.inner_text() and re.search(r"\b4\d\d\b", alert.inner_text())
    assert not foreign


def test_audit_heatmap(browser_page):
    page, base, foreign, _ = browser_page
    page.goto(f"{base}/ui?view=audit")
    page.wait_for_selector("body[data-ready=true]")
    page.get_by_role("button", name="Run audit").click()
    page.wait_for_selector("table.heatmap")
    tables = page.locator("table.heatmap")
    assert tables.count() == 2  # raw and calibrated side by side
    for i in range(2):
        assert tables.nth(i).locator("td.cell").count() == len(LANGUAGES) ** 2
    figures = page.locator("table.figures tbody tr")
    assert figures.count() == len(LANGUAGES) + 1
    assert not foreign


def test_ingest_view(browser_page):
    page, base, foreign, _ = browser_page
    page.goto(f"{base}/ui?view=ingest")
    page.wait_for_selector("body[data-ready=true]")
    page.fill("#key", "wrong")
    page.fill("#jsonl", '{"id": "x", "text": "A en"}\n')
    page.get_by_role("button", name="Send").click()
    alert = page.get_by_role("alert")
    alert.wait_for(state="visible")
    assert re.search(r"\b40[13]\b", alert.inner_text())  # writes disabled here (no key configured)
    page.fill("#jsonl", "not json")
    page.get_by_role("button", name="Send").click()
    page.wait_for_function("() => document.getElementById('error').textContent.includes('line 1')")
    assert not foreign


def test_no_serious_accessibility_violation(browser_page):
    from axe_playwright_python.sync_playwright import Axe

    page, base, _, _ = browser_page
    for query in ("q=A+ar&mode=both", "view=audit"):
        _search(page, base, query) if "q=" in query else page.goto(f"{base}/ui?{query}")
        if "audit" in query:
            page.get_by_role("button", name="Run audit").click()
            page.wait_for_selector("table.heatmap")
        results = Axe().run(page)
        bad = [v for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
        assert not bad, [(v["id"], v["help"], [n["target"] for n in v["nodes"]][:3]) for v in bad]
