"""gradnoise.networks.digits: the digits MLP, its data and its training, apart from pergrad's machinery."""
import pytest
import torch

import gradnoise
from gradnoise.networks import digits as dg

f64 = torch.float64


@pytest.fixture(scope="module")
def data():
    return dg.digits()


def test_module_constants_and_shapes():
    assert dg.NAMES == ("0.weight", "0.bias", "2.weight", "2.bias")
    assert dg.DIM == sum(torch.Size(s).numel() for s in dg.SHAPES.values()) == 2410
    assert dg.CHECKPOINT_STEPS == (0, 10, 50, 400) and dg.MAX_STEPS >= max(dg.CHECKPOINT_STEPS)


def test_initial_parameters_are_pytorch_default_scale():
    p = dg.initial_parameters()
    assert set(p) == set(dg.NAMES) and all(p[n].dtype == f64 for n in dg.NAMES)
    assert p["0.weight"].abs().max() <= 1 / 64**0.5 and p["2.weight"].abs().max() <= 1 / 32**0.5
    again = dg.initial_parameters()
    assert all(torch.equal(p[n], again[n]) for n in dg.NAMES)        # the same seed, the same numbers


def test_minibatch_gradient_matches_autograd(data):
    cp = dg.checkpoints((5,), data=data)[0]
    x, y = data.x_train[:40], data.y_train[:40]
    leaves = {n: cp.params[n].clone().requires_grad_(True) for n in dg.NAMES}
    auto = torch.autograd.grad(dg.losses(leaves, x, y), [leaves[n] for n in dg.NAMES])
    hand = dg.minibatch_gradient(cp.params, x, y)
    assert all((hand[n] - a).abs().max() < 1e-14 for n, a in zip(dg.NAMES, auto))


def test_checkpoints_gradient_descent_lowers_the_loss(data):
    a, b = dg.checkpoints((0, 20), data=data)
    assert a.step == 0 and b.step == 20 and b.loss < a.loss and b.test_accuracy > 0.8
    plain = dg.checkpoints((3,), data=data, momentum=0.0)[0]
    theta = dg.initial_parameters()
    for _ in range(3):
        g = dg.minibatch_gradient(theta, data.x_train, data.y_train)
        theta = {n: theta[n] - dg.LEARNING_RATE * g[n] for n in dg.NAMES}
    assert all((plain.params[n] - theta[n]).abs().max() < 1e-13 for n in dg.NAMES)


def test_sgd_chains_are_independent_and_seeded(data):
    p = dg.initial_parameters()
    x, y = data.x_train[:50], data.y_train[:50]
    run = lambda: dg.sgd(p, x, y, lr=0.1, batch=4, steps=3, gen=gradnoise.generator("test:digits:sgd"), chains=2)[0]
    one, two = run(), run()
    assert torch.equal(one["0.weight"], two["0.weight"])               # seeded
    assert not torch.equal(one["0.weight"][0], one["0.weight"][1])     # chains draw different batches


@pytest.mark.parametrize("call, match", [
    (lambda d, p: dg.losses(p, d.x_train[:5], torch.tensor([0, 1, 2, 3, 10])), "class labels"),
    (lambda d, p: dg.accuracy(p, d.x_train[:2], torch.tensor([-1, 0])), "class labels"),
    (lambda d, p: dg.minibatch_gradient(p, d.x_train[:3].float(), d.y_train[:3]), "dtype and device"),
    (lambda d, p: dg.losses(p, d.x_train[:3], d.y_train[:3].float()), "int64"),
    (lambda d, p: dg.logits({**p, "0.weight": p["0.weight"] * float("nan")}, d.x_train[:3]), "NaN"),
    (lambda d, p: dg.logits({"0.weight": p["0.weight"]}, d.x_train[:3]), "keys"),
    (lambda d, p: dg.checkpoints((10**9,), data=d), "steps"),
    (lambda d, p: dg.checkpoints((1,), data=d, lr=-1.0), "lr"),
    (lambda d, p: dg.checkpoints((1,), data="digits"), "data"),
    (lambda d, p: dg.sgd(p, d.x_train, d.y_train, lr=0.1, batch=1, steps=1, gen=None), "gen"),
    (lambda d, p: dg.sgd(p, d.x_train, d.y_train, lr=0.1, batch=1, steps=10**7,
                         gen=gradnoise.generator("t")), "steps"),
    (lambda d, p: dg.sgd(p, d.x_train, d.y_train, lr=0.1, batch=1, steps=1, gen=gradnoise.generator("t"),
                         chains=10**10), "allocate"),
    (lambda d, p: dg.digits(test_fraction=1.0), "test_fraction"),
])
def test_bad_input_one_line(data, call, match):
    with pytest.raises(ValueError, match=match) as info:
        call(data, dg.initial_parameters())
    assert "\n" not in str(info.value)
