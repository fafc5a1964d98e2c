"""``POST /v1/embeddings``: the OpenAI embeddings API shape, so OpenAI clients work unchanged."""
from __future__ import annotations

import base64

from fastapi import APIRouter, Depends, HTTPException

from app.dependencies import ready_state
from app.schemas import Embedding, EmbeddingsRequest, EmbeddingsResponse, Usage
from app.state import ServiceState

router = APIRouter(tags=["embeddings"])


@router.post("/v1/embeddings", response_model=EmbeddingsResponse)
def embeddings(body: EmbeddingsRequest, state: ServiceState = Depends(ready_state)) -> EmbeddingsResponse:
    """Embed one or more texts. `input_type` (an extension) picks the query or passage prefix."""
    settings, texts = state.settings, body.input
    if len(texts) > settings.max_embedding_inputs:
        raise HTTPException(422, f"input: at most {settings.max_embedding_inputs} texts per request "
                                 f"(BABELSEARCH_MAX_EMBEDDING_INPUTS), got {len(texts)}")
    too_long = [i for i, text in enumerate(texts) if len(text) > settings.max_input_chars]
    if too_long:
        raise HTTPException(422, f"input[{too_long[0]}]: at most {settings.max_input_chars} characters "
                                 f"(BABELSEARCH_MAX_INPUT_CHARS), got {len(texts[too_long[0]])}")
    if body.dimensions is not None and body.dimensions != state.encoder.dim:
        raise HTTPException(422, f"dimensions: this model returns {state.encoder.dim}-dimensional vectors, "
                                 f"got {body.dimensions}")
    vectors = state.encoder.encode(texts, body.input_type)
    tokens = int(sum(state.encoder.count_tokens(texts, body.input_type)))
    if body.encoding_format == "base64":  # OpenAI's format: float32 little-endian bytes, base64
        encoded = [base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") for v in vectors]
    else:
        encoded = [v.tolist() for v in vectors]
    return EmbeddingsResponse(
        data=[Embedding(index=i, embedding=e) for i, e in enumerate(encoded)],
        model=state.model_name,
        usage=Usage(prompt_tokens=tokens, total_tokens=tokens),
    )
