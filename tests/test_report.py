"""``anthology report``: one self-contained HTML page that escapes model-written text, checked as text
and in headless Chromium (Debian's ``chromium`` and ``chromium-driver``, installed by ``make setup``)."""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_evaluate import IMAGE, SCRIPT, make_run

from anthology.cli import app
from anthology.evaluation import FILES, LOWER_BOUND, evaluate, is_current, read_evaluation
from anthology.report import write_report
from anthology.store import RunDir

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
MODEL = '<b onmouseover="alert(2)">model</b>'


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = make_run(tmp_path_factory.mktemp("report") / "run", weighted=True, model=MODEL)
    evaluate(root, n_splits=10, n_resamples=50)
    return write_report(root)


def test_report_is_written_with_every_section(report):
    html = report.read_text(encoding="utf-8")
    assert report.name == "report.html"
    for section in (
        "metrics",
        "questions",
        "correlations",
        "subgroups",
        "demographics",
        "backstories",
        "metadata",
    ):
        assert f'<section id="{section}">' in html
    for text in (
        "Anthology (greedy)",
        "Split-half reference (noisy at n=40)",
        "natspac",
        "Backstory pool",
        "Matched, greedy",
    ):
        assert text in html
    assert "Cache hits" in html and "1,234" in html  # run metadata: model calls and tokens
    assert 'id="coverage-table"' in html and "Warning: 25.0% of the option probability in ask (qa)" in html


def test_report_shows_each_methods_worth_on_the_humans_curve(report):
    """The chart: the humans' curve (a point per size, its WD in the tip, falling down the page), a
    dashed line per method at its WD and a dot where the curve reaches it inside the sizes; the
    table's worth column, QA (always the last option) at the smallest size."""
    html = report.read_text(encoding="utf-8")
    evaluation = read_evaluation(report.parent)
    figure = html[html.index('<figure id="worth-chart">') :]
    chart = ET.fromstring(figure[figure.index("<svg") : figure.index("</svg>") + 6])
    svg = "{http://www.w3.org/2000/svg}"

    def tips(kind: str) -> dict[str, ET.Element]:
        return {
            e.find(f"{svg}title").text: e for e in chart.iter(svg + kind) if e.find(f"{svg}title") is not None
        }

    curve = evaluation.worth_curve
    points = {tip: e for tip, e in tips("circle").items() if "random respondents: WD" in tip}
    assert [float(p.get("cy")) for p in points.values()] == sorted(
        float(p.get("cy")) for p in points.values()
    )
    for size, wd, tip in zip(curve["size"], curve["wd_raw"], points, strict=True):
        assert tip.startswith(f"{size:,} random respondents: WD {wd:.3f}")
    assert len(curve) == 4
    table = evaluation.table[evaluation.table["method"] != LOWER_BOUND]
    lines, dots = tips("line"), [t for t in tips("circle") if "worth" in t]
    for row in table.to_dict("records"):
        assert f"{row['label']}: WD {row['wd_raw']:.3f}" in lines
    inside = table[(table["worth_n_humans"] > 5) & (table["worth_n_humans"] < 40)]
    assert len(dots) == len(inside) >= 1
    for row in inside.to_dict("records"):
        assert f"{row['label']}: WD {row['wd_raw']:.3f}, worth {row['worth_n_humans']:,.0f} humans" in dots
    metrics = html[
        html.index('<table id="metrics-table">') : html.index("</table>", html.index("metrics-table"))
    ]
    assert "worth n humans" in metrics and "≤ 5" in metrics
    assert '<section id="metrics">' in html and 'id="worth"' in html


def test_report_is_self_contained(report):
    html = report.read_text(encoding="utf-8")
    external = re.findall(r"""(?:src|href|action|poster|srcset)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I)
    assert external == []
    assert "<link" not in html and "@import" not in html and "url(" not in html
    assert "<script" not in html.lower()  # no scripts at all, so none from a CDN


def test_model_written_text_is_escaped(report):
    html = report.read_text(encoding="utf-8")
    for raw in (SCRIPT, IMAGE, MODEL):
        assert raw not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;b onmouseover=&#34;alert(2)&#34;&gt;model&lt;/b&gt;" in html


def test_report_command_evaluates_when_metrics_are_missing(tmp_path):
    root = make_run(tmp_path / "run")
    result = CliRunner().invoke(app, ["report", str(root)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(root / "report.html")
    assert "report: evaluating the run with the default settings (seed 0, 100 splits" in result.stderr
    assert (root / "metrics.csv").exists()
    assert "(100 splits)" in (root / "report.html").read_text(encoding="utf-8")  # the defaults, recorded
    (root / "humans.parquet").unlink()
    missing = CliRunner().invoke(app, ["report", str(root)])
    assert (
        missing.exit_code == 2 and "humans.parquet" in missing.output and "anthology match" in missing.output
    )


def _report(root: Path):
    result = CliRunner().invoke(app, ["report", str(root)])
    assert result.exit_code == 0, result.output
    return result.stderr, (root / "report.html").read_text(encoding="utf-8")


def _files(root: Path) -> dict[str, tuple[bytes, int]]:
    """Each metric file's bytes and modification time."""
    return {name: ((root / name).read_bytes(), (root / name).stat().st_mtime_ns) for name in FILES.values()}


def _stage(root: Path) -> dict:
    return RunDir(root).manifest()["stages"]["evaluate"]


def test_report_uses_the_runs_own_evaluation(tmp_path):
    root = make_run(tmp_path / "run")
    evaluate(root, n_splits=7, n_resamples=30, seed=3)
    before = _files(root)
    os.utime(root / "answers.parquet")  # touched, not changed: the recorded digest still matches
    stderr, html = _report(root)
    assert "report: using the run's evaluation (seed 3, 7 splits, 30 resamples)" in stderr
    assert _files(root) == before  # read back, not recomputed with the defaults
    assert "(7 splits)" in html and "(30 resamples" in html
    assert _stage(root)["seed"] == 3


def test_report_reevaluates_changed_answers_with_the_runs_settings(tmp_path):
    root = make_run(tmp_path / "run")
    evaluate(root, n_splits=7, n_resamples=30, seed=3)
    metrics = (root / FILES["metrics"]).read_bytes()
    run = RunDir(root)
    answers = run.read("answers")
    run.write("answers", answers[answers["method"] != "nothing"].reset_index(drop=True))
    assert not is_current(root)
    stderr, html = _report(root)
    assert (
        "report: evaluating the run with its last evaluation's settings (seed 3, 7 splits, 30 resamples): "
        "its answers changed since it was evaluated"
    ) in stderr
    stage = _stage(root)
    assert (stage["seed"], stage["n_splits"], stage["n_resamples"]) == (3, 7, 30)
    assert stage["methods"] == ["anthology-greedy", "qa", "dp"]
    assert (root / FILES["metrics"]).read_bytes() != metrics
    assert "(7 splits)" in html
    assert is_current(root)


def test_report_evaluates_with_the_runs_config(tmp_path):
    root = make_run(tmp_path / "run")
    manifest = RunDir(root).manifest()
    manifest["config"] = {"seed": 5, "evaluate": {"splits": 6, "resamples": 25}}  # as `anthology run` records
    RunDir(root).manifest_path.write_text(json.dumps(manifest))
    stderr, html = _report(root)
    assert "report: evaluating the run with its config's settings (seed 5, 6 splits, 25 resamples)" in stderr
    assert "it has no metric files" in stderr
    stage = _stage(root)
    assert (stage["seed"], stage["n_splits"], stage["n_resamples"]) == (5, 6, 25)
    assert set(stage["inputs"]) == {"answers", "humans", "matches"}
    assert "(6 splits)" in html
    written = {name: data for name, (data, _) in _files(root).items()}
    evaluate(root, n_splits=6, n_resamples=25, seed=5)  # the same files as evaluating with those settings
    assert {name: data for name, (data, _) in _files(root).items()} == written


def _chromium(tmp_path: Path):
    """A headless Chromium driven by selenium; skipped where it is missing, except in CI."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium")
    if missing:
        message = f"the browser test needs {', '.join(missing)}: run `make setup`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,2000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def test_report_renders_in_chromium(report, tmp_path):
    driver = _chromium(tmp_path)
    try:
        driver.get(report.as_uri())
        assert driver.execute_script("return document.readyState") == "complete"
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
        assert errors == []
        charts = driver.execute_script(
            """
            const svgs = [...document.querySelectorAll('svg')];
            const visible = r => { const b = r.getBoundingClientRect(); return b.width > 0 && b.height > 0; };
            const drawn = (s, kind) => [...s.querySelectorAll('rect.' + kind)].filter(visible).length;
            return {
                svgs: svgs.length,
                bars: svgs.filter(s => drawn(s, 'bar') > 0).length,
                heatmaps: svgs.filter(s => drawn(s, 'cell') > 0).length,
                scripts: document.scripts.length,
                story: [...document.querySelectorAll('.backstory')].map(b => b.textContent).join(' '),
                best: document.querySelectorAll('#metrics-table td.best').length,
                floor: document.querySelectorAll('#metrics-table tr.floor').length,
            };
            """
        )
        # 18 question charts and the demographic charts have bars; humans + 4 panels have heatmaps.
        assert charts["bars"] >= 18 + 5
        assert charts["heatmaps"] >= 5
        assert charts["scripts"] == 0
        assert SCRIPT in charts["story"] and IMAGE in charts["story"]  # shown as text, not run
        assert charts["best"] >= 4 and charts["floor"] == 1
    finally:
        driver.quit()
