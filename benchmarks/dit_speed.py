"""Speed of vidiff's video DiT against diffusers' LatteTransformer3DModel: one run, one table.

Both are factorized space-time transformers of the same size (`_peers.py`: width 384, 6
heads, 6 spatial + 6 temporal blocks, patch 2, text by cross-attention from 8 tokens of width
64): Latte (Ma et al. 2024, variant 1, diffusers' implementation: adaLN-single, separate
q / k / v projections, a sin-cos temporal embedding) against vidiff's `DiT` (adaLN-Zero per
block, fused q / k / v, relative-position bias over frames, the text shared by a clip's frames
in the cross-attention). Each (model, input) runs in its own subprocess (`_measure.py`):
parameters, FLOPs per forward, train step (forward + MSE + backward + AdamW) and sampling
step (no-grad forward), GFLOP/s, peak memory above the built model, ratios to Latte.

    python benchmarks/dit_speed.py                       # CPU, fp32: 8x32x32 (batch 2), 16x32x32
    python benchmarks/dit_speed.py --rounds 2 --threads 2
    python benchmarks/dit_speed.py --device cuda --dtype bf16 --batch 16 --compile \\
        --compile-models dit,latte --configs 16x64x64
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import unet_speed  # noqa: E402


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    defaults = ["--models", "dit,latte", "--reference", "latte", "--configs",
                "8x32x32,16x32x32", "--compile-models", "dit"]
    return unet_speed.main(defaults + argv)  # later options override the defaults


if __name__ == "__main__":
    sys.exit(main())
