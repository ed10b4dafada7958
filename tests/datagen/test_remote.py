"""Object storage: a corpus read from an S3 bucket and written to one, against a real S3-compatible server
(moto's server mode on 127.0.0.1), and the uploaded buckets read back by ``streaming.StreamingDataset``
from the remote through a local cache."""

from __future__ import annotations

import json
import socket

import pytest

from datagen.config import DatagenConfig
from datagen.pipeline import run
from infra.config import ConfigError, load_config
from infra.corpus import open_bucket
from tests.datagen.conftest import make_docs

pytest.importorskip("s3fs", reason="s3fs (fsspec's S3 protocol) is not installed")
moto_server = pytest.importorskip("moto.server", reason="moto (local S3 server) is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A real S3 API on 127.0.0.1, with the variables boto3, s3fs and streaming read for its endpoint."""
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    mp = pytest.MonkeyPatch()
    for k, v in {
        "AWS_ENDPOINT_URL": url,
        "S3_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        mp.setenv(k, v)
    import boto3

    client = boto3.client("s3", endpoint_url=url)
    for b in ("docs", "corpora"):
        client.create_bucket(Bucket=b)
    docs = make_docs(90, seed=3)
    for k in range(3):
        body = "".join(json.dumps(d) + "\n" for d in docs[k::3])
        client.put_object(Bucket="docs", Key=f"web/part-{k}.jsonl", Body=body.encode())
    client.put_object(Bucket="docs", Key="web/README.txt", Body=b"not a corpus file")
    yield {"client": client, "docs": docs}
    mp.undo()
    server.stop()


def _cfg(tmp_path, tokenizer_dir, *extra):
    return load_config(
        DatagenConfig,
        None,
        [
            "input.path=s3://docs/web",
            "input.glob=*.jsonl",
            "output=s3://corpora/run-1",
            f"output_staging={tmp_path / 'staging'}",
            f"tokenizer.path={tokenizer_dir}",
            "score.classifier=null",
            "score.combine=label",
            "filters.language.enabled=false",
            "tag.enabled=false",
            "executor.tasks=2",
            "executor.workers=1",
            *extra,
        ],
    )


def test_corpus_from_a_bucket_to_a_bucket_reads_back_with_streaming(s3, tokenizer_dir, tmp_path):
    from streaming import StreamingDataset

    stats = run(_cfg(tmp_path, tokenizer_dir, "input.split_files=true"))
    assert stats["read"] == 90 and stats["balance"]["ok"], stats["balance"]
    keys = {o["Key"] for o in s3["client"].list_objects_v2(Bucket="corpora", Prefix="run-1/")["Contents"]}
    assert {"run-1/manifest.json", "run-1/stats.json", "run-1/shards/raw/index.json"} <= keys
    remote = json.loads(s3["client"].get_object(Bucket="corpora", Key="run-1/stats.json")["Body"].read())
    assert remote["buckets"] == stats["buckets"]
    # the uploaded bucket, streamed from S3 into a local cache, holds what the staging folder holds
    ds = StreamingDataset(
        remote="s3://corpora/run-1/shards/raw", local=str(tmp_path / "cache"), shuffle=False, batch_size=1
    )
    local = open_bucket(tmp_path / "staging", "raw")
    assert len(ds) == len(local) == stats["buckets"]["raw"]["documents"] > 0
    assert sorted(ds[i]["id"] for i in range(len(ds))) == sorted(local[i]["id"] for i in range(len(local)))
    assert (tmp_path / "cache" / "index.json").is_file()
    # every id read from the bucket came back out of the corpus or was counted as dropped/pending
    assert stats["kept"] + stats["dropped"]["total"] == 90


def test_remote_locations_are_checked_before_any_work(s3, tokenizer_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"input.path: s3://docs/nowhere does not exist"):
        run(_cfg(tmp_path, tokenizer_dir, "input.path=s3://docs/nowhere"))
    with pytest.raises(ConfigError, match=r"holds no files matching input.glob='\*.parquet'"):
        run(_cfg(tmp_path, tokenizer_dir, "input.glob=*.parquet"))
    with pytest.raises(ConfigError, match=r"output: cannot write to s3://no-such-bucket/x"):
        run(_cfg(tmp_path, tokenizer_dir, "output=s3://no-such-bucket/x"))
    assert not (tmp_path / "staging").exists()
    with pytest.raises(ConfigError, match="trains on local JSONL input only"):
        run(_cfg(tmp_path, tokenizer_dir, f"tokenizer.path={tmp_path / 'new-tok'}", "tokenizer.train_if_missing=true"))
