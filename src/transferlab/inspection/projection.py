"""2-D maps of pooled features, coloured by class, with each representation's k-NN accuracy.

The k-NN accuracy is 5-fold cross-validated over the same test examples (cosine distance, k=10):
how well the classes separate in the full feature space, not in the 2-D picture.
"""

from typing import Any

import numpy as np

METHODS = ("pca", "tsne", "umap")


def project(features: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """[n, D] -> [n, 2] with PCA, t-SNE (sklearn) or UMAP (umap-learn, optional)."""
    from transferlab.errors import ConfigError, UserError

    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(features)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30, max(2, (len(features) - 1) // 3)))
        return TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(features)
    if method == "umap":
        try:
            import umap
        except ImportError:
            raise UserError("projection=umap needs umap-learn: pip install 'transferlab[inspect]'") from None
        return umap.UMAP(n_components=2, random_state=seed).fit_transform(features)
    raise ConfigError("projection", method, f"one of {list(METHODS)}")


def knn_accuracy(features: np.ndarray, labels: np.ndarray, k: int = 10, folds: int = 5) -> float:
    """Cross-validated k-NN accuracy (cosine) of `features`; NaN when a class has too few examples."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    counts = np.bincount(labels)
    folds = int(min(folds, counts[counts > 0].min()))
    if folds < 2:
        return float("nan")
    knn = KNeighborsClassifier(n_neighbors=min(k, len(labels) - len(labels) // folds - 1), metric="cosine")
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    return float(cross_val_score(knn, features, labels, cv=cv).mean())


def feature_maps(panels: dict[str, np.ndarray], labels: np.ndarray, method: str, seed: int = 0) -> dict[str, dict[str, Any]]:
    """{panel title: {"xy": [n, 2], "knn_acc"}} for each representation (e.g. pretrained, fine-tuned)."""
    return {title: {"xy": project(f, method, seed), "knn_acc": knn_accuracy(f, labels)} for title, f in panels.items()}
