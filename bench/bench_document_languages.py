"""Document language detection among all 75 lingua languages at several thresholds (docs/languages.md).

    python bench/bench_document_languages.py [--thresholds 0 0.2 0.3 0.4 0.5] [--low-accuracy]

150 NTREX-128 sentences per language (lines 1000-1149) and one middle word of 60 of them (not zh/th,
which have no spaces): the share labelled right, wrong, and unsure (below the threshold).
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
    args = parser.parse_args()
    sentences, words = [], []
    for code, language in NTREX_LANGUAGES.items():
        path = NTREX / f"newstest2019-ref.{code}.txt"
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()][1000:1150]
        sentences += [(line, language) for line in lines]
        if language not in ("zh", "th"):
            words += [(line.split()[len(line.split()) // 2], language) for line in lines[:60]]
    detector = LanguageDetector(None, min_confidence=0.0, low_accuracy=args.low_accuracy)
    print("| texts | threshold | right | wrong | unsure |\n|---|---:|---:|---:|---:|")
    for name, data in (("sentences", sentences), ("one word", words)):
        found = detector.detect_many([text for text, _ in data])
        for threshold in args.thresholds:
            right = sum(f.best_guess == lang and f.confidence >= threshold for f, (_, lang) in zip(found, data))
            wrong = sum(f.best_guess != lang and f.confidence >= threshold for f, (_, lang) in zip(found, data))
            n = len(data)
            print(f"| {name} | {threshold:g} | {right / n:.3f} | {wrong / n:.3f} | {(n - right - wrong) / n:.3f} |")


if __name__ == "__main__":
    main()
