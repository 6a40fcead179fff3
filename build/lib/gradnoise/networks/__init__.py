"""The real networks of Part IV and their training, apart from the per-example-gradient machinery
(:mod:`gradnoise.pergrad`).

- :mod:`gradnoise.networks.digits` — the digits MLP (scikit-learn's ``load_digits``), its data and its
  SGD checkpoints;
- :mod:`gradnoise.networks.training` — training with ``torch.optim.Muon`` (plain, Richardson-corrected and
  equal-compute arms) and learning-rate sweeps;
- :mod:`gradnoise.networks.modular` — a small transformer on modular addition (data the code generates).

Both networks' training returns :class:`Checkpoint` records.
"""
from __future__ import annotations

from typing import NamedTuple


class Checkpoint(NamedTuple):
    """A point on a training trajectory: the ``step``, ``params`` (a dict of tensors), the training ``loss``,
    and the train and test accuracies."""
    step: int
    params: dict
    loss: float
    train_accuracy: float
    test_accuracy: float
