"""Population stability index: zero for the same population, large for a shifted one."""

from __future__ import annotations

import numpy as np

from refund_risk.model_contract.drift import Reference, level, psi, reference


def test_same_population_is_stable_and_a_shift_is_flagged() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(0, 1, 20_000)
    ref = Reference.from_json(reference(train).to_json())
    same = psi(ref, rng.normal(0, 1, 5_000))
    moved = psi(ref, rng.normal(1.0, 1, 5_000))
    assert same < 0.02 and level(same) == "stable"
    assert moved > 0.25 and level(moved) == "shifted"


def test_features_that_start_arriving_empty_are_noticed() -> None:
    ref = reference(np.arange(1000, dtype=float))
    values = np.full(500, np.nan)
    values[:100] = np.arange(100)
    assert psi(ref, values) > 0.25


def test_codes_get_a_bin_each() -> None:
    codes = np.array([0, 1, 2] * 100, dtype=float)
    ref = reference(codes)
    assert len(ref.shares) == 3
    assert np.allclose(ref.shares, [1 / 3] * 3)
    assert psi(ref, np.zeros(100)) > 1.0
    assert np.isnan(psi(ref, np.array([])))
