"""Sampling: the samplers, guidance (denoiser wrappers) and the windowed commands
(extension, interpolation, super-resolution) on top of them.
"""
