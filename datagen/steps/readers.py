"""Readers that never lose a record silently.

A record the pipeline cannot use (malformed JSON, invalid UTF-8, missing or non-string text, an
unreadable file) becomes a *placeholder* document with ``metadata["quarantine"] = reason``; the
``QuarantineStep`` downstream writes it aside and counts it. Good documents carry ``source`` and
``line`` so that later quarantine decisions (empty, too long) can name where they came from.

The JSONL reader also repairs what is valid JSON but cannot travel as UTF-8 text: NUL characters
(``\u0000``) are removed and lone surrogates (``\ud800``) become U+FFFD; both are counted
(``repaired_nul``, ``repaired_surrogate``). A line that is not UTF-8 is quarantined with its original
bytes (``raw_base64``) beside the readable ``raw``.
"""

from __future__ import annotations

import base64
import json
import re
import time

from datatrove.data import Document
from datatrove.pipeline.readers.base import BaseDiskReader
from datatrove.pipeline.readers.parquet import ParquetReader
from datatrove.pipeline.readers.warc import WarcReader


def placeholder(source: str, line: int, reason: str, raw: str | bytes, cut: int, keep_bytes: bool = False) -> Document:
    """A document that only carries why a record was unusable (``QuarantineStep`` writes it aside).
    ``keep_bytes``: also keep the first ``cut`` bytes of ``raw`` as they were (``raw_base64``)."""
    meta = {"quarantine": reason, "source": source, "line": line}
    if isinstance(raw, bytes):
        if keep_bytes:
            meta["raw_base64"] = base64.b64encode(raw[:cut]).decode("ascii")
        raw = raw.decode("utf-8", errors="replace")
    meta["raw"] = raw[:cut]
    return Document(text="", id=f"{source}:{line}", metadata=meta)


_SURROGATE = re.compile("[\ud800-\udfff]")
# the JSON escapes that can decode to a NUL or a surrogate (a pair is repaired back only if lone)
_REPAIR_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


def repair_strings(obj, counts: dict):
    """``obj`` (parsed JSON) with NULs removed and lone surrogates replaced in every string; ``counts``
    gets ``nul`` / ``surrogate`` += the characters changed."""
    if isinstance(obj, str):
        if "\x00" in obj:
            counts["nul"] = counts.get("nul", 0) + obj.count("\x00")
            obj = obj.replace("\x00", "")
        if _SURROGATE.search(obj):
            counts["surrogate"] = counts.get("surrogate", 0) + len(_SURROGATE.findall(obj))
            obj = _SURROGATE.sub("\ufffd", obj)
        return obj
    if isinstance(obj, dict):
        return {repair_strings(k, counts): repair_strings(v, counts) for k, v in obj.items()}
    if isinstance(obj, list):
        return [repair_strings(v, counts) for v in obj]
    return obj


def _fmt_bytes(n: float) -> str:
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("KB", "MB", "GB"):
        n /= 1000
        if n < 1000:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:.1f} TB"


class TaskProgress:
    """One task's reading progress: documents/s and, from the bytes of its share of the files, the
    fraction done and an ETA. Logged every ``interval`` seconds and once at the end of the task."""

    def __init__(self, rank: int, world: int, total_bytes: int, files: int, interval: float, logger=None):
        self.rank, self.world, self.total, self.files = rank, world, max(total_bytes, 0), files
        # None: datatrove's logger, the task's own log file (looked up when logging: a reader that holds it
        # could no longer be pickled for the executor's worker processes)
        self.interval, self.logger = interval, logger
        self.start = self.last = time.monotonic()
        self.docs = self.files_done = 0
        self.bytes_done = 0  # finished files' shares
        self.bytes_file = 0  # bytes of the current file read so far (readers that know them)

    def line(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-9)
        done = self.bytes_done + self.bytes_file
        head = f"task {self.rank + 1}/{self.world}: {self.docs:,} documents ({self.docs / elapsed:,.0f}/s)"
        if not self.total:
            return f"{head}, {self.files_done}/{self.files} files"
        frac = min(done / self.total, 1.0)
        eta = int(elapsed * (1 - frac) / frac) if frac > 0 else None
        eta_s = "?" if eta is None else f"{eta // 3600}:{eta % 3600 // 60:02d}:{eta % 60:02d}"
        return (
            f"{head}, {_fmt_bytes(done)} of {_fmt_bytes(self.total)} ({100 * frac:.0f}%), "
            f"{self.files_done}/{self.files} files, ETA {eta_s}"
        )

    def tick(self, docs: int = 1) -> None:
        self.docs += docs
        now = time.monotonic()
        if self.interval > 0 and now - self.last >= self.interval:
            self.last = now
            self._log(f"progress {self.line(now)}")

    def file_done(self, share: int) -> None:
        self.files_done += 1
        self.bytes_done += share
        self.bytes_file = 0

    def finish(self) -> None:
        now = time.monotonic()
        self._log(f"read {self.line(now).split(': ', 1)[1]} in {now - self.start:.1f} s")

    def _log(self, text: str) -> None:
        from datatrove.utils.logging import logger

        (self.logger or logger).info(text)


class _ProgressMixin:
    """Wraps a datatrove reader's shard loop with a ``TaskProgress`` (a line every ``progress_s`` seconds)."""

    _task = (0, 1)
    progress: TaskProgress | None = None
    progress_s: float = 30.0

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        self._task = (rank, world_size)
        yield from super().run(data, rank, world_size)

    def _share_bytes(self, filepath: str) -> int:
        """Bytes of ``filepath`` this task reads (all of it unless a reader splits files)."""
        try:
            return int(self.data_folder.size(filepath))
        except Exception:  # noqa: BLE001 - a size that cannot be read only costs the ETA
            return 0

    def read_files_shard(self, shard: list[str]):
        rank, world = self._task
        shares = {f: self._share_bytes(f) for f in shard}
        self.progress = TaskProgress(rank, world, sum(shares.values()), len(shard), self.progress_s)
        current = None
        for doc in super().read_files_shard(shard):
            src = doc.metadata.get("source")
            if src != current and current in shares:
                self.progress.file_done(shares.pop(current))
            current = src
            self.progress.tick()
            yield doc
        for share in shares.values():
            self.progress.file_done(share)
        self.progress.finish()


class _QuarantineMixin:
    """Turns 'no text' and read errors of datatrove readers into placeholders instead of skips."""

    raw_cut: int = 500

    def get_document_from_dict(self, data: dict, source_file: str, id_in_file: int | str):
        text = data.get(self.text_key)
        line = int(id_in_file) + 1 if isinstance(id_in_file, int) else id_in_file
        if text is None:
            return placeholder(source_file, line, "missing_text", repr(data), self.raw_cut)
        if not isinstance(text, str):
            return placeholder(source_file, line, "text_not_string", repr(data), self.raw_cut)
        doc = super().get_document_from_dict(data, source_file, id_in_file)
        if doc is None:  # empty text: keep it so that QuarantineStep counts it as empty_text
            return Document(
                text=text,
                id=str(data.get(self.id_key, f"{source_file}:{line}")),
                metadata={"source": source_file, "line": line},
            )
        doc.metadata["source"] = source_file
        doc.metadata["line"] = line
        return doc

    def read_file(self, filepath: str):
        n = 0
        try:
            for doc in super().read_file(filepath):
                n += 1
                yield doc
        except Exception as e:  # noqa: BLE001 - any read error of one file must not end the task
            self.stat_update("unreadable_files")
            yield placeholder(filepath, n + 1, "unreadable_file", f"{type(e).__name__}: {e}", self.raw_cut)


class QuarantiningParquetReader(_ProgressMixin, _QuarantineMixin, ParquetReader):
    """datatrove's ParquetReader; rows without usable text and unreadable files become placeholders."""

    name = "📒 Parquet (quarantining)"

    def __init__(self, data_folder, raw_cut: int = 500, progress_s: float = 30.0, **kwargs):
        super().__init__(data_folder, **kwargs)
        self.raw_cut, self.progress_s = raw_cut, progress_s


def _warc_skip_reason(record) -> str:
    """Why datatrove's ``process_record`` gave no document for a WARC record (a stats counter)."""
    if record.rec_type not in ("response", "conversion"):
        return f"skipped_warc_{record.rec_type}"  # request, metadata, warcinfo: not documents
    mime = record.rec_headers.get("WARC-Identified-Payload-Type", None)
    if mime is not None and mime not in ("text/html", "application/xhtml+xml", "text/plain"):
        return "skipped_non_html"
    return "skipped_non_html_or_undecodable"  # no payload type: not HTML by its bytes, or no known charset


class _CountingWarcReader(WarcReader):
    """datatrove's WarcReader, counting every record it does not turn into a document, by reason."""

    def read_file(self, filepath: str):
        from datatrove.pipeline.readers.warc import process_record
        from warcio.archiveiterator import ArchiveIterator

        with self.data_folder.open(filepath, "rb", compression=self.compression) as f:
            for index, record in enumerate(ArchiveIterator(f)):
                with self.track_time():
                    data = process_record(record)
                    doc = self.get_document_from_dict(data, filepath, index) if data else None
                if data is None:
                    self.stat_update(_warc_skip_reason(record))
                elif doc is not None:
                    yield doc


class QuarantiningWarcReader(_ProgressMixin, _QuarantineMixin, _CountingWarcReader):
    """datatrove's WarcReader; records without text and unreadable files become placeholders, and the
    records that are no documents (requests, metadata, non-HTML responses) are counted by reason."""

    name = "🕷 Warc (quarantining)"

    def __init__(self, data_folder, raw_cut: int = 500, progress_s: float = 30.0, **kwargs):
        super().__init__(data_folder, **kwargs)
        self.raw_cut, self.progress_s = raw_cut, progress_s


class QuarantiningJsonlReader(_ProgressMixin, BaseDiskReader):
    """JSONL reader (plain, .gz, .zst) that yields a placeholder for every line it cannot use.

    Args:
        data_folder: folder (or datatrove DataFolder) holding the files.
        compression: "infer" from the file name, "gzip", "zstd" or None.
        raw_cut: characters of a bad line kept for the quarantine record.
        progress_s: seconds between progress lines in the task's log (0: only the summary at the end).
        text_key / id_key: fields of the text and id; all other fields go to the metadata.
        glob_pattern, paths_file, limit, skip, recursive: as in datatrove's readers.
    """

    name = "🐿 Jsonl (quarantining)"
    _requires_dependencies = ["orjson"]

    def __init__(
        self,
        data_folder,
        compression: str | None = "infer",
        raw_cut: int = 500,
        split_files: bool = False,
        progress_s: float = 30.0,
        **kwargs,
    ):
        super().__init__(data_folder, **kwargs)
        self.compression = compression
        self.raw_cut, self.progress_s = raw_cut, progress_s
        self.split_files = split_files
        self._share = (0, 1)  # (rank, world_size) of the task, when files are split

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        self._task = (rank, world_size)
        if not self.split_files or world_size == 1:
            yield from super().run(data, rank, world_size)
            return
        if data:
            yield from data
        # every task opens every file and reads its share of it (read_file)
        files = self.data_folder.get_shard(0, 1, recursive=self.recursive, glob_pattern=self.glob_pattern)
        if not files:
            raise RuntimeError(f"No files found on {self.data_folder.path}!")
        self._share = (rank, world_size)
        for doc in self.read_files_shard(files):
            self.update_doc_stats(doc)
            yield doc

    def _compressed(self, filepath: str) -> bool:
        return self.compression not in (None, "infer") or (
            self.compression == "infer" and filepath.endswith((".gz", ".zst", ".zstd", ".bz2", ".xz"))
        )

    def _share_bytes(self, filepath: str) -> int:
        size = super()._share_bytes(filepath)
        rank, world = self._share
        if world == 1 or self._compressed(filepath):
            return size
        return size * (rank + 1) // world - size * rank // world

    def _lines(self, filepath: str):
        """``(line number, bytes)`` of this task's share of ``filepath`` (all of it unless split)."""
        rank, world = self._share
        compressed = self._compressed(filepath)
        if world == 1 or compressed:
            count = self.progress is not None and not compressed  # decompressed bytes are not the file's
            with self.data_folder.open(filepath, "rb", compression=self.compression) as f:
                for line, raw in enumerate(f, start=1):
                    if count:
                        self.progress.bytes_file += len(raw)
                    if (line - 1) % world == rank:
                        yield line, raw
            return
        size = self.data_folder.size(filepath)
        start, end = size * rank // world, size * (rank + 1) // world
        with self.data_folder.open(filepath, "rb", compression=None) as f:
            line = 1
            if start > 0:
                f.seek(start - 1)
                if f.read(1) != b"\n":
                    f.readline()  # the line that began in the previous task's range is that task's
                first = f.tell()
                f.seek(0)
                left = first
                while left > 0:  # number the lines: count the newlines before the first one
                    chunk = f.read(min(left, 1 << 22))
                    line += chunk.count(b"\n")
                    left -= len(chunk)
            while f.tell() < end:
                raw = f.readline()
                if not raw:
                    break
                if self.progress is not None:
                    self.progress.bytes_file += len(raw)
                yield line, raw
                line += 1

    def _parse(self, raw: bytes, filepath: str, line: int) -> Document:
        import orjson

        try:
            decoded = raw.decode("utf-8")
        except UnicodeDecodeError:
            return placeholder(filepath, line, "invalid_utf8", raw, self.raw_cut, keep_bytes=True)
        try:
            rec = orjson.loads(raw)
        except orjson.JSONDecodeError:
            try:  # orjson refuses escaped lone surrogates, which JSON allows
                rec = json.loads(decoded)
            except ValueError:
                return placeholder(filepath, line, "malformed_json", raw, self.raw_cut)
        if _REPAIR_ESCAPE.search(raw):
            counts: dict = {}
            rec = repair_strings(rec, counts)
            for what, n in counts.items():
                self.stat_update(f"repaired_{what}", value=n)
        if not isinstance(rec, dict):
            return placeholder(filepath, line, "not_an_object", raw, self.raw_cut)
        text = rec.get(self.text_key)
        if text is None:
            return placeholder(filepath, line, "missing_text", raw, self.raw_cut)
        if not isinstance(text, str):
            return placeholder(filepath, line, "text_not_string", raw, self.raw_cut)
        doc_id = rec.pop(self.id_key, None)
        metadata = rec.pop("metadata", None)
        rec.pop(self.text_key)
        meta = dict(metadata) if isinstance(metadata, dict) else ({} if metadata is None else {"metadata": metadata})
        meta.update(rec)
        meta["source"] = filepath
        meta["line"] = line
        doc = Document(text=text, id=str(doc_id) if doc_id is not None else f"{filepath}:{line}", metadata=meta)
        if self.default_metadata:
            doc.metadata = self.default_metadata | doc.metadata
        return doc

    def read_file(self, filepath: str):
        line = 0
        try:
            for line, raw in self._lines(filepath):
                if not raw.strip():
                    continue  # blank lines separate nothing; they are not records
                with self.track_time():
                    doc = self._parse(raw.rstrip(b"\r\n"), filepath, line)
                if "quarantine" in doc.metadata:
                    self.stat_update(f"bad_{doc.metadata['quarantine']}")
                yield doc
        except Exception as e:  # noqa: BLE001 - unreadable/corrupt file: record it and go on
            if self._share[0] != 0:
                return  # split files: every task meets the same error; the first task records it once
            self.stat_update("unreadable_files")
            yield placeholder(filepath, line + 1, "unreadable_file", f"{type(e).__name__}: {e}", self.raw_cut)
