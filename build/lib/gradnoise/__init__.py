r"""gradnoise: the numerical machinery of the book *Bias and variance of stochastic-gradient estimators*.

Modules, named after the book's ideas:

- :mod:`~gradnoise.device` — where, in what precision, and how many Monte-Carlo trials (the size knob);
- :mod:`~gradnoise.seeds` — seeded generators; :mod:`~gradnoise.stats` — standard errors, z-tests and
  exact checks; :mod:`~gradnoise.evidence` — the record of every check;
- :mod:`~gradnoise.ortho` — the polar factor, its first- and second-order expansion, the bias
  coefficient :math:`b(\Sigma)`; :mod:`~gradnoise.exact` — exact expectations for noise along one direction;
- :mod:`~gradnoise.sampling` — the matrix ``G`` and per-token noise; :mod:`~gradnoise.estimators` —
  minibatch means, EMA, Richardson, jackknife; :mod:`~gradnoise.muon` — ``torch.optim.Muon``'s update;
- :mod:`~gradnoise.minibatch` — minibatch moments of a finite data set, exactly and by sampling;
  :mod:`~gradnoise.diffusion` — SGD and SDE chains, Lyapunov solutions;
- :mod:`~gradnoise.nqm` — the noisy quadratic model's exact moment recursions;
- :mod:`~gradnoise.pergrad` — a real network (digits MLP) and its per-example gradients;
- :mod:`~gradnoise.course` — the exercises' self-checks (a student's answer against a fingerprint).

The book's plumbing (Sphinx extension, ledger, build cache) lives apart, in :mod:`gradnoise.site`.

A chapter starts with ``gen = gradnoise.chapter("name")``: it names the chapter for the evidence page
and returns the chapter's one seeded generator.
"""
from . import device, estimators, evidence, ortho, sampling, seeds, stats
from .device import DTYPE, describe, trials
from .seeds import generator

__all__ = ["course", "device", "estimators", "evidence", "ortho", "sampling", "seeds", "stats", "DTYPE", "chapter",
           "describe", "generator", "trials"]
__version__ = "0.2.0"


def chapter(name: str, claim: str | None = None):
    """Begin chapter ``name``: file its checks under that name and return its generator ``chapter:name``.

    ``claim`` is the claim ID the chapter's checks support when a check passes none (one-claim chapters).
    """
    evidence.begin(name, claim)
    return generator(f"chapter:{name}")


def __getattr__(name: str):
    """``gradnoise.course`` on first use (so that ``python -m gradnoise.course`` runs it only once)."""
    if name == "course":
        import importlib

        return importlib.import_module(".course", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
