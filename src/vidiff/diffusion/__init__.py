"""The diffusion math: schedules, noise priors, predictions, the DDPM and flow-matching
processes, the loss, the likelihood and the Gaussian oracle.
"""
