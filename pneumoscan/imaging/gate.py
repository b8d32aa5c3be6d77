"""The out-of-distribution half of the input gate: is this image like the training X-rays?

The model's own convolution stages describe an image: each stage's activations averaged over
the image (global average pooling), all stages side by side. ``OodGate`` holds the mean and the
(shrunk) inverse covariance of that description over the training X-rays and measures how far an
image lies from them (the Mahalanobis distance of their square roots, Lee et al. 2018). Images beyond ``threshold``
are refused as ``not_a_chest_xray`` (or flagged, by setting). The mean and covariance are fitted
at training time (``training/gate/fit.py``) and saved beside the model as ``gate.npz``; the threshold
and how it was chosen are in ``metadata.json``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pneumoscan.errors import ModelError

GATE_FILE = "gate.npz"


@dataclass(frozen=True)
class OodGate:
    layers: tuple[str, ...]  # the model layers whose pooled activations form the description
    mean: np.ndarray  # (d,)
    precision: np.ndarray  # (d, d), the inverse of the shrunk covariance
    threshold: float  # distances above it are out of distribution

    def __post_init__(self) -> None:
        # The distance reads only the precision's symmetric part; keeping just that lets the file
        # hold its upper triangle, half the size.
        precision = np.asarray(self.precision, dtype=np.float64)
        object.__setattr__(self, "precision", (precision + precision.T) / 2)

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row of ``features`` (n, d) from the training X-rays.

        The pooled activations are non-negative and skewed; their square roots are closer to
        normal, which the distance assumes."""
        centred = np.sqrt(np.maximum(np.asarray(features, dtype=np.float64), 0.0)) - self.mean
        squared = np.sum((centred @ self.precision) * centred, axis=1)
        return np.sqrt(np.maximum(squared, 0.0))

    def save(self, model_dir: str | Path) -> str:
        """Write ``gate.npz``; returns its sha256 for the metadata."""
        path = Path(model_dir) / GATE_FILE
        with path.open("wb") as file:
            np.savez(
                file,
                layers=np.array(self.layers),
                mean=self.mean.astype(np.float64),
                precision_upper=self.precision[np.triu_indices(len(self.precision))],
            )
        return hashlib.sha256(path.read_bytes()).hexdigest()

    @classmethod
    def load(cls, model_dir: str | Path, threshold: float, sha256: str) -> OodGate:
        """Read ``gate.npz``, checking it is the file the metadata names."""
        path = Path(model_dir) / GATE_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise ModelError(f"The model's metadata names an input gate, but {path} is missing.") from exc
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ModelError(f"{path} is not the gate this model was saved with (sha256 differs).")
        with np.load(path, allow_pickle=False) as arrays:
            mean = arrays["mean"]
            if "precision" in arrays.files:  # gates saved before the triangle was
                precision = arrays["precision"]
            else:
                precision = np.zeros((len(mean), len(mean)))
                precision[np.triu_indices(len(mean))] = arrays["precision_upper"]
                precision = precision + np.triu(precision, 1).T
            return cls(
                layers=tuple(str(name) for name in arrays["layers"]),
                mean=mean,
                precision=precision,
                threshold=threshold,
            )


def with_features(model, layers: tuple[str, ...]):
    """A Keras model answering (probabilities, pooled features of ``layers``) for a batch."""
    import keras

    return keras.Model(model.input, [model.output, _pooled(model, layers)])


def with_distance(model, gate: OodGate):
    """A Keras model answering (probabilities, the gate's distance) for a batch, in one graph.

    The distance is ``OodGate.distances`` written as graph operations: with the precision
    factored as L L^T (from its eigen-decomposition, which tolerates the round-off that makes a
    Cholesky factorisation fail), the squared distance is the squared norm of (x - mean) L. Doing
    it inside the model call keeps NumPy's BLAS threads from contending with TensorFlow's.
    """
    import keras

    eigenvalues, eigenvectors = np.linalg.eigh((gate.precision + gate.precision.T) / 2)
    factor = eigenvectors * np.sqrt(np.maximum(eigenvalues, 0.0))
    centred = keras.ops.sqrt(keras.ops.maximum(_pooled(model, gate.layers), 0.0)) - gate.mean.astype(np.float32)
    whitened = keras.ops.matmul(centred, factor.astype(np.float32))
    distance = keras.ops.sqrt(keras.ops.sum(keras.ops.square(whitened), axis=-1))
    return keras.Model(model.input, [model.output, distance])


def _pooled(model, layers: tuple[str, ...]):
    import keras

    pooled = [keras.ops.mean(model.get_layer(name).output, axis=(1, 2)) for name in layers]
    return keras.ops.concatenate(pooled, axis=-1) if len(pooled) > 1 else pooled[0]
