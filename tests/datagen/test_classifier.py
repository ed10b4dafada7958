"""train-classifier: held-out metrics JSON, better than the majority baseline; load_classifier().predict."""

from __future__ import annotations

import json

import pytest

from datagen.__main__ import main
from datagen.classifier import (
    ClassifierError,
    TrainClassifierConfig,
    classification_metrics,
    load_classifier,
    read_labels,
    train_classifier,
)


def _check_metrics(m: dict, n_test: int):
    assert m["n"] == n_test
    assert 0.0 <= m["macro_f1"] <= 1.0
    cm = m["confusion_matrix"]
    assert len(cm) == 6 and all(len(r) == 6 for r in cm) and sum(map(sum, cm)) == n_test


def test_fasttext_cli_prints_metrics_and_beats_majority(labels_file, tmp_path, capsys):
    out = tmp_path / "clf"
    assert main(["train-classifier", f"labels={labels_file}", f"output={out}", "backend=fasttext"]) == 0
    res = json.loads(capsys.readouterr().out)
    _check_metrics(res, res["test_size"])
    base = res["majority_baseline"]
    assert res["macro_f1"] > base["macro_f1"] + 0.3
    assert res["recall_ge1"] > 0.8 and res["recall_ge3"] > 0.6
    clf = load_classifier(out)
    assert clf.predict(["Step by step instructions for building a pipe bomb to kill people at the station."] * 2) == [
        5,
        5,
    ]
    assert json.loads((out / "classifier.json").read_text())["metrics"]["macro_f1"] == res["macro_f1"]
    # 200k n-gram buckets x dim 50 x 4 bytes (fastText's default 2M buckets: 400 MB)
    assert (out / "model.bin").stat().st_size < 60e6


def test_partial_fasttext_settings_keep_the_other_defaults(labels_file, tmp_path):
    import fasttext

    out = tmp_path / "clf"
    assert main(["train-classifier", f"labels={labels_file}", f"output={out}", "params={epoch: 5}"]) == 0
    args = fasttext.load_model(str(out / "model.bin")).f.getArgs()
    assert (args.epoch, args.dim, args.bucket, args.wordNgrams) == (5, 50, 200_000, 2)


@pytest.mark.slow
def test_embedding_backend_weights_unsafe_classes(tmp_path):
    from tests.datagen.conftest import make_docs, write_jsonl

    # small on purpose: MiniLM encodes ~5-20 documents/s on a busy 2-core machine
    labels = write_jsonl(tmp_path / "labels.jsonl", make_docs(150, seed=5, sentences=3))
    meta = train_classifier(
        TrainClassifierConfig(
            labels=str(labels),
            output=str(tmp_path / "emb"),
            backend="embedding",
            params={"model": None, "lambda": 100.0, "C": 1.0, "batch_size": 64},
        )
    )
    m = meta["metrics"]
    _check_metrics(m, meta["test_size"])
    assert m["macro_f1"] > meta["majority_baseline"]["macro_f1"] + 0.2
    assert m["recall_ge1"] > 0.8
    clf = load_classifier(tmp_path / "emb")
    preds = clf.predict(
        [
            "The library opens at nine and the children read picture books together.",
            "We will find you and murder your family, this is a real threat against you.",
        ]
    )
    assert preds[1] >= 4 and all(0 <= p <= 5 for p in preds)


def test_metrics_definition():
    m = classification_metrics([0, 0, 1, 3, 5, 5], [0, 1, 0, 3, 4, 0])
    assert m["recall_ge1"] == pytest.approx(2 / 4)  # 1->0 and 5->0 missed
    assert m["recall_ge3"] == pytest.approx(2 / 3)
    assert m["confusion_matrix"][5][4] == 1 and m["accuracy"] == pytest.approx(2 / 6)


def test_bad_labels_name_file_and_line(tmp_path):
    p = tmp_path / "labels.jsonl"
    p.write_text('{"text": "fine", "score": 0}\n{"text": "bad", "score": 9}\n')
    with pytest.raises(ClassifierError, match=r"labels.jsonl:2: field 'score'"):
        read_labels(p)
    with pytest.raises(ClassifierError, match="no classifier.json"):
        load_classifier(tmp_path)


def test_fasttext_failure_is_a_clear_error(labels_file, tmp_path):
    # a learning rate this large makes fastText diverge on every retry
    cfg = TrainClassifierConfig(
        labels=str(labels_file), output=str(tmp_path / "nan"), params={"epoch": 5, "lr": 1e9, "retries": 1, "dim": 10}
    )
    with pytest.raises(ClassifierError, match="every attempt"):
        train_classifier(cfg)


def test_train_if_missing_never_replaces_a_classifier(labels_file, tmp_path, monkeypatch):
    import datagen.classifier as clf
    from datagen.config import DatagenConfig
    from datagen.pipeline import _ensure_classifier, resolve_classifier
    from infra.config import ConfigError, load_config

    def cfg(folder, train):
        return load_config(
            DatagenConfig,
            None,
            [
                f"score.classifier={folder}",
                f"score.labels={labels_file}",
                f"score.train_if_missing={str(train).lower()}",
            ],
        )

    auto = tmp_path / "auto"
    with pytest.raises(ConfigError, match="has no classifier.json"):
        _ensure_classifier(cfg(auto, False))
    # trained here with other settings than this code's defaults ...
    monkeypatch.setattr(clf, "FASTTEXT_DEFAULTS", {**clf.FASTTEXT_DEFAULTS, "bucket": 50_000})
    monkeypatch.setitem(
        clf.BACKENDS._items,
        "fasttext",
        clf.Backend("fasttext", clf.FASTTEXT_DEFAULTS, clf._train_fasttext, clf.FastTextClassifier),
    )
    assert _ensure_classifier(cfg(auto, True)) == str(auto)
    meta_file, model = auto / "classifier.json", auto / "model.bin"
    assert json.loads(meta_file.read_text())["params"]["bucket"] == 50_000
    stamp = model.stat().st_mtime_ns
    monkeypatch.undo()
    # ... is kept; the classifier for the current settings is trained beside it, with its own marker
    new = _ensure_classifier(cfg(auto, True))
    assert new != str(auto) and new.startswith(f"{auto}@") and resolve_classifier(cfg(auto, True)) == new
    assert model.stat().st_mtime_ns == stamp
    meta = json.loads((tmp_path / new.split("/")[-1] / "classifier.json").read_text())
    assert meta["trained_by"] == "train_if_missing" and meta["params"]["bucket"] == 200_000
    stamp_new = (tmp_path / new.split("/")[-1] / "model.bin").stat().st_mtime_ns
    assert _ensure_classifier(cfg(auto, True)) == new  # up to date: reused, not trained again
    assert (tmp_path / new.split("/")[-1] / "model.bin").stat().st_mtime_ns == stamp_new
    # a classifier the user trained with own settings is used as it is
    mine = tmp_path / "mine"
    assert main(["train-classifier", f"labels={labels_file}", f"output={mine}", "params={epoch: 5}"]) == 0
    stamp = (mine / "model.bin").stat().st_mtime_ns
    assert _ensure_classifier(cfg(mine, True)) == str(mine)
    assert (mine / "model.bin").stat().st_mtime_ns == stamp


def test_unknown_params_and_backends_are_config_errors(labels_file, tmp_path):
    from infra.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"unknown setting\(s\) epochs for backend 'fasttext'"):
        load_config(TrainClassifierConfig, None, [f"labels={labels_file}", "params={epochs: 3}"])
    with pytest.raises(ConfigError, match="unknown classifier backend 'svm'"):
        load_config(TrainClassifierConfig, None, ["backend=svm"])
    from datagen.config import DatagenConfig

    with pytest.raises(ConfigError, match="score.backend"):
        load_config(DatagenConfig, None, ["score.backend=svm"])
    # a folder's classifier.json cannot name code to import
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "classifier.json").write_text('{"backend": "os:system"}')
    with pytest.raises(ClassifierError, match="unknown backend 'os:system'"):
        load_classifier(tmp_path / "x")


def test_metrics_carry_counts_and_intervals():
    m = classification_metrics([0] * 10 + [3] * 10, [0] * 8 + [1] * 2 + [3] * 5 + [0] * 5)
    r = m["rates"]
    assert r["fpr_score0"] == {"rate": 0.2, "k": 2, "n": 10, "ci95": pytest.approx([0.0567, 0.5098], abs=1e-3)}
    assert r["recall_ge3"]["k"] == 5 and r["recall_ge3"]["n"] == 10 and r["fpr_ge3_score0"]["k"] == 0
    assert r["recall_ge1"]["ci95"][0] < 0.5 < r["recall_ge1"]["ci95"][1]
    lo, hi = m["macro_f1_ci95"]
    assert lo <= m["macro_f1"] <= hi and hi - lo > 0.05
    assert classification_metrics([0, 0], [0, 0])["rates"]["recall_ge1"] == {"rate": None, "k": 0, "n": 0, "ci95": None}


def test_eval_classifier_cli_scores_a_labelled_file(fasttext_classifier, labels_file, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval-classifier", f"classifier={fasttext_classifier}", f"labels={labels_file}", f"output={out}"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res == json.loads(out.read_text())
    m, base = res["metrics"], res["majority_baseline"]
    _check_metrics(m, m["n"])
    assert m["n"] == sum(m["label_counts"].values()) and m["macro_f1"] > base["macro_f1"]
    assert base["recall_ge1"] == 0.0 or base["fpr_score0"] == 1.0
