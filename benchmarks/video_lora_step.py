"""One LoRA training step of the same tiny Wan 2.1 transformer: vidiff against its peers.

Sides, each in its own fresh process (CPU time and peak memory its own; not --in-process):
- vidiff: the real `vidiff.train.Trainer` of the CLI's config (model.kind=wan, init_from a
  tiny Wan folder, flow matching, captions, LoRA rank 4 on to_q, to_k, to_v, to_out.0),
  timed through `Trainer.train_step` on one batch of its cached latents;
- diffusers+peft: diffusers' example LoRA step (train_dreambooth_lora_sd3.py) written out
  plainly: add_adapter(LoraConfig) on the same layers, logit-normal u -> scheduler timestep
  -> sigma, x_t = (1 - s) x0 + s eps, MSE on eps - x0, clip_grad_norm_(1.0), AdamW;
- finetrainers 0.2.0 (its own venv, --finetrainers-python): its pieces, called as its
  SFTTrainer._train calls them: WanModelSpecification's loading and forward (posterior
  sample of the cached moments, noise, flow_match_xt, int timesteps, flow_match_target),
  utils.prepare_sigmas / prepare_loss_weights, the trainer's loss lines, its grad clip, its
  AdamW and LR scheduler; LoRA by add_adapter(LoraConfig(init_lora_weights=True)).

Step 1 of every side has identical inputs: vidiff's cached latents x0 (B, C, f, h, w) and
caption embeddings (B, 512, D), the same noise, t = (i + 0.5) / B (1000 t exact integers,
so finetrainers' int timesteps are the others' float ones), the same weights and LoRA A/B
(vidiff's init, copied); finetrainers' latent is its posterior sample of (mu, logvar = -30),
mu set so that the sample is x0. Its losses must agree to float rounding. Then each side
draws its own t and noise, as in training. CPU s / step: the median over --steps steps
after 2 warm-ups (the first is step 1) of time.process_time (all threads; torch at 1).
Peak RSS delta: the high-water mark over the steps (VmHWM, reset by /proc/self/clear_refs)
minus the resident set before them.

finetrainers' venv (its 0.2.0 wheel lacks finetrainers/patches/dependencies/, so `import
finetrainers` fails: the worker imports its modules without the package __init__; PyPI's
torchvision wheels are CUDA builds that cannot load with torch+cpu: uninstalled, a stub
stands in for the video-reader type that finetrainers.data names):

    python3.11 -m venv /tmp/peervenv && /tmp/peervenv/bin/pip install torch==2.13.0
    /tmp/peervenv/bin/pip install -c cons.txt finetrainers==0.2.0 diffusers transformers peft
    /tmp/peervenv/bin/pip uninstall -y torchvision

    python benchmarks/video_lora_step.py [--size small|medium] [--steps 10] [--json OUT]
        [--finetrainers-python /tmp/peervenv/bin/python | none] [--in-process]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve()
RANK, LR, SEED = 4, 1e-4, 0
TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]  # vidiff's Wan LoRA targets (16 layers)
FT_TARGETS = "blocks.*(to_q|to_k|to_v|to_out.0)"  # finetrainers' Wan examples' regex
SIZES = {  # clip frames x size x size, batch, and the transformer (None: the tests' tiny one)
    "small": dict(frames=9, size=32, batch=2, transformer=None),
    "medium": dict(frames=17, size=64, batch=2, transformer=dict(
        patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=32, in_channels=4,
        out_channels=4, text_dim=16, freq_dim=64, ffn_dim=512, num_layers=4,
        rope_max_seq_len=1024)),
}
LABELS = {"vidiff": "vidiff (Trainer.train_step)",
          "diffusers-peft": "diffusers+peft (examples' step, plain)",
          "finetrainers": "finetrainers 0.2.0 (its Wan spec + step)"}


# -- measuring --------------------------------------------------------------------------------
def _rss_mib(field: str) -> float:  # VmRSS or VmHWM of this process, MiB
    lines = Path("/proc/self/status").read_text().splitlines()
    return next((int(x.split()[1]) / 1024 for x in lines if x.startswith(field + ":")), -1.0)


def measure(fixed_step, own_step, steps: int) -> dict:
    """fixed_step() is step 1 on the shared inputs (also warm-up 1), own_step() a step with
    the side's own draws; each returns the loss. CPU seconds of the `steps` timed steps."""
    torch.set_num_threads(1)
    with contextlib.suppress(OSError):  # reset the peak resident set (VmHWM) to the current
        Path("/proc/self/clear_refs").write_text("5")
    rss0 = _rss_mib("VmRSS")
    loss1 = float(fixed_step())
    own_step()  # warm-up 2
    times = []
    for _ in range(steps):
        c = time.process_time()
        own_step()
        times.append(time.process_time() - c)
    return {"loss1": loss1, "cpu_s": statistics.median(times), "cpu_all": times,
            "rss_delta_mib": _rss_mib("VmHWM") - rss0}


# -- the shared inputs and vidiff's side (main venv) --------------------------------------------
def write_folder(root: Path, size: str) -> None:
    """The tests' tiny Wan pipeline folder; `medium` swaps in a larger transformer."""
    sys.path.insert(0, str(HERE.parents[1] / "tests"))
    import _video_pipelines as vp

    vp.write_pipeline(root, "wan", seed=SEED)
    cfg = SIZES[size]["transformer"]
    if cfg is not None:
        import diffusers

        torch.manual_seed(SEED)
        net = diffusers.WanTransformer3DModel(**cfg).eval()
        vp.fill_zero_layers(net, torch.Generator().manual_seed(SEED))  # as write_pipeline
        net.save_pretrained(root / "transformer")


def run_vidiff(work: Path, size: str, steps: int) -> dict:
    from vidiff.train.config import load_run_config
    from vidiff.train.trainer import Trainer

    s = SIZES[size]
    config = load_run_config(None, [
        f"train.out={work / 'run'}", "model.kind=wan", f"model.init_from={work / 'wan'}",
        "diffusion.process=flow", "sample.sampler=euler", "data.use_captions=true",
        f"data.frames={s['frames']}", f"data.size={s['size']}", f"data.batch_size={s['batch']}",
        f"data.num_videos={s['batch']}", f"train.steps={steps + 2}", f"train.lr={LR}",
        f"train.lora.rank={RANK}", "prior.name=independent", "train.sample_every=0",
        "train.ckpt_every=0", "sample.steps=2", "train.progress=false", "train.ema_decay=0",
        "train.threads=1", f"train.seed={SEED}", "train.warmup=0"])
    trainer = Trainer(config, echo=False)
    try:
        batch = next(trainer.batches())  # {"video": x0 (B, C, f, h, w) latents, "caption"}
        x0, b = batch["video"], len(batch["video"])
        emb, _ = trainer.text_encoder([c for row in batch["caption"] for c in row], "cpu")
        t = (torch.arange(b, dtype=torch.float32) + 0.5) / b  # (B,) 1000 t exact integers
        g = torch.Generator().manual_seed(SEED + 1)
        post_eps = torch.randn(x0.shape, generator=g)  # finetrainers' posterior draw, then
        noise = torch.randn(x0.shape, generator=g)  # its noise (both from the global RNG)
        lora = {n.removeprefix("transformer."): p.detach().clone()
                for n, p in trainer.raw.named_parameters() if ".lora_" in n}
        torch.save(dict(x0=x0, emb=emb, t=t, noise=noise, post_eps=post_eps, lora=lora,
                        seed=SEED + 1), work / "inputs.pt")
        keep = torch.ones(b, 1)  # condition-dropout uniforms >= cond_drop_prob: no dropout

        def fixed():  # vidiff's real step with its draws (t, noise, drops) replaced once
            trainer.stepper.draws = lambda position, shape: (t, noise, keep)
            try:
                return trainer.train_step(iter([batch]))[0]
            finally:
                del trainer.stepper.draws  # back to the Stepper's own per-sample draws

        result = measure(fixed, lambda: trainer.train_step(iter([batch]))[0], steps)
        result["lora_layers"] = len(lora) // 2
    finally:
        trainer.close()
    return result


# -- the plain diffusers+peft step ---------------------------------------------------------------
def copy_lora(net, inputs: dict) -> None:
    """vidiff's initial LoRA A and B into `net` (the same adapters and init on every side)."""
    names = {k for k in net.state_dict() if ".lora_" in k}
    if names != set(inputs["lora"]):
        raise RuntimeError(f"LoRA layers differ from vidiff's: "
                           f"{sorted(names ^ set(inputs['lora']))[:4]}")
    net.load_state_dict(inputs["lora"], strict=False)


def run_diffusers_peft(work: Path, size: str, steps: int) -> dict:
    import diffusers
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers import training_utils as tu
    from peft import LoraConfig

    inputs = torch.load(work / "inputs.pt")
    root = work / "wan"
    net = diffusers.WanTransformer3DModel.from_pretrained(root / "transformer")  # fp32
    net.requires_grad_(False)
    net.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, init_lora_weights="gaussian",
                               target_modules=TARGETS))
    copy_lora(net, inputs)
    net.train()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.999), weight_decay=1e-4, eps=1e-8)
    sched = FlowMatchEulerDiscreteScheduler.from_pretrained(root, subfolder="scheduler")
    x0, emb = inputs["x0"], inputs["emb"]  # (B, C, f, h, w), (B, L, D)
    b = x0.shape[0]

    def step(sigma, timestep, noise):
        s = sigma.view(-1, 1, 1, 1, 1)  # (B,) -> (B, 1, 1, 1, 1)
        pred = net(hidden_states=(1.0 - s) * x0 + s * noise, timestep=timestep,
                   encoder_hidden_states=emb, return_dict=False)[0]
        w = tu.compute_loss_weighting_for_sd3("logit_normal", sigmas=s)
        loss = (w.float() * (pred.float() - (noise - x0)).square()).reshape(b, -1).mean(1).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    def own():  # train_dreambooth_lora_sd3.py: u -> index -> timestep -> sigma
        u = tu.compute_density_for_timestep_sampling("logit_normal", b, logit_mean=0.0,
                                                     logit_std=1.0)
        idx = (u * sched.config.num_train_timesteps).long()
        return step(sched.sigmas[idx], sched.timesteps[idx], torch.randn_like(x0))

    return measure(lambda: step(inputs["t"], inputs["t"] * 1000.0, inputs["noise"]), own, steps)


# -- finetrainers (its own venv) -----------------------------------------------------------------
def _import_finetrainers():
    """finetrainers' modules, without its package __init__ (see the module docstring)."""
    import importlib.machinery
    import importlib.util
    import types

    import datasets  # noqa: F401  its torchvision probe, before any stub
    import diffusers.loaders.peft  # noqa: F401
    import transformers  # noqa: F401

    if importlib.util.find_spec("torchvision") is None:  # finetrainers.data names its type
        tv = types.ModuleType("torchvision")
        tv.io = types.ModuleType("torchvision.io")
        tv.io.video_reader = types.ModuleType("torchvision.io.video_reader")
        tv.io.video_reader.VideoReader = type("VideoReader", (), {})
        sys.modules.update({"torchvision": tv, "torchvision.io": tv.io,
                            "torchvision.io.video_reader": tv.io.video_reader})
    root = Path(importlib.util.find_spec("finetrainers").submodule_search_locations[0])
    for name in ("finetrainers", "finetrainers.models.wan"):  # bare packages
        path = str(root.joinpath(*name.split(".")[1:]))
        pkg = types.ModuleType(name)
        pkg.__path__ = [path]
        pkg.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        pkg.__spec__.submodule_search_locations = [path]
        sys.modules[name] = pkg
    import finetrainers.functional as FF
    from finetrainers import optimizer, utils
    from finetrainers.models.wan.base_specification import WanModelSpecification
    from finetrainers.parallel import ParallelBackendEnum

    return WanModelSpecification, utils, FF, optimizer, ParallelBackendEnum


def run_finetrainers(work: Path, size: str, steps: int) -> dict:
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    Spec, utils, FF, optimizer, Backend = _import_finetrainers()
    inputs = torch.load(work / "inputs.pt")
    f32 = torch.float32
    spec = Spec(pretrained_model_name_or_path=str(work / "wan"), text_encoder_dtype=f32,
                transformer_dtype=f32, vae_dtype=f32)
    models = spec.load_diffusion_models()  # transformer, FlowMatchEulerDiscreteScheduler()
    net = models["transformer"]  # LoRA as SFTTrainer._prepare_trainable_parameters adds it
    utils.set_requires_grad([net], False)
    net.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, init_lora_weights=True,
                               target_modules=FT_TARGETS))
    cast_training_params([net], dtype=f32)
    copy_lora(net, inputs)
    net.train()
    scheduler = models["scheduler"]
    opt = optimizer.get_optimizer(Backend.ACCELERATE, "adamw", [net], learning_rate=LR)
    lr_sched = optimizer.get_lr_scheduler(Backend.ACCELERATE, "constant", opt,
                                          num_warmup_steps=0, num_training_steps=steps + 2)
    x0, emb, b, c = inputs["x0"], inputs["emb"], *inputs["x0"].shape[:2]
    # the cached posterior moments (B, 2C, f, h, w): logvar -30 (std e^-15), mu chosen so
    # that finetrainers' posterior sample mu + std eps is x0; latents_mean 0, std 1
    std = torch.exp(torch.tensor(-15.0))
    moments = torch.cat([x0 - std * inputs["post_eps"], torch.full_like(x0, -30.0)], dim=1)
    seen = {}
    flow_match_xt = FF.flow_match_xt

    def record(latents, noise, sigmas):  # pass-through: what its forward drew, once
        seen.setdefault("x0_noise", (latents.detach().clone(), noise.detach().clone()))
        return flow_match_xt(latents, noise, sigmas)

    sigmas_all = utils.get_scheduler_sigmas(scheduler).to(f32)
    generator = torch.Generator().manual_seed(SEED)

    def step(sigmas):  # SFTTrainer._train, steps 3-6 (one device, no accumulation)
        lmc = utils.make_contiguous(utils.align_device_and_dtype(
            {"latents": moments, "latents_mean": torch.zeros(c), "latents_std": torch.ones(c)},
            "cpu", f32))
        cmc = utils.make_contiguous(utils.align_device_and_dtype(
            {"encoder_hidden_states": emb}, "cpu", f32))
        sigmas = utils.expand_tensor_dims(sigmas, x0.ndim)
        pred, target, sigmas = spec.forward(transformer=net, scheduler=scheduler,
                                            condition_model_conditions=cmc,
                                            latent_model_conditions=lmc, sigmas=sigmas,
                                            compute_posterior=False)
        weights = utils.prepare_loss_weights(scheduler=scheduler, sigmas=sigmas,
                                             flow_weighting_scheme="none")
        weights = utils.expand_tensor_dims(weights, pred.ndim)
        loss = weights.float() * (pred.float() - target.float()).pow(2)
        loss = loss.mean(list(range(1, loss.ndim))).mean()
        loss.backward()
        utils.torch._clip_grad_norm_while_handling_failing_dtensor_cases(
            [p for p in net.parameters()], 1.0, foreach=True)
        opt.step()
        lr_sched.step()
        opt.zero_grad()
        return loss.detach()

    def fixed():
        FF.flow_match_xt = record
        torch.manual_seed(inputs["seed"])  # its forward draws from the global RNG
        try:
            return step(inputs["t"])
        finally:
            FF.flow_match_xt = flow_match_xt

    def own():
        return step(utils.prepare_sigmas(scheduler, sigmas_all, b, 1000, "none",
                                         generator=generator))

    result = measure(fixed, own, steps)
    seen_x0, seen_noise = seen["x0_noise"]  # vs the shared inputs: 0 when identical
    result["input_diff"] = max(float((seen_x0 - x0).abs().max()),
                               float((seen_noise - inputs["noise"]).abs().max()))
    return result


SIDES = {"vidiff": run_vidiff, "diffusers-peft": run_diffusers_peft,
         "finetrainers": run_finetrainers}  # (work, size, steps) -> the side's row


# -- the driver ---------------------------------------------------------------------------------
def _worker(python: str, role: str, work: Path, args) -> dict:
    """One side in a fresh process (`--in-process`: this one, main venv sides only)."""
    if args.in_process and python == sys.executable:
        return SIDES[role](work, args.size, args.steps)
    cmd = [python, str(HERE), "--role", role, "--work", str(work), "--size", args.size,
           "--steps", str(args.steps)]
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"error": f"exit {proc.returncode}: {tail[0][:160]}"}


def table(rows: dict) -> str:
    """The markdown table: one row per side; vidiff/peer = vidiff's CPU time over the row's."""
    base = rows["vidiff"]
    out = ["| side | CPU s / step (median) | peak RSS delta (MiB) | loss at step 1 | "
           "abs diff vs vidiff | vidiff/peer CPU |", "|---|---|---|---|---|---|"]
    for side, r in rows.items():
        if "error" in r:
            out.append(f"| {LABELS[side]} | not run: {r['error']} | - | - | - | - |")
            continue
        out.append(f"| {LABELS[side]} | {r['cpu_s']:.4f} | {r['rss_delta_mib']:.1f} | "
                   f"{r['loss1']:.6f} | {abs(r['loss1'] - base['loss1']):.2e} | "
                   f"{base['cpu_s'] / r['cpu_s']:.2f} |")
    return "\n".join(out)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument("--steps", type=int, default=10, help="timed steps after 2 warm-up steps")
    p.add_argument("--json", metavar="OUT", help="write the rows and the machine here")
    default_ft = os.environ.get("VIDIFF_FINETRAINERS_PYTHON", "/tmp/peervenv/bin/python")
    p.add_argument("--finetrainers-python", default=default_ft,
                   help="python of a venv with finetrainers 0.2.0 ('none': skip that row)")
    p.add_argument("--in-process", action="store_true",
                   help="run the main venv's sides in this process (faster; the tests')")
    p.add_argument("--role", choices=sorted(LABELS), help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role:  # a worker: one side, one line of JSON
        result = SIDES[args.role](Path(args.work), args.size, args.steps)
        print("RESULT " + json.dumps(result), flush=True)
        return {}
    with tempfile.TemporaryDirectory(prefix="video_lora_step_") as tmp:
        work = Path(tmp)
        write_folder(work / "wan", args.size)
        rows = {"vidiff": _worker(sys.executable, "vidiff", work, args)}
        if "error" in rows["vidiff"]:
            raise SystemExit(f"vidiff side failed: {rows['vidiff']['error']}")
        rows["diffusers-peft"] = _worker(sys.executable, "diffusers-peft", work, args)
        ft = args.finetrainers_python
        if ft.lower() == "none" or not Path(ft).exists():
            why = "--finetrainers-python none" if ft.lower() == "none" else f"no {ft}"
            rows["finetrainers"] = {"error": f"{why} (a venv with finetrainers 0.2.0)"}
        else:
            rows["finetrainers"] = _worker(ft, "finetrainers", work, args)
    s = SIZES[args.size]
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.machine())
    head = (f"Wan 2.1 LoRA rank {RANK} step, size {args.size}: batch {s['batch']}, "
            f"{s['frames']} frames of {s['size']}x{s['size']}, {args.steps} timed steps, "
            f"torch {torch.__version__}, 1 thread, {cpu}")
    print(head + "\n\n" + (text := table(rows)))
    report = {"size": args.size, "steps": args.steps, "rows": rows, "table": text}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
