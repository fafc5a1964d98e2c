"""Language-detection accuracy, "unsure" rate, build time and memory: restricted detector vs all languages.

    python bench/bench_languages.py [--limit N] [--threshold T] [--skip-all]

Texts (11 languages: ar de el en es hi ru th tr vi zh):
- XQuAD-R questions (1190 per language) and NTREX-128 sentences (1997 per language), whole;
- short queries of 1, 2 and 3 words derived from each of them: a window of n words at a position drawn by a
  random generator seeded with (set, language, text index, n), so every run gets the same windows. Words are
  whitespace tokens stripped of edge punctuation; tokens without a letter (numbers) are dropped first. zh and
  th do not separate words by spaces: a "word" there is 2 (zh) or 4 (th) non-space characters, about their
  mean word length. A text too short for the window gives no query. Windows rather than the first n words:
  questions start with "What"/"How many", which is not what a keyword query looks like.
``--limit N`` keeps the first N texts per language and set (default: all; the full run takes ~3 minutes on
2 cores, most of it the all-language detector).

Detectors, each run in its own subprocess so that build time and memory are its own (RSS from
/proc/self/status; "load" = build with every model preloaded): the restricted detector in high- and
low-accuracy mode, and all 75 lingua languages in high-accuracy mode with no threshold (the behaviour before
the restricted detector). Accuracy = share labelled with the right language; unsure = share answered None;
wrong = share labelled with another language (worse than unsure: a wrong shard, a wrong calibration).

The threshold is chosen on NTREX only (sentences and their short queries): the one that maximises
correct − 2 × wrong, pooled, among those that keep every language's sentence accuracy ≥ 0.97 (costs 1 and 4
are shown too); XQuAD-R confirms it. The tables use ``--threshold`` for the restricted high-accuracy detector
(default: indexes.languages.DEFAULT_MIN_CONFIDENCE, and the output says if that is not the chosen one) and
the chosen threshold for the low-accuracy one.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import unicodedata
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
LANGUAGES = ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh")
CHARS_PER_WORD = {"zh": 2, "th": 4}
WRONG_COST = 2.0  # the cost that chooses; the others show how sensitive the choice is
WRONG_COSTS = (1.0, 2.0, 4.0)
SENTENCE_TARGET = 0.97
THRESHOLDS = [round(0.05 * i, 2) for i in range(20)]
DETECTORS = {  # name: (languages, low_accuracy, fixed threshold; None: --threshold for restricted-high, else chosen)
    "restricted-high": (LANGUAGES, False, None),
    "restricted-low": (LANGUAGES, True, None),
    "all-75 (before)": (None, False, 0.0),  # lingua alone, as before this module
}


# --- data --------------------------------------------------------------------------------------------------


def _strip(text: str) -> str:
    start, end = 0, len(text)
    while start < end and unicodedata.category(text[start])[0] in "PSZ":
        start += 1
    while end > start and unicodedata.category(text[end - 1])[0] in "PSZ":
        end -= 1
    return text[start:end]


def _has_letter(text: str) -> bool:
    return any(character.isalpha() for character in text)


def short_query(text: str, language: str, n: int, seed: str) -> str | None:
    """A deterministic window of ``n`` words of ``text`` (``n`` × CHARS_PER_WORD characters for zh/th)."""
    if language in CHARS_PER_WORD:
        units, width, joiner = [c for c in text if not c.isspace()], n * CHARS_PER_WORD[language], ""
    else:
        units, width, joiner = [w for w in map(_strip, text.split()) if _has_letter(w)], n, " "
    if len(units) < width:
        return None
    start = random.Random(zlib.crc32(seed.encode())).randrange(len(units) - width + 1)
    query = _strip(joiner.join(units[start : start + width]))
    return query if _has_letter(query) else None


def load_texts(limit: int | None) -> dict[str, dict[str, list[str]]]:
    """{set name: {language: texts}} for xquad, ntrex and their short queries (``xquad-1w`` ...)."""
    from evaluation.lareqa import read_squad_sentences
    from trainer.data import NTREX_LANGUAGES

    base: dict[str, dict[str, list[str]]] = {"xquad": {}, "ntrex": {}}
    for language in LANGUAGES:
        base["xquad"][language] = [q.question for q in read_squad_sentences(DATA / "xquad-r" / f"{language}.json")]
    for code, language in NTREX_LANGUAGES.items():
        path = DATA / "train" / "ntrex128" / f"newstest2019-ref.{code}.txt"
        base["ntrex"][language] = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    sets: dict[str, dict[str, list[str]]] = {}
    for name, by_language in base.items():
        sets[name] = {language: texts[:limit] for language, texts in by_language.items()}
        for n in (1, 2, 3):
            sets[f"{name}-{n}w"] = {
                language: [q for i, text in enumerate(texts)
                           if (q := short_query(text, language, n, f"{name}:{language}:{i}:{n}")) is not None]
                for language, texts in sets[name].items()
            }
    return sets


# --- one detector, in its own process ----------------------------------------------------------------------


def _memory_mb() -> dict[str, float]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def worker(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    from lingua import LanguageDetectorBuilder

    from indexes.languages import LanguageDetector

    texts = spec["texts"]
    before = _memory_mb()["VmRSS"]
    start = time.perf_counter()
    if spec["languages"] is None:  # the behaviour before: lingua as it is, all languages, no rules
        lingua = LanguageDetectorBuilder.from_all_languages().with_preloaded_language_models().build()
        build_s, loaded = time.perf_counter() - start, _memory_mb()["VmRSS"]
        start = time.perf_counter()
        values = lingua.compute_language_confidence_values_in_parallel(texts)
        detect_s = time.perf_counter() - start
        guesses = [v[0].language.iso_code_639_1.name.lower() if v and v[0].value > 0 else None for v in values]
        confidences = [float(v[0].value) if v else 0.0 for v in values]
        rebuild_s = None
    else:
        detector = LanguageDetector(spec["languages"], min_confidence=0.0, low_accuracy=spec["low_accuracy"])
        detector.warm_up()
        build_s, loaded = time.perf_counter() - start, _memory_mb()["VmRSS"]
        start = time.perf_counter()
        detections = detector.detect_many(texts)
        detect_s = time.perf_counter() - start
        guesses, confidences = [d.best_guess for d in detections], [d.confidence for d in detections]
        start = time.perf_counter()  # the set grows by one language: only its models load (shared cache)
        detector.with_languages(["fr"]).warm_up()
        rebuild_s = time.perf_counter() - start
    json.dump({
        "build_s": build_s, "rss_before_mb": before, "rss_loaded_mb": loaded, "peak_mb": _memory_mb()["VmHWM"],
        "texts_per_s": len(texts) / detect_s, "rebuild_plus_one_s": rebuild_s,
        "guesses": guesses, "confidences": confidences,
    }, sys.stdout)


def run_detector(name: str, texts: list[str], languages, low_accuracy: bool) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as spec:
        json.dump({"languages": list(languages) if languages else None, "low_accuracy": low_accuracy,
                   "texts": texts}, spec)
    try:
        done = subprocess.run([sys.executable, __file__, "--worker", spec.name], capture_output=True, text=True,
                              check=False, env={**os.environ, "PYTHONHASHSEED": "0"})
    finally:
        os.unlink(spec.name)
    if done.returncode != 0:
        raise RuntimeError(f"{name}: worker failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout)


# --- scoring -----------------------------------------------------------------------------------------------


def score(guesses, confidences, truth, threshold: float) -> tuple[int, int, int]:
    """(correct, unsure, wrong) counts."""
    correct = unsure = wrong = 0
    for guess, confidence, language in zip(guesses, confidences, truth):
        if guess is None or confidence <= 0.0 or confidence < threshold:
            unsure += 1
        elif guess == language:
            correct += 1
        else:
            wrong += 1
    return correct, unsure, wrong


def rates(counts: tuple[int, int, int]) -> tuple[float, float, float]:
    total = max(sum(counts), 1)
    return tuple(count / total for count in counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="first N texts per language and set (default all)")
    parser.add_argument("--threshold", type=float, default=None, help="default: DEFAULT_MIN_CONFIDENCE")
    parser.add_argument("--skip-all", action="store_true", help="skip the all-75-language detector (slow, 1.3 GB)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker)
    from indexes.languages import DEFAULT_MIN_CONFIDENCE

    threshold = DEFAULT_MIN_CONFIDENCE if args.threshold is None else args.threshold
    started = time.perf_counter()
    sets = load_texts(args.limit)
    flat = [(name, language, text) for name, by_language in sets.items()
            for language, texts in by_language.items() for text in texts]
    texts = [text for _, _, text in flat]
    truth = [language for _, language, _ in flat]

    results = {}
    for name, (languages, low_accuracy, _) in DETECTORS.items():
        if args.skip_all and languages is None:
            continue
        results[name] = run_detector(name, texts, languages, low_accuracy)

    rows_of: dict[tuple[str, str], list[int]] = {}
    for i, (name, lang, _) in enumerate(flat):
        rows_of.setdefault((name, lang), []).append(i)

    def counts(detector: str, set_names, language: str | None, at: float) -> tuple[int, int, int]:
        rows = [i for name in set_names for lang in ([language] if language else LANGUAGES)
                for i in rows_of.get((name, lang), [])]
        result = results[detector]
        return score([result["guesses"][i] for i in rows], [result["confidences"][i] for i in rows],
                     [truth[i] for i in rows], at)

    short = {name: [f"{name}-{n}w" for n in (1, 2, 3)] for name in ("xquad", "ntrex")}

    def min_accuracy(detector: str, set_names, t: float) -> tuple[float, str]:
        per_language = {lang: rates(counts(detector, set_names, lang, t))[0] for lang in LANGUAGES}
        worst = min(per_language, key=per_language.get)
        return per_language[worst], worst

    def sweep(detector: str, show: bool) -> dict[float, float]:
        """{wrong cost: chosen threshold} on NTREX; ``show`` prints the table (XQuAD-R columns: confirmation)."""
        if show:
            print(f"## Threshold sweep ({detector}; chosen on NTREX-128, XQuAD-R columns confirm)\n")
            print("| threshold | NTREX sentences: min acc | NTREX short: acc / unsure / wrong | correct − 2×wrong | "
                  "XQuAD-R questions: min acc | XQuAD-R short: acc / unsure / wrong |")
            print("|---|---|---|---|---|---|")
        best: dict[float, tuple[float, float]] = {}
        for t in THRESHOLDS:
            worst, worst_language = min_accuracy(detector, ["ntrex"], t)
            pooled = [a + b for a, b in zip(counts(detector, ["ntrex"], None, t), counts(detector, short["ntrex"], None, t))]
            for cost in WRONG_COSTS:
                utility = (pooled[0] - cost * pooled[2]) / sum(pooled)
                if worst >= SENTENCE_TARGET and (cost not in best or utility > best[cost][1] + 1e-12):
                    best[cost] = (t, utility)
            if show:
                ntrex_short = " / ".join(f"{v:.3f}" for v in rates(counts(detector, short["ntrex"], None, t)))
                xquad_short = " / ".join(f"{v:.3f}" for v in rates(counts(detector, short["xquad"], None, t)))
                xquad_worst, xquad_language = min_accuracy(detector, ["xquad"], t)
                utility = (pooled[0] - WRONG_COST * pooled[2]) / sum(pooled)
                print(f"| {t:.2f} | {worst:.3f} ({worst_language}){'' if worst >= SENTENCE_TARGET else ' < 0.97'} | "
                      f"{ntrex_short} | {utility:.3f} | {xquad_worst:.3f} ({xquad_language}) | {xquad_short} |")
        return {cost: t for cost, (t, _) in best.items()}

    chosen = {name: sweep(name, show=name == "restricted-high") for name in results if DETECTORS[name][0]}
    for name, by_cost in chosen.items():
        print(f"\n{name}: threshold chosen on NTREX (max correct − cost×wrong, every language's sentence accuracy "
              f"≥ {SENTENCE_TARGET}): " + ", ".join(f"cost {c:g} → {t:.2f}" for c, t in sorted(by_cost.items())))
    if "restricted-high" in chosen and abs(chosen["restricted-high"][WRONG_COST] - threshold) > 1e-9:
        print(f"\n**Note**: the tables use {threshold:.2f} (--threshold / DEFAULT_MIN_CONFIDENCE), not the chosen "
              f"{chosen['restricted-high'][WRONG_COST]:.2f}.")
    print()

    def at(detector: str) -> float:
        fixed = DETECTORS[detector][2]
        if fixed is not None:
            return fixed
        return threshold if detector == "restricted-high" else chosen[detector][WRONG_COST]

    print("## Detectors\n")
    print("| detector | languages | mode | threshold | build + load all models (s) | RSS after load (MB) | "
          "of which models (MB) | peak RSS, scoring all texts (MB) | texts/s (2 cores) | rebuild with +1 language (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, result in results.items():
        languages, low_accuracy, _ = DETECTORS[name]
        rebuild = f"{result['rebuild_plus_one_s']:.2f}" if languages else "—"
        print(f"| {name} | {len(languages) if languages else 75} | {'low' if low_accuracy else 'high'} | {at(name):.2f} | "
              f"{result['build_s']:.1f} | {result['rss_loaded_mb']:.0f} | "
              f"{result['rss_loaded_mb'] - result['rss_before_mb']:.0f} | {result['peak_mb']:.0f} | "
              f"{result['texts_per_s']:,.0f} | {rebuild} |")

    print("\n## Summary (accuracy / unsure / wrong; min accuracy over languages)\n")
    print("| texts | n | " + " | ".join(f"{name} acc / unsure / wrong (min acc)" for name in results) + " |")
    print("|---|---|" + "---|" * len(results))
    for label, set_names in [("XQuAD-R questions", ["xquad"]), ("XQuAD-R 1 word", ["xquad-1w"]),
                             ("XQuAD-R 2 words", ["xquad-2w"]), ("XQuAD-R 3 words", ["xquad-3w"]),
                             ("NTREX sentences", ["ntrex"]), ("NTREX 1 word", ["ntrex-1w"]),
                             ("NTREX 2 words", ["ntrex-2w"]), ("NTREX 3 words", ["ntrex-3w"])]:
        n = sum(len(sets[s][lang]) for s in set_names for lang in LANGUAGES)
        cells = []
        for name in results:
            acc, unsure, wrong = rates(counts(name, set_names, None, at(name)))
            worst = min(rates(counts(name, set_names, lang, at(name)))[0] for lang in LANGUAGES)
            cells.append(f"{acc:.3f} / {unsure:.3f} / {wrong:.3f} ({worst:.3f})")
        print(f"| {label} | {n:,} | " + " | ".join(cells) + " |")

    shown = [name for name in ("restricted-high", "all-75 (before)") if name in results]
    for label, set_names in [("XQuAD-R questions", ["xquad"]), ("XQuAD-R short queries (1–3 words pooled)", short["xquad"]),
                             ("NTREX short queries (1–3 words pooled)", short["ntrex"])]:
        print(f"\n## {label}, per language\n")
        print("| language | n | " + " | ".join(f"{name} acc | unsure | wrong" for name in shown) + " |")
        print("|---|---|" + "---|---|---|" * len(shown))
        for lang in LANGUAGES:
            n = sum(len(sets[s][lang]) for s in set_names)
            cells = [" | ".join(f"{v:.3f}" for v in rates(counts(name, set_names, lang, at(name)))) for name in shown]
            print(f"| {lang} | {n:,} | " + " | ".join(cells) + " |")
    print(f"\n{len(texts):,} texts, {time.perf_counter() - started:.0f} s in all "
          f"(command: python bench/bench_languages.py{f' --limit {args.limit}' if args.limit else ''}"
          f"{' --skip-all' if args.skip_all else ''}).")


if __name__ == "__main__":
    main()
