import pytest
import torch

import gradnoise as gn
from gradnoise import device, seeds


def test_default_device_follows_cuda_availability(monkeypatch):
    monkeypatch.delenv("GRADNOISE_DEVICE", raising=False)
    assert device.device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_env_override_cpu(monkeypatch):
    monkeypatch.setenv("GRADNOISE_DEVICE", "cpu")
    assert device.device() == torch.device("cpu")
    assert "device: cpu" in gn.describe() and "float64" in gn.describe()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_missing_cuda_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv("GRADNOISE_DEVICE", "cuda")
    with pytest.raises(device.DeviceUnavailable) as info:
        device.device()
    assert "\n" not in str(info.value) and "GRADNOISE_DEVICE" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize("name", ["tpu", "not a device"])
def test_unknown_device_names(monkeypatch, name):
    monkeypatch.setenv("GRADNOISE_DEVICE", name)
    with pytest.raises(device.DeviceUnavailable):
        device.device()


def test_as_tensor_is_float64_on_device(monkeypatch):
    monkeypatch.setenv("GRADNOISE_DEVICE", "cpu")
    x = device.as_tensor([1, 2])
    assert x.dtype == torch.float64 and x.device.type == "cpu"


def test_generators_are_reproducible_and_label_dependent(monkeypatch):
    monkeypatch.delenv("GRADNOISE_SEED", raising=False)
    draw = lambda label: torch.rand(3, generator=seeds.generator(label, "cpu"))
    assert torch.equal(draw("a"), draw("a"))
    assert not torch.equal(draw("a"), draw("b"))


def test_base_seed_override_changes_every_stream(monkeypatch):
    monkeypatch.setenv("GRADNOISE_SEED", "0")
    s0 = seeds.seed_for("chapter")
    monkeypatch.setenv("GRADNOISE_SEED", "1")
    assert seeds.base_seed() == 1 and seeds.seed_for("chapter") != s0
    assert 0 <= seeds.seed_for("chapter") < 2**63


def test_bad_seed_and_label(monkeypatch):
    monkeypatch.setenv("GRADNOISE_SEED", "abc")
    with pytest.raises(ValueError, match="GRADNOISE_SEED"):
        seeds.base_seed()
    monkeypatch.delenv("GRADNOISE_SEED")
    with pytest.raises(ValueError, match="label"):
        seeds.seed_for("")


def test_size_knob_multiplies_trials(monkeypatch):
    monkeypatch.delenv("GRADNOISE_SCALE", raising=False)
    assert gn.trials(20_000) == 20_000 and device.scale() == 1.0
    monkeypatch.setenv("GRADNOISE_SCALE", "100")
    assert gn.trials(20_000) == 2_000_000
    monkeypatch.setenv("GRADNOISE_SCALE", "0.001")
    assert gn.trials(100) == 2                          # never fewer than two trials
    for bad in ("0", "-1", "inf", "nan", "many"):
        monkeypatch.setenv("GRADNOISE_SCALE", bad)
        with pytest.raises(ValueError, match="GRADNOISE_SCALE"):
            gn.trials(10)
    monkeypatch.setenv("GRADNOISE_SCALE", "1")
    with pytest.raises(ValueError, match="integer >= 2"):
        gn.trials(1)


def test_the_allocation_guard_grows_with_the_size_knob(monkeypatch):
    from gradnoise import checks

    shape = (1_000_000, 55, 4, 6)                       # 9.8 GiB of float64: momentum-sum's noise at 100x
    monkeypatch.delenv("GRADNOISE_SCALE", raising=False)
    with pytest.raises(ValueError, match="9.8 GiB.*limit is 4 GiB"):
        checks.allocation(shape, torch.float64, "token_noise")
    monkeypatch.setenv("GRADNOISE_SCALE", "0.01")       # a smaller run keeps the 4 GiB guard
    assert checks.allocation_limit() == checks.MAX_BYTES
    monkeypatch.setenv("GRADNOISE_SCALE", "100")
    checks.allocation(shape, torch.float64, "token_noise")            # only checked, nothing allocated
    with pytest.raises(ValueError, match="limit is 400 GiB"):
        checks.allocation((100, *shape), torch.float64, "token_noise")
