"""Screenshots of the web page (desktop 1280x800, phone 390x844) into docs/, over a small hand-made collection
(no model needed): ``.venv/bin/python scripts/screenshots.py``. Needs Debian's chromium and playwright."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from app.main import create_app  # noqa: E402
from tests.app_fixtures import TOPICS, GridEncoder, make_settings, running_server, write_jsonl  # noqa: E402
from tests.test_web import ARGS, CHROMIUM  # noqa: E402

EXTRA = {"berlin": {"ar": "يبلغ عدد سكان برلين حوالي 3.7 مليون نسمة."},
         "photosynthesis": {"ar": "يحول التمثيل الضوئي الضوء إلى طاقة كيميائية."},
         "andes": {"ar": "أكونكاغوا هو أعلى جبل في أمريكا الجنوبية."},
         "river": {"ar": "يتدفق النهر ببطء عبر المدينة القديمة."}}
QUERY = ("Wie viele Menschen leben in Berlin?", "berlin de")


class TextGrid(GridEncoder):
    """GridEncoder over real sentences: each text is looked up as its (topic, language)."""

    def __init__(self, texts: dict[str, str], topics, languages):
        super().__init__(topics, languages)
        self.texts = texts

    def vector(self, text):
        return super().vector(self.texts.get(text, text))


def main() -> None:
    texts = {text: f"{topic} {lang}" for topic, by_lang in TOPICS.items()
             for lang, text in {**by_lang, **EXTRA[topic]}.items()}
    texts[QUERY[0]] = QUERY[1]
    rows = [{"id": f"{t.split()[0]}-{t.split()[1]}", "text": text, "language": t.split()[1], "group": t.split()[0]}
            for text, t in texts.items() if text != QUERY[0]]
    tmp = Path(tempfile.mkdtemp())
    seed = write_jsonl(tmp / "seed.jsonl", rows)
    encoder = TextGrid(texts, list(TOPICS), ["ar", "de", "en", "ja"])
    app = create_app(make_settings(tmp, tmp / "unused-model", seed, calibration="center"), encoder=encoder)
    query = f"q={QUERY[0].replace(' ', '+')}&ql=de&mode=both&k=6"
    with running_server(app) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for name, viewport in (("desktop", {"width": 1280, "height": 800}), ("phone", {"width": 390, "height": 844})):
            page = browser.new_page(viewport=viewport, device_scale_factor=1)
            page.goto(f"{base}/ui?{query}")
            page.wait_for_selector("#results .hit")
            page.screenshot(path=str(ROOT / "docs" / f"screenshot-{name}.png"))
            print(f"docs/screenshot-{name}.png")
        browser.close()


if __name__ == "__main__":
    main()
