#!/usr/bin/env bash
# The GPU check: one prepared script, under 10 minutes (590 s of timeouts) on one H100/H200, one markdown report.
#
#   bash benchmarks/gpu_check.sh            # report in $OUT/gpu_report.md (runs/gpu_check/ without $OUT)
#
# 1. benchmarks/unet_speed.py on the GPU: bf16 autocast, torch.compile, a batch that fills it;
#    TFLOP/s and % of the GPU's dense bf16 peak; then benchmarks/sd_memory.py --measure: the
#    peak memory of SD 1.5's inflated U-Net training on 16 frames of 32x32 latents; then
#    benchmarks/dit_speed.py: the DiT against diffusers' Latte;
# 2. a 300-step `vidiff train` with bf16 (steps/s, peak GPU memory);
# 3. the tests marked `gpu` (tests/test_gpu.py).
# It needs a python3 with a CUDA torch (PYTHON=... to pick another). The GPU machines of this
# workplace have one but no PyAV: carry a PyAV wheel for their Python in .whl/ (see
# benchmarks/README.md, GPU check); it is installed to /tmp/site here, nothing is downloaded.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
REPORT=$OUT/gpu_report.md
# dense bf16 peak (TFLOP/s) of the GPU: H100/H200 SXM 989, A100 312, L40S 362
PEAK=$($PY - <<'PY'
import torch
name = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
print(next((v for k, v in (("H200", 989), ("H100", 989), ("A100", 312), ("L40S", 362))
            if k in name), 989))
PY
)

{
    echo "# vidiff GPU check"
    echo
    echo "date: $(date -u +%Y-%m-%dT%H:%MZ); commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo
    echo '```'
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | head -3
    $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'device', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
    echo "dense bf16 peak used for %: $PEAK TFLOP/s"
    echo '```'
} > "$REPORT"

echo "## 1. U-Net speed (bf16 autocast, torch.compile)" >> "$REPORT"
timeout 180 $PY benchmarks/unet_speed.py --device cuda --dtype bf16 --compile \
    --models vidiff --configs 16x64x64 --batch 32 --repeats 5 --peak-tflops "$PEAK" \
    --json "$OUT/unet_speed.json" > "$OUT/unet_speed.log" 2>&1
echo "exit status $?" >> "$REPORT"
echo >> "$REPORT"
grep '^|' "$OUT/unet_speed.log" >> "$REPORT" || tail -20 "$OUT/unet_speed.log" >> "$REPORT"

echo -e "\n## 1b. Stable Diffusion 1.5 inflated: training memory, 16x32x32 latents, batch 1" >> "$REPORT"
timeout 100 $PY benchmarks/sd_memory.py --measure > "$OUT/sd_memory.log" 2>&1
echo "exit status $?" >> "$REPORT"
grep '^|' "$OUT/sd_memory.log" >> "$REPORT" || tail -20 "$OUT/sd_memory.log" >> "$REPORT"

echo -e "\n## 1c. DiT against diffusers' Latte (bf16 autocast, 16x64x64, batch 8)" >> "$REPORT"
timeout 60 $PY benchmarks/dit_speed.py --device cuda --dtype bf16 --batch 8 --configs 16x64x64 \
    --repeats 10 --max-phase-s 10 > "$OUT/dit_speed.log" 2>&1
echo "exit status $?" >> "$REPORT"
grep '^|' "$OUT/dit_speed.log" >> "$REPORT" || tail -20 "$OUT/dit_speed.log" >> "$REPORT"

echo -e "\n## 1d. Wan 1.3B LoRA training memory (81x480x832, batch 1): counted vs measured" >> "$REPORT"
timeout 60 $PY benchmarks/video_model_memory.py --recipes wan-1.3b-lora-r32 \
    --json "$OUT/video_model_memory.json" > "$OUT/video_model_memory.log" 2>&1
echo "exit status $?" >> "$REPORT"
grep '^|' "$OUT/video_model_memory.log" >> "$REPORT" || tail -20 "$OUT/video_model_memory.log" >> "$REPORT"

echo -e "\n## 2. 300-step vidiff train, bf16 (small U-Net, 16x64x64 clips, batch 16)" >> "$REPORT"
rm -rf /tmp/vidiff_gpu_train
timeout 100 $PY -m vidiff train --out /tmp/vidiff_gpu_train --steps 300 --device cuda \
    --precision bf16 --preset small --frames 16 --size 64 --batch-size 16 \
    --set train.progress=false train.sample_every=0 sample.steps=20 train.log_every=50 \
    train.ckpt_every=0 > "$OUT/train.log" 2>&1
echo "exit status $?" >> "$REPORT"
$PY - "$REPORT" <<'PY' >> "$REPORT"
import json, sys
try:
    rows = [json.loads(x) for x in open("/tmp/vidiff_gpu_train/log.jsonl")]
except OSError as err:
    sys.exit(print(f"no log: {err}"))
steady = rows[1:] or rows  # the first interval holds the CUDA warm-up
rate = sum(r["it_s"] for r in steady) / len(steady)
print("\n| steps | steps/s (after the first 50) | videos/s | peak GPU memory (GiB) | final loss |")
print("|---|---|---|---|---|")
last = rows[-1]
print(f"| {last['step']} | {rate:.2f} | {rate * 16:.1f} | {last.get('gpu_mem_gib', float('nan')):.2f} "
      f"| {last['loss']:.4f} |")
PY
tail -3 "$OUT/train.log" | sed 's/^/    /' >> "$REPORT"

echo -e "\n## 3. Tests marked gpu" >> "$REPORT"
timeout 90 $PY -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py > "$OUT/pytest_gpu.log" 2>&1
echo "exit status $?" >> "$REPORT"
echo '```' >> "$REPORT"
tail -5 "$OUT/pytest_gpu.log" >> "$REPORT"
echo '```' >> "$REPORT"
cat "$REPORT"
