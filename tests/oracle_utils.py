"""A Gaussian data distribution whose frames and pixels are correlated, for oracle tests."""

import torch


def moving_pattern_covariance(shape, var=0.25, floor=0.3, speed=(0.7, 0.3), length=1.2):
    """Covariance (D, D) float64 of a pattern drifting at `speed` pixels per frame.

    k((f, h, w), (f', h', w')) = exp(-|(dh, dw) - speed df|^2 / (2 l^2) - df^2 / 18), with
    channels correlated 0.6, scaled to marginal variance `var`; `floor` of the variance is
    white, which keeps every eigenvalue >= floor * var.
    """
    c, f, h, w = shape
    grid = torch.meshgrid(torch.arange(f), torch.arange(h), torch.arange(w), indexing="ij")
    idx = torch.stack(grid, -1).reshape(-1, 3).double()  # (F*H*W, 3)
    d = idx[:, None, :] - idx[None, :, :]  # (P, P, 3) differences (df, dh, dw)
    drift = (d[..., 1] - speed[0] * d[..., 0]) ** 2 + (d[..., 2] - speed[1] * d[..., 0]) ** 2
    kernel = torch.exp(-drift / (2 * length**2) - d[..., 0] ** 2 / 18)
    chan = torch.full((c, c), 0.6, dtype=torch.float64).fill_diagonal_(1.0)
    full = torch.kron(chan, kernel)  # index order (c, f, h, w)
    eye = torch.eye(full.shape[0], dtype=torch.float64)
    return var * ((1 - floor) * full + floor * eye)
