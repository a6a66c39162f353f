"""Summary features of multichannel time-series windows (the `window-stats` input transform).

A window is (C channels, T time steps), e.g. UCI HAR's 9 inertial channels x 128 steps at
50 Hz. An MLP on the raw 1152 values has to learn shift invariance from few labels; these
features are (nearly) invariant to where in the window a movement happens, which is what
activity classes differ in. Per channel they describe the distribution of values, how fast
the signal moves and how its energy spreads over frequency; across channels, how they move
together. Pure numpy, deterministic, no fitted parameters (standardisation happens after,
in `preprocess.InputTransform`).
"""

from __future__ import annotations

import numpy as np

from susl_cli.errors import DataError

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
N_BANDS = 16  # log-spaced frequency bands (low frequencies resolved finely, like human motion)
MIN_STEPS = 2 * N_BANDS  # fewer time steps cannot fill the bands
EPS = 1e-8


def band_edges(n_steps: int, n_bands: int = N_BANDS) -> np.ndarray:
    """(n_bands + 1,) increasing rfft-bin edges from bin 1 (the mean is bin 0) to the last bin.

    Edges are log-spaced and made strictly increasing so that every band holds >= 1 bin.
    """
    n_bins = n_steps // 2 + 1
    edges = np.geomspace(1, n_bins, n_bands + 1).astype(np.int64)
    edges[0] = 1
    for i in range(1, len(edges)):  # small T: log spacing repeats low edges; push them apart
        edges[i] = max(edges[i], edges[i - 1] + 1)
    edges[-1] = n_bins
    return edges


def feature_names(n_channels: int, n_steps: int) -> list[str]:
    """Names of the columns `window_features` returns, in order."""
    per_channel = (["mean", "std", "min", "max"] + [f"q{int(q * 100)}" for q in QUANTILES]
                   + ["skew", "kurtosis", "mean_abs_diff", "zero_cross_rate", "autocorr_1",
                      "autocorr_4", "dominant_freq", "spectral_entropy"]
                   + [f"log_band_{b}" for b in range(N_BANDS)])
    names = [f"ch{c}_{name}" for c in range(n_channels) for name in per_channel]
    names += [f"corr_ch{i}_ch{j}" for i in range(n_channels) for j in range(i + 1, n_channels)]
    return names


def window_features(x: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """(N, C, T) windows -> (N, F) float32 features, F = len(feature_names(C, T)).

    Processed in chunks so memory stays ~ chunk * C * T floats whatever N is.
    """
    x = np.asarray(x)
    if x.ndim != 3:
        raise DataError(f"window features need examples shaped (channels, time steps); got "
                        f"{tuple(x.shape[1:])}: use --input-features raw for this data")
    if x.shape[2] < MIN_STEPS:
        raise DataError(f"window features need >= {MIN_STEPS} time steps per window, got "
                        f"{x.shape[2]}: use --input-features raw for this data")
    parts = [_features(x[i:i + chunk].astype(np.float64)) for i in range(0, len(x), chunk)]
    if not parts:
        return np.zeros((0, len(feature_names(x.shape[1], x.shape[2]))), np.float32)
    return np.concatenate(parts).astype(np.float32)


def _features(x: np.ndarray) -> np.ndarray:
    n, c, t = x.shape
    mean = x.mean(-1)
    centred = x - mean[..., None]
    var = (centred ** 2).mean(-1)
    std = np.sqrt(var)
    safe = np.maximum(std, EPS)
    z = centred / safe[..., None]
    stats = [mean, std, x.min(-1), x.max(-1), *np.quantile(x, QUANTILES, axis=-1),
             (z ** 3).mean(-1), (z ** 4).mean(-1) - 3.0,
             np.abs(np.diff(x, axis=-1)).mean(-1),
             (np.diff(np.signbit(centred), axis=-1) != 0).mean(-1),
             _autocorr(z, 1), _autocorr(z, 4)]
    power = np.abs(np.fft.rfft(centred, axis=-1)) ** 2  # (n, c, T//2 + 1); bin 0 is ~0
    spectrum = power[..., 1:]
    share = spectrum / np.maximum(spectrum.sum(-1, keepdims=True), EPS)
    dominant = (spectrum.argmax(-1) + 1) / (t / 2)  # fraction of the Nyquist frequency
    entropy = -(share * np.log(np.maximum(share, EPS))).sum(-1) / np.log(spectrum.shape[-1])
    edges = band_edges(t)
    bands = np.stack([power[..., lo:hi].sum(-1)
                      for lo, hi in zip(edges[:-1], edges[1:], strict=True)], -1)
    per_channel = np.concatenate([np.stack(stats + [dominant, entropy], -1),
                                  np.log(bands / t + EPS)], -1)  # (n, c, per-channel features)
    corr = np.einsum("nit,njt->nij", z, z) / t
    upper = np.triu_indices(c, k=1)
    return np.concatenate([per_channel.reshape(n, -1), corr[:, upper[0], upper[1]]], -1)


def _autocorr(z: np.ndarray, lag: int) -> np.ndarray:
    """Autocorrelation of standardised signals at `lag` steps."""
    return (z[..., lag:] * z[..., :-lag]).mean(-1)
