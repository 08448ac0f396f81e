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
  real data's own.
- Per-clip temporal statistics: `frame_consistency`, `frame_difference`, `flicker`.
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
from vidiff.metrics.frechet import FeatureStats, frechet_distance
from vidiff.metrics.temporal import flicker, frame_consistency, frame_difference
from vidiff.metrics.tracking import (
    ball_tracking_score,
    ball_tracking_stats,
    connected_components,
    detect_balls,
)

__all__ = [
    "CORRUPTIONS",
    "FEATURES",
    "FEATURE_GROUPS",
    "FEATURE_NAMES",
    "Feature",
    "FeatureStats",
    "VideoDistance",
    "add_noise",
    "ball_tracking_score",
    "ball_tracking_stats",
    "connected_components",
    "corrupt",
    "detect_balls",
    "flicker",
    "frame_consistency",
    "frame_difference",
    "frechet_distance",
    "gaussian_blur",
    "reference_stats",
    "replace_with_noise",
    "shuffle_frames",
    "standardized_distance",
    "video_distance",
    "video_features",
]
