"""What the language detectors cost the service: RSS growth and load time, each in a fresh process (with
the malloc settings of ``python -m app``).

    .venv/bin/python bench/bench_detector_memory.py [--languages ar de en ...] [--all]

- preloaded: every model of the languages loaded up front (lingua's ``with_preloaded_language_models``,
  the service's warm-up before issue 17);
- by use: ``LanguageDetector.warm_up()`` (one probe per shared script), then the demo's 180 queries, which
  must load nothing more;
- veto: the all-language low-accuracy detector of ``detection=served``, on one unlabelled document;
- all 75, high accuracy (``--all``; ~20 s, ~1.3 GB): ``detection=all`` on one unlabelled document.
The labels are the same either way: lingua loads models when a text needs them (tests/test_app_detection.py).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_LANGUAGES = ["ar", "de", "en", "es", "fr", "hi", "it", "ja", "pt", "ru", "tr", "zh"]

CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
def rss():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1]) * 1024 / 1e6
from app.__main__ import return_freed_memory
return_freed_memory()  # as `python -m app` does
from lingua import LanguageDetectorBuilder
import indexes.languages as L
languages, mode = {languages!r}, {mode!r}
document = "Ceci est un texte en français, ajouté sans langue."
queries = [json.loads(line)["text"] for line in open({queries!r}, encoding="utf-8")]
before, start = rss(), time.perf_counter()
if mode == "preloaded":
    LanguageDetectorBuilder.from_languages(*map(L._lingua_language, languages)).with_preloaded_language_models().build()
elif mode == "by use":
    detector = L.LanguageDetector(languages)
    detector.warm_up()
elif mode == "veto":
    L.guard_detector().detect_many([document])
else:
    L.LanguageDetector(None).detect_many([document])
seconds, grown = time.perf_counter() - start, rss() - before
extra = ""
if mode == "by use":
    after = rss()
    detector.detect_many(queries)
    extra = f"; the demo's {{len(queries)}} queries then +{{rss() - after:.0f}} MB"
print(f"| {{mode}} | {{len(languages) if languages else 75}} | +{{grown:.0f}} MB | {{seconds:.1f}} s{{extra}} |")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--languages", nargs="+", default=DEMO_LANGUAGES)
    parser.add_argument("--all", action="store_true", help="also the all-language high-accuracy detector")
    args = parser.parse_args()
    print("| detector | languages | RSS growth | load time |\n|---|---:|---:|---|")
    for mode in ["preloaded", "by use", "veto"] + (["all"] if args.all else []):
        languages = [] if mode in ("veto", "all") else sorted(args.languages)
        code = CHILD.format(root=str(ROOT), languages=languages, mode=mode, queries=str(ROOT / "demo" / "queries.jsonl"))
        print(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout, end="")


if __name__ == "__main__":
    main()
