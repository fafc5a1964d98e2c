"""Evaluation reports: ``report.json``, ``report.md`` (Markdown tables) and PNG plots (matplotlib, Agg).

``models`` everywhere is ``{label: {"results": <metrics dict>, ...metadata}}`` in display order.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

LAREQA_COLUMNS = [  # (key, header, format)
    ("mono_map", "mono mAP", ".3f"), ("cross_map", "cross mAP", ".3f"), ("multilingual_map", "multi mAP", ".3f"),
    ("mono_r@1", "mono R@1", ".3f"), ("mono_r@10", "mono R@10", ".3f"),
    ("cross_r@1", "cross R@1", ".3f"), ("cross_r@10", "cross R@10", ".3f"),
    ("multilingual_r@1", "multi R@1", ".3f"), ("multilingual_r@10", "multi R@10", ".3f"),
    ("rank_distance", "rank distance", ".0f"),
]
LAREQA_LANGUAGE_COLUMNS = [
    ("mono_map", "mono mAP", ".3f"), ("cross_map_as_query", "cross mAP (as query)", ".3f"),
    ("multilingual_map", "multi mAP", ".3f"), ("rank_distance", "rank distance", ".0f"),
]


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _format(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def lareqa_table(models: dict[str, dict]) -> str:
    rows = [[label] + [_format(entry["results"].get(key), spec) for key, _, spec in LAREQA_COLUMNS]
            for label, entry in models.items()]
    return _table(["model"] + [header for _, header, _ in LAREQA_COLUMNS], rows)


def lareqa_language_table(results: dict) -> str:
    rows = [[language] + [_format(values.get(key), spec) for key, _, spec in LAREQA_LANGUAGE_COLUMNS]
            for language, values in results["per_language"].items()]
    return _table(["language"] + [header for _, header, _ in LAREQA_LANGUAGE_COLUMNS], rows)


def _beir_keys(models: dict[str, dict]) -> list[str]:
    first = next(iter(models.values()))["results"]
    return ["ndcg@10", next(key for key in first if key.startswith("recall@")), "mrr@10"]


def beir_table(models: dict[str, dict]) -> str:
    keys = _beir_keys(models)
    rows = [[label] + [_format(entry["results"].get(key), ".3f") for key in keys]
            + [str(entry["results"]["n_queries"]), str(entry["results"]["n_docs"])]
            for label, entry in models.items()]
    return _table(["model", "nDCG@10", keys[1].replace("recall", "Recall"), "MRR@10", "queries", "documents"], rows)


def beir_language_table(results: dict) -> str:
    keys = ["ndcg@10", next(key for key in results if key.startswith("recall@")), "mrr@10"]
    rows = [[language] + [_format(values.get(key), ".3f") for key in keys] + [str(values.get("n_queries", ""))]
            for language, values in results["per_language"].items()]
    return _table(["language", "nDCG@10", keys[1].replace("recall", "Recall"), "MRR@10", "queries"], rows)


# ---------------------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def safe_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "model"


def plot_cross_heatmap(results: dict, label: str, path: str | Path) -> Path:
    """Query language × candidate language mAP (the diagonal is the monolingual setting)."""
    plt = _pyplot()
    languages = list(results["languages"])
    matrix = np.full((len(languages), len(languages)), np.nan)
    for i, x in enumerate(languages):
        for j, y in enumerate(languages):
            value = results["cross_matrix"].get(x, {}).get(y)
            if value is not None:
                matrix[i, j] = value
    size = max(4.5, 0.62 * len(languages) + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(languages)), languages)
    ax.set_yticks(range(len(languages)), languages)
    ax.set_xlabel("candidate (answer) language")
    ax.set_ylabel("query language")
    ax.xaxis.set_label_position("top")
    ax.xaxis.tick_top()
    for i in range(len(languages)):
        for j in range(len(languages)):
            if np.isnan(matrix[i, j]):
                continue
            value = matrix[i, j]
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8 if len(languages) > 8 else 10,
                    color="black" if value > 0.6 else "white", fontweight="bold" if i == j else "normal")
    colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    colorbar.set_label("mAP")
    ax.set_title(f"{label}: cross-lingual mAP (query X → candidates Y)\n"
                 f"diagonal = monolingual; mono {results['mono_map']:.3f}, cross {results['cross_map']:.3f}",
                 fontsize=11, pad=12)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_rank_distance(models: dict[str, dict], path: str | Path) -> Path:
    """Per query language, mean rank distance of each model (grouped bars); the first group is the macro mean."""
    plt = _pyplot()
    first = next(iter(models.values()))["results"]
    languages = list(first["languages"])
    groups = ["mean"] + languages
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(max(7.0, 0.55 * len(groups) * max(1.5, len(models) ** 0.5) + 2), 4.8))
    for m, (label, entry) in enumerate(models.items()):
        results = entry["results"]
        values = [results["rank_distance"]] + [
            results["per_language"].get(language, {}).get("rank_distance", np.nan) for language in languages
        ]
        positions = np.arange(len(groups)) + (m - (len(models) - 1) / 2) * width
        bars = ax.bar(positions, values, width=width * 0.95, label=label)
        if len(models) <= 3:
            ax.bar_label(bars, labels=[f"{v:.0f}" for v in values], fontsize=7, padding=2,
                         rotation=90 if len(models) > 1 else 0)
    ax.set_xticks(range(len(groups)), groups)
    ax.axvline(0.5, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("query language")
    ax.set_ylabel("mean rank distance (lower = less language bias)")
    ax.set_title("Rank distance: spread of a question's parallel answers in the pooled ranking")
    ax.margins(y=0.15)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(title="model", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------- writing


def _markdown(benchmark: str, models: dict[str, dict], settings: dict) -> str:
    lines = [f"# {benchmark} evaluation", ""]
    lines += [f"- {key}: `{value}`" for key, value in settings.items() if value is not None]
    lines.append("")
    if benchmark == "lareqa":
        lines += [lareqa_table(models)]
        for label, entry in models.items():
            lines += [f"## {label}", "", lareqa_language_table(entry["results"]),
                      f"![cross-lingual mAP]({heatmap_name(label)})", ""]
        lines += ["## Rank distance per language", "", "![rank distance](rank-distance.png)", ""]
    else:
        lines += [beir_table(models)]
        for label, entry in models.items():
            if entry["results"].get("per_language"):
                lines += [f"## {label}", "", beir_language_table(entry["results"])]
    return "\n".join(lines)


def heatmap_name(label: str) -> str:
    return f"heatmap-{safe_name(label)}.png"


def write_report(benchmark: str, models: dict[str, dict], out_dir: str | Path, settings: dict | None = None) -> dict:
    """Write report.json, report.md and (LAReQA) the plots into ``out_dir``; returns ``{name: path}``."""
    if not models:
        raise ValueError("no model results to report")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = settings or {}
    paths = {"json": out / "report.json", "markdown": out / "report.md"}
    payload = {"benchmark": benchmark, "settings": settings, "models": models}
    paths["json"].write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if benchmark == "lareqa":
        for label, entry in models.items():
            paths[f"heatmap:{label}"] = plot_cross_heatmap(entry["results"], label, out / heatmap_name(label))
        paths["rank_distance"] = plot_rank_distance(models, out / "rank-distance.png")
    paths["markdown"].write_text(_markdown(benchmark, models, settings), encoding="utf-8")
    return paths
