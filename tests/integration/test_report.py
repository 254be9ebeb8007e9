"""The full report from a small results store: statistics, CD diagram, rank stability, Pareto plot, LaTeX,
curation record, commands; and the HTML checked in a real headless browser (Debian's chromium)."""
from __future__ import annotations

import base64
import re
import shutil
import subprocess

import pytest

from segarena.cli import main

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def results(tmp_path_factory, real_data_root):
    """Three tiny models x two folds on 40 real Kvasir-SEG images, through the CLI (so commands are logged)."""
    out = tmp_path_factory.mktemp("results")
    rc = main(["compare", "--models", "tiny-unet,tiny-fcn,segformer-b0", "--datasets", "kvasir-seg", "--folds", "0,1",
               "--preset", "smoke", "--set", "data.limit=40", "--set", "protocol.input_size=32",
               "--results", str(out), "--data-root", str(real_data_root)])
    assert rc == 0
    return out


def test_report_contents(results):
    html = (results / "report" / "report.html").read_text()
    md = (results / "report" / "report.md").read_text()
    tex = (results / "report" / "report.tex").read_text()
    for section in ("Caveats", "Summary", "Leaderboard", "Per-class Dice", "Pairwise comparisons",
                    "Critical difference and rank stability", "Bootstrap ranks", "Accuracy versus cost",
                    "Training curves", "Best and worst test cases", "Data curation", "Protocol", "Environment",
                    "Commands that produced these results"):
        assert f"<h2>{section}</h2>" in html, section
        assert f"## {section}" in md, section
    # one verdict metric, named in the sentence; the smoke preset and 2 of 5 folds are caveats at the top
    assert re.search(r"On kvasir-seg, \S+ has the highest mean per-case Dice: [\d.]+% \(95% CI", html)
    assert html.index("<h2>Caveats</h2>") < html.index("<h2>Summary</h2>")
    assert "reduced protocol" in html and "2 folds of the planned 5" in html
    import json

    rep = json.loads((results / "report" / "report.json").read_text())
    d = rep["datasets"]["kvasir-seg"]
    assert d["metric"] == "dice_case_mean" and d["anchor"] in ("tiny-unet", "tiny-fcn", "segformer-b0")
    assert set(d["models"]) == {"tiny-unet", "tiny-fcn", "segformer-b0"} - {d["anchor"]}
    assert all(r["relation"] in ("better", "tied", "worse") for r in d["models"].values())
    assert html.count("Consensus ranking") == md.count("Consensus ranking") <= 1
    assert "segarena compare --models tiny-unet,tiny-fcn,segformer-b0" in html
    assert "\\begin{tabular}" in tex and "\\toprule" in tex and "kvasir-seg" in tex
    # every embedded image is a decodable PNG
    imgs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    assert len(imgs) >= 6
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in imgs)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_report_in_headless_browser(results, tmp_path):
    """Loads with no console errors, every image loaded, and the screenshot is not blank."""
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium on this machine (CI installs Debian's chromium: see .ci/run)")
    page = results / "report" / "report.html"
    probe = tmp_path / "probe.html"
    # the report is self-contained: check it from a wrapper page that inspects it after load
    probe.write_text(f"""<!doctype html><html><body><iframe id=f src="{page.as_uri()}" width=1200 height=3000>
    </iframe><script>
    const errors = [];
    window.addEventListener('error', e => errors.push(String(e.message)));
    document.getElementById('f').onload = () => {{
      const d = document.getElementById('f').contentDocument;
      const imgs = [...d.images];
      const broken = imgs.filter(i => !i.complete || i.naturalWidth === 0).length;
      document.title = JSON.stringify({{images: imgs.length, broken, errors: errors.length,
                                        h2: d.querySelectorAll('h2').length}});
    }};
    </script></body></html>""")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--allow-file-access-from-files",
             "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run([browser, *flags, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    title = re.search(r"<title>(.*?)</title>", dom.stdout)
    assert title, dom.stderr[-2000:]
    import json

    info = json.loads(title.group(1).replace("&quot;", '"'))
    assert info["images"] >= 6 and info["broken"] == 0 and info["errors"] == 0 and info["h2"] >= 10
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line and "report.html" in line]
    assert not console, console
    shot = tmp_path / "shot.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri()],
                   capture_output=True, timeout=120)
    from PIL import Image
    import numpy as np

    arr = np.asarray(Image.open(shot).convert("L"))
    assert arr.std() > 5 and (arr < 128).mean() > 0.005  # text and figures, not a blank page
