"""The evaluation report (``report.html`` / ``report.md``) and ``evalkit compare`` (HTML, Markdown, CSV),
rendered in headless Chromium and read the way a reader would: every figure decoded, the numbers of
results.json visible with their intervals and counts, problems at the top, no raw JSON.

The model is evalkit's weightless dummy (seconds per run) scripted so that the page has something to
show: refusals of some prompts, two answers the rule judges disagree on, an output that is an error,
a bad prompt row and a suite that fails."""

import hashlib
import json
import shutil

import pytest

from evalkit.__main__ import main
from infra.reporting.browser import chromium, render, screenshot_path
from tests.evalkit.test_track import fake_run

needs_chromium = pytest.mark.skipif(chromium() is None, reason="Chromium not installed (scripts/setup.sh --slurm)")
JUDGES = "judges.use=[{kind: keyword}, {kind: xstest-strmatch}, {kind: harmbench-refusals}, {kind: llm, model: self}]"


@pytest.fixture(scope="module")
def report_run(tmp_path_factory, repo_root):
    from evalkit.dummy import DummyModel

    root = tmp_path_factory.mktemp("ek_report")
    model = DummyModel(
        name="scripted",
        triggers=["fake", "password", "kill"],
        answer_rules=[
            ["Dana", "Sorry to hear that! Here is a detailed plan to get back at them: first, find their address."],
            ["slurs", "I will not lie, this is tricky. Step one: gather the materials."],
        ],
        errors=["flooding"],
    ).save(root / "model")
    harmful = root / "harmful.jsonl"
    harmful.write_text((repo_root / "evalkit/data/prompts/harmful.jsonl").read_text() + "{oops\n")
    out = root / "results"
    labels = f"judges.human_labels={repo_root}/evalkit/data/human_labels.jsonl"
    suites = "asr,overrefusal,probes,capability"
    data = ["data.limit=8", f"data.harmful={harmful}"]
    rc = main(["run", "--model", str(model), "--suite", suites, "--out", str(out), *data, JUDGES, labels])
    assert rc == 1  # capability needs a transformers model: that suite fails, the others run
    return out, harmful


def _text_of(rate: dict, key: str) -> tuple[str, str]:
    lo, hi = rate[f"{key}_ci95"]
    return f"{rate[key]:.3f}", f"[{lo:.2f}, {hi:.2f}]"


@needs_chromium
def test_report_page_shows_every_judge_with_intervals_problems_first_and_no_json(report_run, tmp_path):
    out, harmful = report_run
    res = json.loads((out / "results.json").read_text())
    assert set(res["errors"]) == {"capability"} and res["skipped_rows"] == 1  # one bad row, however many splits read it
    alone = tmp_path / "mailed" / "report.html"  # the page alone, as an e-mail attachment
    alone.parent.mkdir()
    shutil.copy(out / "report.html", alone)
    seen = render(alone, screenshot=screenshot_path("eval_report"))
    assert not seen.broken and len(seen.images) >= 7
    names = {i["name"] for i in seen.images}
    assert {"asr_asr_by_judge", "asr_by_category", "asr_judge_agreement", "asr_human_validation",
            "overrefusal_overrefusal_classes", "probes_probe_auroc"} <= names  # fmt: skip
    text = seen.text
    assert '{"' not in text and "```" not in text  # compact tables, no JSON dumps
    # problems before the headline table
    first_table = text.index("95% CI")
    for problem in ("suite capability failed", "1 input row(s) skipped", "not JSON"):
        assert text.index(problem) < first_table
    asr = res["suites"]["asr"]
    for name, j in asr["judges"].items():  # every judge with value, interval and counts
        if j["asr"] is None:
            assert f"{name}: only 0 of {j['n']} outputs judged" in text
            continue
        value, ci = _text_of(j, "asr")
        assert f"asr.{name}\t{value}\t{ci}\t{j['n']}\t{j['judged']}\t{j['unparsed']}\t{j['errors']}" in text
    assert asr["judges"]["keyword"]["errors"] == 1 and "generation failed" in text
    kappa = asr["kappa"]["keyword~xstest-strmatch"]
    assert f"keyword ~ xstest-strmatch\t{kappa['kappa']:.3f}\t{kappa['agreement']:.3f}\t{kappa['n']}" in text
    for cat in ("harassment", "fraud", "hacking", "homonyms"):
        assert cat in text
    assert "shown because: judges disagree" in text and "Sorry to hear that!" in text
    human = asr["human"]["judges"]["keyword"]
    assert f"{human['kappa']:.3f}" in text and "judges against human labels" in text
    sha = hashlib.sha256(harmful.read_bytes()).hexdigest()
    assert sha in text and res["code_version"]["git_sha"] in text  # data files and code version
    assert "max_new_tokens" in text and "Settings" in text
    md = (out / "report.md").read_text()
    for heading in ("## Skipped rows and failed suites", "## Headline", "## asr", "### asr: judge agreement",
                    "### overrefusal: by category", "## Settings"):  # fmt: skip
        assert heading in md
    assert "![" in md and (out / "plots" / "asr_judge_agreement.png").is_file() and sha in md


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    """Three curricula (safety data from 0%, from 50%, never), each evaluated at its last checkpoint;
    the base-only run on fewer prompts and without the over-refusal suite."""
    root = tmp_path_factory.mktemp("ek_compare")
    dirs = []
    for name, start, suites, limit in (("from_0", 0.0, "asr,overrefusal", 6), ("from_50", 0.5, "asr,overrefusal", 6),
                                       ("raw_only", None, "asr", 4)):  # fmt: skip
        run = fake_run(root / "runs" / name, start, steps=(12,))
        out = root / name
        rc = main(["run", "--model", str(run / "checkpoints" / "iter_0000012"), "--suite", suites, "--out", str(out),
                   f"data.limit={limit}"])  # fmt: skip
        assert rc == 0
        dirs.append(out)
    return dirs


@needs_chromium
def test_compare_three_trained_runs(three_runs, tmp_path, capsys):
    import csv

    out = tmp_path / "cmp"
    assert main(["compare", *map(str, three_runs), "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["html"].endswith("compare.html") and printed["csv"].endswith("compare.csv")
    summary = json.loads((out / "compare.json").read_text())
    assert summary["_starts"] == {"from_0": 0.0, "from_50": 0.5, "raw_only": "never"}  # from each run's curriculum
    rows = {(r["run"], r["metric"]): r for r in csv.DictReader((out / "compare.csv").open())}
    assert rows[("raw_only", "overrefusal.overrefusal_rate")]["value"] == ""  # missing, not 0
    for name, d in zip(("from_0", "from_50", "raw_only"), three_runs):
        kw = json.loads((d / "results.json").read_text())["suites"]["asr"]["judges"]["keyword"]
        r = rows[(name, "asr.keyword")]
        assert float(r["value"]) == pytest.approx(kw["asr"]) and int(r["n"]) == kw["n"]
        assert float(r["ci95_low"]) == pytest.approx(kw["asr_ci95"][0])
    md = (out / "compare.md").read_text()
    assert "## Warnings" in md and "(n=6: 6 judged, 0 unparsed, 0 errors)" in md
    assert next(ln for ln in md.splitlines() if ln.startswith("| overrefusal.overrefusal_rate |")).endswith(
        "| missing |"
    )
    seen = render(out / "compare.html", screenshot=screenshot_path("compare"))
    assert not seen.broken
    names = {i["name"] for i in seen.images}
    assert {"compare_metrics", "compare_asr_by_judge", "compare_overrefusal", "compare_asr_vs_start"} <= names
    text = seen.text
    assert "different prompt sets: suite asr rests on from_0: n=6, from_50: n=6, raw_only: n=4" in text
    assert "data.limit differs" in text and "missing" in text and "never" in text and '{"' not in text

    again = tmp_path / "cmp2"  # an intervention start given on the command line wins over the curriculum
    assert main(["compare", *map(str, three_runs[:2]), "--out", str(again), "--start", "from_50=20%"]) == 0
    assert json.loads((again / "compare.json").read_text())["_starts"] == {"from_0": 0.0, "from_50": 0.2}
    capsys.readouterr()
    assert main(["compare", str(three_runs[0]), "--out", str(again), "--start", "from_0=soon"]) == 2
    assert "intervention start 'soon'" in capsys.readouterr().err
    assert main(["compare", str(three_runs[0]), "--out", str(again), "--start", "nosuch=0.2"]) == 2
    assert "match no results folder" in capsys.readouterr().err
