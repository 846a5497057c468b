"""The MLflow dashboard in a real browser: a tiny sweep logged to ``mlflow server``, then its experiment page opened
in headless Chromium (Playwright driving Debian's chromium: Playwright's own browser download is not reachable).

Slow (a sweep, a server and a browser): ``pytest --runslow tests/test_mlflow_ui.py``, with ``playwright`` installed
(``uv pip install -e ".[ui-test]"``) and ``/usr/bin/chromium`` (``apt-get install chromium``). Screenshots go to
``test-artifacts/mlflow_ui/``.
"""

import re
import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient

from sweeps.runner import run_sweep

from .sweep_helpers import TINY, compose_config

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "mlflow_ui"
COLUMNS = ("prune.learnables_reduction_increment", "final_val_accuracy", "final_learnables")
TIMEOUT_MS = 90_000  # the UI's first load on a busy 2-core machine


@pytest.mark.slow
def test_the_dashboard_lists_the_trials_and_shows_the_front(tmp_path, local_ray, mlflow_server):
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the ui-test extra)")
    if not Path(CHROMIUM).is_file():
        pytest.skip("no chromium: apt-get install chromium")
    url = mlflow_server
    cfg = compose_config(
        *TINY,
        f"output_dir={tmp_path}",
        "tracking=server",
        f"tracking.uri={url}",
        "+sweep.grid.prune.learnables_reduction_increment=[0.2,0.4]",
    )
    outcome = run_sweep(cfg)
    runs = MlflowClient(url).search_runs(
        [outcome.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{outcome.parent_run_id}'"
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 3000, "height": 1000})  # ag-grid renders visible columns only
        _check_runs_table(page, url, outcome, runs)
        _check_front_figure(page, url, outcome)
        browser.close()


def _check_runs_table(page, url: str, outcome, runs: list) -> None:
    """The experiment's runs table, with the trials' increment param and final metrics as columns, parent expanded."""
    page.goto(f"{url}/#/experiments/{outcome.experiment_id}/runs", wait_until="load", timeout=TIMEOUT_MS)
    parent = page.get_by_text(outcome.folder.parent.name + "-", exact=False).first
    parent.wait_for(timeout=TIMEOUT_MS)
    page.get_by_role("button", name="Columns").click()
    for column in COLUMNS:
        page.get_by_placeholder("Search columns").fill(column)
        exactly = re.compile(f"^{re.escape(column)}$")  # a longer name holds the search text in a <strong> too
        page.get_by_role("dialog").locator("span").filter(has_text=exactly).first.click()
    page.keyboard.press("Escape")
    parent.locator("xpath=ancestor::div[@role='gridcell']").locator("button").first.click()  # show the trials
    for run in runs:  # ag-grid renders a row in several containers (pinned and scrolled columns)
        row = page.locator(f"[role=row][row-id='{run.info.run_id}']")
        row.first.wait_for(timeout=TIMEOUT_MS)
        cells = {c: row.locator(f"[role=gridcell][col-id$='`{c}`']").first.inner_text() for c in COLUMNS}
        assert cells["prune.learnables_reduction_increment"] == run.data.params["prune.learnables_reduction_increment"]
        assert float(cells["final_learnables"]) == run.data.metrics["final_learnables"]
        assert float(cells["final_val_accuracy"]) == pytest.approx(run.data.metrics["final_val_accuracy"], abs=1e-3)
        assert page.get_by_text(run.info.run_name, exact=True).first.is_visible()
    page.screenshot(path=str(SCREENSHOTS / "runs_table.png"), full_page=True)


def _check_front_figure(page, url: str, outcome) -> None:
    """The parent run's accuracy-vs-learnables figure, shown (decoded) in its artifacts view."""
    artifact = "accuracy_vs_learnables.png"
    page.goto(
        f"{url}/#/experiments/{outcome.experiment_id}/runs/{outcome.parent_run_id}/artifacts/{artifact}",
        wait_until="load",
        timeout=TIMEOUT_MS,
    )
    page.get_by_text(artifact, exact=True).first.wait_for(timeout=TIMEOUT_MS)
    shown = page.locator("img[src^='blob:'], img[src^='data:image/png']").first
    shown.wait_for(timeout=TIMEOUT_MS)
    page.wait_for_function("img => img.complete && img.naturalWidth > 300", arg=shown.element_handle())
    page.screenshot(path=str(SCREENSHOTS / "front_figure.png"))
