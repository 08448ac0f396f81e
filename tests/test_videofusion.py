"""VideoFusion's decomposed model (docs/MATH.md section 4): the base generator estimates the base
from the key frame once per step, the residual generator (conditioned on the frame index)
estimates the residual noise from z'_t, and ehat_i = sqrt(lambda_i) bhat + sqrt(1 - lambda_i)
rhat^i. Stub generators check the algebra exactly; tiny U-Nets check the rest."""

import json
import math
from dataclasses import asdict

import pytest
import torch
from _tolerance import ONE_OP, assert_close_to
from torch import nn

import vidiff
from vidiff.diffusion.ddpm import DiffusionConfig
from vidiff.diffusion.priors import DecomposedPrior
from vidiff.kinds.videofusion import videofusion_groups
from vidiff.models import (
    FrameConditionedUNet,
    VideoFusion,
    build_unet,
    build_videofusion,
    is_temporal_parameter,
    load_diffusers_unet2d,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (2, 3, 4, 8, 8)  # (B, C, F, H, W); key frame floor(4 / 2) = 2


def perturb(model: nn.Module, seed: int = 0) -> nn.Module:
    """Move every parameter off its init, so zero-initialized output convs (and identity
    temporal blocks) cannot hide a dependence."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            spread = float(p.std()) if p.numel() > 1 else 0.0
            p.add_(torch.randn(p.shape, generator=g) * max(0.5 * spread, 0.05))
    return model


def inputs(shape=SHAPE, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randint(0, 1000, (shape[0],), generator=g)


class StubBase(nn.Module):
    """bhat = 0.5 z + 0.01 t + offset; records every call's input and conditioning."""

    def __init__(self, offset: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(0.5))
        self.offset = offset
        self.calls = []

    def forward(self, z, t, **cond):
        self.calls.append((z.detach().clone(), dict(cond)))
        return self.weight * z + 0.01 * t.view(-1, 1, 1, 1).float() + self.offset


class StubResidual(nn.Module):
    """rhat^i = -0.3 z^i + 0.1 (i + 1); records its input, frame indices and conditioning."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(-0.3))
        self.calls = []

    def forward(self, z, t, *, frame_index, **cond):
        self.calls.append((z.detach().clone(), frame_index.clone(), dict(cond)))
        return self.weight * z + 0.1 * (frame_index + 1).float().view(1, 1, -1, 1, 1)


def stub_model(lam=(0.2, 0.5, 0.3, 0.9), offset=0.0, **kw):
    return VideoFusion(StubBase(offset), StubResidual(), lam=lam, **kw)


def process_of(model):
    """The diffusion a VideoFusion model is trained and sampled with (it holds none)."""
    return vidiff.Diffusion.from_config(model.schedule)


def prior_of(model):
    """The decomposed prior of a VideoFusion model's lambda and key frame."""
    return DecomposedPrior(model.decomposition.lam, model.decomposition.key_frame)


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    return perturb(build_videofusion("tiny", "tiny", **kw), seed)


# -- the decomposed prediction ------------------------------------------------------------
def test_prediction_combines_base_and_residual_exactly():
    model = stub_model()
    x, t = inputs()
    labels = torch.tensor([1, 0])
    eps = model(x, t, class_labels=labels)

    lam = torch.tensor([0.2, 0.5, 1.0, 0.9]).view(1, 1, 4, 1, 1)  # lambda_k = 1 at k = 2
    s = (1 - vidiff.Diffusion().alphas_cumprod[t]).sqrt().float().view(-1, 1, 1, 1, 1)
    bhat = (0.5 * x[:, :, 2] + 0.01 * t.view(-1, 1, 1, 1))[:, :, None]
    z_prime = x - s * lam.sqrt() * bhat
    ((z_seen, index, cond),) = model.residual.calls
    assert_close_to(z_seen, z_prime, ONE_OP)  # the residual sees z'_t
    assert index.tolist() == [0, 1, 2, 3]
    assert cond["class_labels"] is labels and model.base.calls[0][1]["class_labels"] is labels
    rhat = -0.3 * z_prime + 0.1 * torch.arange(1, 5).float().view(1, 1, 4, 1, 1)
    expected = lam.sqrt() * bhat + (1 - lam).sqrt() * rhat
    assert_close_to(eps, expected, ONE_OP)
    # the key frame's prediction is bhat itself (lambda_k = 1: 1 * bhat + 0 * rhat, exact)
    assert torch.equal(eps[:, :, 2], bhat[:, :, 0])

    unconditional_base = stub_model(condition_base=False)
    unconditional_base(x, t, class_labels=labels)
    assert unconditional_base.base.calls[0][1] == {}
    assert unconditional_base.residual.calls[0][2]["class_labels"] is labels


def test_base_runs_once_per_step_on_the_key_frame_only():
    model = stub_model(lam=0.5)
    x, t = inputs((2, 3, 5, 8, 8))
    model(x, t)
    ((z, _),) = model.base.calls
    assert z.shape == (2, 3, 8, 8) and torch.equal(z, x[:, :, 2])  # floor(5 / 2) = 2
    model.base.calls.clear()
    model.residual.calls.clear()
    vidiff.sample(
        model,
        (1, 3, 5, 8, 8),
        diffusion=process_of(model),
        prior=prior_of(model),
        sampler="ddim",
        steps=6,
        generator=torch.Generator().manual_seed(0),
    )
    assert len(model.base.calls) == 6 and len(model.residual.calls) == 6
    assert all(z.shape == (1, 3, 8, 8) for z, _ in model.base.calls)


def test_lambda_zero_frames_come_from_the_residual_alone():
    """lambda_i = 0: z'^i = z^i and ehat_i = rhat^i, no base term. The (video) residual
    generator still sees the whole clip z'_t, whose key frame z^k - s bhat depends on the base;
    with its temporal blocks at their identity init (frames processed apart) a different base
    changes the key frame's prediction only."""
    a = tiny_model(seed=0, lam=0.0)
    x, t = inputs()
    s = process_of(a).alpha_sigma(t, x)[1][:, :, 0]  # sqrt(1 - abar_t), (B, 1, 1, 1)
    with torch.no_grad():
        bhat = a.base(x[:, :, 2], t)
        z_prime = x.clone()
        z_prime[:, :, 2] -= s * bhat
        rhat = a.residual(z_prime, t, frame_index=torch.arange(4))
        ea = a(x, t)
    others = [0, 1, 3]
    # exact: with lambda = 0 the model runs these very ops (1 * rhat + 0 * bhat) on these inputs
    torch.testing.assert_close(ea[:, :, others], rhat[:, :, others], atol=0, rtol=0)
    assert torch.equal(ea[:, :, 2], bhat)  # the key frame: the base's estimate alone

    def per_frame_model(base_seed):
        torch.manual_seed(0)
        model = build_videofusion("tiny", "tiny", lam=0.0)
        perturb(model.base, seed=base_seed)
        with torch.no_grad():  # move every weight but the temporal blocks' (still identity)
            g = torch.Generator().manual_seed(1)
            for name, p in model.residual.named_parameters():
                if not is_temporal_parameter(name):
                    p.add_(torch.randn(p.shape, generator=g) * 0.1)
        return model

    with torch.no_grad():
        e1, e2 = per_frame_model(3)(x, t), per_frame_model(4)(x, t)
    assert_close_to(e1[:, :, others], e2[:, :, others])  # batched with another key frame
    assert not torch.allclose(e1[:, :, 2], e2[:, :, 2])


def test_frame_index_conditions_the_residual_generator():
    torch.manual_seed(0)
    unet = perturb(build_unet("tiny"))
    residual = perturb(FrameConditionedUNet(unet, max_frames=8), seed=1)
    x, t = inputs()
    with torch.no_grad():
        same = residual(x, t, frame_index=torch.arange(4))
        other = residual(x, t, frame_index=torch.arange(4) + 4)
        again = residual(x, t)  # default 0..F-1
        # the hook itself: a zero frame embedding is no frame embedding at all
        zero = unet(x, t, frame_emb=torch.zeros(4, unet.config.emb_dim))
        plain = unet(x, t)
    assert torch.equal(same, again)
    assert (same - other).abs().amax(dim=(0, 1, 3, 4)).min() > 1e-3  # every frame changes
    assert_close_to(zero, plain)  # batched rounding
    with pytest.raises(ValueError, match="max_frames"):
        residual(x, t, frame_index=torch.arange(4) + 5)


# -- training ---------------------------------------------------------------------------------
def _one_step(model, lr, base_lr):
    opt = torch.optim.AdamW(videofusion_groups(model, lr, base_lr, weight_decay=0.01))
    x0, t = inputs()
    noise = prior_of(model).sample(x0.shape, generator=torch.Generator().manual_seed(1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    vidiff.diffusion_loss(model, process_of(model), x0, t, noise).mean().backward()
    opt.step()
    moved = {}
    for name in ("base", "residual"):
        moved[name] = max(
            (model.state_dict()[k] - v).abs().max().item()
            for k, v in before.items()
            if k.startswith(name + ".")
        )
    return moved


def test_base_learns_only_at_its_own_learning_rate():
    model = tiny_model()
    names = [g["name"] for g in videofusion_groups(model, 1e-3, 0.0)]
    assert names == ["residual", "residual/no_decay", "base", "base/no_decay"]
    moved = _one_step(model, lr=1e-3, base_lr=0.0)
    assert moved["base"] == 0.0
    assert 5e-4 < moved["residual"] < 1.1e-3  # Adam's first step: about lr per parameter
    moved = _one_step(tiny_model(), lr=1e-3, base_lr=1e-5)
    assert 5e-6 < moved["base"] < 1.1e-5


def test_frozen_base_gets_no_gradient_and_stays_in_eval_mode():
    model = tiny_model(freeze_base=True).train()
    assert not model.base.training and model.residual.training
    groups = videofusion_groups(model, 1e-3, 1e-5)
    assert [g["name"] for g in groups] == ["residual", "residual/no_decay"]
    x0, t = inputs()
    noise = prior_of(model).sample(x0.shape, generator=torch.Generator().manual_seed(1))
    vidiff.diffusion_loss(model, process_of(model), x0, t, noise).mean().backward()
    assert all(p.grad is None for p in model.base.parameters())
    assert model.residual.frame_embed.weight.grad is not None
    model.freeze_base(False)
    assert model.base.training and all(p.requires_grad for p in model.base.parameters())


def test_training_on_a_fixed_batch_reduces_the_loss():
    torch.manual_seed(0)
    model = build_videofusion("tiny", "tiny", lam=0.5)
    opt = torch.optim.AdamW(videofusion_groups(model, lr=3e-3, base_lr=1e-3))
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand(2, 3, 4, 8, 8, generator=g) * 2 - 1
    t = torch.tensor([100, 400])
    noise = prior_of(model).sample(x0.shape, generator=g)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = vidiff.diffusion_loss(model, process_of(model), x0, t, noise).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.7 * losses[0], losses


# -- sampling, checkpoints, pretrained bases ------------------------------------------------------
@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp_2m"])
def test_samplers_work_unchanged(sampler):
    model = tiny_model(lam=0.5).eval()
    video = vidiff.sample(
        model,
        (2, 3, 4, 8, 8),
        diffusion=process_of(model),
        prior=prior_of(model),
        sampler=sampler,
        steps=4,
        generator=torch.Generator().manual_seed(0),
    )
    assert video.shape == (2, 3, 4, 8, 8) and torch.isfinite(video).all()


def test_state_dict_and_config_round_trip():
    model = tiny_model(lam=(0.3, 0.6, 0.5, 0.4), key_frame=1, max_frames=16, detach_base=False)
    sd = model.state_dict()
    assert all(
        k.startswith(("base.", "residual.unet.")) for k in sd if k != "residual.frame_embed.weight"
    )
    assert sd["residual.frame_embed.weight"].shape == (16, model.residual.config.emb_dim)
    config = json.loads(json.dumps(model.config_dict()))
    rebuilt = VideoFusion.from_config(config)
    rebuilt.load_state_dict(sd)
    assert rebuilt.config_dict() == config and not rebuilt.detach_base
    assert rebuilt.decomposition.key_index(4) == 1
    x, t = inputs()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x, t), model.eval()(x, t), atol=0, rtol=0)


def test_diffusers_unet2d_as_the_base_generator(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    dm = diffusers.UNet2DModel(
        sample_size=8,
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=8,
    ).eval()
    dm.save_pretrained(tmp_path)
    model = build_videofusion(tmp_path, "tiny", lam=0.5).eval()
    assert not model.base.config.temporal and model.residual.config.temporal
    x, t = inputs()
    with torch.no_grad():
        eps = model(x, t)
        expected = dm(x[:, :, 2], t).sample
    torch.testing.assert_close(eps[:, :, 2], expected, atol=1e-5, rtol=1e-5)
    # the same through the loader and the class directly
    base = load_diffusers_unet2d(tmp_path, temporal=False)
    direct = VideoFusion(base, model.residual, lam=0.5).eval()
    with torch.no_grad():
        assert_close_to(direct(x, t), eps)


def test_joint_image_batches_and_images():
    model = tiny_model(lam=0.5).eval()
    x, t = inputs((1, 3, 6, 8, 8))
    with torch.no_grad():
        eps = model(x, t, num_images=2)  # 4 video frames (key frame 2) + 2 images
        bhat = model.base(x[:, :, 2], t)
        image = model(x[:, :, 0], t)  # a (B, C, H, W) image: the base alone
    assert eps.shape == x.shape
    torch.testing.assert_close(eps[:, :, 2], bhat, atol=0, rtol=0)
    torch.testing.assert_close(image, model.base(x[:, :, 0], t), atol=0, rtol=0)


def test_bad_setups_raise_clear_errors():
    with pytest.raises(ValueError, match="predicts eps"):
        VideoFusion(StubBase(), StubResidual(), schedule=vidiff.DiffusionConfig(prediction="v"))
    with pytest.raises(ValueError, match="diffusion.process = 'ddpm'.*velocity"):
        VideoFusion(StubBase(), StubResidual(), schedule=vidiff.DiffusionConfig(process="flow"))
    with pytest.raises(ValueError, match="lam"):
        VideoFusion(StubBase(), StubResidual(), lam=1.5)
    with pytest.raises(ValueError, match="image U-Net"):
        VideoFusion(build_unet("tiny"), StubResidual())
    with pytest.raises(ValueError, match="int64 timesteps"):
        stub_model()(*inputs()[:1], torch.tensor([0.5, 0.5]))  # a flow's float time
    with pytest.raises(ValueError, match="lowres"):
        stub_model()(*inputs(), vidiff.Cond(lowres=torch.zeros(2, 3, 4, 4, 4)))
    with pytest.raises(TypeError, match="config_dict"):
        stub_model().config_dict()


def test_the_network_holds_no_diffusion_or_prior_and_its_schedule_is_not_saved():
    """Its architecture is the decomposition and the schedule's config; the noise scale is a
    buffer rebuilt from the config (so the state dict, and checkpoints, are as before)."""
    model = tiny_model(lam=0.5)
    held = [type(v).__name__ for v in vars(model).values()
            if isinstance(v, (vidiff.Diffusion, vidiff.NoisePrior))]
    assert held == [] and not hasattr(model, "param_groups")  # grouping: train/build.py's
    assert "alphas_cumprod" not in model.state_dict()
    abar = vidiff.Diffusion.from_config(model.schedule).alphas_cumprod
    assert torch.equal(model.alphas_cumprod, abar.float())
    other = tiny_model(lam=0.5, schedule=vidiff.DiffusionConfig(schedule="cosine", timesteps=50))
    x, t = inputs()
    with torch.no_grad():  # the same weights under another schedule remove another s_t
        other.load_state_dict(model.state_dict())
        assert not torch.allclose(other(x, t % 50), model(x, t % 50))


def test_a_checkpoint_of_the_earlier_videofusion_loads_and_predicts_the_same():
    """tests/fixtures/videofusion_v1: the config, weights and a prediction written by the
    VideoFusion that held its own Diffusion and DecomposedPrior (commit 7f4601e)."""
    from pathlib import Path

    from safetensors.torch import load_file

    from vidiff.kinds import MODEL_KINDS

    folder = Path(__file__).parent / "fixtures" / "videofusion_v1"
    config = json.loads((folder / "config.json").read_text())
    model = MODEL_KINDS.get("videofusion").build(config)
    model.load_state_dict(load_file(folder / "model.safetensors"))  # strict: the same keys
    # the record read back, the [diffusion] fields added since at their defaults
    filled = {**asdict(DiffusionConfig()), **config["diffusion"]}
    # and the U-Net fields added since (guidance_embed) at theirs
    generators = {part: {**config[part], "unet": {"guidance_embed": False,
                                                  **config[part]["unet"]}}
                  for part in ("base", "residual")}
    assert model.config_dict() == {**config, **generators, "diffusion": filled}
    assert model.decomposition.key_index(4) == 1 and model.schedule.timesteps == 200
    want = load_file(folder / "expected.safetensors")
    with torch.no_grad():
        eps = model.eval()(want["x"], want["t"], class_labels=want["class_labels"])
    # float32 convolutions of O(1) values: rounding (1e-7 each) summed over a few hundred terms
    torch.testing.assert_close(eps, want["eps"], rtol=1e-5, atol=1e-5)


# -- vidiff train: model.kind = "videofusion" ----------------------------------------------------
def _trainer(tmp_path, *extra):
    from _train_helpers import tiny_config

    from vidiff.train import Trainer

    config = tiny_config(tmp_path, "model.kind=videofusion", "prior.name=decomposed",
                         "prior.params.lam=0.3", "diffusion.prediction=eps", *extra, steps=2)
    return Trainer(config, echo=False)


def test_trainer_fine_tunes_the_base_at_model_base_lr_only(tmp_path):
    trainer = _trainer(tmp_path, "model.base_lr=0.0")
    model = trainer.raw
    assert isinstance(model, VideoFusion) and model.frame_lambdas(4).tolist()[0] == 0.3
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.run()
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items() if k.startswith("base."))
    assert any(not torch.equal(after[k], v) for k, v in before.items() if k.startswith("resid"))
    trainer.close()
    frozen = _trainer(tmp_path / "frozen", "model.freeze_base=true")
    names = [g["name"] for g in frozen.optimizer.param_groups]
    assert names == ["residual", "residual/no_decay"] and frozen.raw.base_frozen
    frozen.close()


def test_trainer_checkpoint_loads_back_for_sampling(tmp_path):
    from vidiff import Pipeline

    trainer = _trainer(tmp_path)
    trainer.run()
    trainer.close()
    pipe = Pipeline.from_pretrained(tmp_path)
    model = pipe.model
    assert isinstance(model, VideoFusion) and pipe.prior.params()["lam"] == 0.3
    assert pipe.spec.kind == "videofusion"
    assert model.config_dict() == trainer.ema.model.config_dict()
    x, t = inputs((1, 3, 4, 16, 16))
    with torch.no_grad():
        torch.testing.assert_close(model(x, t), trainer.ema.model.eval()(x, t), atol=0, rtol=0)


def test_the_schedule_keeps_its_snr_shift():
    """VideoFusion's noise scales come from the whole DDPM schedule: an SNR shift (CogVideoX's
    snr_shift_scale) is not dropped on the way into the model."""
    from vidiff.models.videofusion import build_videofusion

    shifted = DiffusionConfig("cosine", 50, "eps", snr_shift=3.0)
    model = build_videofusion("tiny", "tiny", schedule=shifted)
    want = vidiff.Diffusion("cosine", 50, "eps", snr_shift=3.0).alphas_cumprod.float()
    assert model.schedule.snr_shift == 3.0
    assert torch.equal(model.alphas_cumprod, want)
    plain = vidiff.Diffusion("cosine", 50, "eps").alphas_cumprod.float()
    assert not torch.allclose(model.alphas_cumprod, plain)
