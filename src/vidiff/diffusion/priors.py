"""Video noise priors: where every diffusion noise draw comes from.

Each element of the noise is marginally N(0, 1); frames are correlated, pixels and channels are
not, so the covariance of a clip's noise is S = (F x F frame covariance) kron I. A prior knows
its frame covariance exactly, which is all the likelihood needs.

In joint image+video batches (B, C, F + K, H, W) the last K frames are independent images and
always get independent noise: the frame covariance is blockdiag(S_F, I_K).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from vidiff.utils.registry import Registry

PRIORS: Registry = Registry("noise prior")

Shape = Sequence[int]


def _split_frames(shape: Shape, num_images: int) -> tuple[int, int]:
    """(video frames, images) of a (B, C, F, H, W) shape whose last `num_images` are images."""
    if len(shape) == 4:  # (B, C, H, W): a batch of images, always independent noise
        return 0, 1
    if len(shape) != 5:
        raise ValueError(f"noise shape must be (B, C, F, H, W) or (B, C, H, W), "
                         f"got {tuple(shape)}")
    frames = shape[2]
    if not 0 <= num_images <= frames:
        raise ValueError(f"num_images must be in [0, {frames}] for {frames} frames, "
                         f"got {num_images}")
    return frames - num_images, num_images


def _check_frames(frames: int) -> None:
    if not isinstance(frames, int) or frames < 1:
        raise ValueError(f"F (the number of frames) must be an integer >= 1, got {frames!r}")


class NoisePrior(ABC):
    """Base class: a distribution of noise with per-element variance 1 and frame correlations.

    Subclasses implement `_sample_video` (the correlated draw for F video frames) and
    `_video_covariance` (its exact F x F frame covariance, float64).
    """

    name = "base"

    def sample(
        self,
        shape: Shape,
        generator: torch.Generator | None = None,
        num_images: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """A noise tensor of `shape`; the last `num_images` frames are independent images.

        The same generator state gives the same noise. `device` defaults to the generator's.
        """
        if device is None:
            device = generator.device if generator is not None else "cpu"
        frames, images = _split_frames(shape, num_images)
        if len(shape) == 4 or frames == 0:
            return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
        b, c, _, h, w = shape
        video = self._sample_video((b, c, frames, h, w), generator, device, dtype)
        if images == 0:
            return video
        iid = torch.randn((b, c, images, h, w), generator=generator, device=device, dtype=dtype)
        return torch.cat([video, iid], dim=2)  # (B, C, F + K, H, W)

    def frame_covariance(self, frames: int, num_images: int = 0) -> torch.Tensor:
        """The exact (F, F) float64 covariance between frames; the last `num_images` are iid."""
        _check_frames(frames)
        _split_frames((1, 1, frames, 1, 1), num_images)
        cov = torch.eye(frames, dtype=torch.float64)
        video = frames - num_images
        if video > 0:
            cov[:video, :video] = self._video_covariance(video)
        return cov

    def frame_cholesky(self, frames: int, num_images: int = 0) -> torch.Tensor:
        """Lower-triangular L with L L^T = frame_covariance(frames), float64."""
        cov = self.frame_covariance(frames, num_images)
        chol, info = torch.linalg.cholesky_ex(cov)
        if info.item() != 0:
            raise ValueError(
                f"the frame covariance of the {self!r} prior is singular for {frames} frames; "
                "its likelihood is undefined (e.g. lambda = 1 on more than one frame)"
            )
        return chol

    @abstractmethod
    def _sample_video(self, shape, generator, device, dtype) -> torch.Tensor:
        """The correlated draw for the F video frames of `shape` (B, C, F, H, W)."""

    @abstractmethod
    def _video_covariance(self, frames: int) -> torch.Tensor:
        """The exact (F, F) float64 frame covariance of `_sample_video`."""

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({params})"

    def params(self) -> dict:
        """The prior's parameters, as `noise_prior(name, **params)` takes them."""
        return {}


@PRIORS.register("independent")
class IndependentPrior(NoisePrior):
    """e_i ~ N(0, I) for every frame: DDPM's noise, frames uncorrelated."""

    name = "independent"

    def _sample_video(self, shape, generator, device, dtype):
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)

    def _video_covariance(self, frames):
        return torch.eye(frames, dtype=torch.float64)


def _check_alpha(alpha: float) -> float:
    if not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    return float(alpha)


@PRIORS.register("mixed")
class MixedPrior(NoisePrior):
    """PYoCo's mixed noise model (Ge et al. 2023, section 3.2): shared plus per-frame noise.

    e_shared ~ N(0, a2/(1+a2) I), e_i = e_shared + n_i, n_i ~ N(0, 1/(1+a2) I), a2 = alpha^2;
    corr(e_i, e_j) = a2/(1+a2) for i != j.
    """

    name = "mixed"

    def __init__(self, alpha: float = 1.0):
        self.alpha = _check_alpha(alpha)

    def params(self):
        return {"alpha": self.alpha}

    def _sample_video(self, shape, generator, device, dtype):
        a2 = self.alpha**2
        b, c, f, h, w = shape
        shared = torch.randn((b, c, 1, h, w), generator=generator, device=device, dtype=dtype)
        own = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        # PYoCo mixed model: e_i = e_shared + e_ind_i, variances a2/(1+a2) and 1/(1+a2)
        return shared * math.sqrt(a2 / (1 + a2)) + own * math.sqrt(1 / (1 + a2))

    def _video_covariance(self, frames):
        rho = self.alpha**2 / (1 + self.alpha**2)
        cov = torch.full((frames, frames), rho, dtype=torch.float64)
        return cov.fill_diagonal_(1.0)


@PRIORS.register("progressive")
class ProgressivePrior(NoisePrior):
    """PYoCo's progressive noise model (Ge et al. 2023, section 3.2): AR(1) over frames.

    e_0 ~ N(0, I); e_i = alpha/sqrt(1+a2) e_{i-1} + n_i, n_i ~ N(0, 1/(1+a2) I);
    corr(e_i, e_j) = (alpha/sqrt(1+a2))^|i-j|.
    """

    name = "progressive"

    def __init__(self, alpha: float = 2.0):
        self.alpha = _check_alpha(alpha)

    def params(self):
        return {"alpha": self.alpha}

    def _sample_video(self, shape, generator, device, dtype):
        a2 = self.alpha**2
        rho, sd = self.alpha / math.sqrt(1 + a2), math.sqrt(1 / (1 + a2))
        n = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        frames = [n[:, :, 0]]  # e_0 = n_0 ~ N(0, I); each (B, C, H, W)
        for i in range(1, shape[2]):
            frames.append(frames[-1] * rho + n[:, :, i] * sd)  # PYoCo progressive model
        return torch.stack(frames, dim=2)  # (B, C, F, H, W)

    def _video_covariance(self, frames):
        rho = self.alpha / math.sqrt(1 + self.alpha**2)
        idx = torch.arange(frames, dtype=torch.float64)
        return rho ** (idx[:, None] - idx[None, :]).abs()


@dataclass(frozen=True)
class Decomposition:
    """VideoFusion's split of a clip's noise (eq. 7): lambda_i per frame (`lam`, a scalar or
    one per frame) and the key frame (`key_frame`, default floor(F/2)), where lambda = 1.
    The decomposed prior's parameters, and an architecture field of `VideoFusion`."""

    lam: float | tuple[float, ...] = 0.5  # a sequence becomes a tuple of floats
    key_frame: int | None = None

    def __post_init__(self):
        lam = self.lam
        values = [lam] if isinstance(lam, (int, float)) else list(lam)
        if not values or any(not (isinstance(v, (int, float)) and 0 <= v <= 1) for v in values):
            raise ValueError(f"lam (lambda) must lie in [0, 1], got {lam!r}")
        key = self.key_frame
        if key is not None and (not isinstance(key, int) or key < 0):
            raise ValueError(f"key_frame must be a non-negative integer, got {key!r}")
        object.__setattr__(self, "lam", float(lam) if isinstance(lam, (int, float))
                           else tuple(map(float, lam)))

    def key_index(self, frames: int) -> int:
        """The key frame of an F-frame clip: `key_frame`, or floor(F/2)."""
        _check_frames(frames)
        k = frames // 2 if self.key_frame is None else self.key_frame
        if k >= frames:
            raise ValueError(f"key_frame {k} lies outside a clip of {frames} frames")
        return k

    def lambdas(self, frames: int) -> torch.Tensor:
        """lambda_i for each of F frames, float64, with lambda_k = 1 at the key frame."""
        k = self.key_index(frames)
        if isinstance(self.lam, float):
            lam = torch.full((frames,), self.lam, dtype=torch.float64)
        elif len(self.lam) == frames:
            lam = torch.tensor(self.lam, dtype=torch.float64)
        else:
            raise ValueError(f"lam has {len(self.lam)} per-frame values for a {frames}-frame clip")
        lam[k] = 1.0
        return lam


@PRIORS.register("decomposed")
class DecomposedPrior(NoisePrior):
    """VideoFusion's decomposed noise (Luo et al. 2023, eq. 7): base plus residual noise.

    e_i = sqrt(lambda_i) b + sqrt(1 - lambda_i) r_i with b, r_i ~ N(0, I); the key frame
    k = floor(F/2) (or `key_frame`) has lambda_k = 1, so its noise is the base noise itself.
    corr(e_i, e_j) = sqrt(lambda_i lambda_j).

    `lam` is a scalar or a sequence of one lambda per frame (its key-frame entry is set to 1).
    """

    name = "decomposed"

    def __init__(self, lam: float | Sequence[float] = 0.5, key_frame: int | None = None):
        self.decomposition = Decomposition(lam, key_frame)
        self.lam, self.key_frame = self.decomposition.lam, self.decomposition.key_frame

    def params(self):
        return {"lam": self.lam, "key_frame": self.key_frame}

    def key_index(self, frames: int) -> int:
        """The key frame of an F-frame clip: `key_frame`, or floor(F/2)."""
        return self.decomposition.key_index(frames)

    def lambdas(self, frames: int) -> torch.Tensor:
        """lambda_i for each of F frames, float64, with lambda_k = 1 at the key frame."""
        return self.decomposition.lambdas(frames)

    def _sample_video(self, shape, generator, device, dtype):
        b, c, f, h, w = shape
        lam = self.lambdas(f).to(device=device, dtype=dtype).view(1, 1, f, 1, 1)
        base = torch.randn((b, c, 1, h, w), generator=generator, device=device, dtype=dtype)
        resid = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        return lam.sqrt() * base + (1 - lam).sqrt() * resid  # VideoFusion eq. 7

    def _video_covariance(self, frames):
        root = self.lambdas(frames).sqrt()
        return (root[:, None] * root[None, :]).fill_diagonal_(1.0)


def noise_prior(name: str = "independent", **params) -> NoisePrior:
    """The noise prior called `name` ("independent", "mixed", "progressive", "decomposed").

    >>> prior = noise_prior("mixed", alpha=1.0)
    >>> eps = prior.sample((2, 3, 8, 32, 32), generator=torch.Generator().manual_seed(0))
    """
    if name == "decomposed" and "lambda" in params:
        params["lam"] = params.pop("lambda")
    cls = PRIORS.get(name)
    try:
        return cls(**params)
    except TypeError as err:
        raise ValueError(f"bad parameters {params} for the {name!r} noise prior: {err}") from None


@dataclass
class PriorConfig:
    """A noise prior by name and parameters: a run's ``[prior]`` section, a model spec's
    ``prior`` (`build` makes it: ``noise_prior(name, **params)``)."""

    # independent | mixed | progressive | decomposed. PYoCo's progressive (AR) noise is the
    # default: frames that share their noise come out far more consistent after short training
    name: str = "progressive"
    params: dict = field(default_factory=dict)  # e.g. alpha = 2.0 (progressive), lam = 0.5

    def build(self) -> NoisePrior:
        """The prior (a ValueError for an unknown name or bad parameters)."""
        return noise_prior(self.name, **self.params)

    @classmethod
    def of(cls, prior: NoisePrior) -> PriorConfig:
        """The config that rebuilds `prior`, every parameter explicit."""
        return cls(prior.name, {k: list(v) if isinstance(v, tuple) else v
                                for k, v in prior.params().items()})


def apply_frames(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Multiply every pixel's frame vector by `matrix` (F, F): y[:, :, i] = sum_j M_ij x[:, :, j].

    x is (B, C, F, H, W); the matrix is cast to x's dtype and device.
    """
    m = matrix.to(device=x.device, dtype=x.dtype)
    return torch.einsum("ij,bcjhw->bcihw", m, x)
