"""Remote inputs and outputs: ``input.path`` and ``output`` as fsspec URLs (``s3://``, ``gs://``, ``hf://``, ...).

Inputs are read where they are: the readers open them through datatrove's ``DataFolder`` (fsspec), and
``split_files`` seeks in them as in a local file. The listing is checked before any work starts, and
the input's fingerprint (for the tokenizer cache) is taken from the listing: names, sizes and ETags or
modification times, never by downloading the data.

A remote ``output`` is built in a local (or shared) *staging* folder, ``output_staging``, exactly as a
local corpus, and uploaded when the final stage has checked the balance: the shards first, then
``stats.json`` and last ``manifest.json``, so that a reader that sees the manifest sees a whole corpus.
``StreamingDataset(remote=<output>/shards/<bucket>, local=<cache>)`` reads the uploaded buckets. On S3
the endpoint comes from the usual variables (``AWS_ENDPOINT_URL``; ``S3_ENDPOINT_URL`` for streaming).
"""

from __future__ import annotations

import fnmatch
import hashlib
from pathlib import Path

from infra.config import ConfigError
from infra.log import get_logger

log = get_logger(__name__)


def is_url(path: str | Path | None) -> bool:
    """True for an fsspec URL other than ``file://`` (``s3://bucket/key``, ``hf://datasets/...``)."""
    s = str(path or "")
    return "://" in s and not s.startswith("file://")


def filesystem(url: str):
    """(fsspec filesystem, path inside it); a missing protocol package is named in the error."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as e:
        raise ConfigError(f"{url}: this protocol needs a package that is not installed ({e})") from None
    except ValueError as e:
        raise ConfigError(f"{url}: {e}") from None


def list_input(url: str, glob: str | None, key: str = "input.path") -> list[dict]:
    """The files an input URL names (one file, or a folder's files matching ``glob``); raises
    ConfigError naming ``key`` when the location cannot be read, does not exist or holds no file."""
    fs, root = filesystem(url)
    try:
        if fs.isfile(root):
            return [fs.info(root)]
        if not fs.isdir(root):
            raise ConfigError(f"{key}: {url} does not exist")
        found = fs.find(root, detail=True)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - credentials, endpoint, permissions: all named the same way
        raise ConfigError(f"{key}: cannot list {url}: {type(e).__name__}: {e}") from None
    files = [
        info
        for name, info in sorted(found.items())
        if info.get("type") != "directory"
        and (glob is None or fnmatch.fnmatch(name[len(root.rstrip("/")) + 1 :], glob) or fnmatch.fnmatch(name, glob))
    ]
    if not files:
        raise ConfigError(f"{key}: {url} holds no files matching input.glob={glob!r}")
    return files


def reader_location(url: str, glob: str | None) -> tuple[str, str | None]:
    """(folder, glob) a datatrove reader takes for ``url``: the folder itself, or one file's folder and name."""
    fs, root = filesystem(url)
    return tuple(url.rstrip("/").rsplit("/", 1)) if fs.isfile(root) else (url, glob)


def listing_fingerprint(url: str, glob: str | None) -> str:
    """sha256 over each listed file's name, size and ETag (or modification time)."""
    lines = []
    for info in list_input(url, glob):
        stamp = info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime") or ""
        lines.append(f"{info['name']}:{info.get('size')}:{stamp}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def check_writable(url: str, key: str = "output") -> None:
    """Write and remove a probe object under ``url``: a missing bucket or missing rights fail before work."""
    fs, root = filesystem(url)
    probe = root.rstrip("/") + "/.write-probe"
    try:
        with fs.open(probe, "wb") as f:
            f.write(b"ok")
        fs.rm(probe)
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"{key}: cannot write to {url}: {type(e).__name__}: {e}") from None


def staging_folder(url: str, staging: str | None) -> Path:
    """Where a remote output is built: ``output_staging`` or ``<cache>/datagen/staging/<sha of url>``."""
    if staging:
        return Path(staging)
    from infra.paths import cache_dir

    return cache_dir() / "datagen" / "staging" / hashlib.sha256(url.encode()).hexdigest()[:16]


# what an uploaded corpus holds, in upload order; manifest.json last marks it whole
_UPLOAD_FIRST = ("shards", "tokenizer", "dropped", "quarantine", "logs")
_UPLOAD_LAST = ("datagen_config.yaml", "stats.json", "manifest.json")


def upload_corpus(corpus: Path, url: str) -> int:
    """Copy the staged corpus folder to ``url`` (shards first, manifest last); returns the files sent."""
    fs, root = filesystem(url)
    root = root.rstrip("/")
    if fs.exists(f"{root}/manifest.json"):  # an older corpus there is no longer whole until the new manifest
        fs.rm(f"{root}/manifest.json")
    sent = 0
    order = [corpus / n for n in _UPLOAD_FIRST] + [
        p for p in sorted(corpus.iterdir()) if p.name not in _UPLOAD_FIRST + _UPLOAD_LAST
    ]
    order += [corpus / n for n in _UPLOAD_LAST]
    for top in order:
        if not top.exists():
            continue
        files = [top] if top.is_file() else sorted(f for f in top.rglob("*") if f.is_file())
        for f in files:
            fs.put_file(str(f), f"{root}/{f.relative_to(corpus).as_posix()}")
            sent += 1
    log.info("uploaded %d files of %s to %s", sent, corpus, url)
    return sent
