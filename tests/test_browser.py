"""The built HTML book, opened in a real browser with no network: what a reader sees.

Opens the intro and every page of ``_toc.yml`` in headless Chromium (Debian's ``chromium``
package, driven by Playwright with ``executable_path``: no browser download) in a 1440 x 900
window (the text column at its widest, 790 px), every request that leaves the machine blocked,
and checks per page:

* the math is typeset: MathJax 3 loaded once, from the book itself; every formula Sphinx wrote
  is an ``<mjx-container>``, no TeX error, no raw ``$$``, ``\\(`` or ``\\[`` left in visible text;
* every image loaded (natural width > 0), every font loaded (MathJax's among them), and nothing
  the page needs was fetched from the network;
* no table, figure or display formula is wider than the text column (nor a figure shrunk to fit);
* no visible ``NaN``/``nan`` in tables, outputs or text;
* no stray traceback, warning or error text, stderr output, Sphinx error box or progress bar;
* one search box, no extra header bar.

A full-page screenshot of each page goes to ``book/_build/screenshots/NAME.png`` (beside the
HTML folder it tested) for a person to look at. Each page is one test that lists all its problems.

The book: ``$ROBUSTVAE_BOOK_HTML`` if set (a built ``html`` folder, taken as it is), else
``book/_build/html``, built here with ``jupyter-book build book/`` when it is missing or older than
any source (notebooks, pages, ``references.bib``, ``_config.yml``, ``_toc.yml``). Chromium:
``$CHROMIUM`` or ``chromium`` on the PATH. Without Chromium or Playwright the tests are skipped,
except in CI (``CI=true``), where they fail. Run them alone with ``pytest -m browser``; they
are also marked ``slow`` (about a minute, plus a build of the book when it is stale).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
INSPECT_JS = (Path(__file__).with_name("browser_inspect.js")).read_text()
VIEWPORT = {"width": 1440, "height": 900}  # from 1440 px up the text column is at its widest, 790 px
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
]
# Resource types a page must not fetch from the network (links a reader may click are fine).
NEEDED = {"script", "stylesheet", "font", "image", "media", "xhr", "fetch"}

# sphinx-thebe 0.3.1 (with Jupyter Book 1.0.4) writes its inline config script twice on every page;
# the second copy throws, the first works. Not the book's to fix; any other error fails.
KNOWN_JS_ERRORS = ("Identifier 'THEBE_JS_URL' has already been declared",)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _pages() -> list[str]:
    """The intro and every file of the table of contents, in order (names without suffix)."""
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                pages.append(Path(entry["file"]).with_suffix("").as_posix())
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return pages


PAGES = _pages()


def _unavailable(reason: str):
    """Skip on a developer's machine; in CI a missing browser is a failure, not a skip."""
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{reason} (CI=true: the browser test must run in CI)", pytrace=False)
    pytest.skip(reason)


def _chromium() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path or not os.access(path, os.X_OK):
        _unavailable("Chromium not found: `apt-get install chromium` (Debian) or set $CHROMIUM")
    return path


def _sources() -> list[Path]:
    files = [ROOT / "_config.yml", ROOT / "_toc.yml"]
    files += [p for p in BOOK.iterdir() if p.suffix in {".ipynb", ".md", ".bib"}]
    static = BOOK / "_static"
    if static.is_dir():
        files += [p for p in static.rglob("*") if p.is_file()]
    return files


def _stale(html: Path) -> str | None:
    """Why ``html`` must be (re)built, or None when it is up to date."""
    pages = [html / f"{page}.html" for page in PAGES]
    missing = [p.name for p in pages if not p.exists()]
    if missing:
        return f"missing {', '.join(missing)}"
    built = min(p.stat().st_mtime for p in pages)
    newer = [p.relative_to(ROOT).as_posix() for p in _sources() if p.stat().st_mtime > built]
    if newer:
        return f"older than {', '.join(sorted(newer)[:5])}{' ...' if len(newer) > 5 else ''}"
    return None


@pytest.fixture(scope="module")
def book_html() -> Path:
    given = os.environ.get("ROBUSTVAE_BOOK_HTML")
    if given:
        html = Path(given).resolve()
        assert (html / "index.html").is_file(), f"$ROBUSTVAE_BOOK_HTML={given} holds no built book"
        return html
    html = BOOK / "_build" / "html"
    why = _stale(html)
    if why:
        exe = Path(sys.executable).with_name("jupyter-book")
        cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(BOOK)]
        print(f"building the book ({why}): {' '.join(cmd)}")
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, f"jupyter-book build failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return html


@pytest.fixture(scope="module")
def browser():
    chromium = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright for Python is not installed: `pip install playwright` (no `playwright install`)")
    with tempfile.TemporaryDirectory(prefix="robustvae-chromium-") as profile:
        with sync_playwright() as pw:
            # A persistent context so that Chromium starts on a fresh --user-data-dir of our own.
            context = pw.chromium.launch_persistent_context(
                profile,
                executable_path=chromium,
                headless=True,
                args=CHROMIUM_ARGS,
                viewport=VIEWPORT,
                device_scale_factor=1,
                service_workers="block",
            )
            try:
                yield context
            finally:
                context.close()


@pytest.fixture(scope="module")
def screenshots(book_html: Path) -> Path:
    out = book_html.parent / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.mark.parametrize("page_name", PAGES)
def test_page_renders(page_name: str, browser, book_html: Path, screenshots: Path):
    page = browser.new_page()
    blocked: list[str] = []
    failed: list[str] = []
    errors: list[str] = []

    def route(r):
        if r.request.url.startswith(("file:", "data:", "blob:", "about:")):
            r.continue_()
        else:
            if r.request.resource_type in NEEDED:
                blocked.append(f"{r.request.resource_type} {r.request.url}")
            r.abort()

    page.route("**/*", route)
    page.on("requestfailed", lambda req: req.url.startswith("file:") and failed.append(
        f"{req.resource_type} {req.url} ({req.failure})"))
    page.on("pageerror", lambda exc: str(exc) in KNOWN_JS_ERRORS or errors.append(str(exc)))
    try:
        page.goto((book_html / f"{page_name}.html").as_uri(), wait_until="load", timeout=60_000)
        report = page.evaluate(INSPECT_JS)
        # Let layout settle (two frames) before the picture.
        page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        page.wait_for_timeout(200)
        page.screenshot(path=str(screenshots / f"{Path(page_name).name}.png"), full_page=True)
    finally:
        page.close()

    problems: list[str] = []

    def need(ok: bool, what: str, items=()):
        if not ok:
            items = list(items)
            problems.append(what + "".join(f"\n      {item}" for item in items[:8])
                            + (f"\n      ... and {len(items) - 8} more" if len(items) > 8 else ""))

    scripts = report["mathjax_scripts"]
    # Sphinx adds MathJax only to pages with math (and every notebook page); never twice.
    need(len(scripts) <= 1, f"MathJax loaded {len(scripts)} times", scripts)
    need(len(scripts) == 1 or not report["formulas"], f"{report['formulas']} formulas but no MathJax")
    need(all(s.startswith("file:") for s in scripts), "MathJax must come with the book, not a CDN", scripts)
    if report["formulas"] or scripts:
        need(report["mathjax_error"] is None and (report["mathjax_version"] or "").startswith("3"),
             f"MathJax 3 did not start (version {report['mathjax_version']}, {report['mathjax_error']})")
    need(not report["untypeset"], f"{len(report['untypeset'])} of {report['formulas']} formulas not typeset",
         report["untypeset"])
    need(not report["tex_errors"], "TeX errors in formulas", report["tex_errors"])
    need(not report["raw_tex"], "raw TeX in the visible text", report["raw_tex"])
    need(not report["bad_labels"], "garbled bibliography labels", report["bad_labels"])
    need(not report["broken_images"], "images that did not load", report["broken_images"])
    need(not report["failed_fonts"], "fonts that did not load", report["failed_fonts"])
    need(not blocked, "resources fetched from the network (blocked here: the book must work offline)", blocked)
    need(not failed, "local files that failed to load", failed)
    need(not errors, "JavaScript errors", errors)
    need(not report["too_wide"], "wider than the text column", report["too_wide"])
    need(not report["nan"], "visible NaN", report["nan"])
    need(not report["stray"], "stray traceback, warning or error text", report["stray"])
    need(report["search_boxes"] == 1, f"{report['search_boxes']} search boxes (want one)")
    need(report["header_bar_px"] == 0, f"an extra header bar ({report['header_bar_px']} px tall)")

    print(f"{page_name}: {report['typeset']} formulas typeset of {report['formulas']}, "
          f"{report['images']} images, column {report['column_px']} px, "
          f"screenshot {screenshots / (Path(page_name).name + '.png')}")
    if problems:
        pytest.fail(f"{page_name}.html, {len(problems)} problems:\n  - " + "\n  - ".join(problems), pytrace=False)
