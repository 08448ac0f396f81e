"""What a network predicts, and every conversion between x_t, x_0, eps and v, in one place.

At x_t = a x_0 + s eps, with a = sqrt(abar_t) and s = sqrt(1 - abar_t) (floats or tensors
broadcastable to x_t), a network predicts one of

- ``"eps"``: the noise (DDPM);
- ``"x0"``: the clean data;
- ``"v"``: v = a eps - s x_0 (Salimans & Ho 2022, section 4).

`split_prediction` turns a prediction into (x_0, eps); `prediction_of` turns (x_0, eps) back
into a prediction (the regression target). Everything else in vidiff (the loss, the samplers,
guidance, the Gaussian oracle) goes through these two.
"""

from __future__ import annotations

__all__ = ["PREDICTIONS", "check_prediction", "eps_from_x0", "prediction_of", "split_prediction",
           "x0_from_eps"]

PREDICTIONS = ("eps", "x0", "v")


def check_prediction(prediction: str) -> str:
    """`prediction`, or a ValueError listing the valid ones."""
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; valid: {', '.join(PREDICTIONS)}")
    return prediction


def x0_from_eps(xt, eps, a, s):
    """x_0 = (x_t - s eps) / a (DDPM eq. 15)."""
    return (xt - s * eps) / a


def eps_from_x0(xt, x0, a, s):
    """eps = (x_t - a x_0) / s."""
    return (xt - a * x0) / s


def split_prediction(prediction: str, out, xt, a, s):
    """(x_0, eps) from a network output `out` of type `prediction` at x_t."""
    if prediction == "eps":
        return x0_from_eps(xt, out, a, s), out
    if prediction == "x0":
        return out, eps_from_x0(xt, out, a, s)
    if prediction == "v":  # v = a eps - s x0  =>  x0 = a x_t - s v, eps = s x_t + a v
        return a * xt - s * out, s * xt + a * out
    raise ValueError(check_prediction(prediction))


def prediction_of(prediction: str, x0, eps, a, s):
    """The output of type `prediction` that a perfect network gives for (x_0, eps)."""
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    if prediction == "v":
        return a * eps - s * x0  # Salimans & Ho 2022
    raise ValueError(check_prediction(prediction))
