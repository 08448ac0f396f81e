"""Checkpoints: atomic safetensors + weights-only state, pruning, refusing pickles, clear
errors for missing files and other architectures."""

import io
import json
import pickle

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from vidiff.modelio.checkpoint import (
    CheckpointError,
    find_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_state_file,
    load_weights,
    save_checkpoint,
)


def _save(run, step, model, keep=2):
    return save_checkpoint(run, step, model=model, ema=model, keep=keep,
                           state={"optimizer": {"lr": 0.1}, "rng": {"cpu": torch.get_rng_state()}},
                           config={"train": {"steps": 9}}, meta={"unet_config": {"a": 1}})


def test_save_load_roundtrip_and_pruning(tmp_path):
    model = nn.Linear(3, 2)
    for step in (1, 2, 3):
        path = _save(tmp_path, step, model)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000002", "step_00000003"]
    assert find_checkpoint(tmp_path) == path
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.step == 3 and ckpt.config == {"train": {"steps": 9}}
    assert ckpt.meta["unet_config"] == {"a": 1}
    w = load_file(path / "model.safetensors")  # plain safetensors, readable by anyone
    assert torch.equal(w["weight"], model.weight.detach())
    state = ckpt.state()
    assert state["step"] == 3 and state["optimizer"] == {"lr": 0.1}
    # the same step again replaces it atomically
    _save(tmp_path, 3, model)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000002", "step_00000003"]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]


def test_single_safetensors_file_is_enough(tmp_path):
    path = _save(tmp_path, 5, nn.Linear(3, 2))
    ckpt = load_checkpoint(path / "ema.safetensors")
    assert ckpt.step == 5 and ckpt.config == {"train": {"steps": 9}}
    assert set(ckpt.weights()) == {"weight", "bias"}


def test_failed_write_leaves_previous_checkpoint(tmp_path):
    model = nn.Linear(3, 2)
    _save(tmp_path, 1, model)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_checkpoint(tmp_path, 2, model=model, ema=None, state={"x": Boom()}, config={})
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000001"]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_state_file_refuses_pickled_code(tmp_path, capsys):
    path = tmp_path / "state.pt"
    buf = io.BytesIO()
    torch.save({"step": 1, "evil": Evil()}, buf)
    path.write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_state_file(path)
    assert "pwned" not in capsys.readouterr().out


def test_weights_must_be_safetensors(tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(pickle.dumps({"weight": Evil()}))
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(bad)
    pt = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, pt)
    with pytest.raises(CheckpointError, match=r"not a \.safetensors file"):
        load_checkpoint(pt)


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match=r"'.*nowhere' does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        load_checkpoint(tmp_path / "empty")


def test_other_architecture_is_a_clear_error(tmp_path):
    path = _save(tmp_path, 1, nn.Linear(3, 2))
    weights = load_checkpoint(path).weights("model")
    with pytest.raises(CheckpointError, match=r"another model architecture.*"
                                              r"weight \(2, 3\) vs \(4, 3\)"):
        load_weights(nn.Linear(3, 4), weights, str(path))
    with pytest.raises(CheckpointError, match=r"missing: 0\.weight.*unexpected: bias, weight"):
        load_weights(nn.Sequential(nn.Linear(3, 2)), weights)


def test_config_json_is_readable(tmp_path):
    path = _save(tmp_path, 7, nn.Linear(3, 2))
    doc = json.loads((path / "config.json").read_text())
    assert doc["meta"]["step"] == 7 and doc["config"]["train"]["steps"] == 9


def test_a_field_added_after_the_checkpoint_counts_as_its_default():
    from vidiff.kinds import MODEL_KINDS, architecture_mismatch
    from vidiff.models.config import unet_config_to_dict

    for kind, cfg in (("unet", "tiny"), ("dit", "dit-tiny")):
        kind = MODEL_KINDS.get(kind)
        current = {k: v for k, v in unet_config_to_dict(kind.resolve(cfg, {})).items()}
        old = {k: v for k, v in current.items() if k != "null_text_tokens"}  # written before
        assert architecture_mismatch(kind.architecture(old), kind.architecture(current)) == []
        changed = kind.architecture({**current, "null_text_tokens": 2})
        assert architecture_mismatch(kind.architecture(old), changed) == [
            "null_text_tokens: checkpoint 1, model 2"]


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_rotation_counts_only_whole_checkpoints(tmp_path):
    """A corrupt newer checkpoint never pushes out the older good one a resume fell back to;
    it goes once `keep` good ones newer than it exist."""
    from vidiff.modelio.checkpoint import checkpoint_intact

    model = nn.Linear(3, 2)
    good = _save(tmp_path, 1, model)
    bad = _save(tmp_path, 2, model)
    _truncate(bad / "state.pt")
    assert checkpoint_intact(good) and not checkpoint_intact(bad)
    _truncate(_save(tmp_path, 9, model) / "ema.safetensors", 0.9)  # weights cut short
    assert not checkpoint_intact(tmp_path / "checkpoints" / "step_00000009")
    # a resume from step 1 saves step 3: the newest two whole ones are 3 and 1
    _save(tmp_path, 3, model)
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["step_00000001", "step_00000002", "step_00000003", "step_00000009"]
    _save(tmp_path, 4, model)  # two whole ones newer than 1 and 2: both go
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["step_00000003", "step_00000004", "step_00000009"]


def test_rotation_keeps_the_checkpoint_just_written(tmp_path):
    """A run resumed from an older checkpoint (newer ones from another trajectory exist)
    never deletes what it just saved, with keep_checkpoints=1."""
    model = nn.Linear(3, 2)
    for step in (5, 6):
        _save(tmp_path, step, model, keep=0)
    path = _save(tmp_path, 2, model, keep=1)
    assert path in list_checkpoints(tmp_path)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000002", "step_00000006"]
