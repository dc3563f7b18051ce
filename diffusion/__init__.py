"""A class-conditional DDPM on MNIST digits, written to be read.

Modules, one idea each (read them in this order):
    schedules   β, α, ᾱ, SNR, forward noising q(x_t|x_0), the posterior q(x_{t-1}|x_t,x_0)
    model       the class-conditional U-Net that predicts ε
    sampling    classifier-free guidance and the samplers (DDPM, DDIM, DPM-Solver++(2M))
    train       the training loop (python -m diffusion.train)
    classifier  the trusted digit classifier used for scoring
    pipeline    the Python API: load_pipeline() and DigitDiffusion.generate()
    sample      the sampling CLI (python -m diffusion.sample)
    evaluate    the evaluation CLI (python -m diffusion.evaluate)
    scoring     CLIP and classifier scores for the app
"""
from .pipeline import (DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS, DigitDiffusion,
                       load_pipeline)

__all__ = ["load_pipeline", "DigitDiffusion", "DEFAULT_GUIDANCE", "DEFAULT_SAMPLER", "DEFAULT_STEPS"]
