"""gradnoise: the numerical machinery of the book *Bias and variance of stochastic-gradient estimators*.

Modules: :mod:`~gradnoise.device` (where, in what precision, how many trials), :mod:`~gradnoise.seeds`
(generators), :mod:`~gradnoise.ortho` (the polar factor and its derivatives), :mod:`~gradnoise.sampling`
(the matrix ``G`` and per-token noise), :mod:`~gradnoise.estimators` (minibatch means, EMA, Richardson,
jackknife), :mod:`~gradnoise.stats` (standard errors and z-score assertions) and
:mod:`~gradnoise.evidence` (the record of every check).

A chapter starts with ``gen = gradnoise.chapter("name")``: it names the chapter for the evidence page
and returns the chapter's one seeded generator.
"""
from . import device, estimators, evidence, ortho, sampling, seeds, stats
from .device import DTYPE, describe, trials
from .seeds import generator

__all__ = ["device", "estimators", "evidence", "ortho", "sampling", "seeds", "stats", "DTYPE", "chapter",
           "describe", "generator", "trials"]
__version__ = "0.2.0"


def chapter(name: str, claim: str | None = None):
    """Begin chapter ``name``: file its checks under that name and return its generator ``chapter:name``.

    ``claim`` is the claim ID the chapter's checks support when a check passes none (one-claim chapters).
    """
    evidence.begin(name, claim)
    return generator(f"chapter:{name}")
