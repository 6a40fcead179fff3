import math

import pytest
import torch

from gradnoise import stats
from gradnoise import seeds as gnseeds

f64 = torch.float64


def test_mean_stderr():
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0]], dtype=f64)
    m, se = stats.mean_stderr(x)
    assert torch.allclose(m, torch.tensor([2.0, 4.0], dtype=f64))
    assert torch.allclose(se, x.std(0) / math.sqrt(2))
    with pytest.raises(ValueError, match="at least 2 trials"):
        stats.mean_stderr(x[:1])


def test_total_variance_is_unbiased_with_correct_stderr():
    gen = gnseeds.generator("test:total-variance", "cpu")
    x = torch.randn(500, 2000, 3, generator=gen, dtype=f64) * torch.tensor([1.0, 2.0, 3.0], dtype=f64)
    est = torch.stack([stats.total_variance(x[i])[0] for i in range(200)])
    se = stats.total_variance(x[0])[1]
    m, m_se = stats.mean_stderr(est)
    stats.assert_agrees(m, m_se, 14.0)                       # 1 + 4 + 9
    assert abs(est.std().item() / se.item() - 1) < 0.2        # the stderr matches the spread


def test_assert_agrees_and_rejects():
    est = torch.tensor([1.0, 2.0], dtype=f64)
    se = torch.tensor([0.1, 0.1], dtype=f64)
    assert stats.assert_agrees(est, se, torch.tensor([1.05, 2.0], dtype=f64)) == pytest.approx(0.5)
    with pytest.raises(AssertionError, match="z = \\+6.00 at entry 1"):
        stats.assert_agrees(est, se, torch.tensor([1.0, 1.4], dtype=f64), what="thing")
    assert stats.assert_rejects(est, se, 0.0) == pytest.approx(20.0)
    with pytest.raises(AssertionError, match="does not reject"):
        stats.assert_rejects(est, se, torch.tensor([1.0, 2.5], dtype=f64), z=10)


def test_z_scores_bad_input():
    with pytest.raises(ValueError, match="stderr must be positive"):
        stats.z_scores(1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="finite"):
        stats.z_scores(float("nan"), 1.0, 1.0)
    with pytest.raises(ValueError, match="broadcast"):
        stats.z_scores(torch.ones(2), torch.ones(3), 0.0)


def test_difference_and_loglog_slope():
    d, se = stats.difference(3.0, 0.3, 1.0, 0.4)
    assert d.item() == 2.0 and se.item() == pytest.approx(0.5)
    x = torch.logspace(0, 4, 9, dtype=f64)
    assert stats.loglog_slope(x, 7 * x**2) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="positive"):
        stats.loglog_slope(x, -x)
    with pytest.raises(ValueError, match="equal length"):
        stats.loglog_slope(x, x[:3])


def test_exact_checks():
    assert stats.assert_close(1.0, 1.0 + 1e-12) < 1e-10
    with pytest.raises(AssertionError, match="relative error"):
        stats.assert_close(1.0, 1.001)
    stats.assert_close(1e-17, 0.0, atol=1e-15)                     # a zero expected value needs atol
    with pytest.raises(AssertionError):
        stats.assert_close(1e-17, 0.0)
    assert stats.assert_differs(1.0, 2.0) == pytest.approx(0.5)
    with pytest.raises(AssertionError, match="does not tell"):
        stats.assert_differs(1.0, 1.0 + 1e-9)


def test_differs_from_zero_needs_an_absolute_scale():
    """Against zero a relative distance is always 1, even for rounding noise: the check could not fail."""
    with pytest.raises(ValueError, match="identically zero"):
        stats.assert_differs(torch.tensor([1e-16]), 0.0)
    with pytest.raises(AssertionError, match="not told apart from zero"):
        stats.assert_differs(torch.tensor([1e-16]), 0.0, atol=1e-8)
    assert stats.assert_differs(torch.tensor([0.3]), torch.zeros(1), atol=1e-8) == pytest.approx(0.3)


@pytest.mark.parametrize("z", [float("nan"), float("inf"), 0, -1, "5", None, True])
def test_bounds_that_cannot_fail_are_refused(z):
    est, se = torch.tensor([1.0, 2.0], dtype=f64), torch.tensor([0.1, 0.1], dtype=f64)
    with pytest.raises(ValueError, match="z must be a finite positive number"):
        stats.assert_agrees(est, se, est, z=z)
    with pytest.raises(ValueError, match="z must be a finite positive number"):
        stats.assert_rejects(est, se, 0.0, z=z)


@pytest.mark.parametrize("bad", [torch.tensor([]), float("inf")])
def test_stderr_and_empty_inputs_are_refused(bad):
    with pytest.raises(ValueError):
        stats.assert_agrees(torch.tensor([1.0]), bad, 1.0)
    with pytest.raises(ValueError):
        stats.assert_agrees(torch.tensor([]), 1.0, 1.0)
