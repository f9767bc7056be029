"""The run report (report/page.py) on the session's real tiny run (multi-turn, every tiny tagger, filter, export) and
its real evaluation, opened in a real headless Chromium: charts drawn, no console error, no network request, the
sample browser's rows and filters; a run folder with missing stages; bad input."""
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", ROOT / "tests" / "artifacts"))


@pytest.fixture(scope="module")
def reported(chain, evaluated, tmp_path_factory):
    from report import write_report

    run = tmp_path_factory.mktemp("report") / "magpie_air"
    shutil.copytree(chain, run)
    shutil.copytree(evaluated / "sft", run / "eval")
    # --compare: a baseline SFT set (a local copy in Evol-Instruct's own schema) on the same map
    summary = write_report(run, compare=[ROOT / "tests/fixtures/sft/evol-instruct.json"], map_sample=200)
    return run, summary, json.loads((run / "report" / "data.json").read_text())


def test_report_data(reported):
    from core import store

    run, summary, data = reported
    tagged = store.DatasetDir(run / "tagged").records()
    assert summary["out"] == str(run / "report" / "index.html") and data["missing"] == []
    assert data["data_stage"] == "tagged" and data["distributions"]["rows"] == len(tagged) == data["sample_of"]
    assert sum(data["distributions"]["categorical"]["task_category"]["counts"]) == len(tagged)
    # Every row in the browser (fewer than --sample): the whole multi-turn conversation and why the filter kept it.
    assert [s["id"] for s in data["samples"]] == [r["id"] for r in tagged]
    for s, r in zip(data["samples"], tagged):
        assert s["conversation"] == [{"role": m["role"], "content": m["content"]} for m in r["messages"]]
    kept = {r["id"] for r in store.DatasetDir(run / "filtered").records()}
    assert {s["id"] for s in data["samples"] if s["filter"] == "kept"} == kept
    conditions = data["filter"]["config"]["conditions"]
    assert all(s["filter"] == "kept" or s["filter"] in conditions or s["filter"].startswith("cut:")
               for s in data["samples"])
    # The map: every instruction, embedded with the neighbour tagger's model.
    assert data["embedding_map"]["model"] == "embedded:all-minilm-l6-v2"
    sets = Counter(p["set"] for p in data["embedding_map"]["points"])
    assert sets == {"this run": len(tagged), "evol-instruct.json": 3}
    # The evaluation: the paper row and the judged pairs, verdicts from the model's side.
    (ev,) = data["evaluations"]
    results = json.loads((run / "eval" / "results.json").read_text())
    (line,) = ev["table"]  # the tiny SFT set is no paper set: its line has our numbers only
    assert line["measured_model"] == results["model_name"] == ev["model"]
    assert line["ours_lc"] == results["benchmarks"]["alpaca_eval"]["length_controlled_winrate"]
    assert len(ev["pairs"]["alpaca_eval"]) == 8 and len(ev["pairs"]["arena_hard"]) == 8
    assert {p["verdict"] for p in ev["pairs"]["arena_hard"]} <= {"win", "loss", "tie", "unparsed"}
    # Which judge and which version made each number, what it used and what was estimated: in the page.
    html = (run / "report" / "index.html").read_text()
    judges = html[html.index('<table class="grid judges">'):]
    judges = judges[:judges.index("</table>")]
    for name in ("alpaca_eval", "arena_hard"):
        res = results["benchmarks"][name]
        assert res["judge_name"] == "smollm2-135m" and res["judge_usage"]["calls"] > 0
        assert f"<td>{name}</td><td>{res['version']}</td><td>smollm2-135m</td>" in judges
        assert f"<td>{res['judge_usage']['calls']}</td>" in judges
    assert data["run"]["stand_ins"] and data["run"]["pre_query_template"].endswith("<|im_start|>user\n")


def _browser():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("no Chromium: tests/run.sh installs Debian's `chromium` with apt-get where it can")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (the dev extra has it)")
    return exe, sync_playwright


def test_report_in_a_real_browser(reported):
    run, _, data = reported
    exe, sync_playwright = _browser()
    errors, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto((run / "report" / "index.html").as_uri())
            page.wait_for_function("window.reportReady === true")
            assert errors == []
            # Nothing leaves the machine: the page itself, and the DataTables module it makes from its own bytes.
            assert [u for u in requests if not u.startswith(("file:", "blob:", "data:"))] == []
            # Charts drawn: every Plotly chart has marks (bars, points, funnel segments).
            marks = page.eval_on_selector_all(".js-plotly-plot", "els => els.map(e => [e.id, "
                                              "e.querySelectorAll('.point, .trace path, .scatterlayer path').length "
                                              "+ e.querySelectorAll('canvas').length])")
            assert len(marks) >= 11 and all(n > 0 for _, n in marks), marks
            count = "window.reportTables.samples.rows({search: 'applied'}).count()"
            assert page.evaluate(count) == len(data["samples"])
            # A tag filter narrows the rows to exactly that tag's rows.
            column = next(c for c in ("task_category", "difficulty", "input_quality", "llama_guard_2", "language")
                          if len({s[c] for s in data["samples"]}) > 1)
            values = [s[column] for s in data["samples"]]
            rare = min(set(values), key=values.count)
            page.select_option(f"#sample-filters select[data-column={column}]", rare)
            assert page.evaluate(count) == values.count(rare) < len(values)
            page.locator("#sample-table tbody tr").first.click()
            assert "filter:" in page.inner_text("#detail")
            pairs = "window.reportTables['pairs-0'].rows({search: 'applied'}).count()"
            assert page.evaluate(pairs) == 16
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "report.png").stat().st_size > 50_000


def test_missing_stages_are_named(tiny_run, tmp_path):
    """A run folder with instructions and responses only gets a report of those, naming what is missing."""
    run = tmp_path / "early"
    for s in ("instructions", "responses"):
        shutil.copytree(tiny_run / s, run / s)
    done = subprocess.run([sys.executable, "-m", "synth", "report", str(run)], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "missing: tagged, filtered, export" in done.stdout
    data = json.loads((run / "report" / "data.json").read_text())
    assert data["missing"] == ["tagged", "filtered", "export"] and data["data_stage"] == "responses"
    assert data["embedding_map"] is None and data["evaluations"] == []
    assert "Not in this run folder: tagged, filtered, export" in (run / "report" / "index.html").read_text()


def test_nothing_to_report_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "synth", "report", str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: {tmp_path} holds no stage output (no */manifest.json) and no evaluation: nothing to report; give a "
        "recipe's output_dir, e.g. runs/magpie_air"]
