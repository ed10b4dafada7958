"""Fixtures of the trainer tests: a tiny tokenizer + corpus folder built once per session, and helpers
to run the trainer's CLI in subprocesses (megatron's CPU redirections then never leak into pytest)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from infra.paths import REPO_ROOT
from infra.proc import clean_env

BUCKETS = ("raw", "tagged", "rephrased", "refusal", "moral")


def build_tiny_corpus(out: Path) -> Path:
    """A corpus folder in the datagen layout: a 384-token BPE tokenizer trained on the embedded default
    corpus, and five buckets of real documents (score-0 documents in raw, the others dealt round-robin)."""
    from datagen.tokenizer_train import train_bpe_tokenizer
    from infra.corpus import BucketInfo, BucketShardWriter, Manifest, TokenizerInfo, file_sha256, merge_bucket_index
    from infra.paths import default_corpus
    from infra.tokenizer import load_tokenizer, tag_id

    docs = [json.loads(line) for line in default_corpus().read_text().splitlines() if line.strip()]
    texts = [d["text"] for d in docs]
    tok_dir = train_bpe_tokenizer(texts, out / "tokenizer", vocab_size=384)
    tok = load_tokenizer(tok_dir)
    manifest = Manifest(
        tokenizer=TokenizerInfo(
            path="tokenizer",
            sha256=file_sha256(tok_dir / "tokenizer.json"),
            vocab_size=len(tok),
            eos_id=tok.eos_token_id,
            tag_id=tag_id(tok),
        )
    )
    writers = {b: BucketShardWriter(out, b, 0) for b in BUCKETS}
    others = [b for b in BUCKETS if b != "raw"]
    k = 0
    for d in docs:
        ids = tok(d["text"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        if d.get("score", 0) == 0:
            bucket = "raw"
        else:
            bucket = others[k % len(others)]
            k += 1
        writers[bucket].write(ids, d["id"], int(d.get("score", 0)))
    for b, w in writers.items():
        w.close()
        merge_bucket_index(out, b)
        manifest.buckets[b] = BucketInfo(documents=w.documents, tokens=w.tokens)
    manifest.save(out)
    return out


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    return build_tiny_corpus(tmp_path_factory.mktemp("trainer_corpus") / "corpus")


def trainer_env() -> dict:
    """The environment ``infra.proc`` gives a package CLI, plus quiet, single-threaded test settings."""
    return clean_env({"PROGRESS": "0", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"})


def trainer_cmd(*args: str, nproc: int = 1) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "trainer", *args]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "trainer",
        *args,
    ]


def run_trainer(*args: str, nproc: int = 1, timeout: int = 300, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m trainer ARGS`` (under torchrun when nproc > 1) from the repository root."""
    proc = subprocess.run(
        trainer_cmd(*args, nproc=nproc),
        cwd=REPO_ROOT,
        env=trainer_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"trainer {' '.join(args)} exited {proc.returncode}\n{proc.stderr[-6000:]}")
    return proc


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line.strip()]


def tiny_args(run_dir: Path, corpus: Path, *extra: str, steps: int = 24) -> list[str]:
    """Overrides of a tiny pretraining run (phase switch at 25% of the budget)."""
    return [
        "train",
        "--config",
        "configs/trainer/tiny.yaml",
        f"run_dir={run_dir}",
        f"data.corpus={corpus}",
        "data.curriculum={phases: [{start: 0.0, weights: {raw: 1.0}}, {start: 0.25, weights: "
        "{raw: 0.5, rephrased: 0.2, refusal: 0.1, moral: 0.1, tagged: 0.1}}]}",
        f"train.train_steps={steps}",
        "train.seq_length=32",
        "train.global_batch_size=8",
        "train.micro_batch_size=4",
        "train.warmup_steps=2",
        "train.save_interval=4",
        "train.keep_last=2",
        "train.log_interval=4",
        "model.spec=local",
        "logging.tensorboard=true",
        # 384 tokens: a multiple of 64 * TP for TP=1 and 2, so both layouts initialise the same weights
        "model.make_vocab_size_divisible_by=64",
        *extra,
    ]


REF_STEPS = 24


@pytest.fixture(scope="session")
def reference_run(tiny_corpus, tmp_path_factory):
    """One uninterrupted single-process tiny run that several tests compare against or export."""
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    # the tiny config leaves the end-of-training report off (tests train many runs); this one writes it
    run_trainer(*tiny_args(run_dir, tiny_corpus, "logging.report_at_end=true", steps=REF_STEPS))
    return run_dir


@pytest.fixture(scope="session")
def reference_hf(reference_run, tmp_path_factory):
    """``export-hf`` of the reference run."""
    out = tmp_path_factory.mktemp("ref_hf") / "hf"
    run_trainer("export-hf", str(reference_run), str(out))
    return out


def megatron_logits(
    tmp_path: Path,
    tokens,
    *,
    ckpt: Path | None = None,
    hf: Path | None = None,
    roundtrip: Path | None = None,
    spec: str = "local",
):
    """Logits of the trainer's megatron model for ``tokens`` (run in a subprocess)."""
    import torch

    tok_file, out_file = tmp_path / "tokens.pt", tmp_path / "logits.pt"
    torch.save(tokens, tok_file)
    cmd = [
        sys.executable,
        str(REPO_ROOT / "tests" / "trainer" / "megatron_logits.py"),
        "--tokens",
        str(tok_file),
        "--out",
        str(out_file),
        "--spec",
        spec,
    ]
    cmd += ["--ckpt", str(ckpt)] if ckpt else ["--hf", str(hf)]
    if roundtrip:
        cmd += ["--roundtrip", str(roundtrip)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=trainer_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return torch.load(out_file)
