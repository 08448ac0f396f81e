"""A Stable Diffusion pipeline's CLIP text encoder: hidden states equal transformers' own, in
SD's form (77 padded tokens, all attended), and a run conditioned on it."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from _sd_helpers import write_tiny_clip  # noqa: E402

from vidiff.text import ClipTextEncoder, is_clip_root, text_encoder_named  # noqa: E402


@pytest.fixture(scope="module")
def clip_root(tmp_path_factory):
    return write_tiny_clip(tmp_path_factory.mktemp("sd"))


def test_hidden_states_equal_transformers(clip_root):
    assert is_clip_root(clip_root) and not is_clip_root(clip_root / "tokenizer")
    text = text_encoder_named(str(clip_root))
    assert isinstance(text, ClipTextEncoder) and text.dim == 32 and text.max_tokens == 77
    captions = ["two red balls", "a blue ball"]
    emb, mask = text(captions)
    assert emb.shape == (2, 77, 32) and mask.all()
    tokenizer = transformers.CLIPTokenizer.from_pretrained(clip_root / "tokenizer")
    ids = tokenizer(captions, padding="max_length", max_length=77, truncation=True,
                    return_tensors="pt").input_ids
    assert ids[0, 1] == tokenizer.convert_tokens_to_ids("two</w>")  # whole words, BPE merged
    model = transformers.CLIPTextModel.from_pretrained(clip_root / "text_encoder").eval()
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    torch.testing.assert_close(emb, out.last_hidden_state, rtol=0, atol=0)
    skipped, _ = ClipTextEncoder(clip_root, skip=1)(captions)
    want = getattr(model, "text_model", model).final_layer_norm(out.hidden_states[-2])
    torch.testing.assert_close(skipped, want, rtol=0, atol=0)
    with pytest.raises(ValueError, match="holds no CLIP text encoder"):
        ClipTextEncoder(clip_root / "tokenizer")


def test_a_run_on_the_clip_encoder_trains_samples_and_exports(clip_root, tmp_path):
    from _train_helpers import TINY

    from vidiff import Pipeline
    from vidiff.cli import main

    out = tmp_path / "t2v"
    assert main(["train", "--out", str(out), "--steps", "2", "--set", *TINY,
                 "data.use_captions=true", f"data.text_encoder={clip_root}"]) == 0
    pipe = Pipeline.from_pretrained(out)
    assert pipe.spec.backbone_config.text_dim == 32 and isinstance(pipe.text_encoder,
                                                               ClipTextEncoder)
    assert main(["sample", str(out), "--caption", "two red balls", "-n", "1", "--out",
                 str(tmp_path / "s.npy")]) == 0
    exported = tmp_path / "exported"
    assert main(["export", str(out), str(exported)]) == 0
    bundle = exported / "text_encoder"
    assert sorted(p.name for p in bundle.iterdir()) == ["text_encoder", "tokenizer"]
    again = Pipeline.from_pretrained(exported)
    assert again.spec.conditioning.text_encoder.name == "text_encoder"
    g = [torch.Generator().manual_seed(1) for _ in range(2)]
    torch.testing.assert_close(again(1, captions=["a blue ball"], generator=g[0]),
                               pipe(1, captions=["a blue ball"], generator=g[1]),
                               rtol=0, atol=0)
