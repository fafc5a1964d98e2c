"""InfoNCE over cosine similarities with in-batch (and hard) negatives.

Embeddings arrive L2-normalised, so a dot product is the cosine. Candidates whose text equals a query's
positive (a hard negative that is another pair's positive, say) are masked rather than counted as
negatives.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _mask_duplicates(logits: torch.Tensor, positives: torch.Tensor, candidate_ids: torch.Tensor | None) -> torch.Tensor:
    if candidate_ids is None:
        return logits
    duplicate = candidate_ids[positives].unsqueeze(1) == candidate_ids.unsqueeze(0)
    duplicate[torch.arange(len(positives), device=logits.device), positives] = False
    return logits.masked_fill(duplicate, float("-inf"))


def info_nce(
    queries: torch.Tensor,
    passages: torch.Tensor,
    positives: torch.Tensor,
    temperature: float = 0.05,
    symmetric: bool = False,
    passage_ids: torch.Tensor | None = None,
    query_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of each query against all candidate passages.

    queries (B, d); passages (C, d), C >= B (in-batch positives + hard negatives); positives (B,) the index
    of each query's passage among the candidates. ``passage_ids`` / ``query_ids``: content ids of the texts,
    used to mask duplicates of the positive. ``symmetric`` adds the passage -> query direction over the
    batch's queries (hard negatives have no query, so they only appear in the first term).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = _mask_duplicates(queries @ passages.T / temperature, positives, passage_ids)
    loss = F.cross_entropy(logits, positives)
    if symmetric:
        own = torch.arange(len(queries), device=queries.device)
        reverse = _mask_duplicates(passages[positives] @ queries.T / temperature, own, query_ids)
        loss = (loss + F.cross_entropy(reverse, own)) / 2
    return loss
