"""report.html: rendered with every run, re-rendered by ``sanitize report``, shown in Chromium."""

from __future__ import annotations

import base64
import io
import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sanitize import sanitize_dataset
from sanitize.cli import EXIT_BAD_INPUT, EXIT_OK, main
from sanitize.data.schema import FLAGGED, SAMPLE_WEIGHT
from sanitize.paths import (
    CLEAN_FILE,
    OUTPUT_FILES,
    QUARANTINE_FILE,
    REPORT_HTML,
    REPORT_JSON,
    SCORES_FILE,
)
from sanitize.report_html import (
    EMBEDDING_X,
    EMBEDDING_Y,
    SCATTER_KEPT_POINTS,
    SCATTER_REMOVED_POINTS,
    THUMB_CLASSES,
    THUMBS_PER_CLASS,
    _size_notes,
    embedding_projection,
    write_report_html,
)
from tests.conftest import REPO, SAMPLE_SOURCE

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Where the browser test leaves its screenshot (README, "The report"); build/ is git-ignored.
SCREENSHOT = Path(os.environ.get("SANITIZE_SCREENSHOT", REPO / "build" / "report-screenshot.png"))
SECTIONS = (
    "Score distributions",
    "Training weights",
    "Removal per class",
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
    assert report["decision"]["group_voters"] == ["cbd"]
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
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        driver.get((out / REPORT_HTML).as_uri())
        assert driver.execute_script("return document.readyState") == "complete"
        headings = [h.text for h in driver.find_elements(By.TAG_NAME, "h2")]
        assert headings == list(SECTIONS)
        assert driver.execute_script(
            "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"
        )
        n_images = driver.execute_script("return document.images.length")
        assert n_images > 0
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, min(int(height) + 120, 8000))
        png = driver.get_screenshot_as_png()
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    finally:
        driver.quit()
    assert errors == [], errors
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.write_bytes(png)
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32)
    assert pixels.shape[0] > 1500 and pixels.shape[1] >= 1200
    assert pixels.std() > 20, "the screenshot is (nearly) blank"
    # More than a page of background: text, charts and thumbnails cover a real share.
    background = np.median(pixels)
    assert np.mean(np.abs(pixels - background) > 30) > 0.05


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
