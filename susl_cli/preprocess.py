"""Input transforms fitted on the training inputs and applied identically everywhere after.

- Images (Bernoulli likelihood): keep only input dimensions whose standard deviation over
  the training set is > 0.1 (paper appendix A); values stay grey levels in [0, 1].
- Real-valued data (Gaussian likelihood): standardise each dimension with training mean and
  standard deviation; constant dimensions carry no information and are dropped.
- Optionally (`input_features="window-stats"`), time-series windows (channels x steps) are
  first summarised by `window_features`, and those summaries are standardised instead.
The transform is stored in every checkpoint so test and new data go through the same steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from susl_cli.config import INPUT_FEATURES
from susl_cli.errors import DataError
from susl_cli.window_features import feature_names, window_features

STD_THRESHOLD = 0.1  # paper: keep pixels with training std > 0.1
CONSTANT_STD = 1e-8


@dataclass(frozen=True)
class InputTransform:
    """Summarise (window-stats only), flatten, select `kept` columns, then (x - offset) / scale."""

    input_shape: tuple[int, ...]  # shape of one raw example, e.g. (28, 28) or (9, 128)
    kept: np.ndarray  # (D,) int64 indices into the flattened (summarised) input
    offset: np.ndarray  # (D,) float32
    scale: np.ndarray  # (D,) float32
    features: str = "raw"  # one of INPUT_FEATURES

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of one example in the space the model generates: raw, or the summaries."""
        if self.features == "raw":
            return self.input_shape
        return (len(feature_names(*self.input_shape)),)  # summaries: one flat vector

    @property
    def output_names(self) -> list[str] | None:
        """Names of the generated values when they are summaries (None: raw input layout)."""
        return None if self.features == "raw" else feature_names(*self.input_shape)

    @property
    def output_dim(self) -> int:
        return int(self.kept.size)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Raw examples (N, *input_shape) -> float32 model inputs (N, D)."""
        x = np.asarray(x, dtype=np.float32)
        if tuple(x.shape[1:]) != self.input_shape:
            raise DataError(
                f"inputs have shape {tuple(x.shape[1:])} per example but the model was trained "
                f"on {self.input_shape}: give data laid out like the training data"
            )
        if self.features == "window-stats":
            x = window_features(x)
        flat = x.reshape(len(x), -1)[:, self.kept]
        return ((flat - self.offset) / self.scale).astype(np.float32)

    def to_input_space(self, v: np.ndarray, fill: float | np.ndarray = 0.0) -> np.ndarray:
        """Model vectors (N, D) -> float32 examples (N, *output_shape): the inverse of `apply`.

        Summaries cannot be turned back into windows: with window-stats the result is in the
        (unstandardised) summary space, and `fill` must be a scalar or one summary vector.

        Kept columns are un-standardised (v * scale + offset). The columns `apply` dropped
        were (nearly) constant in training, so the model cannot say anything about them; they
        take `fill`: a scalar, or one flattened raw example such as the training mean (the
        transform does not store it, so callers pass it when they have the training data).
        """
        v = np.asarray(v, dtype=np.float32)
        if v.ndim != 2 or v.shape[1] != self.output_dim:
            raise DataError(f"model vectors have shape {v.shape}, expected (N, {self.output_dim})")
        n_flat = int(np.prod(self.output_shape))
        fill_row = np.broadcast_to(np.asarray(fill, dtype=np.float32), (n_flat,))
        flat = np.tile(fill_row, (len(v), 1))  # (N, prod(input_shape))
        flat[:, self.kept] = v * self.scale + self.offset
        return flat.reshape(len(v), *self.output_shape)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"input_shape": np.asarray(self.input_shape, dtype=np.int64), "kept": self.kept,
                "offset": self.offset, "scale": self.scale,
                "features": np.asarray(INPUT_FEATURES.index(self.features), dtype=np.int64)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> InputTransform:
        return cls(tuple(int(v) for v in arrays["input_shape"]),
                   np.asarray(arrays["kept"], dtype=np.int64),
                   np.asarray(arrays["offset"], dtype=np.float32),
                   np.asarray(arrays["scale"], dtype=np.float32),
                   _features_name(arrays.get("features")))


def _features_name(code: np.ndarray | None) -> str:
    """Stored feature-set index -> name; checkpoints written before it existed are raw."""
    if code is None:
        return "raw"
    index = int(np.asarray(code))
    if not 0 <= index < len(INPUT_FEATURES):
        raise ValueError(f"unknown input feature set {index}: written by a newer susl?")
    return INPUT_FEATURES[index]


def _check_feature_name(features: str) -> None:
    if features not in INPUT_FEATURES:
        raise DataError(f"unknown input features {features!r}: use {' or '.join(INPUT_FEATURES)}")


def check_input_features(x: np.ndarray, input_kind: str, features: str) -> None:
    """Refuse, before anything is written, a feature set that cannot apply to these inputs."""
    _check_feature_name(features)
    if features == "window-stats":
        if input_kind == "image":
            raise DataError("window-stats summarise time-series windows, not images: leave "
                            "--input-features out (raw) for image data")
        window_features(np.asarray(x[:1]))  # checks the (channels, steps) shape


def fit_transform(x_train: np.ndarray | RowSource, likelihood: str,
                  features: str = "raw") -> InputTransform:
    """Fit the transform for `likelihood` ("bernoulli" or "gaussian") on raw training inputs
    (an array, or rows left on disk: then read in chunks, `_streamed_stats`)."""
    _check_feature_name(features)
    if features == "window-stats" and likelihood == "bernoulli":
        raise DataError("window-stats summaries are real numbers: use --likelihood gaussian "
                        "with them (or --input-features raw for images)")
    if isinstance(x_train, np.ndarray):
        x = np.asarray(x_train, dtype=np.float32)
        flat = window_features(x) if features == "window-stats" else x.reshape(len(x), -1)
        std = flat.std(axis=0, dtype=np.float64)
        low, high = (flat.min(), flat.max()) if flat.size else (0.0, 0.0)
        mean = flat.mean(axis=0, dtype=np.float64) if likelihood != "bernoulli" else None
    else:
        mean, std, low, high = _streamed_stats(x_train, features)
    if likelihood == "bernoulli":
        if low < 0 or high > 1:
            raise DataError(
                "a Bernoulli likelihood needs inputs in [0, 1]: use --likelihood gaussian for "
                "real-valued data"
            )
        kept = np.flatnonzero(std > STD_THRESHOLD)
        offset = np.zeros(kept.size, np.float32)
        scale = np.ones(kept.size, np.float32)
    else:
        kept = np.flatnonzero(std > CONSTANT_STD)
        offset = mean[kept].astype(np.float32)
        scale = std[kept].astype(np.float32)
    if kept.size == 0:
        raise DataError("every input dimension is (nearly) constant over the training set: "
                        "nothing to learn from; check the data")
    return InputTransform(tuple(int(s) for s in x_train.shape[1:]), kept.astype(np.int64),
                          offset, scale, features)


class RowSource(Protocol):
    """Training inputs read by contiguous slices (storage.rows.MaskRows: left on disk)."""

    shape: tuple[int, ...]

    def __len__(self) -> int: ...
    def __getitem__(self, span: slice) -> np.ndarray: ...


STATS_CHUNK_ROWS = 8192


def _streamed_stats(rows: RowSource, features: str
                    ) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(mean, std, min, max) per column over `rows`, one chunk in memory at a time.

    Chunks' means and sums of squared deviations are merged pairwise (Chan et al.'s update,
    float64), which stays accurate where a running sum of squares would cancel. The inputs'
    finiteness, checked on the whole array when a mask is loaded, is checked here per chunk.
    """
    n, mean, m2 = 0, 0.0, 0.0
    low, high = np.inf, -np.inf
    for start in range(0, len(rows), STATS_CHUNK_ROWS):
        chunk = rows[start:start + STATS_CHUNK_ROWS]
        if not np.isfinite(chunk).all():
            raise DataError(f"training inputs in rows {start}..{start + len(chunk) - 1} "
                            "contain NaN or infinite values: recreate the mask from clean data")
        flat = (window_features(chunk) if features == "window-stats"
                else chunk.reshape(len(chunk), -1)).astype(np.float64)
        k = len(flat)
        chunk_mean = flat.mean(axis=0)
        delta = chunk_mean - mean
        m2 = m2 + ((flat - chunk_mean) ** 2).sum(axis=0) + delta ** 2 * n * k / (n + k)
        mean = mean + delta * k / (n + k)
        n += k
        low, high = min(low, float(flat.min())), max(high, float(flat.max()))
    if n == 0:
        raise DataError("the mask file holds no training rows: nothing to learn from")
    return np.asarray(mean), np.sqrt(np.asarray(m2) / n), low, high
