"""Multilingual knowledge distillation on parallel sentences (Reimers & Gurevych 2020, arXiv 2004.09813).

The teacher is the base model on English: its vector for an English sentence is computed once, before
the first update, and kept in the run directory. Each step the student maps

- a translation of that sentence onto the teacher's English vector (the cross-lingual term: a sentence
  and its translation get one vector, so a language no longer has an offset of its own), and
- the English sentence itself onto the same vector (the guard: English stays where the teacher had it).

Loss per pair: the squared Euclidean distance of unit vectors, 2 − 2·cos, averaged over the pairs (the
objective's weight, ``distill.weight``, is applied by ``trainer.objectives``).
Each DDP rank draws its own pairs (seeded by rank) and DDP averages the gradients, so the distillation
term needs no gathering.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from encoder.contract import TextKind
from encoder.files import atomic_path
from evaluation.jsonl import read_jsonl_rows
from trainer.config import DistillConfig
from trainer.data import NTREX_LANGUAGES, SQUAD2_FI_LANGUAGES
from trainer.modeling import SentenceEncoder
from trainer.objectives import StepInputs

TEACHER_FILE = "teacher.npz"
SOURCE_LANGUAGE = "en"


@dataclass(frozen=True)
class ParallelText:
    source: str  # English
    kind: TextKind  # the prefix both sides are embedded with
    translations: tuple[tuple[str, str], ...]  # (language, text), never English


def ntrex_parallel(directory: str | Path) -> list[ParallelText]:
    """Every NTREX-128 line with its English sentence and the translations present (passage side)."""
    directory = Path(directory)
    lines = {}
    for code, language in NTREX_LANGUAGES.items():
        path = directory / f"newstest2019-ref.{code}.txt"
        if path.is_file():
            lines[language] = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    if SOURCE_LANGUAGE not in lines:
        raise FileNotFoundError(f"{directory}: no English NTREX-128 file (newstest2019-ref.eng-US.txt)")
    texts = []
    for index, source in enumerate(lines[SOURCE_LANGUAGE]):
        translations = tuple((lang, text[index]) for lang, text in lines.items()
                             if lang != SOURCE_LANGUAGE and index < len(text) and text[index])
        if source and translations:
            texts.append(ParallelText(source, "passage", translations))
    return texts


def squad2_fi_parallel(path: str | Path, limit: int) -> list[ParallelText]:
    """Finnish questions with their English back-translations (query side)."""
    path = Path(path)
    if path.is_dir():
        path = next(path.glob("*.jsonl"))
    english = next(field for field, lang in SQUAD2_FI_LANGUAGES.items() if lang == SOURCE_LANGUAGE)
    other = {field: lang for field, lang in SQUAD2_FI_LANGUAGES.items() if lang != SOURCE_LANGUAGE}
    texts: list[ParallelText] = []
    for _, row in read_jsonl_rows(path):
        for question in row["questions"]:
            translations = tuple((lang, question[f]) for f, lang in other.items() if question.get(f))
            if question.get(english) and translations:
                texts.append(ParallelText(question[english], "query", translations))
                if len(texts) >= limit:
                    return texts
    return texts


def _fingerprint(texts: Sequence[ParallelText], base_model: str) -> str:
    digest = hashlib.sha256(base_model.encode())
    for item in texts:
        digest.update(f"\0{item.kind}\0{item.source}".encode())
    return digest.hexdigest()


@torch.no_grad()
def teacher_vectors(encoder: SentenceEncoder, texts: Sequence[ParallelText], path: Path,
                    batch_size: int = 64, write: bool = True) -> torch.Tensor:
    """The teacher's English vectors: read from ``path`` when it matches these texts, else computed with
    ``encoder`` (call this before the first update, while the student still is the teacher) and saved."""
    fingerprint = _fingerprint(texts, encoder.base_model)
    if path.is_file():
        saved = np.load(path)
        if str(saved["fingerprint"]) == fingerprint:
            return torch.from_numpy(saved["vectors"])
        raise ValueError(f"{path} holds teacher vectors of other texts or another base model: delete it "
                         "or use another output_dir")
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    out = torch.zeros(len(texts), encoder.contract.dim)
    progress = tqdm(total=len(texts), desc="teacher vectors", unit="text", disable=not write, dynamic_ncols=True)
    for kind in ("query", "passage"):
        rows = [i for i, item in enumerate(texts) if item.kind == kind]
        rows.sort(key=lambda i: len(texts[i].source))  # length-sorted chunks pad less
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            tokens = encoder.tokenize([texts[i].source for i in chunk], kind, max_length=encoder.contract.max_length)
            out[chunk] = encoder(**{k: v.to(device) for k, v in tokens.items()}).float().cpu()
            progress.update(len(chunk))
    progress.close()
    encoder.train(was_training)
    if not write:  # DDP: one rank writes the file
        return out
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, vectors=out.numpy(), fingerprint=np.array(fingerprint))
    return out


class DistillationObjective:
    """Draws parallel pairs and returns the distillation loss of the student on them."""

    name = "distill"
    global_batch = False  # each rank draws its own pairs (trainer.objectives)

    def __init__(self, settings: DistillConfig, encoder: SentenceEncoder, run_dir: Path, seed: int, rank: int,
                 write: bool = True) -> None:
        self.settings = settings
        for name in ("ntrex", "squad2_fi"):
            value = getattr(settings, name)
            if value is not None and not Path(value).exists():
                raise FileNotFoundError(f"distill.{name}: {value} does not exist")
        self.sources: list[list[ParallelText]] = []
        shares = []
        if settings.ntrex:
            self.sources.append(ntrex_parallel(settings.ntrex))
            shares.append(settings.ntrex_share)
        if settings.squad2_fi:
            self.sources.append(squad2_fi_parallel(settings.squad2_fi, settings.squad2_fi_questions))
            shares.append(1 - settings.ntrex_share if settings.ntrex else 1.0)
        self.shares = np.array(shares) / sum(shares)
        self.texts = [item for source in self.sources for item in source]  # teacher row -> its text
        self.offsets = np.cumsum([0] + [len(source) for source in self.sources])
        self.teacher = teacher_vectors(encoder, self.texts, run_dir / TEACHER_FILE, write=write)
        self.rng = np.random.default_rng([seed, rank, 0xD157])

    def draw(self) -> list[tuple[int, str, str]]:
        """(teacher row, language, translated text) for one step's pairs."""
        picks = []
        for source_index in self.rng.choice(len(self.sources), size=self.settings.batch_size, p=self.shares):
            source = self.sources[source_index]
            row = int(self.rng.integers(len(source)))
            language, text = source[row].translations[int(self.rng.integers(len(source[row].translations)))]
            picks.append((int(self.offsets[source_index]) + row, language, text))
        return picks

    def loss(self, step: StepInputs) -> torch.Tensor:
        picks = self.draw()
        losses = []
        for kind in ("query", "passage"):
            rows = [row for row, _, _ in picks if self.texts[row].kind == kind]
            texts = [text for row, _, text in picks if self.texts[row].kind == kind]
            if not rows:
                continue
            if self.settings.guard:
                texts += [self.texts[row].source for row in rows]
                rows += rows
            student = step.embed(texts, kind, self.settings.max_length)
            target = self.teacher[rows].to(student.device)
            losses.append(((student.float() - target) ** 2).sum(dim=1))
        return torch.cat(losses).mean()

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]

