"""``POST /v1/embeddings``: the OpenAI embeddings API shape, so OpenAI clients work unchanged."""
from __future__ import annotations

import base64

from fastapi import APIRouter, Depends

from app.dependencies import encoder_slot
from app.errors import InvalidInput, error_responses
from app.http import CheckedRoute
from app.limits import check_tokens
from app.calibration import calibrate_vectors, for_texts
from app.schemas import CalibrationInfo, Embedding, EmbeddingsRequest, EmbeddingsResponse, Usage
from app.state import ServiceState

router = APIRouter(tags=["embeddings"], route_class=CheckedRoute)


@router.post("/v1/embeddings", response_model=EmbeddingsResponse,
             responses=error_responses(400, 413, 415, 422, 429, 503, openai=True))
def embeddings(body: EmbeddingsRequest, state: ServiceState = Depends(encoder_slot)) -> EmbeddingsResponse:
    """Embed one or more texts. Extensions: `input_type` picks the query or passage prefix; `calibration`
    (center, subspace) returns language-calibrated vectors, each in its `language` (given, or detected).
    Errors come in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`."""
    texts = body.input
    if body.dimensions is not None and body.dimensions != state.encoder.dim:
        raise InvalidInput(f"dimensions: this model returns {state.encoder.dim}-dimensional vectors, "
                           f"got {body.dimensions}", param="dimensions")
    # Counted once, before any encoding: the limit and `usage` both come from this count.
    tokens = int(sum(state.encoder.count_tokens(texts, body.input_type)))
    check_tokens(tokens, state.settings, "input")
    calibration, languages = for_texts(state.calibration, state.detector, state.collection, texts, body.language,
                                       body.calibration)
    vectors = calibrate_vectors(calibration, state.encoder.encode(texts, body.input_type), languages)
    if body.encoding_format == "base64":  # OpenAI's format: float32 little-endian bytes, base64
        encoded = [base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") for v in vectors]
    else:
        encoded = [v.tolist() for v in vectors]
    return EmbeddingsResponse(
        data=[Embedding(index=i, embedding=e, language=language if calibration.plan.method == "center" else None)
              for i, (e, language) in enumerate(zip(encoded, languages))],
        model=state.model_name,
        usage=Usage(prompt_tokens=tokens, total_tokens=tokens),
        calibration=CalibrationInfo(**calibration.describe()),
    )
