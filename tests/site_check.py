"""Real-browser checks of the built website, shared by ``test_site.py`` and its broken fixtures.

A page is visited once with :func:`visit`, which loads it in headless Chromium, waits for MathJax and
for every image, and records what the checks need (:class:`Page`). Each ``check_*`` function then
returns a list of problem strings about that page (empty = fine). The same functions judge the real
site and the deliberately broken pages of ``tests/site_fixtures/``, so every check is shown to fail.
"""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import sys
import functools
import html.parser
import http.server
import json
import math
import os
import pathlib
import re
import shutil
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request

import yaml

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
CHROMEDRIVER_CANDIDATES = ("/usr/bin/chromedriver", "chromedriver")
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
CHROME_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--window-size=1280,2000",
    # No host name resolves, so nothing can leave the machine and a page that needs the network
    # fails the same way with or without internet (the external-request check flags the attempt).
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]
# Console messages (level SEVERE) that are not a fault of the page. Keep this list short and justified.
CONSOLE_IGNORE = [
    # Chromium fetches /favicon.ico by itself when a page declares no icon; the book declares none,
    # so this 404 is the browser's guess, not a request the page made.
    re.compile(r"^https?://(127\.0\.0\.1|localhost)(:\d+)?/favicon\.ico - Failed to load resource: "
               r"the server responded with a status of 404"),
]
WARNING_NAMES = re.compile(
    r"\b(DeprecationWarning|PendingDeprecationWarning|FutureWarning|UserWarning|RuntimeWarning)\b")
ERROR_LINE = re.compile(r"^\s*((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Interrupt|Exit)\b.*)$",
                        re.MULTILINE)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# `$...$` on one line whose content looks like TeX: a control sequence, a sub/superscript or a brace.
RAW_INLINE_TEX = re.compile(r"\$(?=[^\s$])[^$\n]{0,300}?(?:\\[A-Za-z]+|[\^_{}])[^$\n]{0,300}?\$")
# A TeX control sequence (\Ortho, \gamma) in visible text outside formulas and code: math flattened to
# its source, as a cross-reference to a page whose title holds math once showed.
RAW_CONTROL_SEQUENCE = re.compile(r"\\(?:[A-Za-z]{2,}|[,;!])")


class BrowserMissing(RuntimeError):
    """Headless Chromium, its driver or Selenium is not installed."""


# --------------------------------------------------------------------------------------------------
# The book: pages of _toc.yml
# --------------------------------------------------------------------------------------------------

def toc_entries(toc_path: pathlib.Path) -> list[str]:
    """The ``root:`` and every ``file:`` of a Jupyter Book ``_toc.yml``, in order, without suffix."""
    toc = yaml.safe_load(toc_path.read_text()) or {}
    found = [toc["root"]] if "root" in toc else []

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                found.append(node["file"])
            for key, value in node.items():
                if key != "root":
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return [str(pathlib.PurePosixPath(entry).with_suffix("")) if entry.endswith((".md", ".ipynb"))
            else entry for entry in found]


def is_chapter(book: pathlib.Path, entry: str) -> bool:
    """A chapter page: a file under ``chapters/`` whose ``.md`` source declares a ``kernelspec:``."""
    source = (book / entry).with_suffix(".md")
    if not entry.startswith("chapters/") or not source.exists():
        return False
    text = source.read_text()
    if not text.startswith("---"):
        return False
    front = text[3:].split("\n---", 1)[0]
    try:
        meta = yaml.safe_load(front)
    except yaml.YAMLError:
        return "kernelspec:" in front
    return isinstance(meta, dict) and "kernelspec" in meta


# --------------------------------------------------------------------------------------------------
# Serving a folder and driving the browser
# --------------------------------------------------------------------------------------------------

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # The browser drops connections it no longer needs (a page replaced mid-load): a
        # ConnectionResetError / BrokenPipeError here is normal. Anything else is still reported.
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


@contextlib.contextmanager
def serve(directory: pathlib.Path):
    """Serve ``directory`` on a free port of 127.0.0.1; yields the base URL, ending in ``/``."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = _QuietServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="site-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _find(candidates) -> str | None:
    for name in candidates:
        path = shutil.which(name)
        if path and os.access(path, os.X_OK):
            return path
    return None


def start_browser():
    """Headless Chromium through the system chromedriver (Selenium Manager is never asked)."""
    chromium, chromedriver = _find(CHROMIUM_CANDIDATES), _find(CHROMEDRIVER_CANDIDATES)
    if not chromium or not chromedriver:
        missing = [name for name, path in (("chromium", chromium), ("chromedriver", chromedriver))
                   if not path]
        raise BrowserMissing(f"{' and '.join(missing)} not found")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        raise BrowserMissing(f"selenium is not installed ({exc})") from exc

    profile = tempfile.mkdtemp(prefix="site-check-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    options.add_experimental_option("perfLoggingPrefs", {"enableNetwork": True, "enablePage": False})
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver._site_check_profile = profile  # removed by stop_browser
    return driver


def stop_browser(driver) -> None:
    try:
        driver.quit()
    finally:
        shutil.rmtree(getattr(driver, "_site_check_profile", ""), ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Visiting a page
# --------------------------------------------------------------------------------------------------

# Resolves to {status: typeset | absent | not-loaded | timeout | error, ...}. A page that loads no
# MathJax script and defines no window.MathJax is "absent" (nothing to wait for). If MathJax is
# configured or a MathJax script is present but window.MathJax.startup still does not exist 1 s after
# the load event, its script failed (e.g. a CDN that cannot be reached): "not-loaded".
WAIT_FOR_MATHJAX = r"""
const timeoutMs = arguments[0], done = arguments[arguments.length - 1];
const t0 = performance.now();
let finished = false, completeAt = null;
const finish = (result) => { if (!finished) { finished = true; done(result); } };
const scripts = () => Array.from(document.scripts).map(s => s.src).filter(src => /mathjax/i.test(src));
function poll() {
  const MJ = window.MathJax;
  if (MJ && MJ.startup && MJ.startup.promise) {
    setTimeout(() => finish({status: 'timeout'}), Math.max(0, timeoutMs - (performance.now() - t0)));
    MJ.startup.promise.then(() => finish({status: 'typeset'}),
                            (err) => finish({status: 'error', message: String(err)}));
    return;
  }
  if (document.readyState === 'complete') {
    if (!MJ && scripts().length === 0) { finish({status: 'absent'}); return; }
    if (completeAt === null) completeAt = performance.now();
    if (performance.now() - completeAt > 1000) {
      finish({status: 'not-loaded', scripts: scripts()});
      return;
    }
  }
  if (performance.now() - t0 > timeoutMs) { finish({status: 'timeout'}); return; }
  setTimeout(poll, 50);
}
poll();
"""

# Makes lazy images eager and waits (bounded) until every <img> has loaded or failed.
WAIT_FOR_IMAGES = r"""
const timeoutMs = arguments[0], done = arguments[arguments.length - 1];
const images = Array.from(document.images);
images.forEach(img => { if (img.loading === 'lazy') img.loading = 'eager'; });
let left = images.filter(img => !img.complete).length;
if (left === 0) { done(0); return; }
const timer = setTimeout(() => done(left), timeoutMs);
images.filter(img => !img.complete).forEach(img => {
  const settle = () => { left -= 1; if (left === 0) { clearTimeout(timer); done(0); } };
  img.addEventListener('load', settle, {once: true});
  img.addEventListener('error', settle, {once: true});
});
"""

SNAPSHOT = r"""
const all = (selector) => Array.from(document.querySelectorAll(selector));
const short = (text, n) => text.replace(/\s+/g, ' ').trim().slice(0, n);
// Visible text without code: hide <pre>/<code> (and <script>/<style>) for one synchronous read.
const hide = document.createElement('style');
hide.textContent = 'pre, code, script, style { display: none !important; }';
document.head.appendChild(hide);
const proseText = document.body.innerText;
hide.textContent = 'pre, code, script, style, .math, mjx-container { display: none !important; }';
const plainText = document.body.innerText;
hide.remove();
return {
  location: location.href,
  fullText: document.body.innerText,
  proseText: proseText,
  plainText: plainText,
  math: all('.math').map(el => ({typeset: el.querySelector('mjx-container') !== null,
                                 text: short(el.textContent, 80)})),
  mathErrors: all('mjx-merror, [data-mjx-error]').map(
      el => el.getAttribute('data-mjx-error') || short(el.textContent, 120)),
  images: all('img').map(img => ({src: img.currentSrc || img.getAttribute('src') || '',
                                  complete: img.complete, naturalWidth: img.naturalWidth,
                                  inOutput: img.closest('.cell_output') !== null})),
  outputs: all('.cell_output').map(el => el.textContent),
  errorOutputs: all('.output.traceback, .output.error').map(el => el.textContent),
  stderrOutputs: all('.output.stderr').map(el => el.textContent),
  links: all('a[href]').map(a => ({href: a.getAttribute('href'), url: a.href})),
  resources: performance.getEntriesByType('resource').map(entry => entry.name),
  exercises: all('.exercise').length,
  solutions: all('.solution').map(el => el.className),
};
"""


@dataclasses.dataclass
class Page:
    """What one visit of a page recorded; the input of every ``check_*`` function."""

    name: str
    url: str
    mathjax: dict
    console: list[dict]
    requests: list[str]
    dom: dict
    mathjax_timeout: float = 20.0


def _requested_urls(performance_log: list[dict]) -> list[str]:
    urls = []
    for entry in performance_log:
        try:
            message = json.loads(entry["message"])["message"]
        except (KeyError, ValueError):
            continue
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
        elif message.get("method") == "Network.webSocketCreated":
            urls.append(message["params"]["url"])
    return urls


def screenshot(driver, path: pathlib.Path) -> None:
    """A PNG of the whole page (height capped at 16,000 CSS pixels).

    The viewport is resized to the page's full height for the capture (and restored), so the page is
    laid out exactly as a reader sees it; a clipped capture beyond the viewport can shift the layout.
    """
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    view = metrics.get("cssLayoutViewport") or metrics["layoutViewport"]
    width, height = math.ceil(view["clientWidth"]), min(math.ceil(size["height"]), 16000)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    try:
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


def visit(driver, url: str, *, name: str | None = None, mathjax_timeout: float = 20.0,
          screenshot_to: pathlib.Path | None = None) -> Page:
    """Load ``url`` as a first-time visitor, wait for MathJax and images, and record the page."""
    parts = urllib.parse.urlsplit(url)
    driver.execute_cdp_cmd("Storage.clearDataForOrigin", {
        "origin": f"{parts.scheme}://{parts.netloc}", "storageTypes": "local_storage,session_storage"})
    driver.get_log("browser")  # drop what earlier pages left behind
    driver.get_log("performance")
    driver.set_script_timeout(mathjax_timeout + 15)
    driver.get(url)
    mathjax = driver.execute_async_script(WAIT_FOR_MATHJAX, int(mathjax_timeout * 1000))
    driver.execute_async_script(WAIT_FOR_IMAGES, 5000)
    if screenshot_to is not None:
        screenshot(driver, screenshot_to)
    dom = driver.execute_script(SNAPSHOT)
    console = driver.get_log("browser")
    requests = _requested_urls(driver.get_log("performance")) + dom["resources"] + [dom["location"]]
    return Page(name=name or url, url=url, mathjax=mathjax, console=console, requests=requests,
                dom=dom, mathjax_timeout=mathjax_timeout)


# --------------------------------------------------------------------------------------------------
# The checks: each returns a list of problems (empty = fine)
# --------------------------------------------------------------------------------------------------

def _context(text: str, start: int, end: int, width: int = 40) -> str:
    return " ".join(text[max(0, start - width):end + width].split())


def check_console(page: Page) -> list[str]:
    """(a) No console message of level SEVERE (JavaScript errors, failed loads, console.error)."""
    problems = []
    for entry in page.console:
        if entry.get("level") != "SEVERE":
            continue
        message = entry.get("message", "")
        if any(pattern.search(message) for pattern in CONSOLE_IGNORE):
            continue
        problems.append(f"console error ({entry.get('source', '?')}): {message}")
    return problems


def check_math(page: Page) -> list[str]:
    """(b) MathJax ran and typeset every formula; no raw TeX and no MathJax error is left."""
    problems = []
    status = page.mathjax.get("status")
    if status == "not-loaded":
        problems.append("MathJax did not load: window.MathJax.startup is missing after the page loaded "
                        f"(MathJax scripts: {page.mathjax.get('scripts') or 'none'})")
    elif status == "timeout":
        problems.append(f"MathJax did not finish typesetting within {page.mathjax_timeout:g} s")
    elif status == "error":
        problems.append(f"MathJax failed: {page.mathjax.get('message')}")
    elif status not in ("typeset", "absent"):
        problems.append(f"unexpected MathJax status {page.mathjax!r}")

    prose = page.dom["proseText"]
    for token in ("$$", "\\(", "\\["):
        at = prose.find(token)
        if at >= 0:
            count = prose.count(token)
            problems.append(f"raw TeX {token!r} in the rendered text ({count}x), e.g. "
                            f"…{_context(prose, at, at + len(token))}…")
    for match in list(RAW_INLINE_TEX.finditer(prose))[:5]:
        problems.append(f"raw inline TeX in the rendered text: {match.group(0)!r}")
    plain = page.dom["plainText"]
    for match in list(RAW_CONTROL_SEQUENCE.finditer(plain))[:5]:
        problems.append(f"TeX control sequence {match.group(0)!r} in the rendered text outside formulas "
                        f"and code: …{_context(plain, match.start(), match.end())}…")
    full = page.dom["fullText"]
    if "Math input error" in full:
        at = full.find("Math input error")
        problems.append(f"'Math input error' on the page: …{_context(full, at, at + 16)}…")
    for message in page.dom["mathErrors"][:10]:
        problems.append(f"MathJax error in a formula: {message}")
    untypeset = [m["text"] for m in page.dom["math"] if not m["typeset"]]
    if untypeset:
        problems.append(f"{len(untypeset)} of {len(page.dom['math'])} .math elements hold no "
                        f"mjx-container, e.g. {untypeset[:3]}")
    return problems


def check_images(page: Page, require_figure: bool = False) -> list[str]:
    """(c) Every <img> loaded; a chapter shows at least one figure inside a cell output."""
    problems = [f"image did not load: {img['src'] or '(no src)'}"
                for img in page.dom["images"] if not (img["complete"] and img["naturalWidth"] > 0)]
    if require_figure and not any(img["inOutput"] and img["naturalWidth"] > 0
                                  for img in page.dom["images"]):
        problems.append("no figure: no loaded <img> inside a .cell_output")
    return problems


def check_outputs(page: Page) -> list[str]:
    """(d) No cell output holds a traceback, an error or a warning."""
    problems = []
    for text in page.dom["outputs"]:
        if "Traceback (most recent call last)" in text:
            problems.append(f"traceback in a cell output: {_context(text, 0, 200, 0)}")
    for text in page.dom["errorOutputs"]:
        text = ANSI.sub("", text)
        errors = ERROR_LINE.findall(text)
        what = errors[-1].strip() if errors else _context(text, 0, 200, 0)
        problems.append(f"error output in a cell: {what}")
    for text in page.dom["stderrOutputs"]:
        if "warning" in text.lower():
            problems.append(f"warning on stderr of a cell: {_context(ANSI.sub('', text), 0, 200, 0)}")
    for text in page.dom["outputs"]:
        for match in WARNING_NAMES.finditer(ANSI.sub("", text)):
            problems.append(f"{match.group(1)} in a cell output: "
                            f"…{_context(text, match.start(), match.end())}…")
            break
    return list(dict.fromkeys(problems))


class _Anchors(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if value and (key == "id" or (key == "name" and tag == "a")):
                self.ids.add(value)


class LinkChecker:
    """Fetches each internal link target once (urllib) and remembers status and anchor ids."""

    def __init__(self):
        self._cache: dict[str, tuple[object, set[str] | None]] = {}

    def fetch(self, url: str) -> tuple[object, set[str] | None]:
        if url not in self._cache:
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    status, ids = response.status, None
                    if response.headers.get_content_type() == "text/html":
                        parser = _Anchors()
                        parser.feed(response.read().decode("utf-8", "replace"))
                        ids = parser.ids
            except urllib.error.HTTPError as exc:
                status, ids = exc.code, None
            except (urllib.error.URLError, OSError) as exc:
                status, ids = f"unreachable ({exc})", None
            self._cache[url] = (status, ids)
        return self._cache[url]


def check_links(page: Page, links: LinkChecker) -> list[str]:
    """(e) Every same-origin link answers 200, and its #fragment exists in the target page."""
    origin = urllib.parse.urlsplit(page.url)
    problems, seen = [], set()
    for link in page.dom["links"]:
        href, url = link["href"].strip(), link["url"]
        target = urllib.parse.urlsplit(url)
        if target.scheme not in ("http", "https") or target.netloc != origin.netloc:
            continue  # mailto:, javascript:, tel:, data: and links to other hosts
        if href in seen:
            continue
        seen.add(href)
        status, ids = links.fetch(urllib.parse.urlunsplit(target._replace(fragment="")))
        if status != 200:
            problems.append(f"broken link {href!r}: {status}")
            continue
        fragment = urllib.parse.unquote(target.fragment)
        # "" and "top" need no element (HTML spec); ":~:" starts a text fragment, not an id.
        if not fragment or fragment == "top" or fragment.startswith(":~:"):
            continue
        if ids is not None and fragment not in ids:
            problems.append(f"broken anchor {href!r}: no id or <a name> {fragment!r} in the target")
    return problems


def check_external(page: Page) -> list[str]:
    """(f) The page requested nothing from a host other than localhost."""
    external = set()
    for url in page.requests:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme in ("http", "https", "ws", "wss") and parts.hostname not in LOCAL_HOSTS:
            external.add(url)
    return [f"request to an external host: {url}" for url in sorted(external)]


def run_checks(page: Page, links: LinkChecker, require_figure: bool) -> dict[str, list[str]]:
    """Every check on one page, by name (the names the fixtures' expectations use)."""
    return {
        "console": check_console(page),
        "math": check_math(page),
        "images": check_images(page, require_figure),
        "outputs": check_outputs(page),
        "links": check_links(page, links),
        "external": check_external(page),
    }


CHECK_NAMES = ("console", "math", "images", "outputs", "links", "external")


def fixture_expectation(path: pathlib.Path) -> set[str]:
    """The checks a fixture page must fail: ``<meta name="site-check-expect" content="a b">``."""
    match = re.search(r'<meta\s+name="site-check-expect"\s+content="([^"]*)"', path.read_text())
    if match is None:
        raise ValueError(f"{path.name} has no <meta name=\"site-check-expect\" content=\"...\">")
    return set(match.group(1).split())
