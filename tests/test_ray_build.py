"""`python -m indexes build --ray` on a real local Ray cluster (tests/ray_fixtures.py), with the tiny model: the same
collection as a local build, resumable after Ctrl-C and a kill, Parquet input, and clear refusals of bad options."""
from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from encoder import OnnxEncoder
from encoder.artifact import keep_precisions
from indexes import cli
from indexes.documents import Document, read_documents
from indexes.manifest import DATABASE_FILE, describe, describe_encoder, read_manifest
from indexes.ray_build import DriverEncoder, PassageEncoderActor, rechunk
from indexes.store import DocumentStore
from tests.multilingual_sample import SAMPLE
from tests.ray_fixtures import free_port, ray_cluster  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
SCRIPT_LANGUAGES = {"cyrillic": "ru", "greek": "el", "arabic": "ar", "devanagari": "hi", "thai": "th", "han": "zh",
                    "japanese": "ja", "hangul": "ko", "hebrew": "he", "georgian": "ka"}
LATIN_LANGUAGES = ["en", "en", "de", "fr", "es", "tr", "vi", "en"]  # SAMPLE["latin"], in order
VARIANTS = 4  # each sentence 4 times (its own id and text): ~150 documents, enough commits to interrupt


def corpus() -> list[Document]:
    sentences = list(zip(SAMPLE["latin"], LATIN_LANGUAGES)) + [
        (text, language) for script, language in SCRIPT_LANGUAGES.items() for text in SAMPLE[script]]
    return [Document(f"s{i}-v{variant}", text if variant == 0 else f"{text} ({variant})", language, group=f"s{i}",
                     metadata={"variant": variant, "tags": ["sample"]})
            for variant in range(VARIANTS) for i, (text, language) in enumerate(sentences)]


def write_jsonl(path: Path, documents: list[Document]) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for doc in documents:
            row = {"id": doc.id, "text": doc.text, "language": doc.language, "group": doc.group, "metadata": doc.metadata}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def run_cli(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "indexes", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=180)


def stored(index: Path) -> dict[str, tuple[Document, np.ndarray]]:
    """id -> (document, vector) of a closed index, read as a follower reads a store."""
    store = DocumentStore(index / DATABASE_FILE, int(read_manifest(index)["dim"]), read_only=True)
    try:
        out = {}
        for keys in store.language_keys().values():
            rows = store.rows_by_key(keys)
            for key, vector in zip(keys, store.vectors(keys)):
                out[rows[int(key)].id] = (rows[int(key)].document(), vector)
        return out
    finally:
        store.close()


def assert_same_collection(index: Path, reference: Path) -> None:
    built, expected = stored(index), stored(reference)
    assert sorted(built) == sorted(expected)
    for doc_id, (document, vector) in built.items():
        assert document == expected[doc_id][0]  # text, language, group, metadata
        assert np.abs(vector - expected[doc_id][1]).max() <= 1e-6, doc_id


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("ray-docs") / "docs.jsonl", corpus())


@pytest.fixture(scope="module")
def local_index(docs, tiny_artifact, tmp_path_factory) -> Path:
    """The reference: a local build (fp32: vectors that depend on batching if anything does)."""
    out = tmp_path_factory.mktemp("local") / "index"
    built = run_cli("build", "--model", tiny_artifact, "--input", docs, "--out", out, "--precision", "fp32")
    assert built.returncode == 0, built.stderr
    return out


def ray_build_args(tiny_artifact, docs, out, cluster, *extra) -> list:
    return ["build", "--model", tiny_artifact, "--input", docs, "--out", out, "--precision", "fp32",
            "--address", cluster.address, "--actors", "2", "--threads-per-actor", "1", *extra]


def test_ray_build_gives_the_local_build(ray_cluster, tiny_artifact, docs, local_index, tmp_path):  # noqa: F811
    out = tmp_path / "index"
    built = run_cli(*ray_build_args(tiny_artifact, docs, out, ray_cluster, "--chunk-size", "64", "--batch-size", "8"))
    assert built.returncode == 0, built.stderr
    total = len(corpus())
    assert f"{total} added, 0 replaced, 0 unchanged" in built.stdout
    assert f"{total}/{total}" in built.stderr  # the progress bar counted every committed document
    assert "Traceback" not in built.stderr
    assert_same_collection(out, local_index)
    assert read_manifest(out)["encoder_fingerprint"] == read_manifest(local_index)["encoder_fingerprint"]


def test_ray_build_resumes_after_ctrl_c_and_a_kill(ray_cluster, tiny_artifact, docs, local_index, tmp_path):  # noqa: F811
    out = tmp_path / "index"
    args = ray_build_args(tiny_artifact, docs, out, ray_cluster, "--chunk-size", "2", "--batch-size", "2")
    interrupted = interrupt_once_committed(args, out, signal.SIGINT)
    assert interrupted.returncode == 130, interrupted.stderr
    assert "stopping: committing what is already encoded" in interrupted.stderr  # Ctrl-C waits for a batch to end
    assert "documents committed to" in interrupted.stderr and "rerun the same command to continue" in interrupted.stderr
    assert "Traceback" not in interrupted.stderr
    first = describe(out)["documents"]
    assert 0 < first < len(corpus())

    killed = interrupt_once_committed(args, out, signal.SIGKILL, after=first)
    assert killed.returncode == -signal.SIGKILL
    done = describe(out)["documents"]
    assert first < done < len(corpus())

    resumed = run_cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{done} of {len(corpus())} documents already stored unchanged; {len(corpus()) - done} to go" in resumed.stderr
    assert f"{len(corpus()) - done} added, 0 replaced, {done} unchanged" in resumed.stdout
    assert_same_collection(out, local_index)


def interrupt_once_committed(args: list, out: Path, sig: signal.Signals, after: int = 0) -> subprocess.CompletedProcess:
    """Run the CLI and send ``sig`` as soon as the index holds more than ``after`` documents."""
    process = subprocess.Popen([sys.executable, "-m", "indexes", *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline and committed(out) <= after:
        time.sleep(0.005)
    assert process.poll() is None, f"the build ended before it could be interrupted: {process.stderr.read()}"
    process.send_signal(sig)
    try:
        stdout, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"the build did not end after {sig.name}: {process.communicate()[1][-3000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def committed(out: Path) -> int:
    try:
        return describe(out)["documents"]
    except (OSError, ValueError, TypeError, sqlite3.Error):  # not created yet, or being created
        return 0


def test_parquet_input_gives_the_jsonl_collection(tiny_artifact, docs, local_index, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    documents = corpus()
    table = pa.table({
        "id": [doc.id for doc in documents],
        "text": [doc.text for doc in documents],
        "language": [doc.language for doc in documents],
        "group": [doc.group for doc in documents],
        "metadata": [json.dumps(doc.metadata) for doc in documents],  # a JSON string column
    })
    path = tmp_path / "docs.parquet"
    pq.write_table(table, path, row_group_size=50)
    assert list(read_documents(path)) == list(read_documents(docs))
    out = tmp_path / "index"
    built = run_cli("build", "--model", tiny_artifact, "--input", path, "--out", out, "--precision", "fp32")
    assert built.returncode == 0, built.stderr
    assert_same_collection(out, local_index)

    structs = pa.table({"id": [1, 2], "text": ["Wie viele Menschen?", "Combien de personnes ?"],
                        "metadata": pa.array([{"n": 1, "tags": ["a"]}, {"n": None, "tags": []}]),
                        "title": ["Eins", None]})  # a struct column; a null is an absent field
    pq.write_table(structs, tmp_path / "structs.parquet")
    assert [doc.metadata for doc in read_documents(tmp_path / "structs.parquet")] == [
        {"n": 1, "tags": ["a"], "title": "Eins"}, {"n": None, "tags": []}]
    maps = pa.table({"id": ["m"], "text": ["How many people?"],
                     "metadata": pa.array([[("k", "v")]], type=pa.map_(pa.string(), pa.string()))})
    pq.write_table(maps, tmp_path / "maps.parquet")
    assert [doc.metadata for doc in read_documents(tmp_path / "maps.parquet")] == [{"k": "v"}]

    bad = pa.table({"id": ["ok", "b"], "text": ["fine text", "more text"], "language": ["en", "klingon"]})
    pq.write_table(bad, tmp_path / "bad.parquet")
    failed = run_cli("build", "--model", tiny_artifact, "--input", tmp_path / "bad.parquet", "--out", tmp_path / "o")
    assert failed.returncode == 1 and "bad.parquet: row 1: field 'language'" in failed.stderr
    pq.write_table(pa.table({"id": ["a"], "text": ["some text"], "score": [1.0]}), tmp_path / "extra.parquet")
    extra = run_cli("build", "--model", tiny_artifact, "--input", tmp_path / "extra.parquet", "--out", tmp_path / "o")
    assert extra.returncode == 1 and "unknown column 'score'" in extra.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("options, message", [
    (["--ray", "--actors", "0"], "--actors and --threads-per-actor must be >= 1"),
    (["--ray", "--threads-per-actor", "0"], "--actors and --threads-per-actor must be >= 1"),
    (["--actors", "2"], "--actors and --threads-per-actor are for a Ray build: add --ray (or --address)"),
    (["--ray", "--threads", "2"], "a Ray build takes --threads-per-actor"),
])
def test_bad_ray_options_are_refused_before_anything_is_written(options, message, tiny_artifact, docs, tmp_path,
                                                                capsys):
    assert cli.main(["build", "--model", str(tiny_artifact), "--input", str(docs), "--out", str(tmp_path / "o"),
                     *options]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_unreachable_cluster_and_missing_ray_are_clear_errors(tiny_artifact, docs, tmp_path, monkeypatch, capsys):
    pytest.importorskip("ray")
    nobody = f"127.0.0.1:{free_port()}"
    unreachable = run_cli("build", "--model", tiny_artifact, "--input", docs, "--out", tmp_path / "o", "--address", nobody)
    assert unreachable.returncode == 1, unreachable.stderr
    assert f"error: cannot connect to a Ray cluster at {nobody}" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr and not (tmp_path / "o").exists()

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed: `import ray` raises ImportError
    assert cli.main(["build", "--model", str(tiny_artifact), "--input", str(docs), "--out", str(tmp_path / "o"),
                     "--ray"]) == 1
    assert "error: this command needs Ray, an extra: pip install .[ray]" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    parquet = tmp_path / "docs.parquet"
    parquet.write_bytes(b"")
    assert cli.main(["build", "--model", str(tiny_artifact), "--input", str(parquet), "--out", str(tmp_path / "o")]) == 1
    assert "error: reading Parquet needs pyarrow: pip install .[ray]" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_the_drivers_identity_is_the_actors_encoder(tiny_artifact, tmp_path):
    for precision in ("fp32", "int8"):
        identity = DriverEncoder(tiny_artifact, precision)  # no ONNX session on the driver
        encoder = OnnxEncoder(tiny_artifact, precision, threads=1)
        assert (identity.fingerprint, identity.dim, identity.precision) == (encoder.fingerprint, encoder.dim, precision)
        assert describe_encoder(identity) == describe_encoder(encoder)
    with pytest.raises(RuntimeError, match="the driver's is elsewhere-fp32"):
        PassageEncoderActor(str(tiny_artifact), "fp32", threads=1, batch_size=8, fingerprint="elsewhere-fp32")
    fp32_only = shutil.copytree(tiny_artifact, tmp_path / "fp32-only")
    keep_precisions(fp32_only, ["fp32"])
    with pytest.raises(ValueError, match="has no int8 model"):
        DriverEncoder(fp32_only, "int8")


def test_rechunk_regroups_batches_into_whole_chunks():
    batches = [(np.arange(start, stop), np.full((stop - start, 2), start, np.float32))
               for start, stop in [(0, 3), (3, 4), (4, 9), (9, 10)]]
    chunks = list(rechunk(iter(batches), 4))
    assert [rows.tolist() for rows, _ in chunks] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [vectors[:, 0].tolist() for _, vectors in chunks][1] == [4, 4, 4, 4]
    assert list(rechunk(iter([]), 4)) == []
