"""InputTransform: fitted once on training inputs, applied identically, stored and restored."""

from __future__ import annotations

import numpy as np
import pytest

from susl_cli.errors import DataError
from susl_cli.preprocess import InputTransform, fit_transform
from susl_cli.window_features import feature_names, window_features


def _windows(n: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(48)
    freq = rng.integers(1, 6, size=(n, 1, 1))
    x = np.sin(2 * np.pi * freq * t / 48) + rng.normal(0, 0.3, (n, 3, 48))
    x[:, 2] = 7.0  # a constant channel: its spread-type summaries are constant too
    return x.astype(np.float32)


def test_gaussian_raw_standardises_and_drops_constant_columns() -> None:
    x = np.random.default_rng(0).normal(3, 2, (100, 5)).astype(np.float32)
    x[:, 1] = 4.0
    transform = fit_transform(x, "gaussian")
    assert transform.kept.tolist() == [0, 2, 3, 4] and transform.output_shape == (5,)
    z = transform.apply(x)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-4)
    back = transform.to_input_space(z, fill=4.0)
    np.testing.assert_allclose(back, x, atol=1e-4)


def test_window_stats_standardises_the_summaries() -> None:
    x = _windows()
    transform = fit_transform(x, "gaussian", "window-stats")
    names = feature_names(3, 48)
    assert transform.features == "window-stats" and transform.input_shape == (3, 48)
    assert transform.output_shape == (len(names),)
    dropped = {names[i] for i in set(range(len(names))) - set(transform.kept.tolist())}
    assert "ch2_std" in dropped and "ch0_std" not in dropped
    z = transform.apply(x)
    assert z.shape == (len(x), transform.output_dim)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-4)
    # un-standardising gives the summaries back (the generated space of such a model)
    summaries = window_features(x)
    np.testing.assert_allclose(transform.to_input_space(z)[:, transform.kept],
                               summaries[:, transform.kept], rtol=1e-4, atol=1e-4)


def test_stored_arrays_round_trip_and_older_checkpoints_read_as_raw() -> None:
    transform = fit_transform(_windows(), "gaussian", "window-stats")
    again = InputTransform.from_arrays(transform.to_arrays())
    assert again.features == "window-stats"
    np.testing.assert_array_equal(again.apply(_windows(seed=1)), transform.apply(_windows(seed=1)))
    arrays = transform.to_arrays()
    del arrays["features"]  # written before feature sets existed
    assert InputTransform.from_arrays(arrays).features == "raw"
    arrays["features"] = np.asarray(9)
    with pytest.raises(ValueError, match="unknown input feature set"):
        InputTransform.from_arrays(arrays)


def test_refusals_say_what_to_do() -> None:
    with pytest.raises(DataError, match="--likelihood gaussian"):
        fit_transform(np.clip(_windows(), 0, 1), "bernoulli", "window-stats")
    with pytest.raises(DataError, match="unknown input features"):
        fit_transform(_windows(), "gaussian", "fourier")
    with pytest.raises(DataError, match="channels, time steps"):
        fit_transform(np.zeros((10, 20), np.float32), "gaussian", "window-stats")
    transform = fit_transform(_windows(), "gaussian", "window-stats")
    with pytest.raises(DataError, match="laid out like the training data"):
        transform.apply(np.zeros((2, 48, 3), np.float32))
