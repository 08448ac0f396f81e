"""Video metrics that need no pretrained weights, designed for the embedded synthetic data.

- **FVD-lite** (`video_distance`, streaming `VideoDistance`): the Fréchet distance between real
  and generated clips in a space of interpretable hand-crafted features (`video_features`,
  `FEATURES`: color, sharpness bands, motion energy at several lags, temporal autocorrelation,
  flicker, foreground path), each scaled by its spread in the real data. About 0 for two real
  sets (finite-sample bias only), growing as clips are shuffled, blurred or noised;
  ``groups=True`` splits it into appearance, sharpness and motion.
- `frechet_distance` (the FID formula, float64, exact PSD square root) and `FeatureStats`
  (running mean and covariance in bounded memory, mergeable, savable).
- **Ball tracking** for bouncing balls (`ball_tracking_score`): balls detected per frame, count
  consistency along the clip, trajectory smoothness and color consistency, each against the
  real data's own; `steady_pairs`: which frame pairs keep their balls (same count, each ball
  within a few pixels and the same color, and moving), the headline coherence number.
- Per-clip temporal statistics: `frame_consistency`, `frame_difference`, `flicker`, and their
  running means `TemporalStats`.
- **FVD** with the Kinetics-400 I3D (`fvd`, `FVDConfig`, `i3d_features`, `i3d_stats`;
  `load_i3d` reads pytorch-i3d state dicts or StyleGAN-V's TorchScript ``i3d_torchscript.pt``)
  and per-frame **FID / IS** with pytorch-fid's InceptionV3 (`fid_per_frame`, `FIDConfig`,
  `inception_frame_stats`, `inception_score`, `frame_inception_score`,
  `InceptionScoreAccumulator`; `load_fid_inception` reads
  ``pt_inception-2015-12-05-6726825d.pth``). Weights come from local files only; see
  ``docs/EVAL.md``.
- Corruptions for validation: `corrupt`, `shuffle_frames`, `gaussian_blur`,
  `replace_with_noise`, `add_noise`.

>>> from vidiff.metrics import video_distance, ball_tracking_score
>>> video_distance(real, fake)                 # (B, 3, F, H, W) each, in [-1, 1]
>>> ball_tracking_score(fake, reference=real)["score"]
"""

from vidiff.metrics.corrupt import (
    CORRUPTIONS,
    add_noise,
    corrupt,
    gaussian_blur,
    replace_with_noise,
    shuffle_frames,
)
from vidiff.metrics.distance import (
    VideoDistance,
    reference_stats,
    standardized_distance,
    video_distance,
)
from vidiff.metrics.features import (
    FEATURE_GROUPS,
    FEATURE_NAMES,
    FEATURES,
    Feature,
    video_features,
)
from vidiff.metrics.fid import (
    FIDConfig,
    InceptionScoreAccumulator,
    fid_per_frame,
    frame_inception_score,
    inception_frame_stats,
    inception_score,
)
from vidiff.metrics.frechet import FeatureStats, frechet_distance
from vidiff.metrics.fvd import FVDConfig, fvd, i3d_features, i3d_stats, stats_distance
from vidiff.metrics.i3d import I3D, InceptionI3d, load_i3d
from vidiff.metrics.inception import FIDInceptionV3, load_fid_inception
from vidiff.metrics.temporal import TemporalStats, flicker, frame_consistency, frame_difference
from vidiff.metrics.tracking import (
    SteadyPairs,
    ball_tracking_score,
    ball_tracking_stats,
    connected_components,
    detect_balls,
    steady_pairs,
)
from vidiff.metrics.weights import random_init_

__all__ = [
    "CORRUPTIONS",
    "FEATURES",
    "FEATURE_GROUPS",
    "FEATURE_NAMES",
    "FIDConfig",
    "FIDInceptionV3",
    "FVDConfig",
    "Feature",
    "FeatureStats",
    "I3D",
    "SteadyPairs",
    "InceptionI3d",
    "InceptionScoreAccumulator",
    "TemporalStats",
    "VideoDistance",
    "add_noise",
    "ball_tracking_score",
    "ball_tracking_stats",
    "connected_components",
    "corrupt",
    "detect_balls",
    "fid_per_frame",
    "flicker",
    "frame_consistency",
    "frame_difference",
    "steady_pairs",
    "frame_inception_score",
    "frechet_distance",
    "fvd",
    "gaussian_blur",
    "i3d_features",
    "i3d_stats",
    "inception_frame_stats",
    "inception_score",
    "load_fid_inception",
    "load_i3d",
    "random_init_",
    "reference_stats",
    "replace_with_noise",
    "shuffle_frames",
    "standardized_distance",
    "stats_distance",
    "video_distance",
    "video_features",
]
