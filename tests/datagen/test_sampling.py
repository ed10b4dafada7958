"""Stratified sampling of the documents `datagen annotate` labels: allocation, reservoirs, strata."""

from __future__ import annotations

import json

import pytest

from datagen.llm.sampling import allocate, stratified_sample


def test_allocation_is_proportional_with_a_floor_and_exact_total():
    sizes = {"web": 9000, "forum": 900, "news": 90, "rare": 3}
    take = allocate(sizes, 1000, minimum=5)
    assert sum(take.values()) == 1000
    assert take["rare"] == 3 and take["news"] >= 5  # small strata are not starved
    assert take["web"] > take["forum"] > take["news"]
    assert abs(take["web"] / take["forum"] - 10) < 0.5
    assert allocate(sizes, -1, 5) == sizes and allocate(sizes, 10**6, 5) == sizes
    # fewer documents than strata: the largest strata get one each
    assert allocate(sizes, 2, 5) == {"web": 1, "forum": 1, "news": 0, "rare": 0}


@pytest.mark.parametrize("seed", [0, 1])
def test_stratified_sample_counts_and_determinism(seed):
    items = [(s, i) for s in ("a", "b", "c") for i in range({"a": 500, "b": 50, "c": 4}[s])]
    got, counts = stratified_sample(items, key=lambda x: x[0], n=60, minimum=5, seed=seed)
    assert len(got) == 60 and len(set(got)) == 60
    assert counts == {
        "a": {"available": 500, "taken": counts["a"]["taken"]},
        "b": {"available": 50, "taken": counts["b"]["taken"]},
        "c": {"available": 4, "taken": 4},
    }
    assert sum(c["taken"] for c in counts.values()) == 60
    assert sum(1 for x in got if x[0] == "a") == counts["a"]["taken"] > counts["b"]["taken"]
    again, _ = stratified_sample(items, key=lambda x: x[0], n=60, minimum=5, seed=seed)
    assert again == got
    # the reservoir draws from the whole stream, not its head
    assert max(i for s, i in got if s == "a") > 250


def test_annotate_strata_from_fields_files_and_detected_language(tmp_path):
    from datagen.llm.annotate import read_documents, stratum_of
    from datagen.llm.config import AnnotateConfig
    from infra.config import load_config

    en = "The library opens at nine every morning and the children read picture books together."
    fr = "La bibliothèque ouvre à neuf heures chaque matin et les enfants lisent des livres ensemble."
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text(
        "".join(json.dumps({"id": f"a{i}", "text": en if i % 2 else fr}) + "\n" for i in range(10))
    )
    (tmp_path / "in" / "b.jsonl").write_text(
        "".join(json.dumps({"id": f"b{i}", "text": en, "source": "forum", "lang": "en"}) + "\n" for i in range(6))
    )
    cfg = load_config(
        AnnotateConfig, None, [f"input={tmp_path / 'in'}", "sample.documents=8", "sample.min_per_stratum=2"]
    )
    docs, bad = read_documents(cfg)
    assert len(docs) == 16 and not bad
    key = stratum_of(cfg)
    assert {key(d) for d in docs} == {("a.jsonl", "fr"), ("a.jsonl", "en"), ("forum", "en")}
    got, counts = stratified_sample(docs, key, 8, 2, 0)
    assert len(got) == 8 and set(counts) == {"('a.jsonl', 'en')", "('a.jsonl', 'fr')", "('forum', 'en')"}
    assert all(c["taken"] >= 2 for c in counts.values())
