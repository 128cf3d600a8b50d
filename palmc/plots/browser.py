"""Open an HTML file in headless Chromium: JavaScript errors, rendered bokeh roots, and a screenshot.

Used by the tests (the dashboard must render offline without a JavaScript error) and to make
``docs/dashboard.png``::

    python -m palmc.plots.browser dashboard.html --screenshot docs/dashboard.png --window-size 1200,900

How errors are found: a copy of the page gets a first ``<script>`` that records ``window.onerror`` events, failed
resource loads (e.g. a blocked CDN script), unhandled promise rejections and ``console.error`` calls, then writes
them with the number of rendered bokeh roots into a ``<pre id="palmc-probe">`` element; Chromium prints the final
DOM (``--dump-dom``) after a virtual-time budget, in the same run that takes the screenshot. Chromium's own
console log (``--enable-logging=stderr``) is scanned for ``Uncaught`` as a second net. All network access is
blocked (``--host-resolver-rules``). ``exercise_widgets`` also switches every bokeh ``Select`` to its last option
before the report, so the widgets' JavaScript callbacks run too.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BrowserReport", "find_chromium", "open_in_chromium", "screenshot_stats"]

_PROBE = """<script>
(function () {
  var errors = [];
  window.__palmc_errors = errors;
  window.addEventListener("error", function (e) {
    var t = e.target;
    if (t && t !== window && (t.src || t.href)) {
      errors.push("failed to load " + (t.src || t.href));
    } else {
      errors.push("error: " + (e.message || e.type) + " at " + (e.filename || "") + ":" + (e.lineno || ""));
    }
  }, true);
  window.addEventListener("unhandledrejection", function (e) {
    var r = e.reason;
    errors.push("unhandled rejection: " + (r && (r.stack || r.message) || String(r)));
  });
  var original = console.error;
  console.error = function () {
    errors.push("console.error: " + Array.prototype.map.call(arguments, String).join(" "));
    return original.apply(console, arguments);
  };
  function models() {
    var out = [];
    (window.Bokeh && window.Bokeh.documents || []).forEach(function (d) {
      d.all_models.forEach(function (m) { out.push(m); });
    });
    return out;
  }
  function kind(m) { return m.constructor && (m.constructor.__name__ || m.constructor.name); }
  var selects = 0;
  window.addEventListener("load", function () {
    setTimeout(function () {
      if (%(exercise)s) {
        try {
          models().forEach(function (m) {
            if (kind(m) === "Select" && m.options.length > 1) {
              var last = m.options[m.options.length - 1];
              m.value = Array.isArray(last) ? last[0] : last;
              selects += 1;
            }
          });
        } catch (err) { errors.push("probe: exercising the widgets failed: " + err); }
      }
    }, %(delay)d);
    setTimeout(function () {
      var roots = -1, version = null, titles = [];
      try {
        version = window.Bokeh ? window.Bokeh.version : null;
        if (window.Bokeh && window.Bokeh.documents) {
          roots = 0;
          window.Bokeh.documents.forEach(function (d) { roots += d.roots().length; });
          models().forEach(function (m) { if (kind(m) === "Title" && m.text) { titles.push(m.text); } });
        }
      } catch (err) { errors.push("probe: " + err); }
      var pre = document.createElement("pre");
      pre.id = "palmc-probe";
      pre.style.display = "none";
      pre.textContent = JSON.stringify({errors: errors, roots: roots, bokeh: version, selects: selects,
                                        titles: titles});
      document.body.appendChild(pre);
    }, 2 * %(delay)d);
  });
})();
</script>"""

_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND",
)


@dataclass
class BrowserReport:
    """What Chromium saw: JavaScript errors, bokeh roots rendered, the console log and the screenshot path."""

    errors: list[str] = field(default_factory=list)
    roots: int = -1
    bokeh_version: str | None = None
    selects_changed: int = 0
    titles: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    screenshot: Path | None = None


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable (``$PALMC_CHROMIUM``, then the usual names), or None."""
    candidates = [os.environ.get("PALMC_CHROMIUM"), "chromium", "chromium-browser", "google-chrome",
                  "/usr/bin/chromium"]
    for name in candidates:
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _run(chromium: str, args: list[str], user_dir: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    cmd = [chromium, *_FLAGS, f"--user-data-dir={user_dir}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def _console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def open_in_chromium(
    html_path: str | Path,
    screenshot: str | Path | None = None,
    *,
    window_size: tuple[int, int] = (1200, 900),
    budget_ms: int = 5000,
    chromium: str | None = None,
    timeout: float = 120.0,
    exercise_widgets: bool = False,
) -> BrowserReport:
    """Load ``html_path`` in headless Chromium without network; report JS errors and optionally save a screenshot.

    ``exercise_widgets``: after the page settles, set every bokeh ``Select`` to its last option (JS errors of the
    callbacks are then reported too, and ``titles`` shows the plot titles after the switch).

    Raises FileNotFoundError if no Chromium is found and RuntimeError if the probe did not run (page not loaded).
    """
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError(
            "no Chromium found (install it, e.g. apt-get install -y chromium, or set PALMC_CHROMIUM)"
        )
    page = Path(html_path).resolve()
    text = page.read_text(encoding="utf-8")
    probe = _PROBE % {"delay": max(300, budget_ms // 3), "exercise": "true" if exercise_widgets else "false"}
    match = re.search(r"<head[^>]*>", text, flags=re.IGNORECASE)
    probed = text[: match.end()] + probe + text[match.end():] if match else probe + text
    report = BrowserReport()
    with tempfile.TemporaryDirectory(prefix="palmc-chromium-") as tmp:
        tmpdir = Path(tmp)
        probe_page = tmpdir / "probe.html"
        probe_page.write_text(probed, encoding="utf-8")
        w, h = window_size
        args = [f"--window-size={w},{h}", f"--virtual-time-budget={budget_ms}", "--enable-logging=stderr", "--v=0",
                "--dump-dom"]
        out = None
        if screenshot is not None:
            out = Path(screenshot).resolve()
            out.parent.mkdir(parents=True, exist_ok=True)
            out.unlink(missing_ok=True)
            args.append(f"--screenshot={out}")
        result = _run(chromium, [*args, probe_page.as_uri()], tmpdir / "profile", timeout)
        found = re.search(r'<pre id="palmc-probe"[^>]*>(.*?)</pre>', result.stdout, flags=re.DOTALL)
        if not found:
            raise RuntimeError(f"the page did not finish loading in Chromium (exit {result.returncode}):\n"
                               + "\n".join(result.stderr.splitlines()[-20:]))
        data = json.loads(html.unescape(found.group(1)))
        report.errors = [str(e) for e in data.get("errors", [])]
        report.roots = int(data.get("roots", -1))
        report.bokeh_version = data.get("bokeh")
        report.selects_changed = int(data.get("selects", 0))
        report.titles = [str(t) for t in data.get("titles", [])]
        report.console = _console_lines(result.stderr)
        report.errors += [line for line in report.console if "Uncaught" in line]
        if out is not None:
            if not out.exists():
                raise RuntimeError(f"Chromium wrote no screenshot (exit {result.returncode}):\n"
                                   + "\n".join(result.stderr.splitlines()[-20:]))
            report.screenshot = out
    return report


def screenshot_stats(png: str | Path) -> dict[str, float]:
    """``colors``: distinct colours; ``non_white``: fraction of pixels that are not (near) white. Needs Pillow."""
    import numpy as np
    from PIL import Image

    with Image.open(png) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=np.uint8).reshape(-1, 3)
    colors = np.unique(rgb.astype(np.uint32) @ np.array([65536, 256, 1], dtype=np.uint32)).size
    non_white = float((rgb.min(axis=1) < 245).mean()) if rgb.size else 0.0
    return {"colors": float(colors), "non_white": non_white}


def main(argv: list[str] | None = None) -> int:
    """Command line: check a page, print its JS errors, optionally save a screenshot; exit 1 on errors."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path)
    parser.add_argument("--screenshot", type=Path, default=None)
    parser.add_argument("--window-size", default="1200,900", help="WIDTH,HEIGHT in pixels")
    parser.add_argument("--budget-ms", type=int, default=5000, help="virtual time to let the page settle")
    parser.add_argument("--exercise-widgets", action="store_true", help="switch every Select to its last option")
    args = parser.parse_args(argv)
    w, h = (int(v) for v in args.window_size.split(","))
    report = open_in_chromium(args.html, args.screenshot, window_size=(w, h), budget_ms=args.budget_ms,
                              exercise_widgets=args.exercise_widgets)
    print(f"bokeh {report.bokeh_version}, {report.roots} roots rendered, {report.selects_changed} selects switched, "
          f"{len(report.errors)} JavaScript errors")
    for error in report.errors:
        print(f"  {error}")
    if report.screenshot is not None:
        stats = screenshot_stats(report.screenshot)
        print(f"wrote {report.screenshot} ({int(stats['colors'])} colours, {stats['non_white']:.1%} non-white)")
    return 1 if report.errors else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
