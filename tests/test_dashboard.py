"""The live dashboard end to end: events on the real embedded broker -> feed -> HTTP/SSE ->
headless Chromium (Debian's, driven by Playwright's Python package).

The browser test installs what it needs: Chromium with apt-get when /usr/bin/chromium is
missing and we are root, Playwright with pip when it is not importable. It skips, saying
why, only where Chromium cannot be installed.
"""

from __future__ import annotations

import http.client
import importlib
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumers.dashboard.feed import Feed
from consumers.dashboard.server import DashboardServer
from consumers.dashboard.state import DASHBOARD_TOPICS, DashboardState
from producers.provision import ensure_topics
from schemas.settings import Settings
from tests.output_events import (
    SECOND,
    T0,
    account_risk,
    alert,
    decision,
    instrument_risk,
    publish,
    specs,
    state_change,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


# --- installing the browser when it is missing ----------------------------------------------

def _ensure_chromium() -> str | None:
    """Path of Chromium, installing Debian's package if we can; None if we cannot."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "install", "-y", "-q", "chromium"],
                    ["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "chromium"]):
        subprocess.run(command, env=env, capture_output=True, timeout=900, check=False)
        if os.access(CHROMIUM, os.X_OK):
            return CHROMIUM
    return None


def _ensure_playwright() -> Any:
    try:
        return importlib.import_module("playwright.sync_api")
    except ImportError:
        # Only the Python package: the browser is Debian's, never `playwright install`.
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "playwright"],
                       check=True, timeout=600)
        importlib.invalidate_caches()
        return importlib.import_module("playwright.sync_api")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = _ensure_chromium()
    if chromium is None:
        pytest.skip(f"Chromium is not at {CHROMIUM} and cannot be installed here (needs root "
                    "and apt-get): `apt-get install -y chromium` to run the browser test")
    sync_api = _ensure_playwright()
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS,
                                              headless=True)
        try:
            yield launched
        finally:
            launched.close()


# --- a running dashboard over the real broker ----------------------------------------------

@pytest.fixture
def settings(kafka_settings: Settings) -> Settings:
    ensure_topics(kafka_settings, specs(DASHBOARD_TOPICS))
    return kafka_settings


@pytest.fixture
def dashboard(settings: Settings) -> Iterator[DashboardServer]:
    state = DashboardState()
    feed = Feed(settings, state).start()
    server = DashboardServer("127.0.0.1", 0, state,
                             health=lambda: (feed.alive, feed.error or "feed running"))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        feed.stop()
        thread.join(5)


def _market_day(symbol: str, n: int, start: float, seed: int) -> list[Any]:
    """A deterministic random walk with a volatility burst in the last third."""
    import random

    rng = random.Random(seed)
    price, events = start, []
    for i in range(n):
        vol = 0.004 if i < 2 * n // 3 else 0.012
        price *= 1 + rng.gauss(0, vol)
        events.append(instrument_risk(f"{symbol}-{i}", ts=T0 + i * SECOND, symbol=symbol,
                                      price=price, vol=vol * (1 + 0.2 * rng.random())))
    return events


def _request(server: DashboardServer, method: str, path: str,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(str(host), port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        body = response.read() if path != "/events" else response.read(200)
        return response.status, dict(response.getheaders()), body
    finally:
        conn.close()


def _wait_until(page: Any, predicate: str, timeout_s: float = 20.0) -> None:
    """Poll a JS predicate with page.evaluate (wait_for_function evaluates strings inside
    the page, which the dashboard's Content-Security-Policy rightly forbids)."""
    import time

    deadline = time.monotonic() + timeout_s
    while not page.evaluate(predicate):
        assert time.monotonic() < deadline, f"timed out waiting for {predicate}"
        page.wait_for_timeout(100)


# --- tests -----------------------------------------------------------------------------------

def test_state_deltas_carry_only_what_is_newer() -> None:
    state = DashboardState(max_points=3)
    for i in range(5):
        state.apply(instrument_risk(f"p{i}", ts=T0 + i * SECOND, price=100 + i))
    state.apply(alert("a1"))
    full = state.delta(0)
    assert full["reset"] and full["seq"] == 6
    assert [p[1] for p in full["series"]["AAPL"]] == [102, 103, 104]  # bounded history
    later = state.delta(5)
    assert not later["reset"] and later["series"] == {} and len(later["alerts"]) == 1
    assert state.delta(6)["alerts"] == [] and state.delta(6)["instruments"] == []


@pytest.mark.kafka
def test_server_is_read_only_loopback_and_serves_its_assets(
        settings: Settings, dashboard: DashboardServer) -> None:
    publish(settings, [alert("r1")])
    status, headers, body = _request(dashboard, "GET", "/")
    assert status == 200 and b"streamrisk" in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    for asset in ("app.js", "chart.js", "style.css"):
        assert _request(dashboard, "GET", f"/static/{asset}")[0] == 200
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, headers, _ = _request(dashboard, method, "/api/snapshot")
        assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert _request(dashboard, "GET", "/static/../server.py")[0] == 404
    assert _request(dashboard, "GET", "/", {"Host": "evil.example:80"})[0] == 421
    status, _, body = _request(dashboard, "GET", "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, headers, body = _request(dashboard, "GET", "/events")
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    assert body.startswith(b"retry: 2000")


@pytest.mark.kafka
@pytest.mark.browser
def test_dashboard_in_headless_chromium_shows_live_alerts_states_and_charts(
        settings: Settings, dashboard: DashboardServer, browser: Any, tmp_path: Path) -> None:
    publish(settings, [
        *_market_day("AAPL", 90, 190.0, seed=7), *_market_day("MSFT", 40, 410.0, seed=8),
        account_risk("acc-1", ts=T0 + 80 * SECOND, account="ACC-1", day_pnl=-12_500.0),
        account_risk("acc-2", ts=T0 + 80 * SECOND, account="ACC-2", day_pnl=8_200.0),
        state_change("s1", ts=T0 + 70 * SECOND, scope="account:ACC-2", to_state="halted",
                     cause="intraday drawdown 8.1% over the 5% hard limit"),
        decision("d1", ts=T0 + 75 * SECOND, account="ACC-1", deny=True),
        alert("a-initial", ts=T0 + 65 * SECOND, severity="warning", reason_code="VOL_SPIKE",
              message="EWMA volatility tripled in 20 ticks"),
    ])
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}")
            if msg.type in ("error", "warning") else None)
    try:
        page.goto(dashboard.url, wait_until="domcontentloaded")
        assert page.title().startswith("streamrisk")
        page.wait_for_selector("#alerts li[data-id='a-initial']", timeout=20_000)
        page.wait_for_selector("#conn.conn-live", timeout=10_000)
        _wait_until(page, "() => window.streamrisk.model.series.get('AAPL')?.length >= 90")

        # A live alert published after the page loaded appears without a reload.
        publish(settings, [alert("a-live", ts=T0 + 91 * SECOND, severity="critical",
                                 message="loss of 5.1% beyond the 2.3% VaR 99")])
        live = page.wait_for_selector("#alerts li[data-id='a-live']", timeout=20_000)
        assert "VAR_BREACH" in live.inner_text() and "beyond the 2.3% VaR 99" in live.inner_text()
        first = page.eval_on_selector("#alerts li", "e => e.dataset.id")
        assert first == "a-live"  # newest first

        states = page.inner_text("#states")
        assert "account:ACC-2" in states and "halted" in states.lower()
        assert "over the 5% hard limit" in states
        accounts = page.inner_text("#accounts")
        assert "ACC-1" in accounts and "-12,500" in accounts
        assert "MAX_NOTIONAL" in page.inner_text("#denials")
        assert page.inner_text("#kpi-scopes") == "1"

        page.wait_for_timeout(300)  # one animation frame after the last update
        pixels = page.evaluate("""() => ['price-chart', 'vol-chart'].map(id => {
            const c = document.getElementById(id);
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let painted = 0, blue = 0;
            for (let i = 0; i < d.length; i += 4) {
                if (d[i + 3] > 0) painted++;
                if (d[i + 3] > 200 && d[i + 2] > 200 && d[i] < 120) blue++;  // the price line
            }
            return {painted, blue, total: d.length / 4};
        })""")
        price, vol = pixels
        assert price["painted"] > 0.05 * price["total"], price  # bands + line + axes
        assert price["blue"] > 100, price
        assert vol["painted"] > 0.01 * vol["total"], vol

        page.select_option("#symbol", "MSFT")
        _wait_until(page, "() => window.streamrisk.model.selected === 'MSFT'")
        page.select_option("#symbol", "AAPL")
        page.wait_for_timeout(300)
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 20_000
        if os.environ.get("STREAMRISK_SCREENSHOT"):
            shutil.copy(shot, os.environ["STREAMRISK_SCREENSHOT"])
        assert problems == []
    finally:
        page.close()
