"""report.html: rendered with every run, re-rendered by ``sanitize report``, shown in Chromium."""

from __future__ import annotations

import base64
import csv
import html as html_lib
import io
import json
import os
import re
import time
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sanitize import sanitize_dataset
from sanitize.data.schema import FLAGGED, SAMPLE_WEIGHT, issue_column
from sanitize.pipeline.paths import (
    CLEAN_FILE,
    OUTPUT_FILES,
    QUARANTINE_FILE,
    REPORT_HTML,
    REPORT_JSON,
    SCORES_FILE,
)
from sanitize.report.html import (
    EMBEDDING_X,
    EMBEDDING_Y,
    SCATTER_KEPT_POINTS,
    SCATTER_REMOVED_POINTS,
    THUMB_CLASSES,
    THUMBS_PER_CLASS,
    _size_notes,
    class_detector_flags,
    embedding_projection,
    removed_rows_csv,
    write_report_html,
)
from sanitize_cli.main import EXIT_BAD_INPUT, EXIT_OK, main
from tests.conftest import REPO, SAMPLE_SOURCE

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Where the browser test leaves its screenshot (README, "The report"); build/ is git-ignored.
SCREENSHOT = Path(os.environ.get("SANITIZE_SCREENSHOT", REPO / "build" / "report-screenshot.png"))
SECTIONS = (
    "Score distributions",
    "Training weights",
    "Removal per class",
    "Flags per class and detector",
    "Embedding projection",
    "Most suspicious images",
    "Run",
)


class _Page(HTMLParser):
    """Tags, attributes and text of a page, collected for assertions."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self._heading: str | None = None
        self.headings: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "h2":
            self._heading = ""

    def handle_endtag(self, tag):
        if tag == "h2" and self._heading is not None:
            self.headings.append(self._heading.strip())
            self._heading = None

    def handle_data(self, data):
        self.text.append(data)
        if self._heading is not None:
            self._heading += data


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


@pytest.fixture(scope="module")
def run(tmp_path_factory, fast_config):
    """A real run on the sample data, with one corrupt image so quarantine is not empty."""
    table = pq.read_table(SAMPLE_SOURCE)
    images = table.column("image").to_pylist()
    images[3] = {"bytes": b"not an image", "path": "broken.png"}
    table = table.set_column(
        table.schema.get_field_index("image"),
        table.schema.field("image"),
        pa.array(images, type=table.schema.field("image").type),
    )
    source = tmp_path_factory.mktemp("src") / "source.parquet"
    pq.write_table(table, source, row_group_size=500)
    out = tmp_path_factory.mktemp("out")
    result = sanitize_dataset(source, out, fast_config)
    return out, result


def test_report_html_is_written_with_the_other_outputs(run):
    out, _ = run
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(OUTPUT_FILES)
    assert REPORT_HTML in OUTPUT_FILES


def test_scores_carry_the_projection_of_every_scored_row(run):
    out, _ = run
    scores = pq.read_table(out / SCORES_FILE)
    x = scores.column(EMBEDDING_X)
    assert x.type == pa.float32() and scores.column(EMBEDDING_Y).type == pa.float32()
    missing = np.isnan(x.to_numpy(zero_copy_only=False))
    unreadable = np.array(["unreadable" in r for r in scores.column("reasons").to_pylist()])
    np.testing.assert_array_equal(missing, unreadable)
    assert unreadable.sum() == 1


def test_page_has_every_section_and_nothing_from_outside(run):
    out, _ = run
    html = (out / REPORT_HTML).read_text()
    report = json.loads((out / REPORT_JSON).read_text())
    page = _parse(html)
    assert list(page.headings) == list(SECTIONS)
    text = " ".join(page.text)
    assert report["verdict"]["text"] in text
    for name in report["per_detector"]:
        assert name in text
    assert report["decision"]["group_voters"] == ["cbd", "shared_direction"]
    assert "it votes only where it flags a group of a class" in text
    for entry in report["per_class"].values():
        assert entry["name"] in text
    for stage in report["stage_timings"]:
        assert stage in html

    # Self-contained: no script, no stylesheet link, every image a data: URI, a CSP that
    # forbids fetching anything else.
    tags = [tag for tag, _ in page.tags]
    assert "script" not in tags and "link" not in tags and "iframe" not in tags
    assert not re.search(r"(?:src|href)\s*=\s*[\"']?(?:https?:|//)", html)
    assert "url(" not in html
    csp = [a for t, a in page.tags if t == "meta" and a.get("http-equiv")]
    assert csp and "default-src 'none'" in csp[0]["content"]

    images = [a["src"] for t, a in page.tags if t == "img"]
    n_classes = len(report["per_class"])
    assert len(images) == min(n_classes, THUMB_CLASSES) * THUMBS_PER_CLASS
    for src in images:
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as image:
            assert image.format == "PNG" and min(image.size) > 0
    # One histogram a detector, one for the decision and one of the weights; class bars,
    # projection, timings.
    assert tags.count("svg") == len(report["per_detector"]) + 5
    scores = pq.read_table(out / SCORES_FILE, columns=[SAMPLE_WEIGHT, FLAGGED])
    kept = ~scores.column(FLAGGED).to_numpy(zero_copy_only=False)
    weights = scores.column(SAMPLE_WEIGHT).to_numpy(zero_copy_only=False)[kept]
    assert f"{int((weights < 0.5).sum()):,} of {int(kept.sum()):,} kept rows weigh" in text
    circles = html.count("<circle")
    assert 0 < circles <= SCATTER_KEPT_POINTS + SCATTER_REMOVED_POINTS


def test_thumbnails_show_the_highest_scores_of_their_class(run):
    out, _ = run
    html = (out / REPORT_HTML).read_text()
    scores = pq.read_table(out / SCORES_FILE)
    ids = scores.column("sample_id").to_pylist()
    labels = scores.column("label").to_pylist()
    poison = scores.column("poison_score").to_numpy(zero_copy_only=False)
    unreadable = ["unreadable" in r for r in scores.column("reasons").to_pylist()]
    shown = re.findall(r'alt="sample ([^"]+)"', html)
    assert shown, "no thumbnail"
    by_id = {str(i): k for k, i in enumerate(ids)}
    for class_block in re.findall(r'<div class="thumbs">(.*?)</div></div>', html):
        rows = [by_id[s] for s in re.findall(r'alt="sample ([^"]+)"', class_block)]
        label = labels[rows[0]]
        assert all(labels[r] == label for r in rows)
        in_class = [poison[k] for k in range(len(ids)) if labels[k] == label and not unreadable[k]]
        expected = sorted(in_class, reverse=True)[: len(rows)]
        np.testing.assert_allclose(poison[rows], expected)


def _csv_link(html: str) -> tuple[str, bytes]:
    """The page's download link: its file name and the bytes of its data: URI."""
    (link,) = [a for t, a in _parse(html).tags if t == "a" and "download" in a]
    head, payload = link["href"].split(",", 1)
    assert head == "data:text/csv;charset=utf-8;base64"
    return link["download"], base64.b64decode(payload)


def _expected_removed_rows(out: Path) -> list[list[str]]:
    """The removed rows of scores.parquet as the CSV writes them, less poison_score."""
    scores = pq.read_table(out / SCORES_FILE)
    names = {
        k: e["name"] for k, e in json.loads((out / REPORT_JSON).read_text())["per_class"].items()
    }
    rows = []
    for sample_id, label, flagged, reasons in zip(
        scores.column("sample_id").to_pylist(),
        scores.column("label").to_pylist(),
        scores.column(FLAGGED).to_pylist(),
        scores.column("reasons").to_pylist(),
        strict=True,
    ):
        if flagged:
            rows.append([str(sample_id), str(label), names[str(label)], ";".join(reasons)])
    return rows


def _check_removed_csv(text: str, out: Path) -> None:
    header, *rows = list(csv.reader(io.StringIO(text)))
    assert header == ["sample_id", "label", "class", "poison_score", "reasons"]
    assert [r[:3] + r[4:] for r in rows] == _expected_removed_rows(out)
    scores = pq.read_table(out / SCORES_FILE)
    flagged = scores.column(FLAGGED).to_numpy(zero_copy_only=False)
    poison = scores.column("poison_score").to_numpy(zero_copy_only=False)[flagged]
    np.testing.assert_allclose([float(r[3]) for r in rows], poison, rtol=1e-5)


def test_page_links_the_removed_rows_as_a_csv_file(run):
    out, _ = run
    html = (out / REPORT_HTML).read_text()
    name, payload = _csv_link(html)
    assert name == "removed.csv"
    assert len(_expected_removed_rows(out)) > 1  # the corrupt row and the detected poisons
    _check_removed_csv(payload.decode("utf-8"), out)


def _tiny_scores(**columns) -> pa.Table:
    base = {
        "sample_id": pa.array(["a", "b,1", 'c "q"', "d", "e"]),
        "label": pa.array([0, 0, 1, 1, 2]),
        "poison_score": pa.array([0.9, 0.2, 0.7, 0.95, 0.6], type=pa.float32()),
        "flagged": pa.array([True, False, True, True, True]),
        "reasons": pa.array(
            [["spectral", "consensus:x,y"], [], ['he said "no"'], ["cbd"], ["unreadable"]],
            type=pa.list_(pa.string()),
        ),
    }
    return pa.table({**base, **columns})


_TINY_REPORT = {
    "per_class": {
        "0": {"name": 'cat, the "big" one', "rows": 2, "removed": 1},
        "1": {"name": "<b>dog</b>", "rows": 2, "removed": 2},
        "2": {"name": "eel", "rows": 1, "removed": 1},
    },
    "per_detector": {"spectral": {}, "cbd": {}, "stamp": {}},
}


def test_removed_rows_csv_escapes_commas_and_quotes_and_caps_by_score(monkeypatch):
    scores = _tiny_scores()
    flagged = scores.column("flagged").to_numpy(zero_copy_only=False)
    text, left_out = removed_rows_csv(_TINY_REPORT, scores, flagged)
    assert left_out == 0
    assert list(csv.reader(io.StringIO(text))) == [
        ["sample_id", "label", "class", "poison_score", "reasons"],
        ["a", "0", 'cat, the "big" one', "0.9", "spectral;consensus:x,y"],
        ['c "q"', "1", "<b>dog</b>", "0.7", 'he said "no"'],
        ["d", "1", "<b>dog</b>", "0.95", "cbd"],
        ["e", "2", "eel", "0.6", "unreadable"],
    ]
    # Beyond the cap: the highest poison_score, still in source order.
    monkeypatch.setattr("sanitize.report.removed_csv.CSV_ROWS", 2)
    text, left_out = removed_rows_csv(_TINY_REPORT, scores, flagged)
    assert left_out == 2
    assert [r[0] for r in list(csv.reader(io.StringIO(text)))[1:]] == ["a", "d"]


def test_removed_rows_csv_cells_never_run_as_spreadsheet_formulas():
    scores = _tiny_scores(sample_id=pa.array(["=HYPERLINK(1)", "b", "-7", "@x", "+1e3"]))
    report = {**_TINY_REPORT, "per_class": {"0": {"name": "=cmd|' /c calc'!A1"}}}
    flagged = scores.column("flagged").to_numpy(zero_copy_only=False)
    rows = list(csv.reader(io.StringIO(removed_rows_csv(report, scores, flagged)[0])))
    assert [r[0] for r in rows[1:]] == ["'=HYPERLINK(1)", "-7", "'@x", "+1e3"]
    assert rows[1][2] == "'=cmd|' /c calc'!A1"


def test_class_detector_flags_count_own_flags_or_scores_at_half():
    scores = _tiny_scores(
        **{
            issue_column("spectral"): pa.array([True, True, False, True, False]),
            # no is_cbd_issue column: flags are the scores at or above 0.5 (NaN: none)
            "score_cbd": pa.array([0.5, 0.49, float("nan"), 0.9, 0.7], type=pa.float32()),
        }
    )
    detectors, counts = class_detector_flags(_TINY_REPORT, scores)
    assert detectors == ["spectral", "cbd"]  # stamp saved neither column
    assert counts == {"0": [2, 1], "1": [1, 1], "2": [0, 1]}


def _flags_table(html: str) -> dict[str, list[str]]:
    """The class x detector table: header and one list of cell texts a row, by label."""
    (table,) = re.findall(r'<table class="flags">(.*?)</table>', html)
    rows = {}
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table):
        cells = [html_lib.unescape(c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row)]
        rows[cells[0]] = cells
    return rows


def test_flags_table_counts_each_detectors_own_flags_by_class(run):
    out, _ = run
    html = (out / REPORT_HTML).read_text()
    report = json.loads((out / REPORT_JSON).read_text())
    scores = pq.read_table(out / SCORES_FILE)
    labels = np.array([str(v) for v in scores.column("label").to_pylist()])
    rows = _flags_table(html)
    header = rows.pop("label")
    detectors = header[4:]
    assert detectors == list(report["per_detector"])
    total = rows.pop("")
    assert total[1] == "all classes"
    assert sorted(rows) == sorted(report["per_class"])
    for key, cells in rows.items():
        entry = report["per_class"][key]
        assert cells[1:4] == [entry["name"], f"{entry['rows']:,}", f"{entry['removed']:,}"]
        for name, cell in zip(detectors, cells[4:], strict=True):
            own = scores.column(issue_column(name)).to_numpy(zero_copy_only=False)
            assert cell == f"{int(own[labels == key].sum()):,}", (key, name)
    for name, cell in zip(detectors, total[4:], strict=True):
        assert cell == f"{report['per_detector'][name]['flagged']:,}"


def test_contents_link_every_section(run):
    out, _ = run
    page = _parse((out / REPORT_HTML).read_text())
    ids = [a["id"] for t, a in page.tags if t == "section"]
    assert len(ids) == len(SECTIONS) and len(set(ids)) == len(ids)
    i = next(i for i, (t, a) in enumerate(page.tags) if t == "nav")
    links = [a["href"] for t, a in page.tags[i + 1 : i + 1 + len(ids)] if t == "a"]
    assert links == [f"#{key}" for key in ids]


def test_thumbnails_name_the_reasons_of_removed_rows(run):
    out, _ = run
    html = (out / REPORT_HTML).read_text()
    scores = pq.read_table(out / SCORES_FILE)
    reasons = dict(
        zip(
            map(str, scores.column("sample_id").to_pylist()),
            scores.column("reasons").to_pylist(),
            strict=True,
        )
    )
    figures = re.findall(
        r'<figure class="(removed|kept)".*?alt="sample ([^"]+)".*?<span class="why">(.*?)</span>',
        html,
    )
    assert figures and any(fate == "removed" for fate, _, _ in figures)
    for fate, sample, why in figures:
        expected = ", ".join(reasons[html_lib.unescape(sample)]) if fate == "removed" else "kept"
        assert html_lib.unescape(why) == expected


def test_config_is_shown_as_toml_that_reads_back(run):
    out, _ = run
    html = (out / REPORT_HTML).read_text()
    report = json.loads((out / REPORT_JSON).read_text())
    (text,) = re.findall(r"<h3>Config, as a run.toml</h3><pre>(.*?)</pre>", html, re.S)

    def without_none(value):
        if isinstance(value, dict):
            return {k: without_none(v) for k, v in value.items() if v is not None}
        return value

    assert tomllib.loads(html_lib.unescape(text)) == without_none(report["config"])


def test_sanitize_report_re_renders_the_same_page_from_the_directory_alone(run, capsys):
    out, _ = run
    original = (out / REPORT_HTML).read_bytes()
    (out / REPORT_HTML).unlink()
    assert main(["report", str(out)]) == EXIT_OK
    assert str(out / REPORT_HTML) in capsys.readouterr().out
    assert (out / REPORT_HTML).read_bytes() == original
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)


def test_sanitize_report_on_a_directory_without_a_run_says_so(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "no report.json" in err and str(tmp_path) in err


def test_projection_separates_a_planted_cluster_and_is_deterministic():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(600, 16)).astype(np.float32)
    features[:60, 3] += 12.0  # a tight group far out along one direction
    rows = np.arange(1, 600)  # row 0 has no features (unusable)
    projection = embedding_projection(features, rows, seed=0, fit_rows=300, chunk_rows=128)
    assert projection.shape == (600, 2) and projection.dtype == np.float32
    assert np.isnan(projection[0]).all() and np.isfinite(projection[1:]).all()
    first = projection[1:, 0]
    group, rest = first[:59], first[59:]
    assert min(abs(group.mean() - rest.mean()) / rest.std(), 99) > 5
    np.testing.assert_array_equal(
        projection, embedding_projection(features, rows, seed=0, fit_rows=300, chunk_rows=128)
    )


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16), value, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_page_stays_small_on_many_rows(tmp_path, run):
    """200k rows, 100 classes: the page is bounded by its caps, not by the dataset."""
    out, _ = run
    n, n_classes = 200_000, 100
    rng = np.random.default_rng(0)
    labels = rng.integers(0, n_classes, size=n)
    poison = rng.beta(1, 12, size=n).astype(np.float32)
    flagged = poison >= 0.5
    ids = pa.array(np.arange(n))
    image = pa.array([{"bytes": _png(v), "path": None} for v in range(256)])
    images = image.take(pa.array(np.arange(n) % 256))
    reasons = pa.array([["spectral"] if f else [] for f in flagged], type=pa.list_(pa.string()))
    xy = rng.normal(size=(n, 2)).astype(np.float32)
    scores = pa.table(
        {
            "sample_id": ids,
            "label": pa.array(labels),
            "score_spectral": pa.array(poison),
            "poison_score": pa.array(poison),
            "sample_weight": pa.array(np.where(flagged, 0, 1).astype(np.float32)),
            "flagged": pa.array(flagged),
            "reasons": reasons,
            EMBEDDING_X: pa.array(xy[:, 0]),
            EMBEDDING_Y: pa.array(xy[:, 1]),
        }
    )
    pq.write_table(scores, tmp_path / SCORES_FILE)
    source = pa.table({"image": images, "label": pa.array(labels), "sample_id": ids})
    keep = pa.array(np.flatnonzero(~flagged))
    drop = pa.array(np.flatnonzero(flagged))
    pq.write_table(source.take(keep), tmp_path / CLEAN_FILE, row_group_size=4096)
    pq.write_table(source.take(drop), tmp_path / QUARANTINE_FILE, row_group_size=4096)
    report = json.loads((out / REPORT_JSON).read_text())
    report["per_class"] = {
        str(c): {
            "name": f"class {c}",
            "rows": int((labels == c).sum()),
            "removed": int(flagged[labels == c].sum()),
            "removed_fraction": float(flagged[labels == c].mean()),
        }
        for c in range(n_classes)
    }
    shown = max(report["per_class"].values(), key=lambda e: e["removed_fraction"])
    shown["name"] = "<script>alert('x')</script>"  # names are data, not markup
    # The run's first detector's figures, shown under the name of the planted column.
    report["per_detector"] = {"spectral": next(iter(report["per_detector"].values()))}
    (tmp_path / REPORT_JSON).write_text(json.dumps(report))

    path = write_report_html(tmp_path)
    html = path.read_text()
    assert len(html) < 1_500_000
    assert html.count("<circle") == SCATTER_KEPT_POINTS + min(
        SCATTER_REMOVED_POINTS, int(flagged.sum())
    )
    assert html.count("<img") == THUMB_CLASSES * THUMBS_PER_CLASS
    assert "more classes" in html
    assert "<script" not in html and "&lt;script&gt;" in html


# --- in a real browser ---------------------------------------------------------------------


def _browser_or_skip():
    """A headless Chromium driven by chromedriver, or a skip that names what is missing.

    ``make test`` installs Debian's chromium and chromium-driver and sets
    SANITIZE_REQUIRE_BROWSER=1, so there a missing browser fails instead of skipping.
    """
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("the selenium package")
    if missing:
        reason = f"no {', '.join(missing)} (`make browser` installs chromium, as root)"
        if os.environ.get("SANITIZE_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return webdriver, Service


def test_report_renders_in_headless_chromium_without_console_errors(run, tmp_path):
    webdriver, Service = _browser_or_skip()
    from selenium.webdriver.common.by import By

    out, _ = run
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1280,900",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        driver.execute_cdp_cmd(
            "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )
        driver.get((out / REPORT_HTML).as_uri())
        assert driver.execute_script("return document.readyState") == "complete"
        headings = [h.text for h in driver.find_elements(By.TAG_NAME, "h2")]
        assert headings == list(SECTIONS)
        assert driver.execute_script(
            "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"
        )
        n_images = driver.execute_script("return document.images.length")
        assert n_images > 0
        # Chart text as drawn: font size times the chart's scale on screen (rotated too).
        smallest = driver.execute_script(
            "return Math.min(...[...document.querySelectorAll('svg text')].map("
            "t => { const m = t.getScreenCTM();"
            " return parseFloat(getComputedStyle(t).fontSize) * Math.hypot(m.a, m.b); }))"
        )
        assert smallest >= 11, f"chart text drawn at {smallest:.1f} px"
        driver.find_element(By.CSS_SELECTOR, 'nav.toc a[href="#run"]').click()
        assert driver.execute_script("return location.hash") == "#run"
        assert driver.execute_script(
            "return Math.abs(document.getElementById('run').getBoundingClientRect().top) < 5"
        )
        driver.find_element(By.CSS_SELECTOR, "a[download]").click()
        downloaded = _wait_for_file(downloads / "removed.csv")
        driver.execute_script("window.scrollTo(0, 0)")
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, min(int(height) + 120, 8000))
        png = driver.get_screenshot_as_png()
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    finally:
        driver.quit()
    assert errors == [], errors
    _check_removed_csv(downloaded.decode("utf-8"), out)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.write_bytes(png)
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32)
    assert pixels.shape[0] > 1500 and pixels.shape[1] >= 1200
    assert pixels.std() > 20, "the screenshot is (nearly) blank"
    # More than a page of background: text, charts and thumbnails cover a real share.
    background = np.median(pixels)
    assert np.mean(np.abs(pixels - background) > 30) > 0.05


def _wait_for_file(path: Path, timeout: float = 20.0) -> bytes:
    """The bytes of a file the browser downloads, once it is complete."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        partial = list(path.parent.glob("*.crdownload"))
        if path.exists() and not partial:
            return path.read_bytes()
        time.sleep(0.1)
    raise AssertionError(f"no {path.name} downloaded in {timeout:g} s: {os.listdir(path.parent)}")


def test_size_notes_say_what_the_size_rules_did():
    report = {
        "per_class": {"3": {"name": "cat", "rows": 987, "removed": 500}},
        "decision": {
            "size_orient": {
                "expected_shares": True,
                "inflated": {
                    "3": {
                        "rows": 987,
                        "rows_like_others": 441.0,
                        "turned_over": False,
                        "flagged_by_splits": 405,
                        "removal_cap": 590,
                    }
                },
            }
        },
    }
    (note,) = _size_notes(report)
    assert note == (
        "Class cat: 987 rows where 441 were expected from its share of the expected class "
        "distribution; 405 rows were flagged by its splits; at most 590 rows removed."
    )
    entry = report["decision"]["size_orient"]["inflated"]["3"]
    entry["pixel_excess"] = {"suspect": True, "class_share": 0.63, "reference_share": 0.11}
    assert "63.0% of its rows disagree with their label" in _size_notes(report)[0]
    report["decision"]["size_orient"]["inflated"] = {}
    assert _size_notes(report) == [] and _size_notes({}) == []
    report["per_class"]["1"] = {"name": "automobile", "rows": 509, "removed": 0}
    checked = {"rows": 509, "rows_like_others": 469.0, "flagged": 278, "withdrawn": True}
    report["decision"]["growth"] = {"checked": {"1": checked}}
    (note,) = _size_notes(report)
    assert note.startswith("Class automobile: 278 flagged rows kept; the class holds 509 rows")
    checked["withdrawn"] = False
    assert _size_notes(report) == []
    loose = {"flagged_before": 28, "kept_share": 0.4643, "withdrawn": True}
    report["decision"]["refine"] = {"per_class": {"1": loose}}
    (note,) = _size_notes(report)
    assert note.startswith("Class automobile: 28 flagged rows kept; a discriminant fitted")
    assert "recognised 46.4% of them" in note
    loose["withdrawn"] = False
    assert _size_notes(report) == []
