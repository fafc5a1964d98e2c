"""Request and response bodies. Text and language codes are checked here, by the shared rules of
``indexes.text`` (the same ones the collection applies); numbers and strings are strict (``"5"`` is not a
number). Limits that depend on the configuration live in ``app.limits`` and are checked before these models
see a body."""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from indexes import KNOWN_LANGUAGES, Document, normalize_language, validate_document
from indexes.documents import check_metadata, excerpt
from indexes.text import SCHEMA_PATTERNS, check_passage, check_text, text_problem

# A language code: ISO 639-1 (any case), optionally a region or script ('pt-BR', 'zh_Hans').
LANGUAGE_PATTERN = ("^(?:" + "|".join(f"[{a}{a.upper()}][{b}{b.upper()}]" for a, b in sorted(KNOWN_LANGUAGES))
                    + ")(?:[-_][A-Za-z0-9]{1,8})*$")
_LANGUAGE_RE = re.compile(LANGUAGE_PATTERN)
ID_MAX_CHARS = 512


def check_language(code: str) -> str:
    """The index's normalisation ('pt-BR' -> 'pt'), with a shorter message than its list of every code."""
    if not _LANGUAGE_RE.fullmatch(code):
        raise ValueError(f"unknown language code {excerpt(code)}: use an ISO 639-1 code such as 'en', 'de' or 'ja'")
    return normalize_language(code)


class _Pattern:
    """Adds a JSON Schema ``pattern`` (what the validator checks, said so that clients and fuzzers know)."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern

    def __get_pydantic_json_schema__(self, core_schema, handler):
        schema = handler(core_schema)
        schema["pattern"] = self.pattern
        return schema


def _clean(value: Any) -> Any:
    """Before pydantic's own string checks (which cannot say where a lone surrogate is)."""
    problem = text_problem(value) if isinstance(value, str) else None
    if problem:
        raise ValueError(problem)
    return value


def _metadata(value: Any) -> Any:
    if isinstance(value, dict):
        check_metadata(value)
    return value


# Non-blank text with no lone surrogate and no control character but tab, newline, carriage return.
Text = Annotated[str, BeforeValidator(_clean), AfterValidator(check_text), _Pattern(SCHEMA_PATTERNS["text"])]
Identifier = Annotated[str, Field(max_length=ID_MAX_CHARS), BeforeValidator(_clean), AfterValidator(check_text),
                       _Pattern(SCHEMA_PATTERNS["text"])]
Passage = Annotated[str, BeforeValidator(_clean), AfterValidator(check_passage), _Pattern(SCHEMA_PATTERNS["passage"])]
LanguageCode = Annotated[str, BeforeValidator(_clean), AfterValidator(check_language), _Pattern(LANGUAGE_PATTERN)]


def _integral(value: Any) -> Any:
    # JSON Schema counts 5.0 as an integer; a string "5" stays refused (strict models).
    return int(value) if isinstance(value, float) and value.is_integer() else value


Integer = Annotated[int, BeforeValidator(_integral)]
Positive = Annotated[int, Field(ge=1), BeforeValidator(_integral)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


Method = Literal["none", "center", "subspace"]  # encoder.calibration.METHODS


class StatisticsOrigin(BaseModel):
    source: Literal["artifact", "collection"]
    count: int = Field(description="passages the mean was estimated from")


class CalibrationInfo(BaseModel):
    requested: Method
    method: Method = Field(description="what ranked (or embedded): the requested method, or its fallback")
    note: str | None = Field(None, description="why the method fell back, when it did")
    rank: int | None = Field(None, description="subspace: directions removed")
    statistics: dict[str, StatisticsOrigin] = Field(
        default_factory=dict, description="per language: where its mean comes from (the artifact's NTREX-128 "
                                          "estimate or the collection's own) and from how many passages")


class LanguageDetectionInfo(BaseModel):
    language: str | None = Field(description="the detected language, null when unsure")
    confidence: float
    best_guess: str | None


# --- search -------------------------------------------------------------------------------------------

class SearchRequest(Strict):
    query: Text = Field(description="the question or text to search for, in any language")
    query_language: LanguageCode | None = Field(None, description="ISO 639-1 code; detected when omitted")
    languages: list[LanguageCode] | None = Field(
        None, min_length=1, description="only return passages in these languages (default: all)")
    k: Positive = Field(10, description="number of results (at most BABELSEARCH_MAX_K)")
    per_language: Positive | None = Field(None, description="at most this many results from each language")
    calibration: Method | None = Field(None, description="language-bias calibration: none, center or subspace "
                                                         "(default: the service's, BABELSEARCH_CALIBRATION)")

    @field_validator("languages", mode="before")
    @classmethod
    def _languages_given(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("must list at least one language code, or be omitted to search all languages")
        return value

    @field_validator("languages")
    @classmethod
    def _languages(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else sorted(set(value))


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
    query_language: str | None = Field(description="as given, or detected (null if undetectable or unsure)")
    language_detection: LanguageDetectionInfo | None = Field(None, description="when the language was detected")
    calibration: CalibrationInfo
    warnings: list[str] = Field(default_factory=list, description="e.g. a `languages` filter naming a language "
                                                                  "the collection has no documents in")
    results: list[SearchHit]
    timing_ms: Timing


# --- embeddings (OpenAI-compatible) ---------------------------------------------------------------------

_TEXT_SCHEMA = {"type": "string", "pattern": SCHEMA_PATTERNS["text"]}


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)  # OpenAI clients send fields such as `user`

    input: Any = Field(description="a string or a list of strings", json_schema_extra={"anyOf": [
        _TEXT_SCHEMA, {"type": "array", "items": _TEXT_SCHEMA, "minItems": 1}]})
    model: str | None = Field(None, description="accepted for compatibility; the served model answers")
    encoding_format: Literal["float", "base64"] = "float"
    input_type: Literal["query", "passage"] = Field("query", description="extension: which prefix to apply")
    dimensions: Integer | None = Field(None, description="must equal the model's dimension when given")
    calibration: Method = Field("none", description="extension: calibrated vectors (center, subspace); default "
                                                    "none = the model's own vectors")
    language: LanguageCode | None = Field(None, description="extension: the inputs' language for calibration "
                                                            "(detected per input when omitted)")

    @field_validator("input")
    @classmethod
    def _input(cls, value: Any) -> list[str]:
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise ValueError("must be a string or a list of strings (token arrays are not supported)")
        if not texts:
            raise ValueError("must not be an empty list")
        for i, text in enumerate(texts):
            try:
                check_text(text)
            except ValueError as exc:
                raise ValueError(f"item {i} {exc}") from None
        return texts


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str
    language: str | None = Field(None, description="extension, with a calibration: the language it was calibrated as")


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage
    calibration: CalibrationInfo


# --- documents ------------------------------------------------------------------------------------------

class DocumentIn(Strict):
    id: Identifier
    text: Passage = Field(
        description="the passage: at least two characters that are not whitespace, punctuation or symbols")
    language: LanguageCode | None = Field(None, description="ISO 639-1; detected when omitted")
    group: Text | None = Field(None, description="documents that are translations of one another share a group")
    metadata: Annotated[dict[str, Any], BeforeValidator(_metadata)] = Field(
        default_factory=dict, description="any JSON object, returned with the hits")

    @model_validator(mode="after")
    def _as_the_collection_checks_it(self) -> "DocumentIn":
        validate_document(self.to_document())  # the collection's own rules (metadata strings and depth)
        return self

    def to_document(self) -> Document:
        return Document(self.id, self.text, self.language, self.group, self.metadata)


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
    # Relevant documents must be named, by `group` or by `relevant_ids` (said in the schema too).
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"anyOf": [
        {"required": ["group"], "properties": {"group": {"type": "string"}}},
        {"required": ["relevant_ids"], "properties": {"relevant_ids": {"type": "array", "minItems": 1}}}]})

    text: Text
    language: LanguageCode | None = Field(None, description="ISO 639-1; detected when omitted")
    group: Text | None = Field(None, description="relevant = every document of this group")
    relevant_ids: list[Identifier] | None = Field(None, description="relevant = these documents (wins over group)")


class AuditRequest(Strict):
    queries: list[AuditQuery] | None = Field(
        None, min_length=1,
        description="omit for a self-audit: each document of a multi-language group queries for its translations")
    k: Positive = Field(10, description="top-k for recall and the language-share figures")
    max_queries: Positive | None = Field(None, description="use at most this many queries (self-audit: a fixed sample)")
    calibration: Method | None = Field(None, description="the ranking to audit (default: the service's); raw "
                                                         "figures are reported beside it under `compare`")

    @field_validator("queries", mode="before")
    @classmethod
    def _queries_given(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("give at least one query, or omit `queries` for a self-audit")
        return value
