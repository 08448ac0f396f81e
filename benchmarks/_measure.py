"""Benchmark worker: measures ONE model at ONE input size in this (fresh) process.

Run by `unet_speed.py` as `python benchmarks/_measure.py '<json spec>'`; prints progress to
stderr and one line `RESULT <json>` to stdout. A process per model keeps peak memory clean:
nothing of another model (weights, allocator caches, compiled code) is resident.

What it measures, in this order:
1. sampling step: `model.eval()`, one forward under `torch.no_grad()` (the denoiser call of
   one sampler step); 1 warmup call, then the median of up to `repeats` timed calls.
2. train step: `model.train()`, forward, MSE loss against a noise target, backward, AdamW step
   (`zero_grad(set_to_none=True)` first); 1 warmup step (it also creates AdamW's state), then
   the median of up to `repeats`.
   Either phase stops repeating once its timed calls add up to `max_phase_s` (at least one).
3. FLOPs of one forward with `torch.utils.flop_counter.FlopCounterMode` on the eager model: it
   counts matmul / bmm / addmm / convolution / scaled-dot-product-attention FLOPs (2 per
   multiply-add), not elementwise ops or normalizations; a train step is counted as 3 forwards.

Peak memory is measured above a baseline taken after the model, its inputs and its target are
built (weights excluded, AdamW state and gradients included): on CPU the kernel's resident-set
high-water mark (VmHWM, reset per phase through /proc/self/clear_refs; ru_maxrss where that is
unavailable) minus the baseline resident set; on CUDA `torch.cuda.max_memory_allocated()` minus
`torch.cuda.memory_allocated()` at the baseline.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _peers  # noqa: E402

GIB = 2.0**30


def _log(msg: str) -> None:
    print(f"  [{os.getpid()}] {msg}", file=sys.stderr, flush=True)


# -- CPU memory ----------------------------------------------------------------------------------
def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def _reset_hwm() -> bool:
    """Reset the resident-set high-water mark to the current resident set (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _CpuMemory:
    def __init__(self):
        self.baseline = self.resettable = None

    def start(self):
        self.resettable = _reset_hwm()
        self.baseline = (_status_kib("VmRSS") or 0) * 1024

    def phase(self):
        if self.resettable:
            _reset_hwm()

    def peak(self) -> float:
        hwm = _status_kib("VmHWM") if self.resettable else None
        if hwm is None:  # ru_maxrss: KiB on Linux, includes everything since process start
            hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return max(0.0, hwm * 1024 - self.baseline) / GIB


class _CudaMemory:
    def __init__(self, device):
        self.device, self.baseline = device, 0

    def start(self):
        torch.cuda.synchronize(self.device)
        self.baseline = torch.cuda.memory_allocated(self.device)

    def phase(self):
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> float:
        torch.cuda.synchronize(self.device)
        return (torch.cuda.max_memory_allocated(self.device) - self.baseline) / GIB


# -- timing --------------------------------------------------------------------------------------
def _system_busy_s() -> float | None:
    """CPU seconds all processes have spent on all cores since boot (/proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal ...: everything but idle and iowait
    busy = sum(ticks[:8]) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


def _timed(fn, device, repeats: int, max_phase_s: float) -> dict:
    """Times `fn`: one warmup call, then up to `repeats` calls (fewer once they took
    `max_phase_s`). Returns the timed seconds, the warmup seconds, and, for CPU runs:

    - cpu_share: this process's CPU time / (wall time x torch threads) during the timed calls;
    - others_cores: cores kept busy by OTHER processes meanwhile (all CPU time in /proc/stat
      minus this process's, per wall second); 0 on an idle machine, the contention measure.
    """
    cuda = device.type == "cuda"

    def once() -> float:
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            return start.elapsed_time(end) / 1000.0
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    warm = once()
    times: list[float] = []
    busy0, cpu0, wall0 = _system_busy_s(), time.process_time(), time.perf_counter()
    while len(times) < repeats and (not times or sum(times) < max_phase_s):
        times.append(once())
    busy1, cpu, wall = _system_busy_s(), time.process_time() - cpu0, time.perf_counter() - wall0
    others = None if busy0 is None or busy1 is None else max(0.0, (busy1 - busy0 - cpu) / wall)
    return {
        "times": times,
        "warmup": warm,
        "cpu_share": cpu / (wall * torch.get_num_threads()),
        "others_cores": others,
    }


def _summary(phase: str, r: dict) -> str:
    others = "?" if r["others_cores"] is None else f"{r['others_cores']:.2f}"
    return (
        f"{phase} {statistics.median(r['times']):.4f}s x{len(r['times'])} "
        f"(cpu share {r['cpu_share']:.2f}, other processes {others} cores)"
    )


def main(spec: dict) -> dict:
    device = torch.device(spec["device"])
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    b, f, hh, ww = spec["batch"], spec["frames"], spec["size"], spec["size"]
    name, compile_ = spec["model"], spec.get("compile", False)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if spec["dtype"] == "bf16"
        else contextlib.nullcontext()
    )
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fp32 stays fp32: TF32 is left off

    t0 = time.perf_counter()
    model, call = _peers.build(name, b, device)
    params = sum(p.numel() for p in model.parameters())
    x = torch.randn(b, 3, f, hh, ww, device=device)
    t = torch.randint(0, 1000, (b,), device=device)
    target = torch.randn_like(x)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    run = torch.compile(model) if compile_ else model
    build_s = time.perf_counter() - t0
    _log(f"{name}{' +compile' if compile_ else ''} {b}x3x{f}x{hh}x{ww}: {params / 1e6:.2f}M")

    mem = _CudaMemory(device) if device.type == "cuda" else _CpuMemory()
    mem.start()

    def sample_step():
        with torch.no_grad(), autocast:
            call(run, x, t)

    def train_step():
        opt.zero_grad(set_to_none=True)
        with autocast:
            out = call(run, x, t)
        loss = F.mse_loss(out.float(), target)
        loss.backward()
        opt.step()

    load0 = os.getloadavg()[0]
    model.eval()
    mem.phase()
    sample = _timed(sample_step, device, spec["repeats"], spec["max_phase_s"])
    sample_mem = mem.peak()
    _log(_summary("sample", sample))

    model.train()
    mem.phase()
    train = _timed(train_step, device, spec["repeats"], spec["max_phase_s"])
    train_mem = mem.peak()
    _log(_summary("train ", train))
    load1 = os.getloadavg()[0]

    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), autocast, counter:
        call(model, x, t)
    flops = counter.get_total_flops()

    train_s, sample_s = statistics.median(train["times"]), statistics.median(sample["times"])
    out = {
        **spec,
        "params": params,
        "input": f"{b}x3x{f}x{hh}x{ww}",
        "flops_forward": flops,
        "train_s": train_s,
        "train_times": train["times"],
        "train_warmup_s": train["warmup"],
        "sample_s": sample_s,
        "sample_times": sample["times"],
        "sample_warmup_s": sample["warmup"],
        "train_gflops": 3 * flops / train_s / 1e9,
        "sample_gflops": flops / sample_s / 1e9,
        "train_peak_gib": train_mem,
        "sample_peak_gib": sample_mem,
        "build_s": build_s,
        "cpu_share": [sample["cpu_share"], train["cpu_share"]],
        "others_cores": [sample["others_cores"], train["others_cores"]],
        "baseline_gib": mem.baseline / GIB,  # resident set / CUDA allocation after building
        "threads": torch.get_num_threads(),
        "load_during": [load0, load1],
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    return out


if __name__ == "__main__":
    result = main(json.loads(sys.argv[1]))
    print("RESULT " + json.dumps(result), flush=True)
