"""CUDA paths: the same model on the GPU as on the CPU, bf16 and fp16 training, exact resume,
torch.compile. Marked `gpu`: skipped (with the reason printed) where no CUDA device exists;
`benchmarks/gpu_check.sh` runs them on a GPU machine."""

import pytest
import torch
from _train_helpers import tiny_config

from vidiff.modelio.checkpoint import load_checkpoint
from vidiff.models import build_unet
from vidiff.train import Trainer, train

pytestmark = pytest.mark.gpu


def _moved(model):
    g = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p.data.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def test_unet_on_cuda_matches_cpu():
    model = _moved(build_unet("tiny", num_classes=3)).eval()
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 3, 4, 16, 16, generator=g), torch.tensor([5, 700])
    y = torch.tensor([0, 2])
    with torch.no_grad():
        cpu = model(x, t, class_labels=y)
        gpu = model.cuda()(x.cuda(), t.cuda(), class_labels=y.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_training_runs_and_resumes_exactly(tmp_path, precision):
    extra = ["train.device=cuda", f"train.precision={precision}", "data.use_labels=true"]
    straight, resumed = tmp_path / "a", tmp_path / "b"
    train(tiny_config(straight, *extra, steps=6), echo=False)
    train(tiny_config(resumed, *extra, steps=6), until=3, echo=False)
    train(tiny_config(resumed, *extra, steps=6), echo=False)
    a, b = load_checkpoint(straight).weights("model"), load_checkpoint(resumed).weights("model")
    for key in a:
        assert torch.isfinite(a[key]).all(), key
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_compiled_model_matches_eager_on_cuda():
    model = _moved(build_unet("tiny")).cuda().eval()
    compiled = torch.compile(model, fullgraph=True)
    x, t = torch.randn(2, 3, 8, 16, 16, device="cuda"), torch.tensor([5, 700], device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        eager, fast = model(x, t).float(), compiled(x, t).float()
    torch.testing.assert_close(fast, eager, atol=3e-2, rtol=3e-2)


def test_trainer_logs_peak_gpu_memory(tmp_path):
    trainer = Trainer(tiny_config(tmp_path / "r", "train.device=cuda", steps=2), echo=False)
    trainer.run()
    trainer.close()
    import json

    record = json.loads((tmp_path / "r" / "log.jsonl").read_text().splitlines()[-1])
    assert record["gpu_mem_gib"] > 0
