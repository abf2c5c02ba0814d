"""`dvc plots show` writes a page that draws every plot with no network: tools.plots_page."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import vl_convert

from fmnist.dataset import CLASS_NAMES
from tests.helpers import copy_workspace, dvc, run
from tools.plots_page import render_page
from tools.workspace import REPOSITORY_ROOT

# Debian's headless Chromium first (`.ci/run` installs it), then any Chrome or Chromium.
BROWSERS = ("chromium-headless-shell", "chromium", "google-chrome", "google-chrome-stable")


def browser() -> str:
    """A headless Chromium: skip where there is none, fail under CI, which must run this."""
    path = next(filter(None, map(shutil.which, BROWSERS)), None)
    if path is None:
        message = f"no browser ({', '.join(BROWSERS)}): sudo apt-get install {BROWSERS[0]}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def drawn_offline(page: Path) -> str:
    """The page's document after its scripts ran in a browser that can reach no host."""
    result = subprocess.run(
        [
            browser(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--virtual-time-budget=20000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout


def charts(document: str) -> int:
    """How many charts Vega drew: each is an <svg class="marks">."""
    return len(re.findall(r'<svg[^>]*class="marks"', document))


def test_the_page_holds_the_libraries_and_dvcs_placeholders() -> None:
    page = render_page()

    assert page.count("{plot_divs}") == 1
    assert page.count("{refresh_tag}") == 1
    # DVC puts its CDN <script src=...> tags where a template has {scripts}.
    assert "{scripts}" not in page
    assert "<script src" not in page
    assert "window.vegaEmbed=" in page
    assert page.count("</script>") == 1


def test_dvcs_plots_keep_the_reports_order_of_classes() -> None:
    templates = REPOSITORY_ROOT / ".dvc/plots"
    bars = json.loads((templates / "bar_horizontal_in_order.json").read_text())
    # No sort: the order of the file, where the evaluate stage writes classes by label.
    assert bars["encoding"]["y"]["sort"] is None

    # The confusion matrix orders its rows by label number, whatever the names' alphabet.
    rows = [
        {
            "rev": "workspace",
            "actual": CLASS_NAMES[a],
            "predicted": CLASS_NAMES[p],
            "actual_label": a,
            "predicted_label": p,
        }
        for a in reversed(range(len(CLASS_NAMES)))
        for p in (a, (a + 1) % len(CLASS_NAMES))
    ]
    text = (templates / "confusion_errors.json").read_text()
    for placeholder, value in {
        "<DVC_METRIC_X>": "predicted",
        "<DVC_METRIC_Y>": "actual",
        "<DVC_METRIC_X_LABEL>": "predicted class",
        "<DVC_METRIC_Y_LABEL>": "true class",
        "<DVC_METRIC_TITLE>": "Confusion",
        "<DVC_METRIC_PLOT_WIDTH>": "300",
        "<DVC_METRIC_PLOT_HEIGHT>": "300",
    }.items():
        text = text.replace(placeholder, value)
    spec = json.loads(text.replace('"300"', "300"))
    spec["data"]["values"] = rows

    svg = vl_convert.vegalite_to_svg(spec)

    shown = [name for name in re.findall(r"<text[^>]*>([^<]+)</text>", svg) if name in CLASS_NAMES]
    assert shown[: len(CLASS_NAMES)] == list(CLASS_NAMES)


@pytest.mark.slow
def test_dvc_plots_show_draws_every_plot_offline(baseline_repository: Path, tmp_path: Path) -> None:
    browser()
    repository = copy_workspace(baseline_repository, tmp_path / "repository")
    run(["python", "-m", "tools.plots_page", "--out", "../page/dvc-plots.html"], repository)
    assert (
        "html_template = ../../page/dvc-plots.html"
        in (repository / ".dvc/config.local").read_text()
    )

    dvc("plots", "show", "-o", "shown", cwd=repository)

    page = (repository / "shown/index.html").read_text()
    assert not re.search(r"<script[^>]+src=", page)
    plots = page.count("vegaEmbed('#")
    assert plots == 7  # four training curves, the confusion matrix, two bar charts
    document = drawn_offline(repository / "shown/index.html")
    assert charts(document) == plots
    for title in ("true class", "predicted class", "epoch", "Confusion matrix (test set)"):
        assert f">{title}</text>" in document

    # DVC's own page, which loads the libraries from a CDN, draws nothing offline.
    dvc("config", "--local", "--unset", "plots.html_template", cwd=repository)
    dvc("plots", "show", "-o", "default", cwd=repository)
    assert charts(drawn_offline(repository / "default/index.html")) == 0
