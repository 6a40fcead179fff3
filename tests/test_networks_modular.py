"""Unit tests of gradnoise.networks.modular: data, the transformer, its per-example gradients, training, counts."""
import pytest
import torch

import gradnoise as gn
from gradnoise.networks import modular

P = 11   # a small modulus keeps the tests fast


@pytest.fixture(scope="module")
def small():
    d = modular.data(P, 0.5, device="cpu")
    params = modular.initial_parameters(P, device="cpu")
    return d, params


def test_data_covers_every_pair_once(small):
    d, _ = small
    tokens = torch.cat([d.tokens_train, d.tokens_test])
    y = torch.cat([d.y_train, d.y_test])
    assert d.tokens_train.shape == (round(0.5 * P * P), 2) and tokens.shape == (P * P, 2)
    assert len({tuple(t) for t in tokens.tolist()}) == P * P
    assert torch.equal(y, (tokens[:, 0] + tokens[:, 1]) % P)
    again = modular.data(P, 0.5, device="cpu")
    assert torch.equal(again.tokens_train, d.tokens_train)


@pytest.mark.parametrize("kwargs", [dict(p=1), dict(train_fraction=0.0), dict(train_fraction=1.0),
                                    dict(train_fraction="half"), dict(p=2.5)])
def test_data_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        modular.data(**kwargs)


def test_parameters_shapes_and_dtype(small):
    _, params = small
    assert set(params) == set(modular.NAMES)
    for name, shape in modular.shapes(P).items():
        assert params[name].shape == shape and params[name].dtype == torch.float64


def _reference_logits(params, tokens):
    """The full causal layer over both positions, written out with explicit loops over heads."""
    x = params["embed"][tokens] + params["pos"]
    d = x.shape[-1]
    dh = d // modular.HEADS
    q, k, v = (x @ params[f"attn.{c}"].T for c in "qkv")
    heads = []
    for h in range(modular.HEADS):
        sl = slice(h * dh, (h + 1) * dh)
        scores = q[..., sl] @ k[..., sl].transpose(-1, -2) / dh**0.5
        scores = scores.masked_fill(~torch.ones(2, 2, dtype=torch.bool).tril(), float("-inf"))
        heads.append(torch.softmax(scores, -1) @ v[..., sl])
    x = x + torch.cat(heads, -1) @ params["attn.o"].T
    x = x + torch.relu(x @ params["mlp.in"].T) @ params["mlp.out"].T
    return x[..., -1, :] @ params["unembed"].T


def test_logits_equal_the_full_causal_layer(small):
    d, params = small
    z = modular.logits(params, d.tokens_train)
    assert z.shape == (d.tokens_train.shape[0], P)
    torch.testing.assert_close(z, _reference_logits(params, d.tokens_train), rtol=1e-12, atol=1e-12)
    loss = modular.losses(params, d.tokens_train, d.y_train)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(z, d.y_train))


def test_bad_inputs_raise(small):
    d, params = small
    with pytest.raises(ValueError):
        modular.logits({k: v for k, v in params.items() if k != "attn.q"}, d.tokens_train)
    with pytest.raises(ValueError):
        modular.logits(params, d.tokens_train.to(torch.float64))
    with pytest.raises(ValueError):
        modular.logits(params, d.tokens_train + P)
    with pytest.raises(ValueError):
        modular.losses(params, d.tokens_train, d.y_train[:-1])
    with pytest.raises(ValueError):
        modular.per_example_gradients(params, d.tokens_train, d.y_train, names=("nope",))
    bad = dict(params, **{"attn.q": params["attn.q"].clone().fill_(float("nan"))})
    with pytest.raises(ValueError):
        modular.logits(bad, d.tokens_train)


def test_per_example_gradients_match_finite_differences(small):
    """BackPACK has no attention layer: central differences of each example's loss are the reference."""
    d, params = small
    idx = torch.tensor([0, 3, 7])
    grads = modular.per_example_gradients(params, d.tokens_train[idx], d.y_train[idx], names=modular.NAMES)
    gen = torch.Generator().manual_seed(0)
    h = 1e-6
    for name in modular.NAMES:
        assert grads[name].shape == (3, *params[name].shape)
        for _ in range(3):
            flat = torch.randint(params[name].numel(), (1,), generator=gen).item()
            for e in range(3):
                def loss(delta):
                    p = dict(params)
                    p[name] = params[name].clone()
                    p[name].view(-1)[flat] += delta
                    return modular.losses(p, d.tokens_train[idx[e]:idx[e] + 1], d.y_train[idx[e]:idx[e] + 1]).item()
                fd = (loss(h) - loss(-h)) / (2 * h)
                assert abs(grads[name][e].reshape(-1)[flat].item() - fd) <= 1e-6 * max(1.0, abs(fd)), (name, e)


def test_mean_of_per_example_gradients_is_the_full_gradient(small):
    d, params = small
    grads = modular.per_example_gradients(params, d.tokens_train, d.y_train, chunk=17)
    full = modular.full_gradient(params, d.tokens_train, d.y_train)
    for name in modular.HIDDEN:
        torch.testing.assert_close(grads[name].mean(0), full[name], rtol=1e-10, atol=1e-12)


def test_train_with_muon_lowers_the_loss():
    d = modular.data(P, 0.5, device="cpu")
    cps = modular.train((5, 0), d)
    assert [c.step for c in cps] == [0, 5]
    assert cps[1].loss < cps[0].loss
    for name in modular.NAMES:
        assert not torch.equal(cps[0].params[name], cps[1].params[name])
    assert 0 <= cps[1].train_accuracy <= 1 and 0 <= cps[1].test_accuracy <= 1


@pytest.mark.parametrize("kwargs", [dict(steps=()), dict(steps=(-1,)), dict(steps=(True,)), dict(lr_muon=0.0),
                                    dict(lr_adamw=-1.0), dict(momentum=1.0), dict(weight_decay=-0.1)])
def test_train_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        modular.train(**kwargs)


def test_batch_counts_are_multinomial():
    gen = gn.generator("test:batch_counts", device="cpu")
    n, batch, trials = 7, 1000, 4000
    c = modular.batch_counts(n, batch, (trials,), gen)
    assert c.shape == (trials, n) and bool((c.sum(-1) == batch).all()) and bool((c >= 0).all())
    assert torch.equal(c, c.round())
    mean, se = gn.stats.mean_stderr(c)
    gn.stats.assert_agrees(mean, se, batch / n, what="multinomial count means")
    var, var_se = zip(*(gn.stats.total_variance(c[:, i:i + 1]) for i in range(n)))
    gn.stats.assert_agrees(torch.stack(var), torch.stack(var_se), batch * (1 / n) * (1 - 1 / n),
                           what="multinomial count variances")
    gn.stats.assert_rejects(torch.stack(var), torch.stack(var_se), batch / n, what="Poisson variances")
    big = modular.batch_counts(5, 10**7, (3, 2), gen)
    assert big.shape == (3, 2, 5) and bool((big.sum(-1) == 10**7).all())


@pytest.mark.parametrize("args", [(0, 5, (2,)), (5, 0, (2,)), (5, 5, (0,)), (5, 5.5, (2,))])
def test_batch_counts_reject_bad_arguments(args):
    with pytest.raises(ValueError):
        modular.batch_counts(*args, gn.generator("x", device="cpu"))
    with pytest.raises(ValueError):
        modular.batch_counts(5, 5, (2,), None)
