"""Linear probes: does each layer's residual stream separate harmful from harmless inputs?"""

from __future__ import annotations


def probe_layers(h_train, y_train, h_test, y_test, seed: int = 0) -> list[dict]:
    """Fit a standardised logistic regression per layer on train activations; score held-out.

    Args:
        h_train/h_test: arrays [n, layers+1, d] (embedding output first). y_*: 1 = harmful, 0 = harmless.
    Returns one dict per layer index: {layer, auroc, accuracy}. ``layer`` -1 is the embedding output.
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    h_train, h_test = np.asarray(h_train, dtype=np.float64), np.asarray(h_test, dtype=np.float64)
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    if len(set(y_train.tolist())) < 2 or len(set(y_test.tolist())) < 2:
        raise ValueError("probes need both harmful and harmless prompts in train and in test")
    out = []
    for li in range(h_train.shape[1]):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000, random_state=seed))
        clf.fit(h_train[:, li], y_train)
        p = clf.predict_proba(h_test[:, li])[:, 1]
        out.append(
            {
                "layer": li - 1,
                "auroc": float(roc_auc_score(y_test, p)),
                "accuracy": float(accuracy_score(y_test, p >= 0.5)),
            }
        )
    return out


def bag_of_words_baseline(train_texts, y_train, test_texts, y_test) -> float:
    """AUROC of a logistic regression on the prompt words alone: what the probes must beat."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    vec = TfidfVectorizer(min_df=1)
    x = vec.fit_transform(train_texts)
    clf = LogisticRegression(max_iter=2000).fit(x, y_train)
    return float(roc_auc_score(y_test, clf.predict_proba(vec.transform(test_texts))[:, 1]))
