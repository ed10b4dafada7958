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
    assert main(["train-classifier", f"labels={labels_file}", f"output={out}", "fasttext={epoch: 5}"]) == 0
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
            embedding={"model": None, "lambda": 100.0, "C": 1.0, "batch_size": 64},
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
        labels=str(labels_file), output=str(tmp_path / "nan"), fasttext={"epoch": 5, "lr": 1e9, "retries": 1, "dim": 10}
    )
    with pytest.raises(ClassifierError, match="every attempt"):
        train_classifier(cfg)


def test_train_if_missing_retrains_only_its_own_stale_classifier(labels_file, tmp_path, monkeypatch):
    import datagen.classifier as clf
    from datagen.config import DatagenConfig
    from datagen.pipeline import _ensure_classifier
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
    # trained with other settings than this code's defaults: trained again
    monkeypatch.setattr(clf, "FASTTEXT_DEFAULTS", {**clf.FASTTEXT_DEFAULTS, "bucket": 50_000})
    _ensure_classifier(cfg(auto, True))
    meta_file, model = auto / "classifier.json", auto / "model.bin"
    assert json.loads(meta_file.read_text())["params"]["bucket"] == 50_000
    monkeypatch.undo()
    _ensure_classifier(cfg(auto, True))
    meta = json.loads(meta_file.read_text())
    assert meta["trained_by"] == "train_if_missing" and meta["params"]["bucket"] == 200_000
    stamp = model.stat().st_mtime_ns
    _ensure_classifier(cfg(auto, True))  # up to date: kept
    assert model.stat().st_mtime_ns == stamp
    # a classifier the user trained with own settings is never replaced because of them
    mine = tmp_path / "mine"
    assert main(["train-classifier", f"labels={labels_file}", f"output={mine}", "fasttext={epoch: 5}"]) == 0
    stamp = (mine / "model.bin").stat().st_mtime_ns
    _ensure_classifier(cfg(mine, True))
    assert (mine / "model.bin").stat().st_mtime_ns == stamp
