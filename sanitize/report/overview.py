"""The run at a glance and in full: the page's header (verdict, counts, flags per detector)
and its last section (stage timings, provenance, config)."""

from __future__ import annotations

from html import escape

from sanitize.report import plots
from sanitize.report.page import pct
from sanitize.report.toml_text import toml_text


def header(report: dict) -> str:
    counts, verdict = report["counts"], report["verdict"]
    suspected = verdict.get("poison_suspected", False)
    cards = [
        ("rows", f"{counts['rows']:,}", ""),
        ("kept", f"{counts['kept']:,}", ""),
        ("removed", f"{counts['removed']:,}", pct(counts.get("removed_fraction", 0.0))),
        ("unreadable", f"{counts.get('unreadable', 0):,}", "quarantined"),
        ("without label", f"{counts.get('missing_label', 0):,}", "quarantined"),
    ]
    card_html = "".join(
        f'<div class="card"><div class="k">{escape(k)}</div><div class="v">{v}</div>'
        f'<div class="s">{escape(s)}</div></div>'
        for k, v, s in cards
    )
    decision = report.get("decision", {})
    by_detector = decision.get("flags_per_detector", {})
    group_voters = decision.get("group_voters") or []
    counted = decision.get("votes_per_detector") or by_detector
    flags = ", ".join(
        f"{escape(name)} {n:,}"
        + (
            f" ({counted.get(name, n):,} counted: it votes only where it flags a group of a class)"
            if name in group_voters
            else ""
        )
        for name, n in by_detector.items()
    )
    source = report.get("source", {})
    return (
        f'<header><h1>sanitize report</h1><p class="meta">{escape(str(source.get("uri", "")))}'
        f" &middot; fingerprint {escape(str(source.get('fingerprint', '')))}"
        f" &middot; {escape(str(report.get('created_at', '')))}</p></header>"
        f'<div class="verdict {"bad" if suspected else "good"}">'
        f'<span class="dot"></span>{escape(verdict.get("text", ""))}</div>'
        f'<div class="cards">{card_html}</div>'
        + (f'<p class="meta">rows flagged by each detector: {flags}</p>' if flags else "")
    )


def run_section(report: dict) -> str:
    timings = report.get("stage_timings", {})
    total = sum(t.get("seconds", 0.0) for t in timings.values())
    bars = [
        plots.Bar(
            label=name,
            value=t.get("seconds", 0.0),
            text=f"{t.get('seconds', 0.0):.2f} s, {t.get('rows_per_second', 0):,.0f} rows/s",
        )
        for name, t in timings.items()
    ]
    longest = max((b.value for b in bars), default=0.0)
    chars = max((len(b.label) for b in bars), default=0)
    svg = plots.bar_chart(
        bars, scale_max=longest, width=520, label_chars=chars, label="stage timings"
    )
    source = report.get("source", {})
    facts = [
        ("source", source.get("uri")),
        ("source kind", source.get("kind")),
        ("source fingerprint", source.get("fingerprint")),
        ("config fingerprint", report.get("config_fingerprint")),
        ("device", report.get("device")),
        ("created", report.get("created_at")),
        *((f"{k}", v) for k, v in report.get("versions", {}).items()),
    ]
    fact_rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in facts)
    config = toml_text(report.get("config", {}))
    return (
        f'<div class="grid two"><div class="panel"><h3>Stage timings ({total:.1f} s)</h3>'
        f"{svg}</div>"
        f'<div class="panel"><h3>Provenance</h3><table class="facts">{fact_rows}</table></div>'
        f'<div class="panel wide"><h3>Config, as a run.toml</h3><pre>{escape(config)}</pre>'
        "</div></div>"
    )
