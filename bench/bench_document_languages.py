"""Document language detection among all 75 lingua languages at several thresholds (docs/languages.md).

    python bench/bench_document_languages.py [--thresholds 0 0.2 0.3 0.4 0.5] [--low-accuracy]
    python bench/bench_document_languages.py --served [--thresholds 0.3 0.4 0.5 0.6 0.7]

150 NTREX-128 sentences per language (lines 1000-1149) and one middle word of 60 of them (not zh/th,
which have no spaces): the share labelled right, wrong, and unsure (below the threshold).

``--served``: what the service does (``detect_documents(among="served")``), leave one out: for each of
the 11 languages, the other 10 are served and the held-out language's texts should come out unknown.
Thresholds are the all-language low-accuracy guard's; the served detector keeps its own (0.55).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
NTREX = ROOT.parent / "shared" / "data" / "train" / "ntrex128"


def main() -> None:
    from indexes.languages import LanguageDetector
    from trainer.data import NTREX_LANGUAGES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.0, 0.2, 0.3, 0.4, 0.5])
    parser.add_argument("--low-accuracy", action="store_true")
    parser.add_argument("--served", action="store_true", help="served languages with the guard, leave one out")
    args = parser.parse_args()
    sentences, words = [], []
    for code, language in NTREX_LANGUAGES.items():
        path = NTREX / f"newstest2019-ref.{code}.txt"
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()][1000:1150]
        sentences += [(line, language) for line in lines]
        if language not in ("zh", "th"):
            words += [(line.split()[len(line.split()) // 2], language) for line in lines[:60]]
    if args.served:
        return served_leave_one_out(sentences, words, args.thresholds)
    detector = LanguageDetector(None, min_confidence=0.0, low_accuracy=args.low_accuracy)
    print("| texts | threshold | right | wrong | unsure |\n|---|---:|---:|---:|---:|")
    for name, data in (("sentences", sentences), ("one word", words)):
        found = detector.detect_many([text for text, _ in data])
        for threshold in args.thresholds:
            right = sum(f.best_guess == lang and f.confidence >= threshold for f, (_, lang) in zip(found, data))
            wrong = sum(f.best_guess != lang and f.confidence >= threshold for f, (_, lang) in zip(found, data))
            n = len(data)
            print(f"| {name} | {threshold:g} | {right / n:.3f} | {wrong / n:.3f} | {(n - right - wrong) / n:.3f} |")


def served_leave_one_out(sentences, words, thresholds) -> None:
    from indexes.languages import LanguageDetector, guard_detector

    languages = sorted({language for _, language in sentences})
    guard = guard_detector()
    print("| texts | guard threshold | served: right | served: wrong | served: unsure | held out: unknown | "
          "held out: labelled a served language |\n|---|---:|---:|---:|---:|---:|---:|")
    for name, data in (("sentences", sentences), ("one word", words)):
        vetoes = guard.detect_many([text for text, _ in data])  # threshold applied below
        rows = {t: [0, 0, 0, 0, 0] for t in thresholds}  # right, wrong, unsure (served); unknown, wrong (held out)
        n_served = n_held = 0
        for held in languages:
            served = LanguageDetector([code for code in languages if code != held])
            found = served.detect_many([text for text, _ in data])
            for f, veto, (_, language) in zip(found, vetoes, data):
                n_held += language == held
                n_served += language != held
                for t, row in rows.items():
                    vetoed = veto.best_guess is not None and veto.confidence >= t and veto.best_guess not in served.languages
                    label = None if vetoed else f.language
                    if language == held:
                        row[3 if label is None else 4] += 1
                    else:
                        row[0 if label == language else 2 if label is None else 1] += 1
        for t, (right, wrong, unsure, unknown, mislabelled) in rows.items():
            print(f"| {name} | {t:g} | {right / n_served:.3f} | {wrong / n_served:.3f} | {unsure / n_served:.3f} | "
                  f"{unknown / n_held:.3f} | {mislabelled / n_held:.3f} |")


if __name__ == "__main__":
    main()
