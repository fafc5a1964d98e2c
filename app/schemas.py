"""Request and response bodies. Static checks live here; limits that come from settings are checked in
the routes (they depend on the running configuration)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from indexes import normalize_language


def check_language(code: str) -> str:
    """The index's normalisation ('pt-BR' -> 'pt'), with a shorter message than its list of every code."""
    try:
        return normalize_language(code)
    except ValueError:
        raise ValueError(f"unknown language code {code!r}: use an ISO 639-1 code such as 'en', 'de' or 'ja'") from None


def check_text(text: str, what: str = "") -> str:
    if not text.strip():
        raise ValueError(f"{what + ' ' if what else ''}must not be empty or whitespace")
    return text


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- search -------------------------------------------------------------------------------------------

class SearchRequest(Strict):
    query: str = Field(description="the question or text to search for, in any language")
    query_language: str | None = Field(None, description="ISO 639-1 code; detected when omitted")
    languages: list[str] | None = Field(None, description="only return passages in these languages (default: all)")
    k: int = Field(10, ge=1, description="number of results (at most BABELSEARCH_MAX_K)")
    per_language: int | None = Field(None, ge=1, description="at most this many results from each language")

    @field_validator("query")
    @classmethod
    def _query(cls, value: str) -> str:
        return check_text(value)

    @field_validator("query_language")
    @classmethod
    def _query_language(cls, value: str | None) -> str | None:
        return None if value is None else check_language(value)

    @field_validator("languages")
    @classmethod
    def _languages(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must list at least one language code, or be omitted to search all languages")
        return sorted({check_language(code) for code in value})


class SearchHit(BaseModel):
    id: str
    text: str
    language: str | None
    score: float
    rank: int
    group: str | None = None
    metadata: dict[str, Any] = {}


class Timing(BaseModel):
    encode: float
    search: float
    total: float


class SearchResponse(BaseModel):
    query_language: str | None = Field(description="as given, or detected (null if undetectable)")
    results: list[SearchHit]
    timing_ms: Timing


# --- embeddings (OpenAI-compatible) ---------------------------------------------------------------------

class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields such as `user`

    input: Any = Field(description="a string or a list of strings")
    model: str | None = Field(None, description="accepted for compatibility; the served model answers")
    encoding_format: Literal["float", "base64"] = "float"
    input_type: Literal["query", "passage"] = Field("query", description="extension: which prefix to apply")
    dimensions: int | None = Field(None, description="must equal the model's dimension when given")

    @field_validator("input")
    @classmethod
    def _input(cls, value: Any) -> list[str]:
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise ValueError("must be a string or a list of strings (token arrays are not supported)")
        if not texts:
            raise ValueError("must not be an empty list")
        for i, text in enumerate(texts):
            check_text(text, f"item {i}")
        return texts


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


# --- documents ------------------------------------------------------------------------------------------

class DocumentIn(Strict):
    id: str = Field(min_length=1, max_length=512)
    text: str
    language: str | None = Field(None, description="ISO 639-1; detected when omitted")
    group: str | None = Field(None, description="documents that are translations of one another share a group")
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("id", "text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        return check_text(value)

    @field_validator("language")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        return None if value is None else check_language(value)


class DocumentOut(BaseModel):
    id: str
    text: str
    language: str | None
    group: str | None = None
    metadata: dict[str, Any] = {}


class IngestResponse(BaseModel):
    added: int
    replaced: int
    languages: dict[str, int] = Field(description="documents written per language in this request")
    documents: int = Field(description="documents in the collection afterwards")


class DeleteResponse(BaseModel):
    deleted: str
    documents: int


# --- audit ----------------------------------------------------------------------------------------------

class AuditQuery(Strict):
    text: str
    language: str | None = Field(None, description="ISO 639-1; detected when omitted")
    group: str | None = Field(None, description="relevant = every document of this group")
    relevant_ids: list[str] | None = Field(None, description="relevant = these documents (wins over group)")

    @field_validator("text")
    @classmethod
    def _text(cls, value: str) -> str:
        return check_text(value)

    @field_validator("language")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        return None if value is None else check_language(value)


class AuditRequest(Strict):
    queries: list[AuditQuery] | None = Field(
        None, description="omit for a self-audit: each document of a multi-language group queries for its translations")
    k: int = Field(10, ge=1, description="top-k for recall and the language-share figures")
    max_queries: int | None = Field(None, ge=1, description="use at most this many queries (self-audit: a fixed sample)")
