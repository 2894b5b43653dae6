"""The cosine KNN index over one model's vectors (scikit-learn NearestNeighbors, brute force)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.neighbors import NearestNeighbors


@dataclass(frozen=True)
class Neighbour:
    path: str
    similarity: float


class NeighbourIndex:
    def __init__(self, paths: list[str], vectors: np.ndarray, model: str):
        self.paths = paths
        self.vectors = vectors
        self.model = model
        self._knn = None
        if paths:
            self._knn = NearestNeighbors(metric="cosine", algorithm="brute").fit(vectors)

    @property
    def size(self) -> int:
        return len(self.paths)

    def search(self, vector: np.ndarray, k: int) -> list[Neighbour]:
        """The ``k`` most similar stored images, most similar first."""
        if self._knn is None:
            return []
        distances, rows = self._knn.kneighbors(vector.reshape(1, -1), n_neighbors=min(k, self.size))
        return [
            Neighbour(self.paths[row], round(float(1.0 - distance), 6))
            for distance, row in zip(distances[0], rows[0], strict=True)
        ]
