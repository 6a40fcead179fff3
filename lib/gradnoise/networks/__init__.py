"""The real networks of Part IV and their training, apart from the per-example-gradient machinery
(:mod:`gradnoise.pergrad`).

- :mod:`gradnoise.networks.digits` — the digits MLP (scikit-learn's ``load_digits``), its data and its
  SGD checkpoints;
- :mod:`gradnoise.networks.training` — training with ``torch.optim.Muon`` (plain, Richardson-corrected and
  equal-compute arms) and learning-rate sweeps;
- :mod:`gradnoise.networks.modular` — a small transformer on modular addition (data the code generates).
"""
