"""CurriculumLoader on real MDS shards written with infra.corpus (tiny corpora in tmp folders)."""

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from infra.config import ConfigError
from infra.corpus import (
    BucketInfo,
    BucketShardWriter,
    CorpusError,
    Manifest,
    TokenizerInfo,
    merge_bucket_index,
    open_bucket,
)
from trainer.data.curriculum import CurriculumConfig, MixScheduler, Phase, plan_counts
from trainer.data.loader import BatchLoader, CurriculumLoader
from trainer.data.mds import MDSBucketReader
from trainer.data.packing import PackedBucket

EOS = 0
VOCAB = 1000
SHA = "ab" * 32
# each bucket's token ids live in their own range, so a sample tells which bucket it came from
RANGES = {"raw": (100, 199), "rephrased": (200, 299), "refusal": (300, 399), "moral": (400, 499), "tagged": (500, 599)}
SIZES = {"raw": 120, "rephrased": 40, "refusal": 12, "moral": 12, "tagged": 15}  # documents
INTERVENTION = {"raw": 0.70, "rephrased": 0.15, "refusal": 0.05, "moral": 0.05, "tagged": 0.05}
CUR = CurriculumConfig([Phase(0.0, {"raw": 1.0}), Phase(0.3, INTERVENTION)])
SEQ = 16


def _docs(bucket, n, seed):
    rng = np.random.default_rng(seed)
    lo, hi = RANGES[bucket]
    return [np.append(rng.integers(lo, hi + 1, size=int(rng.integers(1, 40))), EOS).astype(np.uint32) for _ in range(n)]


def make_corpus(root, sizes=SIZES, ranks=2, vocab=VOCAB, sha=SHA):
    docs, buckets = {}, {}
    for k, (b, n) in enumerate(sizes.items()):
        docs[b] = _docs(b, n, k)
        per = -(-n // ranks)
        for r in range(ranks):  # several writer ranks and small shards: merged index, many files
            w = BucketShardWriter(root, b, r, size_limit=1 << 9)
            for i, d in enumerate(docs[b][r * per : (r + 1) * per]):
                w.write(d, f"{b}-{r * per + i}", 0)
            w.close()
        assert merge_bucket_index(root, b) == n
        buckets[b] = BucketInfo(documents=n, tokens=int(sum(d.size for d in docs[b])))
    Manifest(tokenizer=TokenizerInfo(sha256=sha, vocab_size=vocab, eos_id=EOS, tag_id=VOCAB - 1), buckets=buckets).save(
        root
    )
    return docs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    docs = make_corpus(root)
    return root, docs


def bucket_of(sample):
    ids = sample[sample != EOS]
    found = {b for b, (lo, hi) in RANGES.items() if ((ids >= lo) & (ids <= hi)).any()}
    assert len(found) == 1, found
    return found.pop()


def loader(root, **kw):
    args = dict(corpus_dir=root, curriculum=CUR, seq_length=SEQ, global_batch_size=8, train_steps=20, seed=3)
    args.update(kw)
    return CurriculumLoader(**args)


def test_reader_matches_streaming_dataset(corpus):
    root, docs = corpus
    reader = MDSBucketReader(root, "rephrased")
    ds = open_bucket(root, "rephrased")
    assert len(reader) == len(ds) == len(docs["rephrased"])
    for i in range(len(reader)):
        np.testing.assert_array_equal(reader.tokens(i), ds[i]["tokens"])
        np.testing.assert_array_equal(reader.tokens(i), docs["rephrased"][i])
    shards = json.loads((root / "shards/rephrased/index.json").read_text())["shards"]
    assert len({s["raw_data"]["basename"] for s in shards}) > 2  # several shards from several writer ranks


def test_packing_reads_back_the_documents(corpus):
    root, docs = corpus
    packed = PackedBucket(MDSBucketReader(root, "raw"), SEQ)
    stream = np.concatenate(docs["raw"])
    assert packed.num_samples == (stream.size - 1) // SEQ
    samples = [packed.sample(i) for i in range(len(packed))]
    assert all(s.shape == (SEQ + 1,) for s in samples)
    joined = np.concatenate([s[:SEQ] for s in samples] + [samples[-1][SEQ:]])
    np.testing.assert_array_equal(joined, stream[: len(packed) * SEQ + 1])
    for a, b in zip(samples, samples[1:]):  # consecutive samples share one token (last label = next input)
        assert a[-1] == b[0]
    with pytest.raises(IndexError):
        packed.sample(len(packed))


def test_composition_exact_every_step_across_the_switch(corpus):
    root, _ = corpus
    ld = loader(root)
    sched = MixScheduler(CUR, 20, 8)
    plan = plan_counts(CUR, 20, 8)
    cum = dict.fromkeys(INTERVENTION, 0)
    switched = False
    for g in range(20):
        batch = ld.next_batch()
        assert batch["step"] == g and batch["tokens"].shape == (8, SEQ + 1)
        assert batch["loss_mask"].shape == (8, SEQ) and bool((batch["loss_mask"] == 1).all())
        assert batch["bucket_counts"] == plan[g]
        seen = dict.fromkeys(INTERVENTION, 0)  # the tokens really come from the buckets claimed
        for row in batch["tokens"].numpy():
            seen[bucket_of(row)] += 1
        assert seen == batch["bucket_counts"]
        for b in cum:
            cum[b] += seen[b]
            target = sched.target(b, (g + 1) * 8)
            assert abs(cum[b] - target) <= 1.0, (g, b, cum[b], target)
            assert ld.cumulative_tokens[b] == cum[b] * SEQ
        if g < 6:  # 30% of 20 steps
            assert seen["raw"] == 8
        switched |= seen["refusal"] > 0
    assert switched and cum["rephrased"] >= 0.15 * 14 * 8 - 1


def test_deterministic_for_a_seed(corpus):
    root, _ = corpus
    a, b, c = loader(root), loader(root), loader(root, seed=4)
    ta = [a.next_batch()["tokens"] for _ in range(5)]
    tb = [b.next_batch()["tokens"] for _ in range(5)]
    tc = [c.next_batch()["tokens"] for _ in range(5)]
    assert all((x == y).all() for x, y in zip(ta, tb))
    assert not all((x == z).all() for x, z in zip(ta, tc))


def test_resume_equals_uninterrupted(corpus):
    root, _ = corpus
    # small buckets + many steps: epochs roll over inside the resumed span
    full = loader(root, train_steps=30, global_batch_size=12)
    ref = [full.next_batch() for _ in range(30)]
    assert full.state_dict()["buckets"]["refusal"]["epoch"] >= 1
    first = loader(root, train_steps=30, global_batch_size=12)
    for _ in range(11):
        first.next_batch()
    state = json.loads(json.dumps(first.state_dict()))
    second = loader(root, train_steps=30, global_batch_size=12, dp_size=2, dp_rank=1)
    second.load_state_dict(state)
    for g in range(11, 30):
        got = second.next_batch()
        assert got["step"] == g and got["bucket_counts"] == ref[g]["bucket_counts"]
        assert (got["tokens"] == ref[g]["tokens"][6:]).all()
    assert second.state_dict() == full.state_dict()


def test_dp_ranks_partition_the_global_batch(corpus):
    root, _ = corpus
    one = loader(root)
    ranks = [loader(root, dp_size=2, dp_rank=r) for r in range(2)]
    for _ in range(10):
        whole = one.next_batch()
        parts = [r.next_batch() for r in ranks]
        assert all(p["tokens"].shape == (4, SEQ + 1) for p in parts)
        assert (np.concatenate([p["tokens"].numpy() for p in parts]) == whole["tokens"].numpy()).all()
        assert all(p["bucket_counts"] == whole["bucket_counts"] for p in parts)
    assert ranks[0].state_dict() == ranks[1].state_dict() == one.state_dict()


def test_epoch_rollover_reshuffles_and_logs(corpus, caplog):
    root, _ = corpus
    ld = loader(root, curriculum=CurriculumConfig([Phase(0.0, {"refusal": 1.0})]), global_batch_size=4)
    n = len(ld.packed["refusal"])
    per_epoch = []
    with caplog.at_level(logging.INFO, logger="trainer.data.loader"):
        rows = [r for _ in range(-(-2 * n // 4)) for r in ld.next_batch()["tokens"].numpy()]
    whole = {tuple(ld.packed["refusal"].sample(i)) for i in range(n)}
    for e in range(2):
        per_epoch.append([tuple(r) for r in rows[e * n : (e + 1) * n]])
        assert set(per_epoch[e]) == whole and len(per_epoch[e]) == n  # every sample once per epoch
    assert per_epoch[0] != per_epoch[1]  # reshuffled
    rollover = [r for r in caplog.records if "exhausted after" in r.getMessage()]
    assert rollover and all(r.levelno == logging.WARNING for r in rollover)
    assert f"bucket 'refusal' exhausted after {n} samples: pass 2 over it begins" in rollover[0].getMessage()
    assert f"{n} samples drawn from it so far, 1.00 epochs" in rollover[0].getMessage()


def test_zero_weight_buckets_may_be_absent(tmp_path):
    make_corpus(tmp_path, sizes={"raw": 30, "tagged": 10})
    cur = CurriculumConfig([Phase(0.0, {"raw": 1.0, "moral": 0.0}), Phase(0.5, {"raw": 0.5, "tagged": 0.5})])
    ld = loader(tmp_path, curriculum=cur, train_steps=4)
    assert sorted(ld.buckets) == ["raw", "tagged"]
    assert sum(ld.next_batch()["bucket_counts"].values()) == 8


@pytest.fixture
def small_corpus(tmp_path):
    make_corpus(tmp_path, sizes={"raw": 30, "tagged": 10}, ranks=1)
    return tmp_path


TWO = CurriculumConfig([Phase(0.0, {"raw": 1.0}), Phase(0.5, {"raw": 0.5, "tagged": 0.5})])


def test_error_bucket_not_in_corpus(small_corpus):
    with pytest.raises(CorpusError, match=rf"{small_corpus}.*bucket 'refusal'.*no such bucket"):
        loader(small_corpus, curriculum=CurriculumConfig([Phase(0.0, {"raw": 0.5, "refusal": 0.5})]))


def test_error_bucket_shards_missing(small_corpus):
    shutil.rmtree(small_corpus / "shards" / "tagged")
    with pytest.raises(CorpusError, match=rf"{small_corpus}.*bucket 'tagged' is missing"):
        loader(small_corpus, curriculum=TWO)


def test_error_bucket_empty(small_corpus):
    (small_corpus / "shards" / "tagged" / "index.json").write_text(json.dumps({"version": 2, "shards": []}))
    with pytest.raises(CorpusError, match=rf"{small_corpus}.*bucket 'tagged' is empty"):
        loader(small_corpus, curriculum=TWO)


def test_error_bucket_shorter_than_one_sample(small_corpus):
    with pytest.raises(CorpusError, match=r"bucket 'tagged' holds \d+ tokens, fewer than one sample"):
        loader(small_corpus, curriculum=TWO, seq_length=Manifest.load(small_corpus).buckets["tagged"].tokens)


def test_error_tokenizer_mismatch(small_corpus):
    with pytest.raises(CorpusError, match=rf"{small_corpus}.*1000 tokens, the model's has 1001"):
        loader(small_corpus, curriculum=TWO, expected_vocab_size=1001)
    with pytest.raises(CorpusError, match=rf"{small_corpus}.*sha256 abababababab"):
        loader(small_corpus, curriculum=TWO, expected_tokenizer_sha256="cd" * 32)
    loader(small_corpus, curriculum=TWO, expected_vocab_size=VOCAB, expected_tokenizer_sha256=SHA)


def test_error_token_ids_outside_vocab(tmp_path):
    make_corpus(tmp_path, sizes={"raw": 30, "tagged": 10}, ranks=1, vocab=550)  # tagged ids are 500-599
    ld = loader(tmp_path, curriculum=CurriculumConfig([Phase(0.0, {"tagged": 1.0})]))
    with pytest.raises(CorpusError, match=r"bucket 'tagged': token id \d+ .*>= the tokenizer's vocab size 550"):
        ld.next_batch()


def test_error_manifest_disagrees_with_shards(small_corpus):
    m = Manifest.load(small_corpus)
    m.buckets["tagged"].documents = 11
    m.save(small_corpus)
    with pytest.raises(CorpusError, match="bucket 'tagged': manifest.json says 11 documents"):
        loader(small_corpus, curriculum=TWO)


def test_error_no_manifest(tmp_path):
    with pytest.raises(CorpusError, match="no manifest.json"):
        loader(tmp_path)


def test_error_bad_dp_and_bad_state(small_corpus):
    with pytest.raises(ValueError, match="multiple of dp_size"):
        loader(small_corpus, curriculum=TWO, dp_size=3)
    with pytest.raises(ValueError, match="dp_rank"):
        loader(small_corpus, curriculum=TWO, dp_size=2, dp_rank=2)
    a = loader(small_corpus, curriculum=TWO)
    a.next_batch()
    state = a.state_dict()
    with pytest.raises(ValueError, match="seq_length=16, this run has 8"):
        loader(small_corpus, curriculum=TWO, seq_length=8).load_state_dict(state)
    with pytest.raises(ValueError, match="buckets"):
        loader(small_corpus, curriculum=CurriculumConfig([Phase(0.0, {"raw": 1.0})])).load_state_dict(state)
    bad = json.loads(json.dumps(state))
    bad["buckets"]["raw"]["received"] += 1
    with pytest.raises(ValueError, match="inconsistent"):
        loader(small_corpus, curriculum=TWO).load_state_dict(bad)


def test_plan_command_reports_epochs(corpus, capsys):
    from trainer.data.__main__ import main

    root, docs = corpus
    cfg = Path(__file__).resolve().parents[2] / "configs" / "trainer" / "curricula" / "intervention_20.yaml"
    assert (
        main(
            [
                "plan",
                "--config",
                str(cfg),
                "train_steps=50",
                "global_batch_size=8",
                f"seq_length={SEQ}",
                f"corpus={root}",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["budget_tokens"] == 50 * 8 * SEQ and out["phases"][1]["first_step"] == 10
    refusal = out["buckets"]["refusal"]
    assert refusal["samples"] == 16
    assert refusal["samples_per_epoch"] == (sum(d.size for d in docs["refusal"]) - 1) // SEQ
    assert refusal["epochs"] == pytest.approx(16 / refusal["samples_per_epoch"], abs=1e-3)
    assert main(["plan", "--config", str(cfg), f"corpus={root / 'nothing'}"]) == 2
    assert "no manifest.json" in capsys.readouterr().err


def test_reader_decompresses_zstd_shards(tmp_path):
    docs = _docs("moral", 20, 7)
    w = BucketShardWriter(tmp_path, "moral", 0, compression="zstd", size_limit=1 << 9)
    for i, d in enumerate(docs):
        w.write(d, f"m{i}", 0)
    w.close()
    merge_bucket_index(tmp_path, "moral")
    assert not list((tmp_path / "shards/moral/rank_00000").glob("*.mds"))  # only .mds.zstd files
    reader = MDSBucketReader(tmp_path, "moral", max_open=2)
    np.testing.assert_array_equal(reader.doc_lengths, [d.size for d in docs])
    for i in (5, 0, 19, 5):
        np.testing.assert_array_equal(reader.tokens(i), docs[i])


# sha256 of the tokens of the first 20 batches of ``loader(root)``, taken before held-out validation
# samples and epoch limits existed: with nothing held out the loader must read exactly these samples.
DEFAULT_ORDER_SHA256 = "08917d11271141d7ea7e1bdf67562fe006bfff09c4cf332040bb41c9151c2c2d"


def test_default_sample_order_is_unchanged(corpus):
    root, _ = corpus
    ld = loader(root)
    assert isinstance(ld, BatchLoader) and ld.heldout_buckets == []
    h = hashlib.sha256()
    for _ in range(20):
        h.update(ld.next_batch()["tokens"].numpy().tobytes())
    assert h.hexdigest() == DEFAULT_ORDER_SHA256


def test_phase_at_and_weights_follow_the_curriculum(corpus):
    root, _ = corpus
    ld = loader(root)  # 30% of 20 steps: phase 1 from step 6
    assert [ld.phase_at(g) for g in (0, 5, 6, 19)] == [0, 0, 1, 1]
    assert ld.phase_weights(0) == {"raw": 1.0} and ld.phase_weights(1) == INTERVENTION


def test_heldout_samples_are_never_trained_on(corpus):
    root, _ = corpus
    k = 3
    # 200 steps: every bucket is read for several epochs, so each training sample comes up repeatedly
    ld = loader(root, train_steps=200, heldout_per_bucket=k)
    n = {b: len(ld.packed[b]) for b in ld.buckets}
    assert ld.heldout_buckets == ld.buckets
    held = {(b, i) for b in ld.buckets for i in ld.heldout_ids(b)}
    assert held == {(b, i) for b in ld.buckets for i in range(n[b] - k, n[b])}  # the end of each bucket
    trained = set()
    for _ in range(200):
        batch = ld.next_batch()
        rows = batch["tokens"].numpy()
        for row, (b, i) in zip(rows, batch["samples"]):  # "samples" names the row's packed sample
            np.testing.assert_array_equal(row, ld.packed[b].sample(i))
        trained.update(batch["samples"])
    assert not trained & held
    for b in ld.buckets:
        assert ld.state_dict()["buckets"][b]["epoch"] >= 1, b
        assert {i for c, i in trained if c == b} == set(range(n[b] - k)), b  # every other sample, each epoch

    # the held-out samples split over two DP ranks, padded to whole micro-batches with masked rows
    parts = [
        loader(root, heldout_per_bucket=k, dp_size=2, dp_rank=r).heldout_batch("refusal", multiple_of=2)
        for r in range(2)
    ]
    assert [p["tokens"].shape[0] for p in parts] == [2, 2]
    assert [p["samples"] for p in parts] == [
        [("refusal", n["refusal"] - 3), ("refusal", n["refusal"] - 2)],
        [("refusal", n["refusal"] - 1)],
    ]
    assert parts[1]["loss_mask"][0].all() and not parts[1]["loss_mask"][1].any()
    np.testing.assert_array_equal(parts[1]["tokens"][0].numpy(), ld.packed["refusal"].sample(n["refusal"] - 1))

    # a data state belongs to one held-out setting
    state = json.loads(json.dumps(ld.state_dict()))
    with pytest.raises(ValueError, match="held out for validation"):
        loader(root, train_steps=200).load_state_dict(state)
    with pytest.raises(CorpusError, match="leaves none to train on"):
        loader(root, heldout_per_bucket=n["refusal"])


def _epochs(root, cur, bucket, train_steps):
    ld = loader(root, curriculum=CurriculumConfig(cur.phases), train_steps=train_steps)
    return ld.scheduler.target(bucket, train_steps * 8) / len(ld.packed[bucket]), len(ld.packed[bucket])


def test_epoch_limit_stops_before_the_first_step(corpus):
    root, _ = corpus
    epochs, per_epoch = _epochs(root, CUR, "raw", 200)
    assert epochs > 2
    with pytest.raises(ConfigError) as e:
        loader(root, curriculum=CurriculumConfig(CUR.phases, max_epochs=2), train_steps=200)
    msg = str(e.value)
    assert "bucket 'raw'" in msg and f"{epochs:.2f} epochs" in msg and "max_epochs=2" in msg
    assert f"{per_epoch} packed samples ({per_epoch * SEQ} tokens" in msg
    # a per-bucket limit replaces max_epochs for its bucket and names its own key
    r_epochs, _ = _epochs(root, CUR, "refusal", 200)
    assert 1 < r_epochs < 100
    with pytest.raises(ConfigError, match=r"bucket 'refusal'.*bucket_max_epochs\.refusal=1"):
        loader(
            root,
            curriculum=CurriculumConfig(CUR.phases, max_epochs=100, bucket_max_epochs={"refusal": 1}),
            train_steps=200,
        )
    loader(root, curriculum=CurriculumConfig(CUR.phases, max_epochs=100), train_steps=200)  # within the limit


def test_epochs_above_one_warn_once_per_bucket_without_a_limit(corpus, caplog):
    root, _ = corpus
    with caplog.at_level(logging.WARNING, logger="trainer.data.loader"):
        ld = loader(root, train_steps=200)
    warned = re.findall(r"bucket '(\w+)': .* epochs of its", caplog.text)
    over = [b for b in ld.buckets if ld.scheduler.target(b, 200 * 8) / len(ld.packed[b]) > 1]
    assert over and sorted(warned) == sorted(over)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trainer.data.loader"):
        loader(root)  # 20 steps read every bucket less than once
    assert "epochs of its" not in caplog.text
