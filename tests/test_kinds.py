"""Model kinds in one place: a kind registered in a test module is enough for train, resume,
sample, info and export; resume compares each kind's own architecture (a DiT run resumes)."""

from dataclasses import asdict, dataclass

import pytest
import torch
from _train_helpers import TINY
from torch import nn

from vidiff.cli import main
from vidiff.kinds import MODEL_KINDS, ModelKind, kind_of
from vidiff.modelio.pipeline import Pipeline
from vidiff.train.config import load_run_config
from vidiff.utils.config_io import ConfigError
from vidiff.utils.registry import Registry

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass(frozen=True)
class ToyConfig:
    """A per-pixel MLP over channels and time: the smallest network a kind can be."""

    in_channels: int = 3
    out_channels: int = 3
    width: int = 8
    num_classes: int | None = None
    text_dim: int | None = None
    temporal: bool = True
    dropout: float = 0.0  # an execution field: free to change on resume

    @property
    def size_multiple(self) -> int:
        return 1


class ToyNet(nn.Module):
    """eps(x, t): a 1x1x1 conv stack with the timestep added to the hidden features."""

    def __init__(self, config: ToyConfig):
        super().__init__()
        self.config = config
        self.inp = nn.Conv3d(config.in_channels, config.width, 1)
        self.out = nn.Conv3d(config.width, config.out_channels, 1)

    def forward(self, x, t, cond=None, **conditions):
        h = self.inp(x) + (t.float() / 1000).view(-1, 1, 1, 1, 1)
        return self.out(torch.nn.functional.silu(h))


TOY_PRESETS: Registry[dict] = Registry("toy preset")
TOY_PRESETS.register("toy-tiny")({"width": 8})
TOY_PRESETS.register("toy-wide")({"width": 16})


class ToyKind(ModelKind):
    """What a new family writes: its network, config class, presets and `resolve` (the
    base class converts the config to and from the spec's JSON)."""

    name = "toy"
    network_class = ToyNet
    config_class = ToyConfig
    presets = TOY_PRESETS
    default_preset = "toy-wide"
    tiny_preset = "toy-tiny"
    image_kind = "toy"
    summary = "a toy per-pixel network"

    @classmethod
    def resolve(cls, preset, overrides):
        return ToyConfig(**{**TOY_PRESETS.get(preset), **overrides})


@pytest.fixture
def toy_kind():
    MODEL_KINDS.register("toy")(ToyKind)
    yield ToyKind
    MODEL_KINDS.unregister("toy")


VIDEOFUSION = ["prior.name=decomposed", "diffusion.prediction=eps"]
TOY = [*TINY, "model.kind=toy", "model.preset=toy-tiny"]


def _train(out, *extra, steps=2):
    args = ["train", "--out", str(out), "--steps", str(steps), "--set", *TOY, *extra]
    assert main(args) == 0


def test_a_registered_kind_trains_resumes_samples_and_exports(toy_kind, tmp_path, capsys):
    run = tmp_path / "run"
    _train(run)
    _train(run, "train.lr=5e-4", steps=4)  # resume with more steps and a new LR
    assert "resuming" in capsys.readouterr().out.lower()
    pipe = Pipeline.from_pretrained(run)
    assert kind_of(pipe.model) is ToyKind and pipe.spec.provenance.step == 4
    assert main(["sample", str(run), "--out", str(tmp_path / "s.png"), "--num", "2",
                 "--steps", "2"]) == 0
    assert main(["info", str(run)]) == 0
    assert "toy, preset 'toy-tiny'" in capsys.readouterr().out
    assert main(["export", str(run), str(tmp_path / "exp")]) == 0
    card = (tmp_path / "exp" / "README.md").read_text()
    assert "a toy per-pixel network" in card
    g = torch.Generator
    a = Pipeline.from_pretrained(run)(num_videos=2, steps=2, generator=g().manual_seed(1))
    b = Pipeline.from_pretrained(tmp_path / "exp")(num_videos=2, steps=2,
                                                   generator=g().manual_seed(1))
    assert torch.equal(a, b)  # the same weights through the same code


def test_a_registered_kind_refuses_what_it_does_not_take(toy_kind, tmp_path, capsys):
    with pytest.raises(ConfigError, match="model.preset = 'tiny' is not a toy preset; valid: "
                                          "toy-tiny, toy-wide"):
        load_run_config(None, [*TOY, "model.preset=tiny"])
    with pytest.raises(ConfigError, match=r"model.overrides: unknown field\(s\) \['depth'\]"):
        load_run_config(None, [*TOY, "model.overrides.depth=3"])
    run = tmp_path / "run"
    _train(run)
    _train(run, "model.overrides.dropout=0.1", steps=3)  # an execution field may change
    with pytest.raises(SystemExit):
        _train(run, "model.overrides.width=16", steps=4)
    assert "width: checkpoint 8, model 16" in capsys.readouterr().err


def test_an_unset_preset_is_the_kinds_default(toy_kind):
    assert load_run_config(None, []).model.preset == "mini"
    assert load_run_config(None, ["model.kind=dit"]).model.preset == "dit-mini"
    assert load_run_config(None, ["model.kind=toy"]).model.preset == "toy-wide"


def test_an_unknown_kind_lists_the_registered_ones():
    with pytest.raises(ConfigError, match="model.kind = 'toy' is not valid; choose one of "
                                          "cogvideox, dit, ltx, unet, videofusion, wan"):
        load_run_config(None, ["model.kind=toy"])


def test_a_dit_run_resumes_and_refuses_another_architecture(tmp_path, capsys):
    run = tmp_path / "dit"
    dit = ["model.kind=dit", "model.preset=dit-tiny", "model.overrides.patch_size=4"]
    args = ["train", "--out", str(run), "--set", *TINY, *dit]
    assert main([*args[:3], "--steps", "2", *args[3:]]) == 0
    assert main([*args[:3], "--steps", "3", *args[3:],
                 "model.overrides.gradient_checkpointing=true"]) == 0
    assert Pipeline.from_pretrained(run).spec.provenance.step == 3
    with pytest.raises(SystemExit):
        main([*args[:3], "--steps", "4", *args[3:], "model.overrides.depth=3"])
    assert "depth: checkpoint 2, model 3" in capsys.readouterr().err


def test_resume_refuses_another_kind_by_name(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", "--out", str(run), "--steps", "2", "--set", *TINY]) == 0
    with pytest.raises(SystemExit):
        main(["train", "--out", str(run), "--steps", "3", "--set", *TINY, "model.kind=dit",
              "model.preset=dit-tiny"])
    assert "model.kind" in capsys.readouterr().err


SAMPLER = {"ddpm": "ddim", "flow": "euler"}  # a sampler of each process


@pytest.mark.parametrize("name", MODEL_KINDS.names())
def test_every_kind_declares_what_the_library_reads(name):
    kind = MODEL_KINDS.get(name)
    assert kind.tiny_preset in kind.presets and kind.default_preset in kind.presets
    assert kind.image_kind in MODEL_KINDS
    assert set(kind.processes) <= {"ddpm", "flow"} and kind.summary
    assert set(kind.own_settings) <= set(asdict(load_run_config(None, []).model))
    network = kind.network_config(kind.build_for_run(
        load_run_config(None, [*kind.tiny_settings(kind.processes[0]),
                               f"diffusion.process={kind.processes[0]}",
                               f"sample.sampler={SAMPLER[kind.processes[0]]}"]),
        kind.resolve(kind.tiny_preset, {}), None))
    assert kind.architecture(network) == kind.architecture(kind.network_config(
        kind.build(network)))  # the spec's network config rebuilds the same architecture
    assert kind.describe(network)
