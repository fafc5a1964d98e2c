"""Documents: upsert and delete (behind the API key), and read one back."""
from __future__ import annotations

from fastapi import APIRouter, Body, Depends, Path

from app.dependencies import ready_state, require_api_key, writer_slot
from app.errors import InvalidInput, NotFound, error_responses
from app.http import CheckedRoute
from app.limits import check_tokens
from app.schemas import ID_MAX_CHARS, DeleteResponse, DocumentIn, DocumentOut, IngestResponse
from app.state import ServiceState
from indexes.documents import excerpt
from indexes.text import SCHEMA_PATTERNS, check_text

router = APIRouter(prefix="/documents", tags=["documents"], route_class=CheckedRoute)

# The id rules, and no '%' unescaped: the server percent-decodes the path, so a literal "%03" would reach it
# as U+0003 (send '%' itself as %25).
DocId = Path(description="the document id (may contain '/'; send '%' as %25)", max_length=ID_MAX_CHARS,
             json_schema_extra={"pattern": SCHEMA_PATTERNS["text"].replace("[^", "[^%")})


def _checked_id(doc_id: str) -> str:
    try:
        return check_text(doc_id)
    except ValueError as exc:
        raise InvalidInput(f"doc_id: {exc}", param="doc_id") from None


@router.post("", response_model=IngestResponse,
             responses=error_responses(400, 401, 403, 413, 415, 422, 429, 503))
def upsert_documents(
    documents: list[DocumentIn] = Body(description="documents to add; an existing id is replaced",
                                       json_schema_extra={"minItems": 1}),
    state: ServiceState = Depends(writer_slot),
) -> IngestResponse:
    """Add or replace documents (a JSON array). Nothing is written if any document is invalid. An id repeated
    within the request: its last occurrence wins."""
    if not documents:
        raise InvalidInput("body: send a non-empty JSON array of documents", param="body")
    check_tokens(sum(state.encoder.count_tokens([d.text for d in documents], "passage")), state.settings, "body")
    try:
        result = state.collection.add([d.to_document() for d in documents])
    except ValueError as exc:  # the collection's own validation (nothing was written)
        raise InvalidInput(str(exc), param="body") from exc
    finally:
        state.refresh_counts()
    return IngestResponse(added=result["added"], replaced=result["replaced"], languages=result["languages"],
                          documents=state.documents)


@router.get("/{doc_id:path}", response_model=DocumentOut, responses=error_responses(404, 422, 503))
def get_document(doc_id: str = DocId, state: ServiceState = Depends(ready_state)) -> DocumentOut:
    document = state.collection.get(_checked_id(doc_id))
    if document is None:
        raise NotFound(f"no document with id {excerpt(doc_id)}", param="doc_id")
    return DocumentOut(id=document.id, text=document.text, language=document.language, group=document.group,
                       metadata=document.metadata or {})


@router.delete("/{doc_id:path}", response_model=DeleteResponse, responses=error_responses(401, 403, 404, 422, 503))
def delete_document(doc_id: str = DocId, state: ServiceState = Depends(require_api_key)) -> DeleteResponse:
    try:
        deleted = state.collection.delete([_checked_id(doc_id)])
    finally:
        state.refresh_counts()
    if deleted == 0:
        raise NotFound(f"no document with id {excerpt(doc_id)}", param="doc_id")
    return DeleteResponse(deleted=doc_id, documents=state.documents)
