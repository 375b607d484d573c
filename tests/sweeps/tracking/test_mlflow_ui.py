"""pytest -m slow tests/sweeps/tracking/test_mlflow_ui.py -s — a sweep as a person sees it in the MLflow UI,
checked in a browser.

A real smoke sweep (3 trials), a real `mlflow ui` on 127.0.0.1, Debian's chromium driven headless by
selenium through the system chromedriver (no driver or browser downloads): the URL the sweep prints opens the
experiment in model-training mode, the sweep's row expands to one row per trial showing the val_ppl and
finetune_acc MLflow holds, the sweep's page describes it, and a trial's page draws its val_loss curve.
Screenshots land in the test's tmp folder (printed with -s); sweep_small.png there is the README's picture.
Skips only where chromium or chromedriver is missing (`apt-get install -y chromium chromium-driver`).
"""
from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sweeps.engine.tracking import run_page as mlflow_view
from sweeps.lr_warmup import space as lr_warmup_space
from sweeps.engine.launch import run_sweep
from sweeps.engine.tracking.writer import ensure_experiment
from tests.support import sweep_args

pytestmark = pytest.mark.slow

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
CHROMEDRIVER = shutil.which("chromedriver")
UI_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
WAIT_S = 60  # the first page load compiles the UI's JavaScript: seconds on a busy 2-core machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_health(address: str, server: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow ui exited with {server.returncode} before serving")
        try:
            with urllib.request.urlopen(f"{address}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"mlflow ui at {address} did not answer /health in {timeout_s:.0f}s")


@pytest.fixture(scope="module")
def ui(inputs, tmp_path_factory):
    """A finished sweep, served by `mlflow ui` on a free port; yields what the test needs."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("chromium or chromedriver not found; install them: apt-get install -y chromium chromium-driver")
    uri = f"sqlite:///{inputs / 'mlflow.db'}"
    ensure_experiment(MlflowClient(uri), "ui")  # the schema exists before the server and the sweep both open the database
    port = _free_port()
    address = f"http://127.0.0.1:{port}"
    log = open(tmp_path_factory.mktemp("mlflow_ui") / "server.log", "w")
    # Started before the sweep runs: its ~10 s of start overlap the sweep's.
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host",
                               "127.0.0.1", "--port", str(port), "--workers", "1"],
                              env={**os.environ, **UI_ENV}, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)  # its own process group: uvicorn's worker goes with it
    try:
        args = sweep_args(inputs, "ui", "--num-samples", "3", "--scheduler", "fifo")  # fifo: all fine-tune
        assert run_sweep("lr_warmup", lr_warmup_space, args) == 0
        client = MlflowClient(uri)
        assert all("finetune_acc" in r.data.metrics for r in client.search_runs(
            [client.get_experiment_by_name("ui").experiment_id], "tags.`gptsweep.role` = 'trial'"))
        _wait_for_health(address, server)
        yield {"uri": uri, "address": address, "client": client}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # with both paths given, Selenium Manager never runs (nothing downloads)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,900", "--hide-scrollbars"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _wait(driver, css: str, text: str | None = None, timeout_s: float = WAIT_S):
    """The first displayed element matching `css` (and holding `text`), waiting for the UI to render it."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def found(d):
        for element in d.find_elements(By.CSS_SELECTOR, css):
            if element.is_displayed() and (text is None or text in element.text):
                return element
        return False
    # React re-renders while the page loads: an element found a moment ago may be gone, so look again.
    return WebDriverWait(driver, timeout_s, ignored_exceptions=(StaleElementReferenceException,)).until(
        found, f"no {css!r} showing {text!r} in {timeout_s}s")


def _wait_xpath(driver, xpath: str, timeout_s: float = WAIT_S):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s).until(expected_conditions.element_to_be_clickable((By.XPATH, xpath)),
                                                  f"nothing clickable at {xpath} in {timeout_s}s")


def _close_assistant(driver) -> None:
    """The 'MLflow Assistant' panel opens on a first visit and takes a quarter of the window."""
    from selenium.webdriver.common.by import By

    close = 'button[data-component-id="mlflow.assistant.chat_panel.close"]'
    for button in driver.find_elements(By.CSS_SELECTOR, close):
        if button.is_displayed():
            button.click()


def _cell(driver, run_id: str, column: str) -> str:
    return _wait(driver, f'div[role="row"][row-id="{run_id}"] div[col-id="{column}"]').text.strip()


def _save_small(png: Path, out: Path, bottom: int) -> None:
    """A README-sized copy: the window down to `bottom` (CSS pixels), in 128 colours."""
    from PIL import Image

    with Image.open(png) as image:
        small = image.crop((0, 0, image.width, min(image.height, bottom))).convert("RGB")
        small.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)


def _switch_to_the_new_tab(browser, tabs: set) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, WAIT_S).until(lambda d: set(d.window_handles) - tabs, "the link opened no tab")
    browser.switch_to.window((set(browser.window_handles) - tabs).pop())


def test_sweep_reads_at_a_glance_in_the_mlflow_ui(ui, browser, tmp_path):
    client: MlflowClient = ui["client"]
    experiment_id = client.get_experiment_by_name("ui").experiment_id
    runs = client.search_runs([experiment_id])
    parent = next(r for r in runs if r.data.tags.get("gptsweep.role") == "sweep")
    trials = sorted((r for r in runs if r.data.tags.get("gptsweep.role") == "trial"),
                    key=lambda r: r.data.metrics["val_ppl"])
    assert len({t.info.run_name for t in trials}) == len(trials) >= 2
    print(f"\nscreenshots: {tmp_path}")

    # 1. The experiment URL the sweep prints, on this server: model-training mode, one row per sweep.
    browser.get(mlflow_view.ui_url(experiment_id, address=ui["address"]))
    _wait(browser, "a", parent.info.run_name)
    _close_assistant(browser)
    sidebar = _wait(browser, "nav").text
    assert "Model registry" in sidebar and "Judges" not in sidebar, f"not in model-training mode: {sidebar!r}"
    _wait(browser, "div", "Hyperparameter sweeps of")  # the experiment's description
    browser.save_screenshot(str(tmp_path / "1_experiment.png"))

    # 2. The + on the sweep's row shows every trial with the val_ppl and finetune_acc that MLflow holds.
    row = f'div[role="row"][row-id="{parent.info.run_id}"]'
    _wait(browser, f'{row} button[data-component-id$="runnamecellrenderer.tsx_46"]').click()
    for trial in trials:
        _wait(browser, "a", trial.info.run_name)
        for metric in ("val_ppl", "finetune_acc"):
            shown, held = _cell(browser, trial.info.run_id, f"metrics.`{metric}`"), trial.data.metrics.get(metric)
            assert shown == "-" if held is None else math.isclose(float(shown), held, rel_tol=1e-6), \
                (trial.info.run_name, metric, shown, held)
    assert _cell(browser, parent.info.run_id, "metrics.`best_val_ppl`") != "-"
    browser.save_screenshot(str(tmp_path / "2_expanded.png"))
    rows = [_wait(browser, f'div[role="row"][row-id="{t.info.run_id}"]').rect for t in trials]
    _save_small(tmp_path / "2_expanded.png", tmp_path / "sweep_small.png",
                bottom=round(max(r["y"] + r["height"] for r in rows) + 40))

    # 3. The sweep's page: its description names the best trial, ranks every trial, gives the report's command.
    browser.get(mlflow_view.ui_url(experiment_id, parent.info.run_id, ui["address"]))
    best = _wait(browser, "strong", "Best trial")
    assert trials[0].info.run_name in best.text
    _wait_xpath(browser, "//*[normalize-space(text())='Show more']").click()  # the description's full text
    table = _wait(browser, "table", trials[-1].info.run_name)
    order = [cell.text for cell in table.find_elements("css selector", "tbody tr td:first-child")]
    assert order == [t.info.run_name for t in trials], table.text  # sorted by val_ppl, best first
    _wait(browser, "code", "python -m analysis.report")
    browser.save_screenshot(str(tmp_path / "3_sweep_page.png"))

    # 4. The best trial, reached through its link in the description: its val_loss curve.
    tabs = set(browser.window_handles)
    _wait(browser, "strong a", trials[0].info.run_name).click()  # MLflow opens a description's links in a new tab
    _switch_to_the_new_tab(browser, tabs)
    _wait(browser, "h2, h1, span", trials[0].info.run_name)
    _wait_xpath(browser, "//*[normalize-space(text())='Model metrics']").click()  # the run page's tab
    _wait(browser, 'input[placeholder="Search metric charts"]').send_keys("val_loss")
    card = _wait(browser, '[data-testid="experiment-view-compare-runs-card"]', "val_loss")
    curve = _wait(card, "path.js-line")
    points = curve.get_attribute("d").count("L") + 1
    history = client.get_metric_history(trials[0].info.run_id, "val_loss")
    assert points == len(history) >= 2, (points, len(history))
    browser.save_screenshot(str(tmp_path / "4_trial_val_loss.png"))
