"""`vidiff report`: one self-contained HTML page of a run, opened in headless Chromium
(Debian's package, installed by .ci/run): what the browser renders, not only the text."""

import re
import shutil
import subprocess

import pytest
from _train_helpers import tiny_config

from vidiff.cli import main
from vidiff.evaluate.report import build_report
from vidiff.train import train

pytestmark = pytest.mark.usefixtures("one_thread")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "r"
    train(tiny_config(out, "data.val_fraction=0.25", "train.val_clips=2", "train.val_levels=2",
                      "train.val_every=2", "train.sample_every=2", "train.log_every=1",
                      steps=4), echo=False)
    (out / "fvd_report.json").write_text('{"metrics": {"fvd": 12.5}}')
    return out


def test_the_page_holds_curves_videos_config_evals_and_machine(run, tmp_path, capsys):
    page_path = tmp_path / "report.html"
    assert main(["report", str(run), "--out", str(page_path)]) == 0
    page = page_path.read_text()
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")  # nothing fetched
    assert "<script" not in page
    assert page.count("<figure class='grid'") == 2  # the grids of steps 2 and 4
    assert page.count("data:video/mp4;base64,") == 2 and "data:image/gif;base64," in page
    assert "data-name='val_loss'" in page and "held-out loss by noise level" in page
    assert "&quot;fvd&quot;: 12.5" in page and "val_fraction" in page
    assert "processor" in page  # environment.json


def test_a_folder_without_a_log_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["report", str(tmp_path), "--out", str(tmp_path / "r.html")])
    assert exc.value.code == 2
    assert "holds no log.jsonl: not a vidiff run folder" in capsys.readouterr().err


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run installs "
                                             "Debian's chromium package)")
def test_chromium_renders_the_charts_and_plays_the_videos(run, tmp_path):
    page_path = tmp_path / "report.html"
    page_path.write_text(build_report(run))
    profile = tmp_path / "profile"
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}",
                          "--virtual-time-budget=4000", "--dump-dom", page_path.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    # the DOM after parsing: the charts' polylines, both grids' video elements
    assert len(re.findall(r"<polyline", dom.stdout)) >= 3
    assert len(re.findall(r"<video", dom.stdout)) == 2
    shot = tmp_path / "report.png"
    done = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}",
                           "--window-size=1100,1400", f"--screenshot={shot}",
                           "--virtual-time-budget=4000", page_path.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.stat().st_size > 20_000, done.stderr[-2000:]
    from PIL import Image

    pixels = Image.open(shot).convert("RGB")
    colors = pixels.resize((110, 140)).getcolors(maxcolors=100_000)
    assert len(colors) > 20  # drawn: charts, videos and text, not a blank page
