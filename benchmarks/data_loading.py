"""Clips per second of vidiff's `VideoFolder` against a plain PyAV loop on real h264 files.

The files are made here with PyAV from synthetic frames (nothing is downloaded): 720p and
1080p h264 at 30 fps with a keyframe every second. Each loader reads clips of F frames at a
random start (so seeking matters), resizes them to cover S x S and center-crops to S x S,
returning float (3, F, S, S) in [-1, 1]:

- vidiff: `vidiff.data.VideoFolder` (seek to the keyframe before the clip, decode, RGB, a
  uint8 antialiased resize and crop, then the float conversion at the final size);
- plain PyAV: open, seek, decode, `frame.reformat(width, height, "rgb24")` (the resize in
  FFmpeg's swscale), crop, convert: the loop a user would write by hand;
- decord when it is installed (an optional peer: `pip install --no-deps decord`; its
  VideoReader resizes while decoding). torchcodec 0.17 installs here but does not load (it
  needs FFmpeg's shared libraries and a matching torch build), so it has no row.

Every loader runs behind a `torch.utils.data.DataLoader` with 1 and 2 worker processes, each
row in a fresh subprocess (peak memory: the resident-set high-water mark of the process and
its workers). One table:

    python benchmarks/data_loading.py                 # ~5 minutes on 2 cores
    python benchmarks/data_loading.py --clips 64 --videos 6
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CONFIGS = ((8, 32), (16, 64), (16, 256))  # (frames, size)
RESOLUTIONS = {"720p": (1280, 720), "1080p": (1920, 1080)}


def make_videos(folder: Path, width: int, height: int, count: int, frames: int) -> None:
    """`count` h264 files of moving gradients (30 fps, a keyframe every 30 frames)."""
    import av

    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:height, 0:width]
    for v in range(count):
        path = folder / f"clip{v}.mp4"
        if path.exists():
            continue
        with av.open(str(path), "w") as out:
            stream = out.add_stream("libx264", rate=30)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"g": "30", "preset": "veryfast"}
            for i in range(frames):
                img = np.stack([(xx + 4 * i + 30 * v) % 256, (yy + 3 * i) % 256,
                                ((xx + yy) // 3 + 2 * i) % 256], -1).astype(np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)


# -- the loaders (each a map-style dataset of float clips) ---------------------------------------
class PlainPyAV:
    """The hand-written loop: seek, decode, resize in swscale, crop, convert."""

    def __init__(self, root: str, frames: int, size: int, seed: int = 0):
        import av

        self.paths = sorted(Path(root).glob("*.mp4"))
        self.frames, self.size, self.seed = frames, size, seed
        with av.open(str(self.paths[0])) as c:
            s = c.streams.video[0]
            self.length, self.w, self.h = s.frames, s.codec_context.width, s.codec_context.height

    def __len__(self) -> int:
        return 10**6

    def __getitem__(self, index: int):
        import av
        import torch

        rng = np.random.default_rng([self.seed, index])
        path = self.paths[index % len(self.paths)]
        start = int(rng.integers(0, self.length - self.frames + 1))
        scale = self.size / min(self.h, self.w)
        nw, nh = max(self.size, round(self.w * scale)), max(self.size, round(self.h * scale))
        y, x = (nh - self.size) // 2, (nw - self.size) // 2
        out = []
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            c.seek(int(start / (s.average_rate * s.time_base)), stream=s, backward=True)
            for frame in c.decode(s):
                k = round(float((frame.pts - (s.start_time or 0)) * s.time_base * s.average_rate))
                if k < start:
                    continue
                img = frame.reformat(width=nw, height=nh, format="rgb24").to_ndarray()
                out.append(img[y : y + self.size, x : x + self.size])
                if len(out) == self.frames:
                    break
        clip = torch.from_numpy(np.stack(out))  # (F, S, S, 3) uint8
        return clip.permute(3, 0, 1, 2).float().div(127.5).sub(1.0)


class Vidiff:
    def __init__(self, root: str, frames: int, size: int, seed: int = 0):
        from vidiff.data import VideoFolder

        self.ds = VideoFolder(root, frames=frames, size=size, labels=None, captions=False,
                              seed=seed, probe=True)

    def __len__(self) -> int:
        return 10**6

    def __getitem__(self, index: int):
        return self.ds[index % len(self.ds)]["video"]


class Decord:
    def __init__(self, root: str, frames: int, size: int, seed: int = 0):
        import decord  # noqa: F401  (optional peer)

        self.paths = sorted(Path(root).glob("*.mp4"))
        self.frames, self.size, self.seed = frames, size, seed
        self.shapes: dict = {}

    def __len__(self) -> int:
        return 10**6

    def __getitem__(self, index: int):
        import decord
        import torch

        path = self.paths[index % len(self.paths)]
        if path not in self.shapes:  # probed once per file
            self.shapes[path] = decord.VideoReader(str(path))[0].shape[:2]
        h, w = self.shapes[path]
        scale = self.size / min(h, w)
        vr = decord.VideoReader(str(path), width=max(self.size, round(w * scale)),
                                height=max(self.size, round(h * scale)))
        rng = np.random.default_rng([self.seed, index])
        start = int(rng.integers(0, len(vr) - self.frames + 1))
        clip = vr.get_batch(list(range(start, start + self.frames))).asnumpy()
        nh, nw = clip.shape[1:3]
        y, x = (nh - self.size) // 2, (nw - self.size) // 2
        clip = torch.from_numpy(clip[:, y : y + self.size, x : x + self.size].copy())
        return clip.permute(3, 0, 1, 2).float().div(127.5).sub(1.0)


LOADERS = {"vidiff": Vidiff, "plain PyAV": PlainPyAV, "decord": Decord}


def measure(loader: str, root: str, frames: int, size: int, workers: int, clips: int) -> dict:
    """Runs in a subprocess: clips/s after 2 warm-up batches, and peak memory."""
    import torch
    from torch.utils.data import DataLoader

    torch.set_num_threads(1)
    dataset = LOADERS[loader](root, frames, size)
    dl = DataLoader(dataset, batch_size=None, num_workers=workers, prefetch_factor=2)
    it = iter(dl)
    for _ in range(2 * max(1, workers)):
        next(it)
    start = time.perf_counter()
    for _ in range(clips):
        clip = next(it)
    seconds = time.perf_counter() - start
    assert clip.shape == (3, frames, size, size), clip.shape
    pids = [os.getpid()] + [w.pid for w in getattr(it, "_workers", [])]
    peak = sum(_peak_kib(pid) for pid in pids)  # the process and its live workers
    del it
    return {"clips_s": clips / seconds, "peak_mib": peak / 1024}


def _peak_kib(pid: int) -> int:
    """The resident-set high-water mark (VmHWM) of a live process, KiB."""
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss if pid == os.getpid() else 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=32, help="timed clips per row")
    p.add_argument("--videos", type=int, default=4, help="files per resolution")
    p.add_argument("--length", type=int, default=150, help="frames per file")
    p.add_argument("--workers", default="1,2")
    p.add_argument("--loaders", default=None, help="comma list (default: all installed)")
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "vidiff_bench_videos"))
    p.add_argument("--json", default=None)
    p.add_argument("--_child", nargs=5, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._child:
        loader, root, frames, size, workers = args._child
        print(json.dumps(measure(loader, root, int(frames), int(size), int(workers),
                                 args.clips)))
        return
    loaders = [name for name in LOADERS if name != "decord"]
    try:
        import decord  # noqa: F401

        loaders.append("decord")
    except ImportError:
        print("decord is not installed: its rows are skipped")
    if args.loaders:
        loaders = [name for name in args.loaders.split(",") if name in loaders]
    rows = []
    for res, (w, h) in RESOLUTIONS.items():
        root = Path(args.cache) / res
        make_videos(root, w, h, args.videos, args.length)
        for frames, size in CONFIGS:
            for workers in [int(x) for x in args.workers.split(",")]:
                for name in loaders:
                    cmd = [sys.executable, __file__, "--clips", str(args.clips), "--_child",
                           name, str(root), str(frames), str(size), str(workers)]
                    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
                    if out.returncode != 0:
                        raise SystemExit(f"{name} failed:\n{out.stderr[-2000:]}")
                    r = json.loads(out.stdout.strip().splitlines()[-1])
                    rows.append({"res": res, "frames": frames, "size": size,
                                 "workers": workers, "loader": name, **r})
                    print(f"{res} {frames}x{size}x{size} w{workers} {name}: "
                          f"{r['clips_s']:.1f} clips/s", flush=True)
    print("\n| input | clip | workers | loader | clips/s | vs plain PyAV | peak memory (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        base = next((b["clips_s"] for b in rows if b["loader"] == "plain PyAV" and all(
            b[k] == r[k] for k in ("res", "frames", "size", "workers"))), float("nan"))
        print(f"| {r['res']} | {r['frames']}x{r['size']}x{r['size']} | {r['workers']} | "
              f"{r['loader']} | {r['clips_s']:.1f} | {r['clips_s'] / base:.2f} | "
              f"{r['peak_mib']:.0f} |")
    print(f"\n{os.cpu_count()} cores, 1 torch thread per process, {args.clips} timed clips per "
          f"row after warm-up; {args.videos} files of {args.length} frames per resolution")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
