"""window_features: shapes and names, values on signals with known answers, invariances."""

from __future__ import annotations

import numpy as np
import pytest

from susl_cli.errors import DataError
from susl_cli.window_features import (
    MIN_STEPS,
    N_BANDS,
    band_edges,
    feature_names,
    window_features,
)


def _column(names: list[str], name: str) -> int:
    return names.index(name)


def test_one_named_column_per_feature_and_finite_on_constant_windows() -> None:
    x = np.zeros((3, 4, 64), np.float32)
    x[1] = 2.5  # constant: std 0 must not give NaN (skew, correlations divide by it)
    features = window_features(x)
    names = feature_names(4, 64)
    assert features.shape == (3, len(names)) and len(set(names)) == len(names)
    assert features.dtype == np.float32 and np.isfinite(features).all()
    assert features[1, _column(names, "ch2_mean")] == pytest.approx(2.5)
    assert features[1, _column(names, "ch2_std")] == 0.0


def test_sine_wave_statistics_match_closed_forms() -> None:
    t = np.arange(128)
    cycles = 8  # 8 full periods in the window: frequency 8/64 of Nyquist
    x = (3.0 * np.sin(2 * np.pi * cycles * t / 128) + 1.0)[None, None, :]
    f = window_features(x)[0]
    names = feature_names(1, 128)
    assert f[_column(names, "ch0_mean")] == pytest.approx(1.0, abs=1e-5)
    assert f[_column(names, "ch0_std")] == pytest.approx(3 / np.sqrt(2), rel=1e-4)
    assert f[_column(names, "ch0_skew")] == pytest.approx(0.0, abs=1e-4)
    assert f[_column(names, "ch0_kurtosis")] == pytest.approx(-1.5, abs=1e-3)  # sine: 1.5 - 3
    assert f[_column(names, "ch0_dominant_freq")] == pytest.approx(cycles / 64)
    # all the energy in one bin: the spectrum's normalised entropy is ~0
    assert f[_column(names, "ch0_spectral_entropy")] == pytest.approx(0.0, abs=1e-4)
    # ~2 sign changes per period of the centred signal
    rate = f[_column(names, "ch0_zero_cross_rate")]
    assert rate * 127 == pytest.approx(2 * cycles, abs=1)
    bands = f[[_column(names, f"ch0_log_band_{b}") for b in range(N_BANDS)]]
    edges = band_edges(128)
    holding = int(np.searchsorted(edges, cycles, side="right") - 1)
    assert bands.argmax() == holding


def test_circular_shift_leaves_distribution_and_spectrum_unchanged() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3, 96))
    shifted = np.roll(x, 17, axis=-1)
    names = feature_names(3, 96)
    # what depends on the order of neighbouring steps (differences, autocorrelation) is not
    # invariant to the wrap-around; everything else is
    order_dependent = ("abs_diff", "zero_cross", "autocorr")
    invariant = [i for i, n in enumerate(names) if not any(k in n for k in order_dependent)]
    assert len(invariant) == len(names) - 3 * len(order_dependent) - 3
    np.testing.assert_allclose(window_features(shifted)[:, invariant],
                               window_features(x)[:, invariant], rtol=1e-4, atol=1e-5)


def test_channel_correlations() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(2, 1, 64))
    x = np.concatenate([a, -2 * a, 5 + a], axis=1)
    f = window_features(x)
    names = feature_names(3, 64)
    np.testing.assert_allclose(f[:, _column(names, "corr_ch0_ch1")], -1, atol=1e-5)
    np.testing.assert_allclose(f[:, _column(names, "corr_ch0_ch2")], 1, atol=1e-5)


@pytest.mark.parametrize("steps", [MIN_STEPS, 33, 50, 128, 1000])
def test_band_edges_cover_the_spectrum_with_non_empty_bands(steps: int) -> None:
    edges = band_edges(steps)
    assert len(edges) == N_BANDS + 1 and edges[0] == 1 and edges[-1] == steps // 2 + 1
    assert (np.diff(edges) >= 1).all()


def test_chunked_equals_whole() -> None:
    x = np.random.default_rng(2).normal(size=(11, 2, 40)).astype(np.float32)
    np.testing.assert_array_equal(window_features(x, chunk=3), window_features(x))
    assert window_features(x[:0]).shape == (0, len(feature_names(2, 40)))


@pytest.mark.parametrize("shape, says", [((4, 20), "channels, time steps"),
                                         ((4, 2, MIN_STEPS - 1), "time steps")])
def test_wrong_layouts_say_what_to_use(shape: tuple[int, ...], says: str) -> None:
    with pytest.raises(DataError, match=says) as err:
        window_features(np.zeros(shape))
    assert "--input-features raw" in str(err.value)
