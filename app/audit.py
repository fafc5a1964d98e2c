"""``/audit``: the language bias of the service's own ranking on its own collection.

Every audit query ranks the whole collection (all languages) through ``Collection.search`` — the code
path users hit — and the ranks of its relevant documents go into ``evaluation.metrics``, the same
functions the offline evaluator reports with. Relevant documents are translations of one another
(a ``group``), so an unbiased ranking keeps them together whatever the query's language.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass

from fastapi import HTTPException

from evaluation.metrics import average_precision, language_share, macro_by_language, mean, rank_distance, recall_at_k
from indexes import detect_language

UNDETERMINED = "und"  # the ISO 639 code for "language not determined"


@dataclass
class AuditCase:
    text: str
    language: str
    relevant: list[str]
    exclude: str | None = None  # self-audit: the query's own document is not a candidate


def _reject(message: str):
    raise HTTPException(422, message)


def explicit_cases(queries, collection) -> list[AuditCase]:
    groups = None
    cases = []
    for i, query in enumerate(queries):
        if query.relevant_ids:
            missing = [doc_id for doc_id in query.relevant_ids if collection.get(doc_id) is None]
            if missing:
                _reject(f"queries[{i}].relevant_ids: unknown document ids {missing[:5]}")
            relevant = list(dict.fromkeys(query.relevant_ids))
        elif query.group is not None:
            groups = groups if groups is not None else collection.groups()
            if query.group not in groups:
                _reject(f"queries[{i}].group: no documents in group {query.group!r}")
            relevant = list(groups[query.group])
        else:
            _reject(f"queries[{i}]: give relevant_ids or a group, so the audit knows which documents are relevant")
        language = query.language or detect_language(query.text) or UNDETERMINED
        cases.append(AuditCase(query.text, language, relevant))
    return cases


def self_audit_candidates(collection) -> list[tuple]:
    """(document, group members) for every document of a group that spans two or more languages."""
    out = []
    for _, ids in sorted(collection.groups().items()):
        documents = [d for d in (collection.get(doc_id) for doc_id in sorted(ids)) if d is not None]
        if len({d.language for d in documents}) >= 2:
            out.extend((document, list(ids)) for document in documents)
    return out


def self_cases(candidates) -> list[AuditCase]:
    return [
        AuditCase(document.text, document.language or UNDETERMINED, [m for m in members if m != document.id],
                  exclude=document.id)
        for document, members in candidates
    ]


def run_audit(request, collection, encoder, max_queries_limit: int) -> dict:
    """Build the cases, rank the collection for each, and summarise with ``evaluation.metrics``."""
    start = time.perf_counter()
    limit = min(request.max_queries or max_queries_limit, max_queries_limit)
    if request.queries is not None:
        if not request.queries:
            _reject("queries: give at least one query, or omit `queries` for a self-audit")
        if len(request.queries) > max_queries_limit:
            _reject(f"queries: at most {max_queries_limit} audit queries per request (BABELSEARCH_AUDIT_MAX_QUERIES),"
                    f" got {len(request.queries)}")
        cases, mode, available = explicit_cases(request.queries[:limit], collection), "queries", len(request.queries)
    else:
        candidates = self_audit_candidates(collection)
        if not candidates:
            _reject("self-audit needs documents sharing a `group` in at least two languages; "
                    "add grouped translations or send `queries` with relevant_ids")
        available = len(candidates)
        if len(candidates) > limit:  # a fixed sample, so repeated audits compare like with like
            keep = sorted(random.Random(0).sample(range(len(candidates)), limit))
            candidates = [candidates[i] for i in keep]
        cases, mode = self_cases(candidates), "self"

    t_encode = time.perf_counter()
    # The encoder's vectors do not depend on batching (see encoder.runtime), so these equal /search's.
    vectors = encoder.encode([case.text for case in cases], "query")
    t_rank = time.perf_counter()
    size = len(collection)
    k = request.k
    per_query = [_score_case(case, collection.search(vector, k=size), k) for case, vector in zip(cases, vectors)]
    t_done = time.perf_counter()

    report = summarise(cases, per_query, collection.languages(), k)
    report.update(mode=mode, n_available_queries=available, timing_ms={
        "encode": round((t_rank - t_encode) * 1000, 2),
        "rank": round((t_done - t_rank) * 1000, 2),
        "total": round((t_done - start) * 1000, 2),
    })
    return report


def _score_case(case: AuditCase, hits, k: int) -> dict:
    ranking = [hit for hit in hits if hit.id != case.exclude]
    position = {hit.id: rank for rank, hit in enumerate(ranking, start=1)}
    language_of = {hit.id: hit.language or UNDETERMINED for hit in ranking}
    ranks = sorted(position[doc_id] for doc_id in case.relevant if doc_id in position)
    n_relevant = len(case.relevant)

    same = [position[d] for d in case.relevant if d in position and language_of[d] == case.language]
    other = [position[d] for d in case.relevant if d in position and language_of[d] != case.language]
    applicable = bool(same) and bool(other)
    return {
        "rank_distance": rank_distance(ranks),
        "ap": average_precision(ranks, n_relevant=n_relevant),
        "recall": recall_at_k(ranks, k, n_relevant=n_relevant),
        "top_languages": [language_of[hit.id] for hit in ranking[:k]],
        # Does the query-language translation outrank every other translation? Chance: its share of them.
        "same_language_first": (float(min(same) < min(other)) if applicable else None),
        "chance": (len(same) / (len(same) + len(other)) if applicable else None),
    }


def summarise(cases: list[AuditCase], per_query: list[dict], collection_languages: dict, k: int) -> dict:
    languages = [case.language for case in cases]
    collection_languages = {(lang or UNDETERMINED): n for lang, n in collection_languages.items()}
    rd, rd_by = macro_by_language([q["rank_distance"] for q in per_query], languages)
    ap, ap_by = macro_by_language([q["ap"] for q in per_query], languages)
    rec, rec_by = macro_by_language([q["recall"] for q in per_query], languages)
    shares = language_share([q["top_languages"] for q in per_query], collection_languages)

    def first_stats(rows: list[dict]) -> dict:
        applicable = [q for q in rows if q["same_language_first"] is not None]
        return {
            "rate": mean(q["same_language_first"] for q in applicable) if applicable else None,
            "chance": mean(q["chance"] for q in applicable) if applicable else None,
            "n_queries": len(applicable),
        }

    per_language = {}
    for language in rd_by:
        rows = [q for q, lang in zip(per_query, languages) if lang == language]
        own = language_share([q["top_languages"] for q in rows], collection_languages).get(language, {})
        first = first_stats(rows)
        per_language[language] = {
            "n_queries": len(rows),
            "rank_distance": rd_by[language],
            "map": ap_by[language],
            "recall_at_k": rec_by[language],
            # Share of this language among its own queries' top-k, vs its share of the collection.
            "own_language_top_k_share": own.get("top_k_share", 0.0),
            "collection_share": own.get("collection_share", 0.0),
            "same_language_first": first["rate"],
            "same_language_chance": first["chance"],
        }
    return {
        "n_queries": len(cases),
        "k": k,
        "rank_distance": rd,
        "map": ap,
        "recall_at_k": rec,
        "same_language_first": first_stats(per_query),
        "language_share": shares,
        "per_language": per_language,
        "collection": {"documents": sum(collection_languages.values()), "languages": collection_languages},
    }
