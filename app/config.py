"""Service configuration: environment variables with the ``BABELSEARCH_`` prefix (pydantic-settings)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from app.limits import Limits


class Settings(Limits):
    """Everything but the limits, which ``app.limits.Limits`` declares (same variables, inherited here)."""

    model_config = SettingsConfigDict(env_prefix="BABELSEARCH_", extra="ignore")

    model_dir: Path = Field(Path("artifacts/models/e5-small-base"), description="model artifact directory")
    precision: Literal["int8", "fp32"] = "int8"
    index_dir: Path = Field(Path("var/index"), description="where the collection (FAISS shards + SQLite) lives")
    index_type: str | None = Field(None, description="auto | flat | hnsw | ivf; unset keeps an existing index's "
                                                     "type (a new index is auto: flat up to 300,000 passages, then ivf)")
    seed_collection: Path | None = Field(None, description="JSONL (or Parquet, with the ray extra) ingested at "
                                                          "startup when the index is empty")
    api_key: SecretStr | None = Field(None, description="required for document writes; unset = writes disabled")

    calibration: Literal["none", "center", "subspace"] = Field(
        "center", description="language-bias calibration /search and /audit use unless a request names one "
                              "(docs/calibration.md); /v1/embeddings returns raw vectors unless asked")
    calibration_min_count: int = Field(200, ge=1, description="passages of a language from which the "
                                                             "collection's own mean replaces the artifact's")
    calibration_subspace_rank: int | None = Field(None, ge=1, description="directions the subspace method "
                                                                         "removes; unset = the artifact's")
    languages: list[str] = Field(default_factory=list, description="extra ISO 639-1 codes the language "
                                 "detector considers, besides the model's and the collection's (JSON list)")
    detection: Literal["served", "all"] = Field(
        "served", description="what documents without a language are detected among: served = the model's, "
                              "the collection's and BABELSEARCH_LANGUAGES' languages (a text in another "
                              "language is unknown and refused; ~80 MB more once the first such document "
                              "arrives), all = all 75 lingua languages (a new language gets its own shard; "
                              "~1.3 GB, loaded on the first such document); docs/languages.md")
    warm_up: bool = Field(True, description="load the language detector and run the encoder once before ready")
    threads: int = Field(0, ge=0, description="ONNX Runtime intra-op threads; 0 = one per core")

    @field_validator("seed_collection", "api_key", "index_type", mode="before")
    @classmethod
    def _empty_is_unset(cls, value):
        # `BABELSEARCH_API_KEY=` (as docker compose writes for an unset variable) means "not set".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("index_type")
    @classmethod
    def _known_index_type(cls, value: str | None) -> str | None:
        from indexes import INDEX_TYPES

        if value is not None and value not in INDEX_TYPES:
            raise ValueError(f"must be one of {', '.join(INDEX_TYPES)}")
        return value

    @field_validator("languages")
    @classmethod
    def _known_languages(cls, value: list[str]) -> list[str]:
        from indexes import normalize_language

        try:
            return sorted({normalize_language(code) for code in value})
        except ValueError:
            raise ValueError("must be a JSON list of ISO 639-1 codes lingua knows, e.g. [\"fr\", \"pt\"]") from None

    @property
    def writes_enabled(self) -> bool:
        return self.api_key is not None
