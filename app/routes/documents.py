"""Documents: upsert and delete (behind the API key), and read one back."""
from __future__ import annotations

from fastapi import APIRouter, Body, Depends, HTTPException

from app.dependencies import ready_state, require_api_key
from app.schemas import DeleteResponse, DocumentIn, DocumentOut, IngestResponse
from app.state import ServiceState
from indexes import Document

router = APIRouter(prefix="/documents", tags=["documents"])


@router.post("", response_model=IngestResponse)
def upsert_documents(
    documents: list[DocumentIn] = Body(description="documents to add; an existing id is replaced"),
    state: ServiceState = Depends(require_api_key),
) -> IngestResponse:
    """Add or replace documents (a JSON array). Nothing is written if any document is invalid."""
    settings = state.settings
    if not documents:
        raise HTTPException(422, "body: send a non-empty JSON array of documents")
    if len(documents) > settings.max_documents_per_request:
        raise HTTPException(422, f"body: at most {settings.max_documents_per_request} documents per request "
                                 f"(BABELSEARCH_MAX_DOCUMENTS_PER_REQUEST), got {len(documents)}")
    for i, document in enumerate(documents):
        if len(document.text) > settings.max_input_chars:
            raise HTTPException(422, f"body[{i}].text: at most {settings.max_input_chars} characters "
                                     f"(BABELSEARCH_MAX_INPUT_CHARS), got {len(document.text)}")
    seen: set[str] = set()
    for document in documents:
        if document.id in seen:
            raise HTTPException(422, f"duplicate document id {document.id!r} in one request")
        seen.add(document.id)
    try:
        result = state.collection.add([Document(**d.model_dump()) for d in documents])
    except ValueError as exc:  # the collection's own validation (nothing was written)
        raise HTTPException(422, str(exc)) from exc
    return IngestResponse(added=result["added"], replaced=result["replaced"], languages=result["languages"],
                          documents=len(state.collection))


@router.get("/{doc_id:path}", response_model=DocumentOut)
def get_document(doc_id: str, state: ServiceState = Depends(ready_state)) -> DocumentOut:
    document = state.collection.get(doc_id)
    if document is None:
        raise HTTPException(404, f"no document with id {doc_id!r}")
    return DocumentOut(id=document.id, text=document.text, language=document.language, group=document.group,
                       metadata=document.metadata or {})


@router.delete("/{doc_id:path}", response_model=DeleteResponse)
def delete_document(doc_id: str, state: ServiceState = Depends(require_api_key)) -> DeleteResponse:
    if state.collection.delete([doc_id]) == 0:
        raise HTTPException(404, f"no document with id {doc_id!r}")
    return DeleteResponse(deleted=doc_id, documents=len(state.collection))
