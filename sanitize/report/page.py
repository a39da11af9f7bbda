"""The page of report.html: its skeleton, stylesheet, contents bar and the small pieces of
markup the sections share (the kept/removed legend, percentages)."""

from __future__ import annotations

from html import escape

from sanitize.report import plots


def page(title: str, body: list[str]) -> str:
    """The whole document: ``body`` (HTML fragments, one a line) in the page skeleton."""
    return _PAGE.format(title=escape(title), css=_CSS, body="\n".join(body))


def contents(sections: list[tuple[str, str, str]]) -> str:
    """A table of contents: one link a section, to its id."""
    links = "".join(f'<a href="#{key}">{escape(title)}</a>' for key, title, _ in sections)
    return f'<nav class="toc" aria-label="contents">{links}</nav>'


def legend() -> str:
    """The colour swatches of kept and removed rows, as the charts draw them."""
    return (
        f'<span class="swatch" style="background:{plots.KEPT_COLOUR}"></span>kept '
        f'<span class="swatch" style="background:{plots.REMOVED_COLOUR}"></span>removed'
    )


def pct(fraction: float) -> str:
    """A fraction as a percentage with one decimal."""
    return f"{100 * fraction:.1f}%"


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<main>
{body}
<footer>Written by <code>sanitize</code>; re-render with
<code>sanitize report OUTDIR</code>. Every figure comes from report.json and
scores.parquet in this directory.</footer>
</main>
</body>
</html>
"""


_CSS = """
:root { --ink:#1f2328; --muted:#5f6670; --line:#e3e5e8; --bg:#f6f7f9; --red:#d1493f;
  --green:#2f8a4c; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 40px; }
h1 { font-size: 24px; margin: 0 0 2px; letter-spacing: -0.01em; }
h2 { font-size: 17px; margin: 30px 0 6px; }
h3 { font-size: 13px; margin: 0 0 6px; color: var(--muted); font-weight: 600; }
.meta { color: var(--muted); margin: 2px 0 10px; font-size: 12.5px; word-break: break-all; }
.lead { color: var(--muted); margin: 0 0 12px; max-width: 880px; }
.verdict { display:flex; align-items:center; gap:10px; padding: 12px 16px;
  border-radius: 8px; font-weight: 600; font-size: 16px; margin: 14px 0; }
.verdict .dot { width:12px; height:12px; border-radius:50%; flex:none; }
.verdict.bad { background:#fdecea; color:#8f2119; border:1px solid #f3c2bd; }
.verdict.bad .dot { background: var(--red); }
.verdict.good { background:#e9f6ee; color:#1d5e33; border:1px solid #bfe3cb; }
.verdict.good .dot { background: var(--green); }
.cards { display:grid; grid-template-columns: repeat(5, 1fr); gap: 12px; }
.card, .panel { background:#fff; border:1px solid var(--line); border-radius: 8px; }
.card { padding: 12px 14px; }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase;
  letter-spacing: .04em; }
.card .v { font-size: 24px; font-weight: 650; }
.card .s { color: var(--muted); font-size: 12px; min-height: 1em; }
.panel { padding: 14px 16px; }
.grid { display:grid; grid-template-columns: repeat(auto-fill, minmax(330px, 1fr)); gap: 14px; }
.grid.two { grid-template-columns: 1fr 1fr; }
.wide { grid-column: 1 / -1; }
.chart { width: 100%; height: auto; display:block; }
.note { color: var(--muted); font-size: 12px; margin: 4px 0 0; }
.swatch { display:inline-block; width:10px; height:10px; border-radius:2px;
  margin: 0 4px 0 8px; vertical-align: baseline; }
.thumbrow { display:flex; gap: 14px; padding: 10px 0; border-bottom: 1px solid var(--line); }
.thumbrow:last-child { border-bottom: 0; }
.cls { width: 130px; flex: none; display:flex; flex-direction:column; justify-content:center; }
.cls span { color: var(--muted); font-size: 12px; }
.thumbs { display:flex; flex-wrap: wrap; gap: 10px; }
figure { margin:0; width: 88px; text-align:center; }
figure img, .noimg { width: 76px; height: 76px; object-fit: contain; background:#111;
  image-rendering: pixelated; border: 3px solid #cfd4da; border-radius: 6px; display:block;
  margin: 0 auto; }
figure.removed img, figure.removed .noimg { border-color: var(--red); }
.noimg { color:#bbb; font-size: 11px; display:flex; align-items:center; justify-content:center; }
figcaption { font-size: 11px; line-height: 1.3; color: var(--muted); margin-top: 3px;
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
figcaption b { color: var(--ink); }
figcaption .why { display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical;
  white-space: normal; overflow-wrap: anywhere; overflow: hidden; }
figure.removed .why { color: #8f2119; }
.toc { display:flex; flex-wrap: wrap; gap: 6px 18px; padding: 8px 0 2px;
  border-bottom: 1px solid var(--line); font-size: 13px; }
.toc a, .download a { color: #1f5fbf; text-decoration: none; }
.toc a:hover, .download a:hover { text-decoration: underline; }
.download { margin: 12px 0 8px; }
.download a { font-weight: 600; }
.download span { color: var(--muted); font-size: 12.5px; margin-left: 6px; }
.scroll { overflow-x: auto; }
table.flags { border-collapse: collapse; font-size: 12.5px; font-variant-numeric: tabular-nums; }
.flags th, .flags td { padding: 3px 10px; text-align: right; border-bottom: 1px solid var(--line);
  white-space: nowrap; }
.flags thead th { color: var(--muted); font-weight: 600; vertical-align: bottom; }
.flags .name { text-align: left; max-width: 220px; overflow: hidden; text-overflow: ellipsis; }
.flags td.zero { color: #b6bbc2; }
.flags tr.suspect td { background: #fdecea; }
.flags tfoot th { border-bottom: 0; }
table.facts { border-collapse: collapse; width: 100%; font-size: 12.5px; }
.facts th { text-align:left; color: var(--muted); font-weight: 500; padding: 3px 12px 3px 0;
  white-space: nowrap; vertical-align: top; }
.facts td { padding: 3px 0; word-break: break-all; }
pre { margin: 0; font-size: 12px; background: #f6f8fa; padding: 10px 12px; border-radius: 6px;
  overflow: auto; max-height: 420px; }
footer { color: var(--muted); font-size: 12px; margin-top: 34px; }
"""
