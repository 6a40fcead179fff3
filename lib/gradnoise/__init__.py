"""gradnoise: the numerical machinery of the book *Bias and variance of stochastic-gradient estimators*.

Modules: :mod:`~gradnoise.device` (where and in what precision), :mod:`~gradnoise.seeds` (generators),
:mod:`~gradnoise.ortho` (the polar factor and its derivatives), :mod:`~gradnoise.sampling` (the matrix
``G`` and per-token noise), :mod:`~gradnoise.estimators` (minibatch means, EMA, Richardson, jackknife),
:mod:`~gradnoise.stats` (standard errors and z-score assertions).
"""
from . import device, estimators, ortho, sampling, seeds, stats
from .device import DTYPE, describe
from .seeds import generator

__all__ = ["device", "estimators", "ortho", "sampling", "seeds", "stats", "DTYPE", "describe", "generator"]
__version__ = "0.1.0"
