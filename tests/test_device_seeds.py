import math
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
    assert checks.allocation_limit() == min(400 * 2**30, checks.machine_memory() / 2)
    if checks.machine_memory() / 2 > 9.8 * 2**30:
        checks.allocation(shape, torch.float64, "token_noise")        # only checked, nothing allocated
    with pytest.raises(ValueError, match="limit is"):
        checks.allocation((100, *shape), torch.float64, "token_noise")


def test_no_size_knob_lifts_the_guard_past_the_machine(monkeypatch):
    from gradnoise import checks

    assert 2**30 < checks.machine_memory() < 2**50
    monkeypatch.setenv("GRADNOISE_SCALE", "1e300")                      # past the knob's own maximum
    with pytest.raises(ValueError, match="GRADNOISE_SCALE must be a positive number at most"):
        checks.allocation_limit()
    for knob in ("1e6", "1e4"):
        monkeypatch.setenv("GRADNOISE_SCALE", knob)
        assert checks.allocation_limit() <= checks.machine_memory() / 2
        with pytest.raises(ValueError, match="at most half the machine's memory"):
            checks.allocation((10**7, 10**5), torch.float64, "huge")     # 7.3 TiB


def test_bad_input_found_by_the_probe(tmp_path):
    """The worst findings of an outside bad-input probe: each is refused in one line now."""
    from gradnoise import evidence, minibatch, muon, nqm, stats
    from gradnoise.site import cache

    root, victim = tmp_path / "book", tmp_path / "victim"
    (victim / "html").mkdir(parents=True)
    root.mkdir()
    for build in ("../victim", str(victim), ".", ""):
        with pytest.raises(ValueError, match="inside root"):
            cache.refresh(root, build=build)
    assert (victim / "html").is_dir()                                  # nothing deleted outside the root
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        nqm.spectral_radius([1.0, 2.0], 0.1, float("nan"))             # used to crash the process
    with pytest.raises(ValueError, match="rtol must be below 1"):
        stats.assert_close(1.0, 3.0, rtol=5)
    with pytest.raises(ValueError, match="is not an evidence folder"):
        evidence.load(tmp_path / "missing")
    with pytest.raises(ValueError, match="too many to count"):
        minibatch.enumeration_size(10**7, 10**6, 1, "without")        # used to hang on factorial(10^7)
    with pytest.raises(ValueError, match="limit"):
        minibatch.batch_indices(10**7, 10, 1, "epoch")
    assert minibatch.log_enumeration_size(6, 2, 2, "epoch") == pytest.approx(math.log(minibatch.enumeration_size(6, 2, 2, "epoch")))
    assert minibatch.log_enumeration_size(5, 2, 3, "with") == pytest.approx(math.log(5 ** 6))
    assert minibatch.log_enumeration_size(7, 3, 2, "without") == pytest.approx(math.log(35 ** 2))
    with pytest.raises(ValueError, match="steps must be at most 100"):
        muon.newton_schulz(torch.eye(3), steps=10**9)
