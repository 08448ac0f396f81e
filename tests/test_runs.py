"""Runs you can trust: new settings on resume, refused model changes, the run lock, the log
after a resume, corrupt checkpoints, short-run warmup, samples during long runs, fps."""

import json
import os
import subprocess
import sys
import textwrap
import time
import warnings

import pytest
import torch
from _train_helpers import TINY, tiny_config

from vidiff.modelio.checkpoint import list_checkpoints, load_checkpoint
from vidiff.modelio.pipeline import read_spec
from vidiff.train import Trainer, WarmupSchedule, train
from vidiff.train.config import load_run_config, merge_run_config, warmup_steps
from vidiff.train.resume import config_changes
from vidiff.train.runlock import RunLock, RunLockedError
from vidiff.utils.config_io import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


def _log(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


# -- 1. what the user sets on resume holds -----------------------------------------------------
def test_resume_follows_the_new_lr_and_horizon(tmp_path, capsys):
    out = tmp_path / "r"
    train(tiny_config(out, "train.lr=1e-3", "train.warmup=2", steps=5), echo=False)
    trainer = Trainer(tiny_config(out, "train.lr=1e-5", "train.warmup=2", steps=15))
    printed = capsys.readouterr().out
    assert "train.lr: 0.001 -> 1e-05" in printed and "train.steps: 5 -> 15" in printed
    trainer.run()
    trainer.close()
    lrs = {r["step"]: r["lr"] for r in _log(out)}
    schedule = WarmupSchedule(2, "cosine", 0.1)  # the new horizon, not the old 5 steps
    for step in range(6, 16):
        assert lrs[step] == pytest.approx(1e-5 * schedule(step - 1, 15), rel=1e-9), step
    state = load_checkpoint(out).state()
    assert state["lr_horizon"] == 15
    groups = state["optimizer"]["param_groups"]
    assert all(g["peak_lr"] == 1e-5 for g in groups)


def test_resume_applies_new_optimizer_hyperparameters(tmp_path):
    out = tmp_path / "r"
    train(tiny_config(out, "train.weight_decay=0.0", steps=2), echo=False)
    trainer = Trainer(tiny_config(out, "train.weight_decay=0.05", "train.betas=0.8,0.9",
                                  "train.ema_decay=0.9", steps=3), echo=False)
    decays = sorted({g["weight_decay"] for g in trainer.optimizer.param_groups})
    assert decays == [0.0, 0.05]  # matrices decay, vectors do not
    assert all(g["betas"] == (0.8, 0.9) for g in trainer.optimizer.param_groups)
    assert trainer.ema.decay == 0.9 and trainer.step == 2
    trainer.close()


@pytest.mark.parametrize("change, field", [
    ("prior.name=independent", "prior.name: 'progressive' -> 'independent'"),
    ("data.frames=8", "data.frames: 4 -> 8"),
    ("diffusion.prediction=eps", "diffusion.prediction: 'v' -> 'eps'"),
    ("prior.params.alpha=1.0", "prior.params.alpha: None -> 1.0"),
])
def test_resume_refuses_a_change_of_the_model(tmp_path, change, field):
    out = tmp_path / "r"
    train(tiny_config(out, steps=2), echo=False)
    with pytest.raises(ConfigError, match="cannot resume") as err:
        Trainer(tiny_config(out, change, steps=4), echo=False)
    assert field in str(err.value) and "\n" not in str(err.value)


def test_setting_classes_are_documented():
    """Every fixed field is named in docs/TRAINING.md's resume section."""
    from vidiff.train.resume import FIXED, FIXED_WITH_CAPTIONS

    doc = open(os.path.join(os.path.dirname(__file__), "..", "docs", "TRAINING.md")).read()
    for key in (*FIXED, *FIXED_WITH_CAPTIONS):
        assert f"`{key}`" in doc, key


def test_config_changes_split_allowed_and_refused():
    old = load_run_config(None, TINY).to_dict()
    new = merge_run_config(None, [*TINY, "train.lr=5e-4", "model.init_from=/gone",
                                  "data.use_captions=true"]).to_dict()
    allowed, refused = config_changes(old, new)
    assert allowed == ["train.lr: 0.001 -> 0.0005"]  # init_from is read at step 0 only
    assert refused == ["data.use_captions: False -> True"]


def test_dropout_may_change_on_resume_but_not_the_width(tmp_path):
    out = tmp_path / "r"
    train(tiny_config(out, steps=2), echo=False)
    trainer = Trainer(tiny_config(out, "model.overrides.dropout=0.1", steps=3), echo=False)
    assert trainer.step == 2
    trainer.close()


# -- 3. one trainer per run folder -------------------------------------------------------------
def test_second_trainer_on_a_run_folder_is_refused(tmp_path):
    out = tmp_path / "r"
    first = Trainer(tiny_config(out, steps=2), echo=False)
    with pytest.raises(ConfigError, match=r"in use by another vidiff train \(pid \d+"):
        Trainer(tiny_config(out, steps=2), echo=False)
    first.run()
    first.close()
    Trainer(tiny_config(out, steps=3), echo=False).close()  # released: a new one may start


def test_lock_of_a_killed_process_does_not_block(tmp_path):
    code = textwrap.dedent(f"""
        import time
        from vidiff.train.runlock import RunLock
        RunLock({str(tmp_path)!r}).acquire()
        print("locked", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    with pytest.raises(RunLockedError, match=f"pid {proc.pid}"):
        RunLock(tmp_path).acquire()
    proc.kill()  # kill -9: no clean-up ran, the .lock file stays
    proc.wait()
    assert (tmp_path / ".lock").exists()
    RunLock(tmp_path).acquire().release()


def test_exclusive_file_lock_detects_a_stale_pid(tmp_path, monkeypatch):
    """Where flock is unavailable the lock file is the lock: a dead pid's file is taken over,
    a live one's is refused."""
    import vidiff.train.runlock as runlock

    monkeypatch.setattr(runlock, "fcntl", None)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    import socket

    (tmp_path / ".lock").write_text(json.dumps({"pid": int(dead), "host": socket.gethostname(),
                                                "since": "then"}))
    lock = RunLock(tmp_path).acquire()
    with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
        RunLock(tmp_path).acquire()
    lock.release()
    assert not (tmp_path / ".lock").exists()


# -- 4, 5. the log and the checkpoints after a crash ---------------------------------------------
def test_log_has_each_step_once_after_a_resume(tmp_path):
    out = tmp_path / "r"
    train(tiny_config(out, "train.ckpt_every=3", steps=10), until=5, echo=False)
    import shutil

    shutil.rmtree(list_checkpoints(out)[-1])  # died after logging step 5, before its save
    (out / "log.jsonl").open("a").write('{"step": 6, "loss": 0.')  # a line cut by the kill
    train(tiny_config(out, "train.ckpt_every=3", steps=7), echo=False)
    assert [r["step"] for r in _log(out)] == list(range(1, 8))


def test_corrupt_newest_checkpoint_falls_back_with_a_warning(tmp_path):
    out = tmp_path / "r"
    train(tiny_config(out, "train.ckpt_every=2", "train.keep_checkpoints=3", steps=4),
          echo=False)
    newest = list_checkpoints(out)[-1]
    state = newest / "state.pt"
    state.write_bytes(state.read_bytes()[:100])  # truncated by a full disk or a kill
    leftover = out / "checkpoints" / ".tmp-step_00000006-dead"
    leftover.mkdir()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = Trainer(tiny_config(out, "train.ckpt_every=2", steps=6), echo=False)
    text = " ".join(str(w.message) for w in caught)
    assert str(state) in text and "step_00000004" in text and "step_00000002" in text
    assert trainer.step == 2 and not leftover.exists()
    trainer.run()
    trainer.close()
    assert load_checkpoint(out).step == 6


def test_every_checkpoint_unreadable_is_one_clear_error(tmp_path):
    out = tmp_path / "r"
    train(tiny_config(out, steps=2), echo=False)
    (list_checkpoints(out)[-1] / "state.pt").write_bytes(b"garbage")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception, match="no checkpoint in .* reads back") as err:
            Trainer(tiny_config(out, steps=3), echo=False)
    assert "\n" not in str(err.value)


# -- 6. short runs, long runs, frame rates ------------------------------------------------------
def test_warmup_scales_to_short_runs():
    config = load_run_config(None, ["train.steps=100"])
    assert config.train.warmup is None and warmup_steps(config.train) == 10
    assert warmup_steps(load_run_config(None, []).train) == 100  # the default run: as before
    assert warmup_steps(load_run_config(None, ["train.steps=50000"]).train) == 100
    assert warmup_steps(load_run_config(None, ["train.steps=100", "train.warmup=30"]).train) == 30


def test_samples_appear_with_every_checkpoint_by_default(tmp_path):
    out = tmp_path / "r"
    extra = [x for x in TINY if not x.startswith("train.ckpt_every")]
    config = load_run_config(None, [*extra, f"train.out={out}", "train.steps=6",
                                    "train.ckpt_every=3"])
    assert config.train.sample_every is None
    train(config, echo=False)
    names = sorted(p.name for p in (out / "samples").glob("*.mp4"))
    assert names == ["step_00000003.mp4", "step_00000006.mp4"]


def test_samples_keep_the_data_fps(tmp_path):
    import numpy as np

    from vidiff.io import video_info, write_video

    data = tmp_path / "videos"
    for i in range(2):
        clip = torch.from_numpy(np.random.default_rng(i).uniform(-1, 1, (3, 12, 16, 16)))
        write_video(data / f"v{i}.mp4", clip.float(), fps=12)
    out = tmp_path / "r"
    train(tiny_config(out, "data.source=folder", f"data.path={data}", "data.stride=2",
                      steps=1), echo=False)
    assert read_spec(out).preprocess.fps == 6.0  # 12 fps, every 2nd frame
    assert video_info(out / "samples" / "step_00000001.mp4").fps == pytest.approx(6.0)


# -- 2. signals: finish the step, checkpoint, exit; a second one exits at once ------------------
def _start(out, *extra, steps=100000):
    cmd = [sys.executable, "-m", "vidiff", "train", "--out", str(out), "--steps", str(steps),
           "--set", *TINY, "train.sample_every=0", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"), start_new_session=True)


def _wait_for_steps(out, n, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        log = out / "log.jsonl"
        if log.exists() and len(log.read_text().splitlines()) >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError("the run did not start")


@pytest.mark.parametrize("sig, code, workers", [("SIGINT", 130, 0), ("SIGTERM", 143, 0),
                                                ("SIGINT", 130, 2)])
def test_signal_writes_a_checkpoint_and_says_how_to_resume(tmp_path, sig, code, workers):
    """With DataLoader workers too: Ctrl-C reaches the whole process group, and the workers
    leave it to the main process (they would otherwise die and break the last step)."""
    import signal

    out = tmp_path / "r"
    proc = _start(out, f"data.workers={workers}")
    _wait_for_steps(out, 3, proc)
    if workers:  # as a terminal does: the signal goes to every process of the group
        os.killpg(proc.pid, getattr(signal, sig))
    else:
        proc.send_signal(getattr(signal, sig))
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    step = load_checkpoint(out).step
    assert step >= 3 and f"resume with: vidiff train --out {out}" in stderr
    assert _log(out)[-1]["step"] == step  # the checkpoint is the last step trained
    assert "Traceback" not in stderr
    Trainer(tiny_config(out, steps=step + 1), echo=False).close()  # the lock was released


def test_second_ctrl_c_stops_at_once(tmp_path):
    import signal

    out = tmp_path / "r"
    # slow steps (many micro-batches, seconds each) keep the run busy in step 2 after the
    # first signal (a sample grid would not: the first signal cuts it)
    proc = _start(out, "train.grad_accum=40")
    _wait_for_steps(out, 1, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in stderr
    # the first signal alone would have finished step 2 and saved it: the second cut it
    assert all(load_checkpoint(c).step < 2 for c in list_checkpoints(out)), stderr
    RunLock(out).acquire().release()  # the lock went with the process


def test_a_relayed_sigterm_does_not_cut_the_stop_short(tmp_path):
    """Ctrl-C under torchrun (and a pre-emption under `srun torchrun`) reaches a rank twice:
    the signal itself, then the launcher's SIGTERM. The step still ends in a checkpoint."""
    import signal

    out = tmp_path / "r"
    proc = _start(out, "train.grad_accum=30")  # steps of about a second
    _wait_for_steps(out, 1, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert load_checkpoint(out).step >= 2 and _log(out)[-1]["step"] == load_checkpoint(out).step


def test_banner_counts_videos_classes_and_skipped_files(tmp_path, capsys):
    import numpy as np

    from vidiff.io import write_video

    data = tmp_path / "videos"
    for label in ("cats", "dogs"):
        clip = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (3, 6, 16, 16)))
        write_video(data / label / "a.mp4", clip.float(), fps=8)
    (data / "dogs" / "broken.mp4").write_bytes(b"not a video" * 20)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(tiny_config(tmp_path / "r", "data.source=folder", f"data.path={data}", steps=1))
    banner = [line for line in capsys.readouterr().out.splitlines() if "data:" in line][0]
    assert "2 videos in 2 classes, 1 unreadable skipped" in banner
    assert "on cpu with 1 CPU thread," in banner  # the helpers' train.threads = 1
    assert any("broken.mp4" in str(w.message) for w in caught)
