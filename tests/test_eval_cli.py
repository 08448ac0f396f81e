"""`vidiff eval` end to end: the JSON report, saved references, metrics that move the right way
as the generated set is corrupted, NLL of a checkpoint, and the errors of bad inputs.

The networks are random-init stand-ins saved in the real file formats: a small 3D-conv detector
scripted with the call signature of StyleGAN-V's ``i3d_torchscript.pt``, pytorch-fid's
InceptionV3 as a state dict (its head scaled so that the random predictions are confident, which
gives the Inception Score something to measure), pytorch-i3d's InceptionI3d as a state dict.
"""

import hashlib
import json

import numpy as np
import pytest
import torch
from _metric_stubs import TinyVideoDetector
from _train_helpers import TINY, cli_error

from vidiff.cli import main
from vidiff.data import make_synthetic
from vidiff.io import from_uint8, to_uint8
from vidiff.metrics import (
    FIDInceptionV3,
    InceptionI3d,
    frame_inception_score,
    load_fid_inception,
    random_init_,
    replace_with_noise,
    shuffle_frames,
)
from vidiff.metrics import inception as inception_module

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")

CLIPS, FRAMES, SIZE = 12, 10, 32


@pytest.fixture(autouse=True)
def small_inception(monkeypatch):
    """Inception at 75 px instead of 299 (the smallest it runs at): 16x faster."""
    monkeypatch.setattr(inception_module, "INCEPTION_RESOLUTION", 75)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Weight files and generated sets (clean and corrupted) as .npy files."""
    root = tmp_path_factory.mktemp("eval")
    torch.jit.save(torch.jit.script(TinyVideoDetector()), root / "i3d_torchscript.pt")
    net = random_init_(FIDInceptionV3(), torch.Generator().manual_seed(0))
    with torch.no_grad():
        net.fc.weight.mul_(30)  # confident random predictions
    torch.save(net.state_dict(), root / "pt_inception.pth")
    ds = make_synthetic("bouncing_balls", frames=FRAMES, size=SIZE, seed=5)
    clean = torch.stack([ds[i]["video"] for i in range(CLIPS)])
    gen = torch.Generator().manual_seed(0)
    sets = {"clean": clean, "shuffled": shuffle_frames(clean, 1.0, gen),
            "noisy": replace_with_noise(clean, 0.3, gen),
            "collapsed": clean[:1, :, :1].expand(CLIPS, -1, FRAMES, -1, -1)}  # one frame
    for name, videos in sets.items():
        np.save(root / f"{name}.npy", to_uint8(videos).numpy())
    return root


def _eval(files, tmp_path, name, *extra):
    out = tmp_path / f"{name}.json"
    argv = ["eval", "-g", str(files / f"{name}.npy"), "--out", str(out), "--threads", "1",
            "--batch-size", "5", "--is-splits", "2", "--no-progress", *extra]
    assert main(argv) == 0
    return json.loads(out.read_text())


def _nets(files):
    return ["--i3d", str(files / "i3d_torchscript.pt"), "--inception",
            str(files / "pt_inception.pth")]


@pytest.fixture(scope="module")
def saved(files, tmp_path_factory):
    """The report of the clean set against bouncing balls, and the saved reference."""
    tmp = tmp_path_factory.mktemp("ref")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(inception_module, "INCEPTION_RESOLUTION", 75)
        report = _eval(files, tmp, "clean", "-r", "bouncing_balls", *_nets(files),
                       "--save-reference", str(tmp / "ref.npz"))
    return report, tmp / "ref.npz"


def test_report_keys_values_and_saved_reference(files, saved, tmp_path):
    report, ref = saved
    m = report["metrics"]
    assert m["fvd"] >= 0 and m["fid"] >= 0 and m["fvd_lite"] >= 0
    # the streamed IS equals the library's one-shot IS of the same frames and network
    frames = from_uint8(torch.from_numpy(np.load(files / "clean.npy")))
    inception = load_fid_inception(files / "pt_inception.pth")
    is_mean, is_std = frame_inception_score(frames, inception, splits=2, return_std=True)
    assert m["inception_score"] == pytest.approx(is_mean, rel=1e-4) and is_mean > 1
    assert m["inception_score_std"] == pytest.approx(is_std, rel=1e-3, abs=1e-6)
    assert set(m["fvd_lite_groups"]) == {"appearance", "sharpness", "motion"}
    assert 0 < m["ball_tracking"]["score"] <= 1
    for side in ("generated", "reference"):
        assert m[side]["clips"] == CLIPS
        assert set(m[side]["temporal"]) == {"frame_consistency", "frame_difference", "flicker",
                                            "clips"}
    settings = report["settings"]
    assert settings["clip_shape"] == [3, FRAMES, SIZE, SIZE]
    # the built-in data is held out from training (dataset seed 0): seed 1
    assert settings["reference"] == {"kind": "synthetic", "name": "bouncing_balls", "seed": 1}
    digest = hashlib.sha256((files / "pt_inception.pth").read_bytes()).hexdigest()
    assert settings["weights"]["inception"]["sha256"] == digest
    assert settings["weights"]["i3d"]["kind"] == "torchscript"
    assert settings["fvd"]["protocol"] == "tf" and settings["is_splits"] == 2
    assert report["versions"]["torch"] == torch.__version__
    # the saved reference gives the same numbers without the reference pass
    i3d_only = _nets(files)[:2]  # FID from a saved reference: test_every_metric_moves...
    again = _eval(files, tmp_path, "clean", "-r", str(ref), *i3d_only)["metrics"]
    for key in ("fvd", "fvd_lite"):
        assert again[key] == pytest.approx(m[key], rel=1e-9, abs=1e-12)
    assert again["ball_tracking"]["score"] == pytest.approx(m["ball_tracking"]["score"])
    assert again["reference"] == m["reference"]


def test_every_metric_moves_the_right_way(files, saved, tmp_path):
    clean, ref = saved[0]["metrics"], str(saved[1])
    runs = {name: _eval(files, tmp_path, name, "-r", ref, *_nets(files)[:nets])["metrics"]
            for name, nets in (("shuffled", 2), ("noisy", 4), ("collapsed", 4))}
    shuffled, noisy, collapsed = runs["shuffled"], runs["noisy"], runs["collapsed"]
    t_clean, t_shuf = clean["generated"]["temporal"], shuffled["generated"]["temporal"]
    assert t_shuf["frame_consistency"] < t_clean["frame_consistency"] - 0.2
    assert t_shuf["flicker"] > t_clean["flicker"] + 0.1
    assert shuffled["ball_tracking"]["score"] < clean["ball_tracking"]["score"]
    assert shuffled["fvd_lite_groups"]["motion"] > 5 * clean["fvd_lite_groups"]["motion"]
    assert shuffled["fvd"] > clean["fvd"]
    for key in ("fvd", "fid", "fvd_lite"):
        assert noisy[key] > 2 * clean[key], key
    assert noisy["generated"]["temporal"]["flicker"] > t_clean["flicker"]
    # one frame everywhere: no diversity, so the Inception Score falls to 1
    assert collapsed["inception_score"] == pytest.approx(1.0, abs=1e-6)
    assert clean["inception_score"] > 1 + 1e-3
    assert collapsed["fid"] > clean["fid"]
    assert collapsed["generated"]["temporal"]["frame_difference"] == 0


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny trained run with 20 diffusion steps (NLL costs T network calls)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(["train", "--out", str(out), "--steps", "1", "--set", *TINY,
                 "diffusion.timesteps=20", "data.options.max_balls=1"]) == 0
    return out


def test_checkpoint_samples_and_nll(run_dir, tmp_path):
    from vidiff import Pipeline
    from vidiff.diffusion.likelihood import nll_bits_per_dim
    from vidiff.evaluate import dataset_clips, quantize_256

    out = tmp_path / "r.json"
    assert main(["eval", "-c", str(run_dir), "-n", "3", "--nll", "--nll-num", "3", "--out",
                 str(out), "--threads", "1", "--no-progress", "--seed", "4"]) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["generated"]["kind"] == "checkpoint"
    # the run's own data (its dataset options), held out: the next dataset seed
    assert report["settings"]["reference"] == {"kind": "synthetic", "name": "bouncing_balls",
                                               "seed": 1, "max_balls": 1}
    nll = report["metrics"]["nll"]
    assert nll["clips"] == 3 and nll["timesteps"] == 20 and nll["prior"] == "progressive"
    pipe = Pipeline.from_pretrained(run_dir)
    clips = dataset_clips("bouncing_balls", 4, 16, 3, seed=1, options={"max_balls": 1})
    x0 = quantize_256(next(clips.batches(3)))
    want = nll_bits_per_dim(pipe.model, pipe.diffusion, x0, prior=pipe.prior,
                            generator=torch.Generator().manual_seed(4)).mean()
    assert nll["bits_per_dim"] == pytest.approx(float(want), rel=1e-9)
    assert nll["bits_per_dim"] > 0 and nll["decoder_term"] > 0


def _error(capsys, argv):
    return cli_error(capsys, [*argv, "--threads", "1", "--no-progress"])


def test_errors(files, saved, tmp_path, capsys):
    gen = ["eval", "-g", str(files / "clean.npy")]
    balls = [*gen, "-r", "bouncing_balls"]
    assert "--generated" in _error(capsys, ["eval", "-r", "bouncing_balls"])
    err = _error(capsys, [*balls, "--i3d", str(tmp_path / "i3d_torchscript.pt")])
    assert "weights file not found" in err and "i3d_torchscript.pt" in err
    err = _error(capsys, [*balls, "--i3d", str(files / "pt_inception.pth")])
    assert "pt_inception.pth" in err and "pytorch-i3d" in err and "Conv3d_1a_7x7" in err
    err = _error(capsys, [*balls, "--inception", str(files / "i3d_torchscript.pt")])
    assert "TorchScript" in err and "pytorch-fid" in err
    short = tmp_path / "short.npy"
    np.save(short, np.load(files / "clean.npy")[:, :8])
    err = _error(capsys, ["eval", "-g", str(short), "-r", "bouncing_balls", "--i3d",
                          str(files / "i3d_torchscript.pt")])
    assert "at least 9 frames" in err
    assert "mismatched sizes" in _error(capsys, [*balls, "--frames", "12"])
    assert "mismatched sizes" in _error(capsys, ["eval", "-g", str(short), "-r", str(saved[1])])
    other = tmp_path / "other.pt"
    torch.jit.save(torch.jit.script(TinyVideoDetector().double().float()), other)
    with torch.no_grad():
        script = torch.jit.load(str(other))
        script.conv.weight.add_(1.0)
    torch.jit.save(script, other)
    err = _error(capsys, [*gen, "-r", str(saved[1]), "--i3d", str(other)])
    assert "other i3d weights" in err
    assert "--checkpoint" in _error(capsys, [*balls, "--nll"])
    assert "not a synthetic dataset" in _error(capsys, [*gen, "-r", "ucf101"])
    assert "no such file" in _error(capsys, ["eval", "-g", str(tmp_path / "none.npy"),
                                             "-r", "bouncing_balls"])


def test_state_dict_i3d_loads_and_checks_clip_length(files, tmp_path, capsys):
    path = tmp_path / "rgb_imagenet.pt"
    torch.save(random_init_(InceptionI3d(), torch.Generator().manual_seed(0)).state_dict(), path)
    short = tmp_path / "short.npy"
    np.save(short, np.load(files / "clean.npy")[:, :8])
    err = _error(capsys, ["eval", "-g", str(short), "-r", "bouncing_balls", "--i3d", str(path)])
    assert "at least 9 frames" in err  # loaded as a state dict, refused before a forward pass


@pytest.mark.slow
def test_real_size_i3d_state_dict_fvd(files, tmp_path):
    path = tmp_path / "rgb_imagenet.pt"
    torch.save(random_init_(InceptionI3d(), torch.Generator().manual_seed(0)).state_dict(), path)
    clean = _eval(files, tmp_path, "clean", "-r", "bouncing_balls", "--i3d", str(path),
                  "--reference-num", "4")
    noisy = _eval(files, tmp_path, "noisy", "-r", "bouncing_balls", "--i3d", str(path),
                  "--reference-num", "4")
    assert 0 <= clean["metrics"]["fvd"] < noisy["metrics"]["fvd"]
    assert clean["settings"]["weights"]["i3d"]["kind"] == "state_dict"


def test_clip_counts_are_said_and_small_samples_warned(tmp_path, capsys):
    """A folder of 3 videos asked for 64 reference clips: the counts are printed, the shortfall
    warned, and a Frechet distance on fewer clips than feature dimensions is flagged."""
    from vidiff.io import write_video

    for i in range(3):
        write_video(tmp_path / "ref" / f"v{i}.mp4", torch.rand(3, 8, 16, 16) * 2 - 1, fps=8)
    clips = tmp_path / "gen.npy"
    np.save(clips, np.random.default_rng(0).integers(0, 256, (6, 8, 16, 16, 3), np.uint8))
    out = tmp_path / "report.json"
    assert main(["eval", "-g", str(clips), "-r", str(tmp_path / "ref"), "--reference-num", "64",
                 "--frames", "8", "--size", "16", "--out", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "clips: 6 generated, 3 reference" in captured.out
    assert "64 reference clips were asked for" in captured.err and "gave 3" in captured.err
    assert "FVD-lite from 3 clips per side with 26-d features" in captured.err
    report = json.loads(out.read_text())
    assert report["metrics"]["warnings"] and report["metrics"]["reference"]["clips"] == 3
