"""What the rest of the project needs of an encoder, declared once: ``OnnxEncoder`` is one; the tests'
hand-made encoders are others. Indexes bind to ``fingerprint`` and ``dim``; calibration statistics are
kept per ``precision``."""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from encoder.contract import TextKind


@runtime_checkable
class TextEncoder(Protocol):
    precision: str  # "fp32" | "int8" (or a test encoder's own label)

    @property
    def dim(self) -> int: ...

    @property
    def fingerprint(self) -> str: ...

    def encode(self, texts: Sequence[str], kind: TextKind) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised; a text's vector never depends on its batch."""
