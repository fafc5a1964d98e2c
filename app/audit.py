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

from app.errors import InvalidInput, LimitExceeded, NotFound
from app.limits import env_name
from evaluation.metrics import average_precision, language_share, macro_by_language, mean, rank_distance, recall_at_k
from indexes.documents import excerpt

UNDETERMINED = "und"  # the ISO 639 code for "language not determined"


@dataclass
class AuditCase:
    text: str
    language: str
    relevant: list[str]
    exclude: str | None = None  # self-audit: the query's own document is not a candidate


def _reject(message: str, param: str | None = None):
    raise InvalidInput(message, param=param)


def explicit_cases(queries, collection, detector) -> list[AuditCase]:
    groups = None
    cases = []
    known: set[str] = set()  # ids already looked up
    for i, query in enumerate(queries):
        if query.relevant_ids:
            missing = [doc_id for doc_id in dict.fromkeys(query.relevant_ids)
                       if doc_id not in known and collection.get(doc_id) is None]
            if missing:  # the request is well-formed, the documents are not there: 404
                raise NotFound(f"queries[{i}].relevant_ids: unknown document ids {[m[:60] for m in missing[:5]]}",
                               param=f"queries[{i}].relevant_ids")
            known.update(query.relevant_ids)
            relevant = list(dict.fromkeys(query.relevant_ids))
        elif query.group is not None:
            groups = groups if groups is not None else collection.groups()
            if query.group not in groups:
                raise NotFound(f"queries[{i}].group: no documents in group {excerpt(query.group)}",
                               param=f"queries[{i}].group")
            relevant = list(groups[query.group])
        else:
            _reject(f"queries[{i}]: give relevant_ids or a group, so the audit knows which documents are relevant",
                    f"queries[{i}]")
        language = query.language or detector.detect(query.text).language or UNDETERMINED
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


def query_cap(size: int, limits) -> dict:
    """How many queries one audit may rank against a collection of ``size`` documents, and why."""
    by_work = max(1, limits.audit_max_ranked // max(size, 1))
    return {"max_queries": min(limits.audit_max_queries, by_work), "audit_max_queries": limits.audit_max_queries,
            "audit_max_ranked": limits.audit_max_ranked, "collection_size": size,
            "audit_max_tokens": limits.audit_max_tokens}


def within_tokens(cases: list[AuditCase], encoder, limits, explicit: bool) -> tuple[list[AuditCase], int]:
    """The cases whose query texts fit ``limits.audit_max_tokens`` (encoding is the other cost of an audit):
    explicit queries over it are refused, a self-audit keeps the first of its sample that fit."""
    counts = encoder.count_tokens([case.text for case in cases], "query")
    if sum(counts) <= limits.audit_max_tokens:
        return cases, int(sum(counts))
    if explicit:
        raise LimitExceeded(f"queries: {sum(counts)} tokens to encode, at most {limits.audit_max_tokens} per audit "
                            f"({env_name('audit_max_tokens')}); send fewer or shorter queries", param="queries")
    kept, used = [], 0
    for case, count in zip(cases, counts):
        if used + count > limits.audit_max_tokens:
            break
        kept.append(case)
        used += count
    return kept, used


def run_audit(request, collection, encoder, limits, calibration, detector, default_method: str = "none") -> dict:
    """Build the cases, rank the collection for each, and summarise with ``evaluation.metrics``.

    The work is queries × collection size (every query ranks the whole collection), at most
    ``limits.audit_max_ranked``, and the tokens of the query texts, at most ``limits.audit_max_tokens``. A
    self-audit samples down to both (``cap`` in the report says so); explicit queries over either are refused."""
    start = time.perf_counter()
    size = len(collection)
    cap = query_cap(size, limits)
    limit = min(request.max_queries or cap["max_queries"], cap["max_queries"])
    if request.queries is not None:
        if not request.queries:
            _reject("queries: give at least one query, or omit `queries` for a self-audit", "queries")
        if len(request.queries) > limits.audit_max_queries:
            raise LimitExceeded(f"queries: at most {limits.audit_max_queries} audit queries per request "
                                f"({env_name('audit_max_queries')}), got {len(request.queries)}", param="queries")
        wanted = min(len(request.queries), request.max_queries or len(request.queries))
        if wanted > cap["max_queries"]:
            raise LimitExceeded(
                f"queries: {wanted} queries × {size} documents is more ranking than one audit may do "
                f"({env_name('audit_max_ranked')} = {limits.audit_max_ranked}): send at most "
                f"{cap['max_queries']} queries, or set max_queries", param="queries")
        cases, mode, available = (explicit_cases(request.queries[:limit], collection, detector), "queries",
                                  len(request.queries))
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
    cases, cap["tokens"] = within_tokens(cases, encoder, limits, explicit=mode == "queries")

    t_encode = time.perf_counter()
    # The encoder's vectors do not depend on batching (see encoder.runtime), so these equal /search's.
    vectors = encoder.encode([case.text for case in cases], "query")
    t_rank = time.perf_counter()
    k, method = request.k, request.calibration or default_method
    # The served ranking, and the raw one beside it: both through Collection.search, as /search ranks.
    statistics = collection.statistics()
    compare, plans = {}, []
    for name in dict.fromkeys(["none", method]):
        per_query = []
        for case, vector in zip(cases, vectors):
            language = None if case.language == UNDETERMINED else case.language
            calibrator, plan = calibration.resolve(name, statistics, language, reliable=language is not None)
            if name == method:
                plans.append((plan, calibrator))
            hits = collection.search(vector, k=size, calibrator=calibrator, query_language=language)
            per_query.append(_score_case(case, hits, k))
        compare[name] = summarise(cases, per_query, collection.languages(), k)
    t_done = time.perf_counter()

    report = dict(compare[method])
    report["calibration"] = _describe_calibration(method, plans)
    report["compare"] = {name: {key: value for key, value in summary.items() if key != "collection"}
                         for name, summary in compare.items()}
    report.update(mode=mode, n_available_queries=available, cap=cap, timing_ms={
        "encode": round((t_rank - t_encode) * 1000, 2),
        "rank": round((t_done - t_rank) * 1000, 2),
        "total": round((t_done - start) * 1000, 2),
    })
    return report


def _describe_calibration(method: str, plans: list) -> dict:
    """The audited method, its statistics' origin, and how many queries fell back (and why)."""
    fallbacks = [plan for plan, _ in plans if plan.method != method]
    served = next((calibrator for plan, calibrator in plans if plan.method == method), None)
    info = served.describe() if served is not None else {}
    return {"requested": method, "method": method if served is not None or not fallbacks else fallbacks[0].method,
            "queries_fallback": len(fallbacks), "fallback_note": fallbacks[0].note if fallbacks else None,
            **{key: value for key, value in info.items() if key != "method"}}


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
        shares_of_rows = language_share([q["top_languages"] for q in rows], collection_languages)
        own = shares_of_rows.get(language, {})
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
            # this language's queries: the share of each passage language in their top-k (the heatmap's row)
            "top_k_languages": {lang: share["top_k_share"] for lang, share in shares_of_rows.items()},
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
