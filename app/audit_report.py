"""``/audit?format=png|html``: a bar chart of the audit, and a small self-contained page around it."""
from __future__ import annotations

import base64
import html
import io


def render_png(report: dict) -> bytes:
    # Figure without pyplot: no global state, no display; savefig(png) renders with Agg. Imported lazily
    # because matplotlib costs ~0.5 s and most processes never draw.
    from matplotlib.figure import Figure

    per_language = report["per_language"]
    query_languages = list(per_language)
    figure = Figure(figsize=(max(8.0, 0.55 * len(query_languages) + 4), 6.5), layout="constrained")
    top, bottom = figure.subplots(2, 1)

    top.bar(query_languages, [per_language[lang]["rank_distance"] for lang in query_languages], color="#4c72b0")
    top.set_ylabel("mean rank distance")
    top.set_title(f"Rank distance by query language (macro {report['rank_distance']:.2f}; 0 = translations ranked "
                  f"together; {report['n_queries']} queries)", fontsize=10)

    # Bias shows as queries getting their own language far above its share of the collection.
    width, positions = 0.4, range(len(query_languages))
    bottom.bar([p - width / 2 for p in positions],
               [per_language[lang]["own_language_top_k_share"] for lang in query_languages],
               width, label=f"share of the query's language in its top-{report['k']}", color="#dd8452")
    bottom.bar([p + width / 2 for p in positions], [per_language[lang]["collection_share"] for lang in query_languages],
               width, label="share of that language in the collection", color="#8c8c8c")
    bottom.set_xticks(list(positions), query_languages)
    bottom.set_ylabel("share")
    bottom.set_xlabel("query language")
    bottom.set_title("Own-language results vs the collection", fontsize=10)
    bottom.legend(fontsize=8)

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _fmt(value) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def render_html(report: dict) -> str:
    png = base64.b64encode(render_png(report)).decode("ascii")
    columns = ["n_queries", "rank_distance", "map", "recall_at_k", "own_language_top_k_share", "collection_share",
               "same_language_first", "same_language_chance"]
    header = "".join(f"<th>{html.escape(c)}</th>" for c in ["language", *columns])
    rows = "".join(
        "<tr><td>" + html.escape(str(lang)) + "</td>" + "".join(f"<td>{_fmt(row[c])}</td>" for c in columns) + "</tr>"
        for lang, row in report["per_language"].items()
    )
    first = report["same_language_first"]
    summary = (
        f"{report['n_queries']} queries ({html.escape(report['mode'])}), k={report['k']}: "
        f"rank distance {_fmt(report['rank_distance'])}, mAP {_fmt(report['map'])}, "
        f"recall@{report['k']} {_fmt(report['recall_at_k'])}, same-language first {_fmt(first['rate'])} "
        f"(chance {_fmt(first['chance'])}, {first['n_queries']} queries)"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>babelsearch language-bias audit</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}</style></head>
<body><h1>Language-bias audit</h1><p>{summary}</p>
<table><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table>
<p><img alt="per-language rank distance and language share" src="data:image/png;base64,{png}"></p>
</body></html>
"""
