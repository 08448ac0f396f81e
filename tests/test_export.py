"""`vidiff export` never loses work and says true things: OUT apart from the run, errors that
name OUT, a model card built from the spec, and the weights an export holds."""

import json
import os
from dataclasses import replace

import pytest
import torch
from _train_helpers import cli_error, tiny_config

from vidiff import Pipeline
from vidiff.cli import main
from vidiff.diffusion.ddpm import DiffusionConfig
from vidiff.modelio.checkpoint import CheckpointError
from vidiff.modelio.export import ExportError, export_model, model_card
from vidiff.modelio.pipeline import read_spec
from vidiff.modelio.spec import TextEncoderSpec
from vidiff.train import train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny unconditional run, under runs/a."""
    root = tmp_path_factory.mktemp("export")
    out = root / "runs" / "a"
    train(tiny_config(out, steps=2), echo=False)
    return out


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("where", ["run", "parent", "inside", "checkpoints"])
def test_out_overlapping_the_run_is_refused_even_with_force(run, capsys, where):
    before = _files(run.parent)
    out = {"run": run, "parent": run.parent, "inside": run / "exported",
           "checkpoints": run / "checkpoints"}[where]
    err = cli_error(capsys, ["export", str(run), str(out), "--force"]).strip().splitlines()
    usage = err[:-1]  # argparse's usage (wrapped), then one line
    assert usage[0].startswith("usage:") and all(line.startswith(" ") for line in usage[1:])
    err = err[-1]
    assert f"OUT {str(out)!r}" in err
    how = {"run": " is ", "parent": " contains ", "inside": " lies inside ",
           "checkpoints": " lies inside "}[where]
    assert how in err
    assert _files(run.parent) == before  # nothing deleted, nothing written
    # a checkpoint folder as the source: its run is still protected
    checkpoint = next((run / "checkpoints").iterdir())
    with pytest.raises(ExportError, match="its run folder"):
        export_model(checkpoint, run / "exported")
    assert _files(run.parent) == before


def test_out_in_a_bad_parent_names_out(run, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    err = cli_error(capsys, ["export", str(run), str(blocker / "out")])
    assert f"OUT {str(blocker / 'out')!r}" in err and ".tmp-" not in err
    if os.geteuid() != 0:  # root writes in read-only folders
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            err = cli_error(capsys, ["export", str(run), str(locked / "out")])
        finally:
            locked.chmod(0o700)
        assert f"OUT {str(locked / 'out')!r}" in err and ".tmp-" not in err
    assert not list(tmp_path.glob("**/.*tmp*"))


def test_force_replaces_only_a_finished_export(run, tmp_path, capsys):
    out = tmp_path / "exported"
    assert main(["export", str(run), str(out)]) == 0
    err = cli_error(capsys, ["export", str(run), str(out)])
    assert "not empty" in err and "--force" in err
    (out / "extra.txt").write_text("old")
    assert main(["export", str(run), str(out), "--force", "--weights", "model"]) == 0
    assert not (out / "extra.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported"]  # no leftovers


def test_an_export_records_and_reports_its_weights(run, tmp_path, capsys):
    ema, raw = tmp_path / "ema", tmp_path / "raw"
    assert main(["export", str(run), str(ema)]) == 0
    assert main(["export", str(run), str(raw), "--weights", "model"]) == 0
    assert json.loads((ema / "config.json").read_text())["provenance"]["weights"] == "ema"
    assert read_spec(raw).provenance.weights == "model"
    assert "(model weights)" in (raw / "README.md").read_text()
    assert Pipeline.from_pretrained(raw).weights == "model"
    assert Pipeline.from_pretrained(run).weights == "ema"
    g = torch.Generator().manual_seed(3)
    a = Pipeline.from_pretrained(raw)(1, generator=g)
    b = Pipeline.from_pretrained(run, weights="model")(1, generator=torch.Generator()
                                                       .manual_seed(3))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="an export of the ema weights only"):
        Pipeline.from_pretrained(ema, weights="model")
    capsys.readouterr()
    err = cli_error(capsys, ["sample", str(ema), "--weights", "model", "-n", "1",
                             "--out", str(tmp_path / "s.npy")])
    assert "ema weights only" in err and not (tmp_path / "s.npy").exists()
    assert main(["sample", str(raw), "-n", "1", "--out", str(tmp_path / "s.npy")]) == 0
    assert "model weights)" in capsys.readouterr().out
    assert main(["info", str(raw)]) == 0
    files = capsys.readouterr().out.split("files")[-1]
    assert "model " in files and "ema " not in files
    single = next((run / "checkpoints").iterdir()) / "model.safetensors"
    with pytest.raises(CheckpointError, match="holds only the model weights"):
        Pipeline.from_pretrained(single, weights="ema")
    assert Pipeline.from_pretrained(single).weights == "model"


def test_the_card_takes_every_fact_from_the_spec(run):
    spec = read_spec(run)
    card = model_card(spec, [], "a")
    d = spec.diffusion
    assert f"| diffusion | {d.schedule} schedule, T = {d.timesteps}, predicts {d.prediction} |" \
        in card and "unconditional" in card and "rectified flow" not in card
    flow = replace(spec, diffusion=DiffusionConfig(process="flow", flow_shift=3.0,
                                                   flow_time="uniform"))
    card = model_card(flow, [], "a")
    assert "rectified flow, uniform training times, shift 3" in card
    assert "schedule" not in card and "T = " not in card and "predicts v" not in card
    # a text model whose data had classes: the classes are no condition of the network
    text = replace(spec, conditioning=replace(
        spec.conditioning, class_names=["a", "b", "c", "d", "e"],
        text_encoder=TextEncoderSpec("hash", 64, 16)))
    card = model_card(text, [], "a")
    assert "text-conditional (text encoder hash)" in card and "class-conditional" not in card
    assert "(weights)" in card  # a checkpoint's spec: no set recorded, none claimed
    assert "(ema weights)" in model_card(replace(spec, provenance=replace(
        spec.provenance, weights="ema")), [], "a")
