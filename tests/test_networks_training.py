"""Unit tests of gradnoise.networks.training: torch.optim.Muon over stacked chains, and the training arms."""
from __future__ import annotations

import pytest
import torch

from gradnoise import muon, pergrad
from gradnoise.networks import training as tr


@pytest.fixture(scope="module")
def data():
    return pergrad.digits(device="cpu")


def _init(chains, seed=0):
    gen = torch.Generator().manual_seed(seed)
    inits = [pergrad.initial_parameters(gen, device="cpu") for _ in range(chains)]
    return {n: torch.stack([p[n] for p in inits]) for n in pergrad.NAMES}


def test_torch_muon_updates_the_stacked_tensor_as_muon_step():
    gen = torch.Generator().manual_seed(1)
    W = torch.randn(2, 3, 4, 6, dtype=torch.float64, generator=gen)
    G = torch.randn(2, 3, 4, 6, dtype=torch.float64, generator=gen)
    expected = torch.stack([muon.step(W[l], G[l], torch.zeros_like(G[l]), lr=lr, weight_decay=0.0)[0]
                            for l, lr in enumerate((0.1, 0.3))])
    opt, params = tr.torch_muon(W, (0.1, 0.3))
    tr.set_grads(params, G)
    opt.step()
    assert torch.equal(W, expected)                 # the views are updated in place, bit for bit


def test_muon_views_and_set_grads_check_their_arguments():
    with pytest.raises(ValueError):
        tr.muon_views(torch.zeros(3, 4, 5, dtype=torch.float64))
    with pytest.raises(ValueError):
        tr.muon_views(torch.zeros(1, 1, 2, 2, requires_grad=True))
    with pytest.raises(ValueError):
        tr.torch_muon(torch.zeros(2, 1, 2, 2), (0.1,))
    with pytest.raises(ValueError):
        tr.torch_muon(torch.zeros(1, 1, 2, 2), (-0.1,))
    _, params = tr.torch_muon(torch.zeros(1, 2, 2, 2), (0.1,))
    with pytest.raises(ValueError):
        tr.set_grads(params, torch.zeros(1, 3, 2, 2))


@pytest.mark.parametrize("arm", tr.ARMS)
def test_torch_class_and_package_model_train_alike(data, arm):
    init = _init(2)
    runs = {e: tr.train(data, init, (0.01, 0.05), 4, 6, torch.Generator().manual_seed(3), arms=(arm,),
                        record_every=3, engine=e)[arm] for e in ("torch", "model")}
    for name in pergrad.NAMES:
        assert torch.equal(runs["torch"].params[name], runs["model"].params[name])
    run = runs["torch"]
    assert run.curve.shape == (3, 2, 2) and run.loss.shape == (2, 2) and run.test_accuracy.shape == (2, 2)
    assert torch.equal(run.recorded, torch.tensor([0, 3, 6]))
    assert torch.equal(run.curve[-1], run.loss) and run.seconds > 0


def test_plain_arm_direction_has_the_norm_of_one_newton_schulz_output(data):
    run = tr.train(data, _init(3), (0.02,), 8, 5, torch.Generator().manual_seed(0), arms=("muon-2k", "richardson"))
    plain, rich = run["muon-2k"].direction_norm, run["richardson"].direction_norm
    # NS_5's singular values lie in about (0.7, 1.2): the norm of a 32x64 output is between 0.7 and 1.2 sqrt(32)
    assert ((plain > 0.7 * 32**0.5) & (plain < 1.2 * 32**0.5)).all()
    assert (rich > plain).all()                     # 2a - b with |a| = |b| and a != b is longer than a


def test_arms_share_their_data_and_differ_in_their_direction(data):
    init = _init(2)
    a = tr.train(data, init, (0.02,), 4, 3, torch.Generator().manual_seed(5), arms=tr.ARMS)
    b = tr.train(data, init, (0.02,), 4, 3, torch.Generator().manual_seed(5), arms=("richardson",))
    assert torch.equal(a["richardson"].params["0.weight"], b["richardson"].params["0.weight"])  # paired draws
    assert not torch.equal(a["richardson"].params["0.weight"], a["richardson-gradient"].params["0.weight"])
    assert not torch.equal(a["muon-2k"].params["0.weight"], a["muon-3k"].params["0.weight"])
    # the step-0 losses are those of the shared initialisation, in every arm
    for arm in tr.ARMS:
        assert torch.equal(a[arm].curve[0], a["muon-2k"].curve[0])


def test_train_checks_its_arguments(data):
    init = _init(1)
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError):
        tr.train(data, {n: v[0] for n, v in init.items()}, (0.1,), 4, 2, gen)
    with pytest.raises(ValueError):
        tr.train(data, init, (), 4, 2, gen)
    with pytest.raises(ValueError):
        tr.train(data, init, (0.1,), 0, 2, gen)
    with pytest.raises(ValueError):
        tr.train(data, init, (0.1,), 4, 2, gen, arms=("adam",))
    with pytest.raises(ValueError):
        tr.train(data, init, (0.1,), 4, 2, gen, engine="jax")
