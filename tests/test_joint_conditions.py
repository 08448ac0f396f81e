"""Joint image+video training with labels or captions: each of the K ride-along images is
conditioned on its own clip's label or caption (VDM trains text-conditional models this way),
and the U-Net takes conditions per frame slot."""

import pytest
import torch
from _tolerance import assert_close_to
from _train_helpers import tiny_config

from vidiff.models import build_unet
from vidiff.train import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

F, K = 4, 3


@pytest.fixture(scope="module")
def joint(tmp_path_factory):
    out = tmp_path_factory.mktemp("joint") / "run"
    trainer = Trainer(tiny_config(out, f"data.num_images={K}", "data.use_labels=true",
                                  "data.use_captions=true", "data.batch_size=8",
                                  "train.cond_drop_prob=0.3", steps=1), echo=False)
    yield trainer
    trainer.close()


def test_each_image_carries_its_own_clips_label_and_caption(joint):
    """The issue's count: 40 images in a batch of 8 x 5 got another clip's class 35 times;
    now every image's label and caption are those of the clip it was taken from."""
    from vidiff.train.data import ShardedOrder

    batch = next(joint.batches())
    d = joint.config.data  # the same order again: which clip each image was taken from
    items = ShardedOrder(len(joint.dataset), d.batch_size, seed=d.seed, num_images=K,
                         num_frames=F).micro_batch(0)
    labels, captions = batch["label"], batch["caption"]
    assert labels.shape == (8, 1 + K) and all(len(row) == 1 + K for row in captions)
    mismatched = 0
    for b, (_, video, images) in enumerate(items):
        assert labels[b, 0] == joint.dataset[video]["label"]
        for k, j in enumerate(images):
            source = joint.dataset[j // F]  # image j is frame j % F of clip j // F
            mismatched += int(labels[b, 1 + k] != source["label"])
            assert captions[b][1 + k] == source["caption"]
    assert mismatched == 0
    assert (labels[:, 1:] != labels[:, :1]).any()  # the images do come from other clips


def test_conditions_are_per_frame_slot_with_independent_dropout(joint):
    batch = next(joint.batches())
    g = torch.Generator().manual_seed(0)
    drops = torch.rand(8, 1 + K, generator=g)
    cond = joint._cond(batch, drops)
    labels = cond.class_labels
    assert labels.shape == (8, F + K)
    assert (labels[:, :F] == batch["label"][:, :1]).all()  # the clip's frames: its label
    assert torch.equal(labels[:, F:], batch["label"][:, 1:])  # each image: its own
    keep = drops >= joint.config.train.cond_drop_prob
    assert torch.equal(cond.cond_mask[:, F:], keep[:, 1:])
    assert (cond.cond_mask[:, :F] == keep[:, :1]).all()
    assert cond.text_emb.shape[:2] == (8, F + K) and cond.text_mask.shape[:2] == (8, F + K)
    loss = joint.train_step(iter([batch]))[0]  # the model trains on them
    assert loss == loss


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = build_unet("tiny", num_classes=5, text_dim=8).eval()
    for p in model.parameters():  # move every weight off its (partly zero) init
        p.data.add_(torch.randn_like(p) * 0.05)
    return model


def test_per_frame_conditions_equal_per_sample_ones_when_all_frames_agree(net):
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 3, F + K, 16, 16, generator=g), torch.tensor([10, 600])
    labels = torch.tensor([1, 3])
    text, mask = torch.randn(2, 5, 8, generator=g), torch.tensor([[1, 1, 1, 0, 0]] * 2).bool()
    keep = torch.tensor([True, False])
    n = F + K
    with torch.no_grad():
        per_sample = net(x, t, class_labels=labels, text_emb=text, text_mask=mask,
                         cond_mask=keep, num_images=K)
        per_frame = net(x, t, class_labels=labels[:, None].expand(2, n),
                        text_emb=text[:, None].expand(2, n, 5, 8),
                        text_mask=mask[:, None].expand(2, n, 5),
                        cond_mask=keep[:, None].expand(2, n), num_images=K)
    assert_close_to(per_frame, per_sample)


def test_an_images_label_changes_only_that_image(net):
    g = torch.Generator().manual_seed(2)
    x, t = torch.randn(1, 3, F + K, 16, 16, generator=g), torch.tensor([300])
    labels = torch.tensor([[2] * F + [0, 1, 4]])
    other = labels.clone()
    other[0, F + 1] = 3  # image 1 of 3 gets another class
    with torch.no_grad():
        a = net(x, t, class_labels=labels, num_images=K)
        b = net(x, t, class_labels=other, num_images=K)
    changed = (a - b).abs().amax(dim=(0, 1, 3, 4))  # per frame slot
    assert changed[F + 1] > 1e-3
    # exact: every other row sees the same inputs, and masked keys weigh exactly 0
    assert torch.equal(changed[torch.arange(F + K) != F + 1], torch.zeros(F + K - 1))


def test_bad_per_frame_shapes_are_named(net):
    x, t = torch.randn(1, 3, F, 16, 16), torch.tensor([3])
    with pytest.raises(ValueError, match=r"class_labels must be \(B,\) or \(B, F\)"):
        net(x, t, class_labels=torch.zeros(1, F + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="cond_mask must be"):
        net(x, t, cond_mask=torch.ones(2, dtype=torch.bool))


@pytest.mark.parametrize("kind", [["model.kind=dit", "model.preset=dit-tiny"],
                                  ["model.kind=videofusion", "model.base_preset=tiny",
                                   "diffusion.prediction=eps", "prior.name=decomposed"]],
                         ids=["dit", "videofusion"])
def test_every_kind_trains_joint_batches_with_per_frame_conditions(tmp_path, kind):
    """Labels and captions per frame slot reach each kind's networks (VideoFusion's image
    base generator sees its key frame's, a column of the per-frame conditions)."""
    trainer = Trainer(tiny_config(tmp_path / "r", f"data.num_images={K}", *kind,
                                  "data.use_labels=true", "data.use_captions=true",
                                  "train.cond_drop_prob=0.3", steps=1), echo=False)
    try:
        loss, norm = trainer.train_step(trainer.batches())
    finally:
        trainer.close()
    assert loss == loss and norm > 0
