"""ONNX Runtime encoder: text in, L2-normalised vectors out. Imports no torch.

Texts are tokenized with the artifact's own ``tokenizer.json`` and embedded in batches sorted by
length, so a batch pads to its own longest text rather than to the longest text of the whole call.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from encoder.artifact import PRECISIONS, ArtifactInfo, load_artifact_info
from encoder.contract import EncoderContract, TextKind

# Bumped whenever this module changes the vectors it computes from the same artifact (2: int8 one text per
# call), so indexes and embedding caches built by an older runtime are not mixed with new vectors.
RUNTIME_VERSION = 2


class EncoderArtifact:
    """A model artifact opened for one precision, without its ONNX session: what an index binds to (``dim``,
    ``fingerprint``), the text contract and the tokenizer. ``OnnxEncoder`` adds the session; processes that
    never encode locally use it alone (a Ray build's driver, a search replica whose encoder is remote)."""

    def __init__(self, artifact_dir: str | Path, precision: str = "int8") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.artifact_dir = Path(artifact_dir)
        self.info: ArtifactInfo = load_artifact_info(self.artifact_dir)
        if precision not in self.info.files:
            raise ValueError(f"artifact {self.artifact_dir} has no {precision} model (has {sorted(self.info.files)})")
        self.precision = precision
        self.contract: EncoderContract = self.info.contract
        self.tokenizer = Tokenizer.from_file(str(self.artifact_dir / self.info.tokenizer))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.contract.max_length)

    @property
    def dim(self) -> int:
        return self.contract.dim

    @property
    def fingerprint(self) -> str:
        return f"{self.info.fingerprint(self.precision)}-r{RUNTIME_VERSION}"

    def tokenize(self, texts: Sequence[str], kind: TextKind) -> list[list[int]]:
        encodings = self.tokenizer.encode_batch(self.contract.with_prefix(texts, kind))
        return [encoding.ids for encoding in encodings]

    def count_tokens(self, texts: Sequence[str], kind: TextKind) -> list[int]:
        return [len(ids) for ids in self.tokenize(texts, kind)]


class OnnxEncoder(EncoderArtifact):
    def __init__(
        self,
        artifact_dir: str | Path,
        precision: str = "int8",
        threads: int | None = None,
        batch_size: int = 32,
        max_batch_tokens: int = 2048,
    ) -> None:
        super().__init__(artifact_dir, precision)
        self.batch_size = batch_size
        # A batch also stops at this many tokens (texts x the longest one's length): ONNX Runtime's arena keeps
        # the largest batch's activations for the life of the process. Encoding the demo collection (180
        # paragraphs) at batch 32 left the process 150 MB larger than one text per call; with 2048 tokens,
        # 50 MB. Sentences (~40 tokens) still go 32 at a time.
        self.max_batch_tokens = max_batch_tokens
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: one per core
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        model_path = self.artifact_dir / self.info.files[precision]["path"]
        self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        # A *dynamically* quantized int8 model (artifacts exported before static int8, or without calibration
        # data) derives activation scales from the whole input tensor, so a batched text's vector would depend
        # on its neighbours: it runs one text per call. Static int8 and fp32 batch.
        self.batch_independent = not (precision == "int8" and self.info.quantization("int8") == "dynamic")
        self._input_names = {i.name for i in self.session.get_inputs()}
        self._pad_id = self.tokenizer.token_to_id("<pad>") or 0

    def encode(
        self,
        texts: Sequence[str],
        kind: TextKind,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> np.ndarray:
        """Embed ``texts`` as queries or passages: float32 array of shape (len(texts), dim)."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not a single string")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenize(texts, kind)
        order = np.argsort([len(x) for x in ids], kind="stable")
        size = batch_size or self.batch_size if self.batch_independent else 1
        batches = self._batches([len(ids[i]) for i in order], size)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc=f"encode {'queries' if kind == 'query' else 'passages'}", unit="batch")
        for start, stop in batches:
            rows = order[start:stop]
            out[rows] = self._run([ids[i] for i in rows])
        return out

    def _batches(self, sorted_lengths: list[int], size: int) -> list[tuple[int, int]]:
        """(start, stop) of consecutive batches over texts sorted by length: at most ``size`` texts and, past
        the first text, at most ``max_batch_tokens`` padded tokens (the batch pads to its last, longest text)."""
        batches, start = [], 0
        while start < len(sorted_lengths):
            stop = start + 1
            while (stop < len(sorted_lengths) and stop - start < size
                   and (stop - start + 1) * sorted_lengths[stop] <= self.max_batch_tokens):
                stop += 1
            batches.append((start, stop))
            start = stop
        return batches

    def _run(self, batch: list[list[int]]) -> np.ndarray:
        width = max(len(x) for x in batch)
        input_ids = np.full((len(batch), width), self._pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        (embeddings,) = self.session.run(["sentence_embedding"], feeds)
        return embeddings.astype(np.float32, copy=False)
