"""Every limit the service enforces, declared once: the values (``BABELSEARCH_<NAME>`` variables, inherited
by ``Settings``), where each applies in a request body (``BODY_LIMITS``, checked on the parsed JSON before
validation, so 100,000 bad items cost a ``len()``, not 100,000 errors) and what ``GET /info`` shows.

The OpenAPI schema advertises the same ``BODY_LIMITS`` (``app.openapi``); the limits that need the
tokenizer or the collection (tokens, audit work) are checked where those are at hand, by the helpers here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.errors import LimitExceeded, TooLarge

# Fixed limits (not configurable): name -> (value, what it bounds).
CONSTANTS = {
    "max_language_codes": (100, "entries of a /search `languages` filter (lingua knows 75 languages)"),
    "max_relevant_ids": (100, "`relevant_ids` per /audit query"),
}


class Limits(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BABELSEARCH_", extra="ignore")

    max_request_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="bytes of a request body (413 above)")
    max_query_chars: int = Field(2000, ge=1, description="characters of a /search query and of an /audit query")
    max_k: int = Field(100, ge=1, description="results per /search (k and per_language) and /audit's k")
    max_embedding_inputs: int = Field(256, ge=1, description="texts per /v1/embeddings request")
    max_input_chars: int = Field(20000, ge=1, description="characters of an embedding input or a document text")
    max_tokens_per_request: int = Field(
        8192, ge=1, description="tokens per /v1/embeddings or POST /documents request, counted with the "
                                 "model's tokenizer (prefix included, each text cut at the model's max length)")
    max_documents_per_request: int = Field(1000, ge=1, description="documents per POST /documents")
    audit_max_queries: int = Field(500, ge=1, description="queries per /audit")
    audit_max_ranked: int = Field(
        250_000, ge=1, description="audit queries × collection size per /audit: a self-audit samples down to it, "
                                   "explicit queries above it are refused")
    audit_max_tokens: int = Field(
        32768, ge=1, description="tokens of the query texts one /audit encodes: a self-audit keeps the queries "
                                 "that fit, explicit queries above it are refused")
    # The encoder's queue (app.batching): one worker encodes concurrent requests together. This bound replaces
    # the old whole-request gate: it is checked at the door (before any work) and when a request queues.
    # 64: two full batches queued behind the running one. With 16 (sized when every request ran alone), 32
    # concurrent /v1/embeddings clients got 160 429s in 10 s and 184 req/s; with room for all, 206 req/s at
    # p99 253 ms (bench/bench_load.py, docs/performance.md).
    max_encoder_requests: int = Field(
        64, ge=1, description="requests waiting for the encoder or in its running batch (/search, "
                              "/v1/embeddings, POST /documents, /audit); the next one is answered 429 with "
                              "Retry-After at once")
    max_encoder_batch: int = Field(
        32, ge=1, description="texts of one kind (query or passage) the encoder worker embeds in one call, "
                              "from concurrent requests; a request with more goes in chunks of this size, "
                              "with other requests' texts encoded between them")
    encoder_batch_wait_ms: float = Field(
        2.0, ge=0, le=1000, description="milliseconds a request waits for others to join its encoder batch "
                                        "(0: only those already queued join)")
    max_concurrent_audits: int = Field(1, ge=1, description="/audit requests at once (429 above)")


def env_name(limit: str) -> str:
    return f"BABELSEARCH_{limit.upper()}"


@dataclass(frozen=True)
class BodyLimit:
    """``path`` in the JSON body ("" = the body, "[*]" = every item, "a.b") holds at most ``limit``:
    characters (a string), items (a list) or a value (an integer, from 1)."""

    path: str
    measure: str  # "chars" | "items" | "value"
    limit: str  # a Limits field, or one of CONSTANTS
    noun: str = ""

    def value(self, limits: Limits) -> int:
        return CONSTANTS[self.limit][0] if self.limit in CONSTANTS else getattr(limits, self.limit)


# Route path -> the limits on its body.
BODY_LIMITS: dict[str, tuple[BodyLimit, ...]] = {
    "/search": (
        BodyLimit("query", "chars", "max_query_chars"),
        BodyLimit("k", "value", "max_k"),
        BodyLimit("per_language", "value", "max_k"),
        BodyLimit("languages", "items", "max_language_codes", "language codes"),
    ),
    "/v1/embeddings": (
        BodyLimit("input", "items", "max_embedding_inputs", "texts per request"),
        BodyLimit("input", "chars", "max_input_chars"),
        BodyLimit("input[*]", "chars", "max_input_chars"),
    ),
    "/documents": (
        BodyLimit("", "items", "max_documents_per_request", "documents per request"),
        BodyLimit("[*].text", "chars", "max_input_chars"),
    ),
    "/audit": (
        BodyLimit("queries", "items", "audit_max_queries", "audit queries per request"),
        BodyLimit("queries[*].text", "chars", "max_query_chars"),
        BodyLimit("queries[*].relevant_ids", "items", "max_relevant_ids", "relevant ids per query"),
        BodyLimit("k", "value", "max_k"),
    ),
}


def path_parts(path: str) -> list[str]:
    return [part for part in path.replace("[*]", ".[*]").split(".") if part]


def _values(body: Any, parts: list[str], where: str):
    """(location, value) for every value at ``parts`` inside ``body`` (missing or mistyped: skipped)."""
    if not parts:
        yield where, body
        return
    head, rest = parts[0], parts[1:]
    if head == "[*]":
        if isinstance(body, list):
            for i, item in enumerate(body):
                yield from _values(item, rest, f"{where}[{i}]")
    elif isinstance(body, dict) and head in body:
        yield from _values(body[head], rest, f"{where}.{head}" if where else head)


def check_body(route_path: str, body: Any, limits: Limits) -> None:
    """LimitExceeded (422) naming the field, the limit and its variable, for the first value over a limit."""
    for rule in BODY_LIMITS.get(route_path, ()):
        limit, variable = rule.value(limits), env_name(rule.limit)
        source = "" if rule.limit in CONSTANTS else f" ({variable})"
        parts = path_parts(rule.path)
        for where, value in _values(body, parts, "body" if not parts or parts[0] == "[*]" else ""):
            if rule.measure == "chars" and isinstance(value, str) and len(value) > limit:
                raise LimitExceeded(f"{where}: at most {limit} characters{source}, got {len(value)}", param=where)
            if rule.measure == "items" and isinstance(value, list) and len(value) > limit:
                raise LimitExceeded(f"{where}: at most {limit} {rule.noun}{source}, got {len(value)}",
                                    param=where)
            if (rule.measure == "value" and isinstance(value, (int, float)) and not isinstance(value, bool)
                    and value > limit):
                raise LimitExceeded(f"{where}: must be between 1 and {limit}{source}, got {value}", param=where)


def check_tokens(total: int, limits: Limits, param: str) -> None:
    if total > limits.max_tokens_per_request:
        raise TooLarge(f"{param}: {total} tokens, at most {limits.max_tokens_per_request} per request "
                       f"({env_name('max_tokens_per_request')}); send fewer or shorter texts", param=param)


def describe(limits: Limits) -> dict:
    """``GET /info``'s ``limits``: name -> {value, variable, meaning}."""
    out = {
        name: {"value": getattr(limits, name), "variable": env_name(name), "description": field.description}
        for name, field in Limits.model_fields.items()
    }
    out.update({name: {"value": value, "variable": None, "description": meaning}
                for name, (value, meaning) in CONSTANTS.items()})
    return out
