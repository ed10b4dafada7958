"""HF encoder classifiers: a released sequence-classification folder mapped onto the rubric (``hf``) and
the paper's two-phase finetuning (``finetune``), on tiny randomly initialised BERTs written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from datagen.__main__ import main
from datagen.classifier import ClassifierError, TrainClassifierConfig, load_classifier, train_classifier

WORDS = (
    "the library opens at nine and children read books together in the garden while rain falls "
    "we will hurt you and your family with knives tonight this is a threat kill attack bomb"
).split()


def tiny_bert(folder: Path, num_labels: int, seed: int = 0, problem_type: str | None = None) -> Path:
    """A 2-layer BERT (hidden 32) with a WordPiece tokenizer trained on a few sentences, as safetensors."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator([" ".join(WORDS)] * 20, trainers.WordPieceTrainer(vocab_size=200, special_tokens=special))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=len(fast),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=num_labels,
        problem_type=problem_type,
    )
    folder.mkdir(parents=True, exist_ok=True)
    BertForSequenceClassification(cfg).save_pretrained(str(folder), safe_serialization=True)
    fast.save_pretrained(str(folder))
    return folder


TEXTS = ["the library opens at nine", "we will hurt you tonight", "children read books", "bomb attack threat"] * 3


@pytest.mark.parametrize(
    ("num_labels", "extra", "allowed"),
    [(6, [], set(range(6))), (1, [], set(range(6))), (2, ["label_scores=[0, 4]"], {0, 4})],
)
def test_import_released_classifier_maps_outputs(tmp_path, capsys, num_labels, extra, allowed):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_dir = tiny_bert(tmp_path / "released", num_labels, problem_type="regression" if num_labels == 1 else None)
    out = tmp_path / "clf"
    assert main(["import-classifier", f"model={model_dir}", f"output={out}", "device=cpu", *extra]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["backend"] == "hf" and meta["files"]["model"] == str(model_dir.resolve())
    preds = load_classifier(out).predict(TEXTS)
    assert len(preds) == len(TEXTS) and set(preds) <= allowed
    # the mapping is the model's own output, applied as documented
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), use_safetensors=True)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    with torch.inference_mode():
        logits = model(**tok(TEXTS, padding=True, return_tensors="pt")).logits.numpy()
    if num_labels == 1:
        expect = np.clip(np.rint(logits[:, 0]), 0, 5).astype(int).tolist()
    else:
        scores = [0, 4] if num_labels == 2 else list(range(6))
        expect = [scores[i] for i in logits.argmax(axis=1)]
    assert preds == expect


def test_import_refuses_unusable_folders(tmp_path, capsys):
    import torch

    three = tiny_bert(tmp_path / "three", 3)
    assert main(["import-classifier", f"model={three}", f"output={tmp_path / 'a'}"]) == 2
    assert "label_scores: the model has 3 outputs" in capsys.readouterr().err
    assert main(["import-classifier", f"model={three}", f"output={tmp_path / 'b'}", "label_scores=[0, 4]"]) == 2
    assert "label_scores gives 2" in capsys.readouterr().err
    assert main(["import-classifier", f"model={three}", f"output={tmp_path / 'b'}", "label_scores=[0, 4, 9]"]) == 2
    assert "label_scores" in capsys.readouterr().err
    # pickle weights only: refused, never unpickled
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((three / "config.json").read_text())
    torch.save({"x": torch.zeros(1)}, pickled / "pytorch_model.bin")
    assert main(["import-classifier", f"model={pickled}", f"output={tmp_path / 'c'}"]) == 2
    assert "no safetensors weights (only pytorch_model.bin" in capsys.readouterr().err
    # not a classification model
    base = tmp_path / "base"
    tiny_bert(base, 2)
    cfg = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**cfg, "architectures": ["BertModel"]}))
    assert main(["import-classifier", f"model={base}", f"output={tmp_path / 'd'}"]) == 2
    assert "no ...ForSequenceClassification" in capsys.readouterr().err
    # a folder whose model went away is a clear error at load
    good = tmp_path / "good"
    assert main(["import-classifier", f"model={tiny_bert(tmp_path / 'm', 6)}", f"output={good}"]) == 0
    capsys.readouterr()
    import shutil

    shutil.rmtree(tmp_path / "m")
    with pytest.raises(ClassifierError, match="does not exist"):
        load_classifier(good)


def _easy_labels(path: Path, n: int = 120) -> Path:
    rng = np.random.default_rng(0)
    safe = "the library opens at nine and children read books together in the garden".split()
    bad = "we will hurt you and your family with knives tonight this is a threat".split()
    rows = []
    for i in range(n):
        score = [0, 0, 4][i % 3]
        words = list(rng.choice(safe if score == 0 else bad, size=8))
        rows.append({"text": " ".join(words), "score": score})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_finetune_two_phases_and_held_out_metrics(tmp_path):
    import torch

    import datagen.classifier_hf as hf

    encoder = tiny_bert(tmp_path / "encoder", 2)
    # phase 1 leaves the encoder as it was, phase 2 changes it
    model, tok = hf._load_seq_cls(encoder, num_labels=6, ignore_mismatched_sizes=True)
    params = {**hf.FINETUNE_DEFAULTS, "batch_size": 8, "max_length": 32}
    enc0 = {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith("bert.")}
    head0 = model.classifier.weight.detach().clone()
    texts, scores = ["the library opens", "we will hurt you"] * 8, [0, 4] * 8
    hf._run_phase(model, tok, texts, scores, params, torch.device("cpu"), 1, 1e-2, True, 0)
    assert all(torch.equal(p, enc0[n]) for n, p in model.named_parameters() if n.startswith("bert."))
    assert not torch.equal(model.classifier.weight, head0)
    hf._run_phase(model, tok, texts, scores, params, torch.device("cpu"), 1, 1e-3, False, 1)
    assert any(not torch.equal(p, enc0[n]) for n, p in model.named_parameters() if n.startswith("bert."))

    labels = _easy_labels(tmp_path / "labels.jsonl")
    out = tmp_path / "ft"
    meta = train_classifier(
        TrainClassifierConfig(
            labels=str(labels),
            output=str(out),
            backend="finetune",
            test_fraction=0.25,
            params={
                "model": str(encoder),
                "epochs": 10,
                "head_epochs": 1,
                "lr": 3e-3,
                "lr_head": 1e-2,
                "lambda": 1.0,
                "batch_size": 8,
                "max_length": 32,
                "device": "cpu",
            },
        )
    )
    m = meta["metrics"]
    assert m["n"] == 30 and meta["files"]["model"] == "model" and (out / "model" / "model.safetensors").is_file()
    assert m["macro_f1"] > meta["majority_baseline"]["macro_f1"] + 0.3
    assert m["recall_ge1"] >= 0.9 and m["fpr_score0"] <= 0.2
    clf = load_classifier(out)
    assert clf.predict(["we will hurt you tonight with knives", "children read books in the garden"]) == [4, 0]


@pytest.mark.slow
def test_finetune_real_minilm(tmp_path):
    """The shipped MiniLM, finetuned on 150 synthetic documents (one epoch of each phase)."""
    from tests.datagen.conftest import make_docs, write_jsonl

    labels = write_jsonl(tmp_path / "labels.jsonl", make_docs(150, seed=5, sentences=3))
    meta = train_classifier(
        TrainClassifierConfig(
            labels=str(labels),
            output=str(tmp_path / "ft"),
            backend="finetune",
            params={"epochs": 1, "head_epochs": 1, "max_length": 64, "lambda": 1.0},
        )
    )
    m = meta["metrics"]
    assert m["macro_f1"] > meta["majority_baseline"]["macro_f1"] + 0.2 and m["recall_ge1"] > 0.7
    preds = load_classifier(tmp_path / "ft").predict(["We will find you and murder your family, this is a threat."])
    assert preds[0] >= 3
