"""The factorized space-time DiT: shapes, identity-initialised temporal blocks (inflation is
exact), the joint-training mask, checkpointing, no graph breaks, parity with diffusers'
DiTTransformer2DModel and PixArtTransformer2DModel (image and inflated), and runs."""

import json

import pytest
import torch
from _sd_helpers import random_weights
from _tolerance import BACKWARD, assert_close_to, assert_parity

from vidiff.models import DiT, dit_config, inflate_dit, is_temporal_parameter


def _inputs(frames=4, size=8, channels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, channels, frames, size, size, generator=g), torch.tensor([3, 870]),
            torch.tensor([1, 4]), torch.randn(2, 5, 12, generator=g))


@pytest.mark.parametrize("patch", [1, 2, 4])
def test_shapes_for_videos_and_images(patch):
    model = DiT(dit_config("dit-tiny", patch_size=patch, num_classes=5, text_dim=12))
    x, t, y, text = _inputs()
    with torch.no_grad():
        assert model(x, t, class_labels=y, text_emb=text).shape == x.shape
        assert model(x[:, :, 0], t, class_labels=y).shape == x[:, :, 0].shape
    with pytest.raises(ValueError, match="divisible by the patch"):
        DiT(dit_config("dit-tiny", patch_size=3))(x, t)


def test_a_new_dit_predicts_zero_and_an_inflated_one_is_the_image_model_per_frame():
    cfg = dit_config("dit-tiny", temporal=False, num_classes=5, text_dim=12)
    x, t, y, text = _inputs()
    with torch.no_grad():
        assert DiT(cfg)(x[:, :, 0], t).abs().max() == 0  # adaLN-Zero: the final layer at 0
    image = random_weights(DiT(cfg))
    video = inflate_dit(image)
    assert sum(is_temporal_parameter(n) for n, _ in video.named_parameters()) > 0
    with torch.no_grad():
        got = video(x, t, class_labels=y, text_emb=text)
        want = torch.stack([image(x[:, :, f], t, class_labels=y, text_emb=text)
                            for f in range(4)], dim=2)
    assert want.abs().max() > 0.1
    assert_close_to(got, want)
    with pytest.raises(ValueError, match="image DiT"):
        inflate_dit(video)


def test_temporal_blocks_mix_frames_and_joint_training_images_see_only_themselves():
    model = random_weights(DiT(dit_config("dit-tiny", num_classes=5)), std=0.2)
    x, t, y, _ = _inputs(frames=5)
    k = 2  # the last 2 frames are independent images
    with torch.no_grad():
        out = model(x, t, class_labels=y, num_images=k)
        moved = x.clone()
        moved[:, :, 0] += 1.0  # change a video frame
        again = model(moved, t, class_labels=y, num_images=k)
        alone = model(x[:, :, -1:], t, class_labels=y)  # the last image as a 1-frame clip
        plain = model(moved, t, class_labels=y)  # no images: frame 0 reaches every frame
    assert (again[:, :, 1] - out[:, :, 1]).abs().max() > 1e-4  # video frames see each other
    assert_close_to(again[:, :, -k:], out[:, :, -k:])
    assert_close_to(out[:, :, -1:], alone)
    assert (plain[:, :, -1] - out[:, :, -1]).abs().max() > 1e-4


def test_conditions_null_and_per_frame():
    model = random_weights(DiT(dit_config("dit-tiny", num_classes=5, text_dim=12)))
    x, t, y, text = _inputs()
    with torch.no_grad():
        null = model(x, t)
        dropped = model(x, t, class_labels=y, text_emb=text,
                        cond_mask=torch.tensor([False, True]))
        cond = model(x, t, class_labels=y, text_emb=text)
        per_frame = model(x, t, class_labels=y[:, None].expand(2, 4), text_emb=text)
    assert_close_to(dropped[0], null[0])
    assert_close_to(dropped[1], cond[1])
    assert_close_to(per_frame, cond)
    with pytest.raises(ValueError, match="num_classes=None"):
        DiT(dit_config("dit-tiny"))(x, t, class_labels=y)


def test_checkpointing_gives_the_same_gradients_and_dynamo_sees_no_graph_break():
    import torch._dynamo as dynamo

    model = random_weights(DiT(dit_config("dit-tiny", num_classes=5)))
    x, t, y, _ = _inputs()
    grads = []
    for enabled in (False, True):
        model.zero_grad()
        model.set_gradient_checkpointing(enabled)
        model(x, t, class_labels=y, num_images=1).square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        assert_close_to(a, b, BACKWARD)
    model.set_gradient_checkpointing(False)
    explained = dynamo.explain(model)(x, t, class_labels=y, num_images=1)
    assert explained.graph_break_count == 0, explained.break_reasons


# -- diffusers imports ------------------------------------------------------------------------
diffusers = pytest.importorskip("diffusers")


def _dit_ref(tmp_path, tie=True, in_channels=4, classes=10):
    torch.manual_seed(0)
    ref = random_weights(diffusers.DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=in_channels,
        out_channels=2 * in_channels, num_layers=2, sample_size=8, patch_size=2,
        num_embeds_ada_norm=classes)).eval()
    if tie:  # released DiT checkpoints hold one embedder, copied into every block
        first = dict(ref.transformer_blocks[0].norm1.emb.named_parameters())
        with torch.no_grad():
            for block in ref.transformer_blocks[1:]:
                for n, p in block.norm1.emb.named_parameters():
                    p.copy_(first[n])
    ref.save_pretrained(tmp_path)
    return ref


@pytest.mark.parametrize("tie", [True, False])
def test_diffusers_dit_equals_diffusers_image_and_inflated(tmp_path, tie):
    """Tied: the released checkpoints' one embedder copied into every block. Untied (a DiT
    fine-tuned in diffusers): each block's own embedders, imported per block."""
    from vidiff.models import load_diffusers_transformer

    ref = _dit_ref(tmp_path / "dit", tie=tie)
    image = load_diffusers_transformer(tmp_path / "dit", inflate=False)
    assert image.config.block_embedders is not tie
    assert "variance channels were dropped" in image.import_notes[-1]
    assert tie or "embedders differ" in image.import_notes[0]
    video = load_diffusers_transformer(tmp_path / "dit")
    x, t, y, _ = _inputs(frames=3, channels=4)
    with torch.no_grad():
        want = torch.stack([ref(x[:, :, f], t, class_labels=y).sample[:, :4]
                            for f in range(3)], dim=2)  # the noise channels
        assert_parity(image(x[:, :, 0], t, class_labels=y), want[:, :, 0])
        assert_parity(video(x, t, class_labels=y), want)
        assert_parity(video(x, t, class_labels=y, cond_mask=torch.tensor([True, False]))[1],
                      torch.stack([ref(x[1:, :, f], t[1:], class_labels=torch.tensor([10]))
                                   .sample[0, :4] for f in range(3)], dim=1))  # the null row
    with pytest.raises(ValueError, match="block_embedders"):
        DiT(dit_config("dit-tiny", adaln="single", block_embedders=True))


def test_diffusers_pixart_equals_diffusers_image_and_inflated(tmp_path):
    from vidiff.models import load_diffusers_transformer

    torch.manual_seed(0)
    ref = random_weights(diffusers.PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8,
        num_layers=2, sample_size=16, patch_size=2, cross_attention_dim=32,
        caption_channels=12, use_additional_conditions=False)).eval()
    ref.save_pretrained(tmp_path / "pixart")
    video = load_diffusers_transformer(tmp_path / "pixart")
    assert video.config.adaln == "single" and video.config.text_dim == 12
    x, t, _, text = _inputs(frames=3, size=16, channels=4)
    extra = {"resolution": None, "aspect_ratio": None}
    with torch.no_grad():
        want = torch.stack([ref(x[:, :, f], encoder_hidden_states=text, timestep=t,
                                added_cond_kwargs=extra).sample[:, :4] for f in range(3)], 2)
        assert_parity(video(x, t, text_emb=text), want)


@pytest.mark.parametrize("field,value,words", [
    ("norm_type", "ada_norm", "norm_type='ada_norm'"),
    ("activation_fn", "geglu", "activation_fn='geglu'"),
    ("out_channels", 5, "learned sigma"),
    ("_class_name", "SD3Transformer2DModel", "vidiff imports"),
])
def test_unsupported_transformer_configs_are_refused_by_name(tmp_path, field, value, words):
    from vidiff.models import load_diffusers_transformer

    _dit_ref(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config[field] = value
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="config.json") as err:
        load_diffusers_transformer(tmp_path)
    assert words in str(err.value)


def test_dit_runs_train_from_a_diffusers_dit_sample_extend_and_export(tmp_path):
    """model.kind = dit from a diffusers DiT folder (pixel space, the 8 ball classes), joint
    image+video training, then sample, extend and export through the commands."""
    import numpy as np
    from _train_helpers import TINY

    from vidiff import Pipeline
    from vidiff.cli import main

    _dit_ref(tmp_path / "dit", in_channels=3, classes=8)
    out = tmp_path / "run"
    tiny = [s for s in TINY if not s.startswith(("model.preset", "data.use_labels"))]
    assert main(["train", "--out", str(out), "--steps", "3", "--init-from",
                 str(tmp_path / "dit"), "--set", *tiny, "model.kind=dit",
                 "model.preset=dit-tiny", "data.num_images=1", "data.size=8",
                 "train.trainable=temporal"]) == 0
    pipe = Pipeline.from_pretrained(out)
    assert isinstance(pipe.model, DiT) and pipe.spec.num_classes == 8
    npy = tmp_path / "s.npy"
    assert main(["sample", str(out), "-n", "2", "--class", "1", "--out", str(npy)]) == 0
    assert np.load(npy).shape == (2, 4, 8, 8, 3)
    assert main(["extend", str(out), "--input", str(npy), "--frames", "6", "--steps", "2",
                 "--out", str(tmp_path / "e.npy")]) == 0
    assert np.load(tmp_path / "e.npy").shape[1] == 6
    exported = tmp_path / "exported"
    assert main(["export", str(out), str(exported)]) == 0
    g = [torch.Generator().manual_seed(0) for _ in range(2)]
    assert_close_to(Pipeline.from_pretrained(exported)(1, generator=g[0]),
                    pipe(1, generator=g[1]))


def test_dit_text_latent_interpolate_upsample_and_eval(tmp_path):
    """A text-conditional DiT on latents (the tiny VAE), then the window commands, guidance
    super-resolution through the downsampling, and eval: the U-Net's paths, unchanged."""
    import numpy as np
    from _sd_helpers import write_tiny_vae
    from _train_helpers import TINY

    from vidiff import Pipeline
    from vidiff.cli import main

    vae = write_tiny_vae(tmp_path / "sd")
    out = tmp_path / "latent_dit"
    tiny = [s for s in TINY if not s.startswith("model.preset")]
    assert main(["train", "--out", str(out), "--steps", "2", "--set", *tiny,
                 "model.kind=dit", "model.preset=dit-tiny", f"data.autoencoder={vae}",
                 "data.use_captions=true"]) == 0
    pipe = Pipeline.from_pretrained(out)
    assert pipe.spec.shape.channels == 4 and pipe.spec.backbone_config.text_dim == 64
    videos = pipe(2, captions=["a red ball"], generator=torch.Generator().manual_seed(0))
    assert videos.shape == (2, 3, 4, 16, 16)
    clip = tmp_path / "clip.npy"
    np.save(clip, (videos[:1].permute(0, 2, 3, 4, 1).numpy() * 127.5 + 127.5).astype("uint8"))
    assert main(["interpolate", str(out), "--input", str(clip), "--factor", "2", "--steps",
                 "2", "--out", str(tmp_path / "i.npy")]) == 0
    assert np.load(tmp_path / "i.npy").shape == (1, 7, 16, 16, 3)
    pixel = tmp_path / "pixel_dit"
    assert main(["train", "--out", str(pixel), "--steps", "2", "--set", *tiny,
                 "model.kind=dit", "model.preset=dit-tiny", "prior.name=mixed"]) == 0
    small = tmp_path / "small.npy"
    np.save(small, np.zeros((1, 4, 8, 8, 3), dtype="uint8"))
    assert main(["upsample", str(pixel), "--input", str(small), "--steps", "2", "--out",
                 str(tmp_path / "u.npy")]) == 0
    assert np.load(tmp_path / "u.npy").shape == (1, 4, 16, 16, 3)
    assert main(["eval", "-c", str(pixel), "--num", "4", "--steps", "2", "-r",
                 "bouncing_balls", "--reference-num", "4", "--frames", "4", "--size", "16",
                 "--no-progress", "-o", str(tmp_path / "e.json")]) == 0
    assert "fvd_lite" in (tmp_path / "e.json").read_text()
