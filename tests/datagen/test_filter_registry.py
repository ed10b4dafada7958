"""The datagen filter registry: built-in names, a user's "module:Class" filter in a run, errors at config load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datagen.config import DatagenConfig
from infra.config import ConfigError, load_config

USER_FILTER = "tests.datagen.user_filters:DropIdSuffix"


def _cfg(tmp: Path, input_dir: Path, *extra: str, tokenizer_dir: Path | None = None) -> DatagenConfig:
    return load_config(
        DatagenConfig,
        None,
        [
            f"output={tmp / 'corpus'}",
            f"input.path={input_dir}",
            "input.max_chars=10000",
            *([f"tokenizer.path={tokenizer_dir}"] if tokenizer_dir else []),
            "score.classifier=null",
            "score.combine=label",
            "executor.tasks=1",
            "executor.workers=1",
            *extra,
        ],
    )


def test_every_builtin_filter_is_registered():
    from datagen.steps import FILTERS, ExactDedupFilter, LanguageIDFilter

    assert set(FILTERS.names()) >= {
        "gopher_quality",
        "gopher_repetition",
        "c4_quality",
        "fineweb_quality",
        "language",
        "exact_dedup",
    }
    assert FILTERS.get("language") is LanguageIDFilter and FILTERS.get("exact_dedup") is ExactDedupFilter


def test_unknown_filter_fails_at_config_load_and_lists_known_names(tmp_path, messy_input):
    with pytest.raises(ConfigError, match=r"filters\.quality\.gopher_qualty: unknown quality filter") as e:
        _cfg(tmp_path, messy_input["dir"], "filters.quality={gopher_qualty: {}}")
    assert "gopher_quality" in str(e.value) and "fineweb_quality" in str(e.value) and "module:Class" in str(e.value)


@pytest.mark.parametrize(
    "quality, message",
    [
        (
            "{'tests.datagen.user_filters:NotAFilter': {}}",
            r"filters\.quality\.tests\.datagen\.user_filters:NotAFilter: .*not a datatrove BaseFilter",
        ),
        (
            "{'tests.datagen.no_such_module:Thing': {}}",
            r"filters\.quality\.tests\.datagen\.no_such_module:Thing: .*cannot import",
        ),
        (
            "{'tests.datagen.user_filters:Missing': {}}",
            r"filters\.quality\.tests\.datagen\.user_filters:Missing: .*cannot import",
        ),
        ("{gopher_quality: {no_such_arg: 1}}", r"filters\.quality\.gopher_quality: .*no_such_arg"),
        (
            f"{{'{USER_FILTER}': {{sufix: '7'}}}}",
            r"filters\.quality\.tests\.datagen\.user_filters:DropIdSuffix: .*sufix",
        ),
        ("{exact_dedup: {lowercase: true}}", r"filters\.quality\.exact_dedup: .*filters\.exact_dedup=false"),
    ],
)
def test_bad_quality_entries_fail_at_config_load(tmp_path, messy_input, quality, message):
    with pytest.raises(ConfigError, match=message):
        _cfg(tmp_path, messy_input["dir"], f"filters.quality={quality}")


def test_stage1_builds_every_filter_from_the_registry(tmp_path, messy_input):
    from datatrove.pipeline.filters import GopherQualityFilter

    from datagen.pipeline import build_stage1
    from datagen.steps import ExactDedupFilter, LanguageIDFilter
    from datagen.steps.dedup import CorpusExactDedupFilter
    from tests.datagen.user_filters import DropIdSuffix

    cfg = _cfg(
        tmp_path,
        messy_input["dir"],
        f"filters.quality={{gopher_quality: {{min_doc_words: 5}}, '{USER_FILTER}': {{suffix: '3'}}}}",
    )
    steps, labels = build_stage1(cfg, tmp_path / "corpus")
    filters = [(lab, s) for lab, s in zip(labels, steps) if lab.startswith("filter:")]
    assert [lab for lab, _ in filters] == [
        "filter:language",
        "filter:gopher_quality",
        f"filter:{USER_FILTER}",
        "filter:exact_dedup",
    ]
    # corpus-wide exact dedup (the default): datatrove's filter over what its dedup stages found
    kinds = [LanguageIDFilter, GopherQualityFilter, DropIdSuffix, CorpusExactDedupFilter]
    assert all(isinstance(s, k) for (_, s), k in zip(filters, kinds))
    steps, labels = build_stage1(_cfg(tmp_path, messy_input["dir"], "filters.dedup_scope=task"), tmp_path / "c2")
    assert isinstance(steps[labels.index("filter:exact_dedup")], ExactDedupFilter)
    assert filters[1][1].min_doc_words == 5 and filters[2][1].suffix == "3"
    assert filters[2][1].exclusion_writer is not None  # write_dropped reaches a user's filter too

    # the language filter may sit among the quality filters once its own switch is off
    cfg = _cfg(
        tmp_path,
        messy_input["dir"],
        "filters.language.enabled=false",
        "filters.exact_dedup=false",
        "filters.quality={fineweb_quality: {}, language: {languages: [en], threshold: 0.5}}",
    )
    steps, labels = build_stage1(cfg, tmp_path / "corpus")
    assert [lab for lab in labels if lab.startswith("filter:")] == ["filter:fineweb_quality", "filter:language"]
    assert steps[labels.index("filter:language")].threshold == 0.5


def test_user_filter_runs_in_the_pipeline_and_its_drops_are_counted(tmp_path, messy_input, tokenizer_dir):
    from datagen.pipeline import run

    cfg = _cfg(
        tmp_path,
        messy_input["dir"],
        f"filters.quality={{'{USER_FILTER}': {{suffix: '7'}}}}",
        tokenizer_dir=tokenizer_dir,
    )
    stats = run(cfg)
    dropped_ids = sorted(d["id"] for d in messy_input["good"] if d["id"].endswith("7"))
    assert dropped_ids  # the fixture has some, or the test would prove nothing
    by_filter = stats["dropped"]["by_filter"]
    assert by_filter[USER_FILTER] == {"total": len(dropped_ids), "reasons": {"id_suffix": len(dropped_ids)}}
    assert {k: v["total"] for k, v in by_filter.items() if k != USER_FILTER} == messy_input["dropped"]
    assert stats["kept"] == len(messy_input["good"]) - len(dropped_ids)
    assert stats["balance"]["ok"], stats["balance"]
    folder = Path(cfg.output) / "dropped" / USER_FILTER.replace(":", ".")
    written = sorted(json.loads(line)["id"] for f in folder.glob("*.jsonl") for line in f.read_text().splitlines())
    assert written == dropped_ids
