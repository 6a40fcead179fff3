import pytest
import torch

import gradnoise
from gradnoise import pergrad as pg
from gradnoise import stats

f64 = torch.float64


@pytest.fixture(scope="module")
def data():
    return pg.digits()


@pytest.fixture(scope="module")
def trained(data):
    return pg.checkpoints((0, 30), data=data)


def test_digits_split_and_standardisation(data):
    assert data.x_train.shape == (1438, 64) and data.x_test.shape == (359, 64)
    assert data.x_train.dtype == f64 and data.y_train.dtype == torch.int64
    m, s = data.x_train.mean(0), data.x_train.std(0)
    assert m.abs().max() < 1e-12
    assert bool(((s - 1).abs() < 1e-12).logical_or(s == 0).all()) and int((s == 0).sum()) >= 1
    again = pg.digits()
    assert torch.equal(again.x_train, data.x_train) and torch.equal(again.y_test, data.y_test)
    assert sorted(torch.cat([data.y_train, data.y_test]).bincount().tolist()) == sorted(
        [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])          # load_digits' class counts
    with pytest.raises(ValueError, match="test_fraction"):
        pg.digits(test_fraction=1.0)


def test_flatten_roundtrip_and_dim(trained):
    p = trained[1].params
    v = pg.flatten(p)
    assert v.shape == (pg.DIM,) and pg.DIM == 64 * 32 + 32 + 32 * 10 + 10
    back = pg.unflatten(v)
    assert all(torch.equal(back[n], p[n]) for n in pg.NAMES)
    with pytest.raises(ValueError, match="vector"):
        pg.unflatten(v[:-1])
    with pytest.raises(ValueError, match="tensors must be a dict"):          # named after flatten's argument
        pg.flatten({"0.weight": p["0.weight"]})


def test_logits_match_the_torch_module_and_batch_over_chains(trained, data):
    p = trained[1].params
    model = pg.network()
    model.load_state_dict(p)
    x = data.x_train[:50]
    assert torch.allclose(pg.logits(p, x), model(x), rtol=0, atol=1e-13)
    stacked = {n: torch.stack([trained[0].params[n], p[n]]) for n in pg.NAMES}
    both = pg.losses(stacked, x, data.y_train[:50])
    one = torch.stack([pg.losses(c.params, x, data.y_train[:50]) for c in trained])
    assert torch.allclose(both, one, rtol=1e-14, atol=0)
    ce = torch.nn.functional.cross_entropy(model(x), data.y_train[:50])
    ridge = 0.5 * pg.WEIGHT_DECAY * (pg.flatten(p) ** 2).sum()
    assert abs(one[1].item() - (ce + ridge).item()) < 1e-14


def test_per_example_gradients_three_routes(trained, data):
    """torch.func per-example gradients = hand-written backprop per example; their mean = autograd G_T."""
    for cp in trained:
        x, y = data.x_train, data.y_train
        grads = pg.per_example_gradients(cp.params, x, y)
        assert grads["0.weight"].shape == (x.shape[0], 32, 64)
        G = pg.per_example_gradient_matrix(cp.params, x, y)
        assert G.shape == (x.shape[0], pg.DIM)
        by_hand = pg.flatten(pg.minibatch_gradient(cp.params, x.unsqueeze(1), y.unsqueeze(1)), lead=1)
        assert (G - by_hand).abs().max() < 1e-13
        assert (G.mean(0) - pg.full_gradient(cp.params, x, y)).abs().max() < 1e-14


def test_per_example_gradient_against_finite_differences(trained, data):
    p, x, y = trained[1].params, data.x_train[:3], data.y_train[:3]
    G = pg.per_example_gradient_matrix(p, x, y)
    gen = gradnoise.generator("test:pergrad:fd", device=x.device)
    u = torch.randn(pg.DIM, generator=gen, dtype=f64, device=x.device)
    u = u / u.norm()             # a unit direction: the step h below is the step in parameter space

    def central(h):
        """(L(p + hu) - L(p - hu)) / 2h for each example: error c2 h^2 + c4 h^4 + rounding ~ eps/h."""
        plus, minus = pg.unflatten(pg.flatten(p) + h * u), pg.unflatten(pg.flatten(p) - h * u)
        return torch.stack([(pg.losses(plus, x[i:i + 1], y[i:i + 1]) - pg.losses(minus, x[i:i + 1], y[i:i + 1])).sum()
                            for i in range(3)]) / (2 * h)

    # Richardson's extrapolation removes the h^2 term: at h = 1e-3 what is left (h^4, and eps/h ~ 1e-13)
    # is far below the bound, whatever the direction; a fixed h with an unnormalised u was not (seed 17).
    h = 1e-3
    extrapolated = (4 * central(h / 2) - central(h)) / 3
    exact = G @ u
    assert ((extrapolated - exact).abs() < 1e-9 * exact.abs().clamp_min(1.0)).all()


@pytest.mark.filterwarnings("ignore:Full backward hook")
def test_per_example_gradients_agree_with_backpack(trained, data):
    backpack = pytest.importorskip("backpack")
    from backpack.extensions import BatchGrad

    x, y = data.x_train, data.y_train
    for cp in trained:
        model = pg.network()
        model.load_state_dict(cp.params)
        model = backpack.extend(model)
        lossfunc = backpack.extend(torch.nn.CrossEntropyLoss(reduction="sum"))
        with backpack.backpack(BatchGrad()):
            lossfunc(model(x), y).backward()
        named = dict(model.named_parameters())
        ours = pg.per_example_gradients(cp.params, x, y)
        for n in pg.NAMES:
            theirs = named[n].grad_batch + pg.WEIGHT_DECAY * cp.params[n]
            assert (ours[n] - theirs).abs().max() < 1e-12


def test_covariance_and_its_eigenvalues():
    gen = gradnoise.generator("test:pergrad:cov", device="cpu")
    for n, d in ((7, 5), (4, 9)):
        G = torch.randn(n, d, generator=gen, dtype=f64) + 3.0
        S = pg.gradient_covariance(G)
        assert torch.allclose(S, torch.cov(G.T, correction=0), atol=1e-13)
        ev = pg.covariance_eigenvalues(G)
        assert ev.shape == (d,) and bool((ev[:-1] >= ev[1:]).all())
        assert torch.allclose(ev, torch.linalg.eigvalsh(S).flip(0).clamp_min(0), atol=1e-12)
        assert abs(ev.sum() - S.trace()) < 1e-12
        gt = G.mean(0)
        assert abs(pg.simple_noise_scale(G) - S.trace() / (gt @ gt)) < 1e-12
    with pytest.raises(ValueError, match="grads"):
        pg.gradient_covariance(torch.ones(3))


def test_batch_indices_laws():
    gen = gradnoise.generator("test:pergrad:idx")
    idx = pg.batch_indices(10, 4, (20_000,), gen, replacement=False)
    s = idx.sort(-1).values
    assert bool((s[:, 1:] != s[:, :-1]).all())                     # no repeats within a batch
    counts = torch.nn.functional.one_hot(idx.flatten().cpu(), 10).to(f64).reshape(20_000, 4, 10).sum(1)
    m, se = stats.mean_stderr(counts)
    stats.assert_agrees(m, se, 0.4)                                # each example in a batch w.p. B/N
    with_rep = pg.batch_indices(10, 4, (20_000,), gen, replacement=True)
    s = with_rep.sort(-1).values
    repeats = (s[:, 1:] == s[:, :-1]).any(-1).to(f64)
    m, se = stats.mean_stderr(repeats)
    stats.assert_agrees(m, se, 1 - 10 * 9 * 8 * 7 / 10**4)        # P(some repeat) with replacement
    assert torch.equal(pg.batch_indices(5, 5, (2,), gen, replacement=False)[0].cpu(), torch.arange(5))
    with pytest.raises(ValueError, match="batch"):
        pg.batch_indices(5, 6, (1,), gen, replacement=False)


def test_minibatch_gradient_is_unbiased_with_variance_trace_over_B(trained, data):
    p, x, y = trained[1].params, data.x_train[:200], data.y_train[:200]
    G = pg.per_example_gradient_matrix(p, x, y)
    gen = gradnoise.generator("test:pergrad:mb")
    idx = pg.batch_indices(200, 5, (4000,), gen, replacement=True)
    g = pg.flatten(pg.minibatch_gradient(p, x[idx], y[idx]), lead=1)
    gt = G.mean(0)
    m, se = stats.mean_stderr(g @ gt)
    stats.assert_agrees(m, se, gt @ gt)
    v, v_se = stats.total_variance(g)
    stats.assert_agrees(v, v_se, pg.gradient_covariance(G).trace() / 5)
    stats.assert_rejects(v, v_se, pg.gradient_covariance(G).trace())


def test_sgd_with_the_whole_set_is_gradient_descent(trained, data):
    p, x, y = trained[1].params, data.x_train[:100], data.y_train[:100]
    gen = gradnoise.generator("test:pergrad:sgd")
    final, rec = pg.sgd(p, x, y, lr=0.3, batch=100, steps=4, gen=gen, chains=3, replacement=False,
                        record_every=2)
    assert final["0.weight"].shape == (3, 32, 64) and rec.shape == (2, 3, pg.DIM)
    theta = pg.flatten(p)
    for _ in range(4):
        theta = theta - 0.3 * pg.full_gradient(pg.unflatten(theta), x, y)
    assert (pg.flatten(final, lead=1) - theta).abs().max() < 1e-13
    assert (rec[-1] - theta).abs().max() < 1e-13
    with pytest.raises(ValueError, match="lr"):
        pg.sgd(p, x, y, lr=0.0, batch=2, steps=1, gen=gen)


def test_checkpoints_train_deterministically(data, trained):
    cps = pg.checkpoints((30, 0, 10), data=data)
    assert [c.step for c in cps] == [0, 10, 30]
    assert torch.equal(cps[-1].params["2.weight"], trained[1].params["2.weight"])
    assert cps[0].loss > cps[1].loss > cps[2].loss and cps[2].test_accuracy > 0.9
    assert abs(cps[0].loss - (2.3 + 0.5 * pg.WEIGHT_DECAY * (pg.flatten(cps[0].params) ** 2).sum().item())) < 0.1
    with pytest.raises(ValueError, match="steps"):
        pg.checkpoints((-1,), data=data)


def test_gradient_gram_from_layer_factors(trained, data):
    x, y = data.x_train[:300], data.y_train[:300]
    for cp in trained:
        G = pg.per_example_gradient_matrix(cp.params, x, y)
        C = G - G.mean(0)
        K = pg.gradient_gram(cp.params, x, y)
        assert (K - C @ C.T / 300).abs().max() < 1e-13 * max(1.0, K.abs().max().item())
        K0 = pg.gradient_gram(cp.params, x, y, centred=False)
        assert (K0 - G @ G.T / 300).abs().max() < 1e-13 * max(1.0, K0.abs().max().item())
        assert abs(K.trace() - pg.gradient_covariance(G).trace()) < 1e-12


def test_pergrad_reexports_the_digits_module():
    from gradnoise.networks import digits as dg
    for name in ("digits", "checkpoints", "sgd", "minibatch_gradient", "logits", "losses", "accuracy", "flatten",
                 "unflatten", "initial_parameters", "network", "Digits", "Checkpoint", "NAMES", "SHAPES", "DIM",
                 "WEIGHT_DECAY", "CHECKPOINT_STEPS", "MAX_STEPS", "_check_params"):
        assert getattr(pg, name) is getattr(dg, name), name


def test_functional_per_example_gradients_of_any_module(trained, data):
    """The generic route on a plain torch.nn.Linear equals the closed form (p - e_y) x^T per example."""
    gen = gradnoise.generator("test:pergrad:functional", device="cpu")
    lin = torch.nn.Linear(4, 3).to(f64)
    params = {"weight": torch.randn(3, 4, generator=gen, dtype=f64), "bias": torch.zeros(3, dtype=f64)}
    x = torch.randn(6, 4, generator=gen, dtype=f64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    g = pg.functional_per_example_gradients(lin, params, lambda out, t, p: torch.nn.functional.cross_entropy(out, t),
                                            x, y)
    delta = torch.softmax(x @ params["weight"].T, -1) - torch.nn.functional.one_hot(y, 3).to(f64)
    assert (g["weight"] - delta[:, :, None] * x[:, None, :]).abs().max() < 1e-14
    assert (g["bias"] - delta).abs().max() < 1e-14
    with pytest.raises(ValueError, match="model"):
        pg.functional_per_example_gradients("not a module", params, lambda *a: 0, x, y)
    with pytest.raises(ValueError, match="same number of examples"):
        pg.functional_per_example_gradients(lin, params, lambda out, t, p: out.sum(), x, y[:5])


def test_batch_means_laws_with_and_without_replacement():
    """Unbiased, covariance Sigma/k with replacement (any k, including k > N by multinomial counts) and
    (N-k)/(N-1) Sigma/k without; the whole set without replacement is exact."""
    gen = gradnoise.generator("test:pergrad:batch_means")
    G = torch.randn(7, 3, generator=gen, dtype=f64, device=gen.device) * torch.tensor([1.0, 2.0, 3.0], dtype=f64,
                                                                                       device=gen.device)
    N, gt, tr = 7, G.mean(0), pg.gradient_covariance(G).trace()
    # nearest wrong laws: the other design's factor; for k > N, the k - N surplus draws ignored (Sigma/N)
    for k, repl, factor, wrong in ((3, True, 1 / 3, 4 / 18), (50, True, 1 / 50, 1 / 7), (3, False, 4 / 18, 1 / 3)):
        m = pg.batch_means(G, k, 40_000, gen, replacement=repl, chunk=9_999)
        assert m.shape == (40_000, 3)
        mu, se = stats.mean_stderr(m)
        stats.assert_agrees(mu, se, gt)
        v, v_se = stats.total_variance(m)
        stats.assert_agrees(v, v_se, tr * factor)
        stats.assert_rejects(v, v_se, tr * wrong)
    whole = pg.batch_means(G, 7, 3, gen, replacement=False)
    assert torch.allclose(whole, gt.expand(3, 3), rtol=0, atol=1e-14)
    assert pg.batch_means(G.reshape(7, 3, 1), 2, 5, gen).shape == (5, 3, 1)


def test_batch_means_multinomial_counts_sum_to_k():
    gen = gradnoise.generator("test:pergrad:counts")
    c = pg._multinomial_counts(11, 10**6, 64, gen, f64)
    assert bool((c.sum(1) == 10**6).all()) and bool((c >= 0).all())
    m, se = stats.mean_stderr(c)
    stats.assert_agrees(m, se, torch.full((11,), 10**6 / 11, dtype=f64))


@pytest.mark.parametrize("kwargs, match", [
    (dict(k=0), "k"), (dict(k=8, replacement=False), "exceeds"), (dict(trials=0), "trials"),
    (dict(trials=10**12), "allocate"), (dict(gen=None), "gen"), (dict(replacement="yes"), "replacement"),
    (dict(chunk=0), "chunk"),
])
def test_batch_means_refuses_bad_input(kwargs, match):
    gen = gradnoise.generator("test:pergrad:bad")
    args = dict(grads=torch.ones(7, 3, dtype=f64, device=gen.device), k=2, trials=4, gen=gen)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        pg.batch_means(**args)
    with pytest.raises(ValueError, match="grads"):
        pg.batch_means(torch.full((7, 3), float("nan"), dtype=f64), 2, 4, gen)


def test_bad_input_is_refused_in_one_line(trained, data):
    p, x, y = trained[1].params, data.x_train[:20], data.y_train[:20]
    gen = gradnoise.generator("test:pergrad:badinput")
    for bad in (torch.full_like(y, 10), torch.full_like(y, -1)):
        for fn in (pg.accuracy, pg.losses, pg.minibatch_gradient, pg.per_example_gradients):
            with pytest.raises(ValueError, match=r"y must hold class labels in \[0, 10\)"):
                fn(p, x, bad)
    with pytest.raises(ValueError, match="dtype and device of the parameters"):
        pg.logits(p, x.float())
    with pytest.raises(ValueError, match="dtype and device of the parameters"):
        pg.losses(p, x.float(), y)
    nan = dict(p, **{"2.bias": torch.full_like(p["2.bias"], float("nan"))})
    with pytest.raises(ValueError, match=r"params\['2.bias'\] contains NaN"):
        pg.logits(nan, x)
    with pytest.raises(ValueError, match="steps"):
        pg.sgd(p, x, y, lr=0.1, batch=2, steps=pg.MAX_STEPS + 1, gen=gen)
    with pytest.raises(ValueError, match="allocate"):
        pg.sgd(p, x, y, lr=0.1, batch=2, steps=1, gen=gen, chains=10**9)
    with pytest.raises(ValueError, match="steps"):
        pg.checkpoints((pg.MAX_STEPS + 1,), data=data)
    with pytest.raises(ValueError, match="momentum"):
        pg.checkpoints((1,), data=data, momentum=float("nan"))
    with pytest.raises(ValueError, match="allocate"):
        pg.batch_indices(10**12, 10**12, (1,), gen, replacement=False)
    with pytest.raises(ValueError, match="shape"):
        pg.batch_indices(5, 2, 3, gen)
