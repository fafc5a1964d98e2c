"""Helpers for the service tests: a small multilingual collection, settings, and a hand-made encoder."""
from __future__ import annotations

import json
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from app.config import Settings

# Four topics written in English, German and Japanese (translations share a group), plus one ungrouped
# French passage whose language the index detects.
TOPICS = {
    "berlin": {
        "en": "Berlin has about 3.7 million inhabitants.",
        "de": "Berlin hat etwa 3,7 Millionen Einwohner.",
        "ja": "ベルリンの人口は約370万人です。",
    },
    "photosynthesis": {
        "en": "Photosynthesis turns light into chemical energy.",
        "de": "Die Photosynthese wandelt Licht in chemische Energie um.",
        "ja": "光合成は光を化学エネルギーに変える。",
    },
    "andes": {
        "en": "Aconcagua is the highest mountain in South America.",
        "de": "Der Aconcagua ist der höchste Berg Südamerikas.",
        "ja": "アコンカグアは南アメリカで最も高い山です。",
    },
    "river": {
        "en": "The river flows slowly through the old town.",
        "de": "Der Fluss fließt langsam durch die Altstadt.",
        "ja": "川は旧市街をゆっくりと流れる。",
    },
}
UNGROUPED = {"id": "paris-fr", "text": "La tour Eiffel se trouve à Paris, au bord de la Seine.", "metadata": {"source": "test"}}


def sample_rows() -> list[dict]:
    rows = [
        {"id": f"{topic}-{lang}", "text": text, "language": lang, "group": topic, "metadata": {"topic": topic}}
        for topic, texts in TOPICS.items()
        for lang, text in texts.items()
    ]
    return rows + [UNGROUPED]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def make_settings(tmp_path: Path, model_dir: Path, seed: Path | None = None, **overrides) -> Settings:
    # warm_up off: it loads every lingua model (~10 s, ~1 GB) before /readyz turns 200. detection=all: the
    # seed's "paris-fr" has no language and French nothing else; test_app_detection.py covers "served".
    values = dict(model_dir=model_dir, index_dir=tmp_path / "index", seed_collection=seed, precision="fp32",
                  warm_up=False, detection="all")
    values.update(overrides)
    return Settings(**values)


def wait_ready(client, timeout: float = 120.0) -> dict:
    """Poll /readyz until the seed collection is in (ingest runs in a background thread)."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/readyz")
        if response.status_code == 200:
            return response.json()
        if "failed" in response.json()["detail"] or time.monotonic() > deadline:
            raise AssertionError(f"service did not become ready: {response.json()}")
        time.sleep(0.05)


class GridEncoder:
    """Hand-made vectors: text "<topic> <lang>" -> normalise(topic_weight * e_topic + lang_weight * e_lang).

    With lang_weight > topic_weight the model is language-biased on purpose, so audit numbers can be
    worked out by hand: for a query (t, l) the dot product is 1 for (t, l), lang_weight^2 for another topic
    in l, topic_weight^2 for t in another language, 0 otherwise.
    """

    def __init__(self, topics: list[str], languages: list[str], topic_weight: float = 0.6, lang_weight: float = 0.8):
        self.topics, self.languages = list(topics), list(languages)
        self.topic_weight, self.lang_weight = topic_weight, lang_weight
        self.fingerprint = f"grid-{len(topics)}x{len(languages)}-{topic_weight}-{lang_weight}"
        self.precision = "fp32"

    @property
    def dim(self) -> int:
        return len(self.topics) + len(self.languages)

    def vector(self, text: str) -> np.ndarray:
        topic, language = text.split()
        out = np.zeros(self.dim, dtype=np.float32)
        out[self.topics.index(topic)] = self.topic_weight
        out[len(self.topics) + self.languages.index(language)] = self.lang_weight
        return out / np.linalg.norm(out)

    def encode(self, texts, kind, *args, **kwargs) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts")
        return np.stack([self.vector(t) for t in texts]) if len(texts) else np.zeros((0, self.dim), np.float32)

    def count_tokens(self, texts, kind) -> list[int]:
        return [len(t.split()) for t in texts]


def wait_until(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


GRID_TOPICS, GRID_LANGUAGES = ["A", "B"], ["de", "en", "ja"]


def grid_app(tmp_path: Path, **overrides):
    """The service over six hand-made passages ("A de" ... "B ja", grouped by topic) with GridEncoder:
    no model to load. Texts sent to the encoder must be "<topic> <lang>"."""
    from app.main import create_app

    rows = [{"id": f"{t}-{lang}", "text": f"{t} {lang}", "language": lang, "group": t}
            for t in GRID_TOPICS for lang in GRID_LANGUAGES]
    seed = write_jsonl(tmp_path / "grid.jsonl", rows)
    encoder = GridEncoder(GRID_TOPICS, GRID_LANGUAGES)
    return create_app(make_settings(tmp_path, tmp_path / "unused-model", seed, **overrides), encoder=encoder)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_server(app, limit_s: float = 120.0):
    """``app`` served by uvicorn on 127.0.0.1 (a free port) in a thread; yields its base URL once it answers.
    The server stops when the block ends, or by itself after ``limit_s`` seconds."""
    import httpx
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    stopper = threading.Timer(limit_s, lambda: setattr(server, "should_exit", True))
    stopper.daemon = True
    thread.start()
    stopper.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise AssertionError("the test server did not start")
            time.sleep(0.02)
        with httpx.Client(base_url=base, timeout=10) as client:
            wait_ready(client)
        yield base
    finally:
        server.should_exit = True
        stopper.cancel()
        thread.join(30)
        sock.close()
