"""The HTML report in a real browser (headless Chromium through Playwright): the DOM after the page's
script ran, sorting, filtering, paging, the detail view, the keyboard, hostile strings, and that no
request leaves the page.

Skipped, with the reason, where Chromium or Playwright is missing (.ci/run installs both).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import random_image

from forensix.html_report import write_html
from forensix.html_report.page import page_rows, render, summarise
from forensix.html_report.views import Found

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install -e '.[test]')")
CHROMIUM = os.environ.get("FORENSIX_CHROMIUM") or next(
    (found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))), None
)
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium to run the page in (apt-get install chromium)"),
    pytest.mark.usefixtures("home"),
]

ROWS = 250
HOSTILE = '<img src=x onerror="window.pwned=1">'
REMOTE = '<img src="http://127.0.0.1:9/pixel.png"> see https://example.com/x.png'


def score_of(i: int) -> float:
    return ((i * 37) % ROWS) / ROWS  # every score once, in no order


@pytest.fixture(scope="module")
def page_file(tmp_path_factory) -> Path:
    """A report of 250 rows in three folders: five with their image on disk (one with a mask overlay), a
    hostile name, remote addresses in notes and metadata, C2PA on every tenth, an error row."""
    root = tmp_path_factory.mktemp("browser")
    rows = []
    for i in range(ROWS):
        path = root / f"g{i % 3}" / f"img{i}.png"
        row = {"path": str(path), "member": "", "sha256": hashlib.sha256(str(i).encode()).hexdigest(),
               "verdict": "fake" if score_of(i) >= 0.5 else "real", "score": score_of(i), "threshold": 0.5,
               "model": "tiny@0123456789", "width": 64, "height": 48, "format": "PNG"}  # fmt: skip
        if i < 5:
            path.parent.mkdir(exist_ok=True)
            random_image(320 + 40 * i, 240, seed=i).save(path)
            row["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        if i % 10 == 0:
            row["metadata"] = {"c2pa": {"present": True, "validation_state": "Valid", "claim_generator": REMOTE}}
        rows.append(row)
    mask = root / "masks" / "img1.overlay.png"
    mask.parent.mkdir()
    random_image(360, 240, seed=50).save(mask)
    rows[1]["mask"] = str(mask)
    rows[7]["path"] = str(root / "g1" / f"{HOSTILE}.png")
    rows[8]["notes"] = f"Camera: {REMOTE}"
    rows[9].update(verdict="error", score=None, error="cannot decode image: <b>truncated</b>")
    report = root / "report.jsonl"
    report.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    page = write_html(report, root / "page.html")
    assert page.pictures == 5 and page.rows == ROWS
    return page.page


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        except sync_api.Error as e:  # a Chromium that is there but cannot run (a snap stub, a missing library)
            pytest.skip(f"{CHROMIUM} does not start under Playwright: {str(e).splitlines()[0]}")
        yield browser
        browser.close()


class Tab:
    """One page in a fresh context, recording every request and every console error."""

    def __init__(self, browser, path: Path, fragment: str = "") -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.goto(path.as_uri() + fragment)
        self.page.wait_for_selector("body[data-ready]")

    def shown(self) -> None:
        """Wait until the page shows its address: setting the hash renders only at its hashchange, a task later."""
        self.page.wait_for_function("() => document.body.dataset.shown === location.hash")

    def texts(self, selector: str) -> list[str]:
        self.shown()
        return self.page.eval_on_selector_all(selector, "els => els.map(e => e.textContent)")

    def scores(self) -> list[float]:
        return [float(t) for t in self.texts("#cards .card .score") if t != "no score"]

    def text(self, selector: str) -> str:
        self.shown()
        return self.page.text_content(selector)

    def status(self) -> str:
        return self.text("#status")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(browser, page_file):
    opened: list[Tab] = []

    def open_tab(fragment: str = "") -> Tab:
        opened.append(Tab(browser, page_file, fragment))
        return opened[-1]

    yield open_tab
    for t in opened:
        t.close()


def test_the_page_shows_its_first_hundred_rows_and_loads_only_its_own_files(tab, page_file):
    t = tab()
    assert len(t.texts("#cards .card")) == 100 and t.status() == "Showing 1–100 of 250"
    assert t.texts("#cards .card .name")[:2] == [
        str(page_file.parent / "g0" / "img0.png"),
        str(page_file.parent / "g1" / "img1.png"),
    ]
    t.page.wait_for_function(
        "[...document.querySelectorAll('#cards img')].slice(0, 5).every(i => i.complete && i.naturalWidth > 0)"
    )
    loaded = [u for u in t.requests if u != page_file.as_uri()]
    folder = (page_file.parent / "page_files").as_uri() + "/thumb/"
    assert len(loaded) == 5 and all(u.startswith(folder) for u in loaded)  # thumbnails only, lazily, from its folder
    assert t.errors == []  # no script error, no CSP violation
    summary = t.texts("#summary .count")
    assert summary == ["125 fake", "124 real", "1 error"]


def test_sorting_by_score_filtering_by_verdict_provenance_folder_and_search(tab):
    t = tab()
    t.page.select_option("#sort", "score-desc")
    scores = t.scores()
    assert scores == sorted(scores, reverse=True) and scores[0] == score_of(
        next(i for i in range(ROWS) if score_of(i) == 0.996)
    )
    t.page.select_option("#sort", "score-asc")
    assert t.scores() == sorted(t.scores()) and t.scores()[0] == 0.0
    t.page.select_option("#verdict", "fake")
    assert set(t.texts("#cards .card .verdict")) == {"fake"} and t.status() == "Showing 1–100 of 125 (of 250)"
    t.page.select_option("#verdict", "")
    t.page.check("#prov")
    assert t.status() == "Showing 1–26 of 26 (of 250)"  # C2PA on every tenth, and notes that name a camera
    t.page.uncheck("#prov")
    t.page.fill("#q", "img10")  # img10, img100..img109
    assert sorted(t.texts("#cards .card .name"), key=len)[0].endswith("/img10.png") and t.status().endswith(
        "of 11 (of 250)"
    )
    t.page.fill("#q", "")
    t.page.click("details.groups summary")
    t.page.click("a[data-group$='/g2']")
    assert t.status() == "Showing 1–83 of 83 (of 250)" and all("/g2/" in n for n in t.texts("#cards .card .name"))
    t.page.click("#group-clear")
    assert t.status() == "Showing 1–100 of 250"
    assert t.errors == []


def test_pages_buttons_keys_and_a_bookmarkable_address(tab):
    t = tab()
    t.page.click("#next")
    assert t.status() == "Showing 101–200 of 250" and "page=2" in t.page.url
    t.page.keyboard.press("ArrowRight")
    assert t.status() == "Showing 201–250 of 250" and len(t.texts("#cards .card")) == 50
    assert t.page.is_disabled("#next")
    t.page.go_back()
    t.page.wait_for_function("document.getElementById('status').textContent.startsWith('Showing 101')")
    again = tab("#verdict=real&sort=score-desc&page=2")
    assert again.status() == "Showing 101–124 of 124 (of 250)" and again.page.input_value("#sort") == "score-desc"
    assert again.scores() == sorted(again.scores(), reverse=True) and max(again.scores()) < 0.5


def test_a_hostile_name_notes_and_metadata_show_as_text_and_request_nothing(tab):
    t = tab("#q=onerror")
    assert t.texts("#cards .card .name") == [str(Path(t.page.url.split("#")[0][7:]).parent / "g1" / f"{HOSTILE}.png")]
    t.page.click("#cards .card a.open")
    t.page.wait_for_selector("#detail:not([hidden])")
    assert t.text("#detail-name").endswith(f"{HOSTILE}.png")
    remote = tab("#open=8")
    assert f"Camera: {REMOTE}" in remote.texts("#detail-fields dd")
    c2pa = tab("#open=10")
    assert REMOTE in c2pa.texts("#detail-fields dd")
    error = tab("#open=9")
    assert "cannot decode image: <b>truncated</b>" in error.texts("#detail-fields dd")
    for page in (t, remote, c2pa, error):
        assert page.page.evaluate("window.pwned") is None and page.dialogs == [] and page.errors == []
        assert page.page.query_selector_all("#cards img[onerror], #cards b, #detail b") == []
        assert all(u.startswith("file://") for u in page.requests), page.requests


def test_the_keyboard_opens_steps_through_and_closes_the_detail_view(tab):
    t = tab()
    t.page.keyboard.press("/")
    assert t.page.evaluate("document.activeElement.id") == "q"
    t.page.keyboard.press("Escape")
    t.page.keyboard.press("j")
    t.page.keyboard.press("j")
    assert t.page.evaluate("document.activeElement.closest('.card').dataset.index") == "1"
    t.page.keyboard.press("Enter")
    t.page.wait_for_selector("#detail:not([hidden])")
    assert t.text("#detail-name").endswith("/g1/img1.png") and "open=1" in t.page.url
    # the image at full preview size, and its mask overlay beside it
    t.page.wait_for_function("document.getElementById('detail-mask-img').naturalWidth > 0")
    assert t.page.evaluate(
        "[document.getElementById('detail-img').naturalWidth, document.getElementById('detail-mask-img').naturalWidth]"
    ) == [360, 360]
    assert t.page.is_visible("#detail-mask-figure")
    t.page.keyboard.press("m")
    assert not t.page.is_visible("#detail-mask-figure")
    t.page.keyboard.press("m")
    assert t.page.is_visible("#detail-mask-figure")
    t.page.keyboard.press("ArrowRight")
    assert t.text("#detail-name").endswith("/g2/img2.png") and not t.page.is_visible("#detail-mask")
    fields = dict(zip(t.texts("#detail-fields dt"), t.texts("#detail-fields dd")))
    assert fields["score, P(fake)"] == f"{score_of(2):.3f}" and fields["size"] == "64×48" and fields["sha256"]
    t.page.keyboard.press("Escape")
    t.page.wait_for_selector("#detail", state="hidden")
    assert t.page.evaluate("document.activeElement.closest('.card').dataset.index") == "2"
    t.page.go_back()  # Back reopens what was open
    t.page.wait_for_selector("#detail:not([hidden])")
    assert t.errors == []


def test_an_image_with_no_picture_says_why(tab):
    t = tab("#open=20")
    why = "cannot read: No such file or directory"
    assert t.text("#detail-missing") == f"no picture: {why}"
    card = t.page.query_selector("#cards .card[data-index='20'] .nopicture")
    assert card is not None and card.text_content() == why


@pytest.mark.slow
def test_a_hundred_thousand_rows_open_page_and_sort(browser, tmp_path):
    n = 100_000
    notes = "JPEG quality ≈ 90; Camera: Canon EOS 5D"
    rows = [
        {"path": f"/scan/d{i % 500}/img{i}.jpg", "member": "", "sha256": f"{i:064x}", "score": (i * 7919 % n) / n,
         "verdict": "fake" if i % 7 == 0 else "real", "threshold": 0.5, "notes": notes}
        for i in range(n)
    ]  # fmt: skip
    shown = page_rows(rows, Found())
    page = tmp_path / "big.html"
    page.write_text(render(shown, summarise(shown), "big", "big.jsonl", "today", "big_files", True), encoding="utf-8")
    assert page.stat().st_size < 60e6
    t = Tab(browser, page)
    try:
        assert t.status() == "Showing 1–100 of 100,000" and len(t.texts("#cards .card")) == 100
        t.page.select_option("#sort", "score-desc")
        top = sorted(range(n), key=lambda i: -rows[i]["score"])[:3]
        assert t.page.eval_on_selector_all("#cards .card", "cs => cs.slice(0, 3).map(c => +c.dataset.index)") == top
        t.page.select_option("#verdict", "fake")
        assert t.status() == f"Showing 1–100 of {len(range(0, n, 7)):,} (of 100,000)"
        assert t.errors == []
    finally:
        t.close()
