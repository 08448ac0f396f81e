"""The matrix: every registered model kind x every process it allows x two or more noise
priors, through the whole workflow of a run.

Each cell trains one tiny run (shared by the cell's checks) and then: resumes it with more
steps and a new learning rate, is stopped by SIGTERM mid-run and resumed, samples with
`vidiff sample`, describes itself with `vidiff info`, is exported (the export samples exactly
the run's videos for the same seed; `Pipeline.from_pretrained` on the run, its checkpoint and
the export agree), extends and interpolates, and is scored by `vidiff eval` (weight-free
metrics). Every combination a kind does not support is refused by `vidiff train` with a
one-line error naming it, before anything is built.

A new kind joins the matrix by registering in `MODEL_KINDS`: its `tiny_settings`, `processes`
and `priors` say what is trained and what must be refused.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from _train_helpers import TINY, cli_error

from vidiff import Pipeline
from vidiff.cli import main
from vidiff.diffusion.ddpm import Diffusion
from vidiff.diffusion.flow import FlowMatching
from vidiff.diffusion.priors import PRIORS
from vidiff.diffusion.process import PROCESSES
from vidiff.kinds import MODEL_KINDS
from vidiff.modelio.checkpoint import list_checkpoints, load_checkpoint
from vidiff.modelio.pipeline import read_spec

# -- what the matrix trains: read from the kinds' declarations ------------------------------
_PROCESS_SAMPLERS = {"ddpm": Diffusion.samplers, "flow": FlowMatching.samplers}
_PROCESS_SETTINGS = {  # DDPM on T = 20: its NLL (vidiff eval --nll) costs T network calls
    "ddpm": ("diffusion.process=ddpm", "sample.sampler=ddim", "diffusion.timesteps=20"),
    "flow": ("diffusion.process=flow", "sample.sampler=euler"),
}
_CORRELATED = ("mixed", "progressive")  # PYoCo's priors: the kinds take them in turn


def _priors(kind: str) -> tuple[str, ...]:
    """The priors the matrix trains `kind` with: those it is limited to, else independent noise
    and one of PYoCo's correlated priors (alternating over the registered kinds)."""
    declared = MODEL_KINDS.get(kind).priors
    if declared is not None:
        return declared
    return ("independent", _CORRELATED[MODEL_KINDS.names().index(kind) % len(_CORRELATED)])


def _refused_priors(kind: str) -> tuple[str, ...]:
    declared = MODEL_KINDS.get(kind).priors
    return () if declared is None else tuple(p for p in PRIORS.names() if p not in declared)


# TINY at 4 frames of 8x8, without the kind- and process-specific keys
_COMMON = [s for s in TINY if not s.startswith(("model.preset", "sample.sampler", "data.size"))]
_COMMON += ["data.size=8"]
STEPS, MORE_STEPS, NEW_LR = 4, 6, 5e-4


def _tiny_settings(kind: str, process: str, prior: str) -> list[str]:
    """The `--set` overrides of a cell: the common tiny run, the kind's tiny network, the
    process and the prior."""
    if process not in _PROCESS_SETTINGS:
        pytest.fail(f"process {process!r} has no settings in tests/test_matrix.py's "
                    f"_PROCESS_SETTINGS")
    return [*_COMMON, *MODEL_KINDS.get(kind).tiny_settings(process),
            *_PROCESS_SETTINGS[process], f"prior.name={prior}"]


def _cells() -> list:
    return [pytest.param((kind, process, prior), id=f"{kind}-{process}-{prior}")
            for kind in MODEL_KINDS.names() for process in MODEL_KINDS.get(kind).processes
            for prior in _priors(kind)]


def _refusals() -> list:
    cells = []
    for kind in MODEL_KINDS.names():
        processes = MODEL_KINDS.get(kind).processes
        cells += [pytest.param(kind, process, _priors(kind)[0], process, id=f"{kind}-{process}")
                  for process in PROCESSES if process not in processes]
        cells += [pytest.param(kind, processes[0], prior, prior, id=f"{kind}-{prior}")
                  for prior in _refused_priors(kind)]
    return cells


@dataclass
class Cell:
    """One trained run of the matrix."""

    kind: str
    process: str
    prior: str
    settings: list[str]
    run: Path  # the run folder
    tmp: Path  # a folder for this cell's outputs

    def checkpoint(self) -> Path:
        """The run's newest checkpoint folder."""
        return list_checkpoints(self.run)[-1]


@pytest.fixture(scope="module", params=_cells())
def cell(request, tmp_path_factory):
    """The cell's run: STEPS steps of its tiny settings."""
    kind, process, prior = request.param
    settings = _tiny_settings(kind, process, prior)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("cell")
    run = tmp / "run"
    assert main(["train", "--out", str(run), "--steps", str(STEPS), "--set", *settings]) == 0
    yield Cell(kind, process, prior, settings, run, tmp)
    torch.set_num_threads(threads)


def _refused(capsys, argv: list[str]) -> str:
    """Run `vidiff argv`, which must be refused as a usage error in one line (the last of its
    stderr, no traceback); that line."""
    err = cli_error(capsys, argv)
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and err.rstrip().endswith(errors[0]), err
    assert "Traceback" not in err
    return errors[0]


def _log(run) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


# -- the cells ---------------------------------------------------------------------------------
def test_the_run_is_of_its_cell(cell):
    spec = read_spec(cell.run)
    assert (spec.kind, spec.diffusion.process, spec.prior.name) == (
        cell.kind, cell.process, cell.prior)
    assert load_checkpoint(cell.run).step == STEPS
    assert [entry["step"] for entry in _log(cell.run)] == list(range(1, STEPS + 1))


def test_resume_with_more_steps_and_a_new_lr(cell):
    from vidiff.train.schedule import WarmupSchedule

    run = cell.tmp / "resumed"
    shutil.copytree(cell.run, run)
    assert main(["train", "--out", str(run), "--steps", str(MORE_STEPS), "--lr",
                 str(NEW_LR)]) == 0
    log = _log(run)
    assert [entry["step"] for entry in log] == list(range(1, MORE_STEPS + 1))
    ckpt = load_checkpoint(run)
    assert ckpt.step == MORE_STEPS and ckpt.config["train"]["lr"] == NEW_LR
    schedule = WarmupSchedule(ckpt.config["train"]["warmup"])
    for entry in log[STEPS:]:  # the new peak LR on the new horizon (step s used factor s - 1)
        want = NEW_LR * schedule(entry["step"] - 1, MORE_STEPS)
        assert entry["lr"] == pytest.approx(want, rel=1e-12)
    assert read_spec(run).kind == cell.kind


def _changes(cell) -> list[tuple[str, str, list[str]]]:
    """Other settings of the cell's kind that define another model: (key, new value, --set)."""
    processes = MODEL_KINDS.get(cell.kind).processes
    return ([("diffusion.process", p, list(_PROCESS_SETTINGS[p])) for p in processes
             if p != cell.process] +
            [("prior.name", p, [f"prior.name={p}"]) for p in _priors(cell.kind)
             if p != cell.prior])


def test_resume_with_another_process_or_prior_is_refused(cell, capsys):
    """A run resumed under settings that define another model: one line naming the key and
    both values, the run untouched."""
    before = sorted(p.relative_to(cell.run) for p in cell.run.rglob("*"))
    log = (cell.run / "log.jsonl").read_text()
    for key, value, settings in _changes(cell):
        error = _refused(capsys, ["train", "--out", str(cell.run), "--steps",
                                  str(MORE_STEPS), "--set", *settings])
        old = cell.process if key == "diffusion.process" else cell.prior
        assert key in error and repr(value) in error and repr(old) in error, error
    assert sorted(p.relative_to(cell.run) for p in cell.run.rglob("*")) == before
    assert (cell.run / "log.jsonl").read_text() == log


def _wait_for_a_step(run, proc, timeout=120) -> None:
    """Until the run's log shows a step (an AssertionError if the process ends first)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        log = run / "log.jsonl"
        if log.exists() and log.read_text().strip():
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"the run in {run} logged no step in {timeout} s")


def test_sigterm_mid_run_then_resume(cell):
    if cell.prior != _priors(cell.kind)[0]:
        pytest.skip("the stop path does not depend on the prior: run on the kind's first "
                    "(the prior's resume is test_resume_with_more_steps_and_a_new_lr)")
    run = cell.tmp / "stopped"
    cmd = [sys.executable, "-m", "vidiff", "train", "--out", str(run), "--steps", "100000",
           "--set", *cell.settings, "train.sample_every=0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"), start_new_session=True)
    try:
        _wait_for_a_step(run, proc)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr and f"resume with: vidiff train --out {run}" in stderr
    step = load_checkpoint(run).step
    assert step >= 1 and _log(run)[-1]["step"] == step
    assert main(["train", "--out", str(run), "--steps", str(step + 2)]) == 0
    assert [entry["step"] for entry in _log(run)] == list(range(1, step + 3))
    assert load_checkpoint(run).step == step + 2


def test_sample(cell):
    out = cell.tmp / "sample.npy"
    assert main(["sample", str(cell.run), "--out", str(out), "-n", "2", "--threads", "1"]) == 0
    videos = np.load(out)
    assert videos.shape == (2, 4, 8, 8, 3) and videos.dtype == np.uint8


def test_info(cell, capsys):
    capsys.readouterr()
    assert main(["info", str(cell.run)]) == 0
    text = capsys.readouterr().out
    assert f"step         {STEPS}" in text and cell.prior in text
    assert ("rectified flow" in text) == (cell.process == "flow")
    assert main(["info", str(cell.run), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    spec = facts["spec"]
    assert facts["step"] == STEPS and facts["parameters"] > 0
    assert facts["model"]["kind"] == cell.kind
    assert (spec["kind"], spec["diffusion"]["process"], spec["prior"]["name"]) == (
        cell.kind, cell.process, cell.prior)


def test_export_samples_the_runs_videos(cell):
    exported = cell.tmp / "exported"
    assert main(["export", str(cell.run), str(exported)]) == 0
    files = {}
    for name, source in (("run", cell.run), ("exported", exported)):
        files[name] = cell.tmp / f"{name}.npy"
        assert main(["sample", str(source), "--out", str(files[name]), "-n", "2", "--seed",
                     "3", "--threads", "1"]) == 0
    assert np.array_equal(np.load(files["run"]), np.load(files["exported"]))
    videos = {}  # the same weights through the same code: exactly the same videos
    for name, source in (("run", cell.run), ("checkpoint", cell.checkpoint()),
                         ("weights", cell.checkpoint() / "ema.safetensors"),
                         ("exported", exported)):
        pipe = Pipeline.from_pretrained(source)
        assert pipe.spec.kind == cell.kind and pipe.spec.prior.name == cell.prior
        videos[name] = pipe(2, generator=torch.Generator().manual_seed(5))
    assert videos["run"].shape == (2, 3, 4, 8, 8)
    for name in ("checkpoint", "weights", "exported"):
        assert torch.equal(videos["run"], videos[name]), name


def test_extend_and_interpolate(cell):
    for argv, frames in ((["extend", "--frames", "6"], 6),
                         (["interpolate", "--factor", "2"], 7)):
        out = cell.tmp / f"{argv[0]}.npy"
        assert main([argv[0], str(cell.run), "-n", "1", *argv[1:], "--out", str(out),
                     "--threads", "1"]) == 0
        assert np.load(out).shape == (1, frames, 8, 8, 3)


def test_eval(cell, capsys):
    """The weight-free metrics and, for DDPM, the NLL (a flow model has no variational bound:
    `--nll` is refused in one line)."""
    out = cell.tmp / "eval.json"
    argv = ["eval", "-c", str(cell.run), "--num", "2", "--batch-size", "2", "--no-progress",
            "--threads", "1", "-o", str(out)]
    if cell.process == "flow":
        error = _refused(capsys, [*argv, "--nll"])
        assert "--nll" in error and "flow" in error and not out.exists(), error
    nll = [] if cell.process == "flow" else ["--nll", "--nll-num", "2"]
    assert main([*argv, *nll]) == 0
    report = json.loads(out.read_text())  # the reference: the run's own data, held out
    assert report["settings"]["generated"]["kind"] == "checkpoint"
    assert report["settings"]["reference"]["name"] == "bouncing_balls"
    assert "fvd_lite" in report["metrics"]
    if nll:
        bound = report["metrics"]["nll"]
        assert bound["prior"] == cell.prior and bound["clips"] == 2
        assert np.isfinite(bound["bits_per_dim"]) and bound["bits_per_dim"] > 0


def test_a_sampler_of_another_process_is_refused(cell, capsys):
    """A DDPM model with a flow sampler, a flow model with a DDPM one: one line naming the
    sampler, before any sampling (nothing written)."""
    own = _PROCESS_SAMPLERS[cell.process]
    foreign = next(name for samplers in _PROCESS_SAMPLERS.values()
                   for name in samplers if name not in own)
    out = cell.tmp / "refused.npy"
    for argv in (["sample", str(cell.run)], ["extend", str(cell.run), "--frames", "6"],
                 ["interpolate", str(cell.run)], ["eval", "-c", str(cell.run), "-n", "2",
                                                  "-r", "bouncing_balls", "--no-progress"]):
        error = _refused(capsys, [*argv, "--sampler", foreign, "--out", str(out),
                                  "--threads", "1"])
        assert f"'{foreign}'" in error and not out.exists(), error


# -- what the matrix does not train: refused, in one line naming it ----------------------------
def test_every_registered_kind_declares_what_the_matrix_trains():
    for kind in MODEL_KINDS.names():
        cls = MODEL_KINDS.get(kind)
        assert cls.processes and set(cls.processes) <= set(PROCESSES), kind
        assert cls.priors is None or set(cls.priors) <= set(PRIORS.names()), kind
        assert not set(_priors(kind)) & set(_refused_priors(kind)), kind
        assert len(_priors(kind)) + len(_refused_priors(kind)) >= 2, kind
        assert cls.tiny_preset in cls.presets, kind
    trained = {p for kind in MODEL_KINDS.names() for p in _priors(kind)}
    assert {"independent", *_CORRELATED} <= trained


@pytest.mark.parametrize("kind, process, prior, named", _refusals())
def test_an_unsupported_combination_is_refused_in_one_line(kind, process, prior, named,
                                                            tmp_path, capsys):
    run = tmp_path / "run"
    error = _refused(capsys, ["train", "--out", str(run), "--steps", "1", "--set",
                              *_tiny_settings(kind, process, prior)])
    assert kind in error and named in error, error
    assert not run.exists()  # refused before anything is built
