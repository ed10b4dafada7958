"""Optional PII redaction (datatrove's PIIFormatter) as a stage-1 step, counted in stats."""

from __future__ import annotations

import pytest

from datagen.config import DatagenConfig
from datagen.pipeline import run
from infra.config import ConfigError, load_config
from infra.corpus import open_bucket
from tests.datagen.conftest import make_docs, write_jsonl

TEXTS = {
    "p1": "Write to jane.doe@example.net or to ops@mail.example.com, and ping 8.8.8.8 before noon.",
    "p2": "The router at 192.168.1.1 and the loopback 127.0.0.1 are private; 1.1.1.1 is not.",
    "p3": "Nothing personal in this sentence about the weather and the garden.",
}


def test_redactor_replaces_as_datatrove_and_counts():
    from datatrove.data import Document
    from datatrove.pipeline.formatters import PIIFormatter

    from datagen.steps.pii import PIIRedactor

    reference = PIIFormatter()
    docs = [Document(text=t, id=k) for k, t in TEXTS.items()]
    step = PIIRedactor()
    out = list(step.run(iter(docs)))
    assert [d.text for d in out] == [reference.format(t) for t in TEXTS.values()]
    assert "jane.doe" not in out[0].text and "192.168.1.1" in out[1].text and "1.1.1.1" not in out[1].text
    totals = {k: v["total"] if isinstance(v, dict) else v for k, v in step.stats.to_dict()["stats"].items()}
    assert totals == {
        "total": 3,
        "redacted_documents": 2,
        "redacted_emails": 2,
        "redacted_ips": 2,
    }


def test_pii_step_in_a_run_redacts_the_corpus_and_counts(tmp_path, tokenizer_dir):
    from infra.tokenizer import load_tokenizer

    docs = [{"id": k, "text": t, "score": 0} for k, t in TEXTS.items()] + make_docs(5, seed=3, levels=(0,))
    src = write_jsonl(tmp_path / "in" / "a.jsonl", docs)
    args = [
        f"output={tmp_path / 'corpus'}",
        f"input.path={src}",
        f"tokenizer.path={tokenizer_dir}",
        "score.classifier=null",
        "score.combine=label",
        "filters.language.enabled=false",
        "executor.tasks=1",
        "pii.enabled=true",
        "pii.email_replacement=[EMAIL_ADDRESS]",
        "pii.ip_replacement=[IP_ADDRESS]",
    ]
    stats = run(load_config(DatagenConfig, None, args))
    assert stats["balance"]["ok"] and stats["kept"] == len(docs)
    assert stats["pii"] == {"enabled": True, "documents": 2, "emails": 2, "ips": 2}
    corpus = tmp_path / "corpus"
    tok = load_tokenizer(corpus / "tokenizer")
    ds = open_bucket(corpus, "raw")
    texts = {ds[i]["id"]: tok.decode(ds[i]["tokens"][:-1]) for i in range(len(ds))}
    assert texts["p1"] == "Write to EMAIL_ADDRESS or to EMAIL_ADDRESS, and ping IP_ADDRESS before noon."
    assert texts["p2"] == "The router at 192.168.1.1 and the loopback 127.0.0.1 are private; IP_ADDRESS is not."
    assert texts["p3"] == TEXTS["p3"]
    from datagen.stats import format_summary

    assert "2 e-mail and 2 IP addresses in 2 documents" in format_summary(stats)


def test_pii_is_off_by_default_and_checked():
    cfg = load_config(DatagenConfig, None, [])
    assert cfg.pii.enabled is False
    with pytest.raises(ConfigError, match="pii: enabled, but both pii.emails and pii.ips are false"):
        load_config(DatagenConfig, None, ["pii.enabled=true", "pii.emails=false", "pii.ips=false"])
