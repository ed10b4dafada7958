"""Readers that never lose a record silently.

A record the pipeline cannot use (malformed JSON, invalid UTF-8, missing or non-string text, an
unreadable file) becomes a *placeholder* document with ``metadata["quarantine"] = reason``; the
``QuarantineStep`` downstream writes it aside and counts it. Good documents carry ``source`` and
``line`` so that later quarantine decisions (empty, too long) can name where they came from.
"""

from __future__ import annotations

from datatrove.data import Document
from datatrove.pipeline.readers.base import BaseDiskReader
from datatrove.pipeline.readers.parquet import ParquetReader
from datatrove.pipeline.readers.warc import WarcReader


def placeholder(source: str, line: int, reason: str, raw: str | bytes, cut: int) -> Document:
    """A document that only carries why a record was unusable (``QuarantineStep`` writes it aside)."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    return Document(
        text="",
        id=f"{source}:{line}",
        metadata={"quarantine": reason, "raw": raw[:cut], "source": source, "line": line},
    )


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


class QuarantiningParquetReader(_QuarantineMixin, ParquetReader):
    """datatrove's ParquetReader; rows without usable text and unreadable files become placeholders."""

    name = "📒 Parquet (quarantining)"

    def __init__(self, data_folder, raw_cut: int = 500, **kwargs):
        super().__init__(data_folder, **kwargs)
        self.raw_cut = raw_cut


class QuarantiningWarcReader(_QuarantineMixin, WarcReader):
    """datatrove's WarcReader; records without text and unreadable files become placeholders."""

    name = "🕷 Warc (quarantining)"

    def __init__(self, data_folder, raw_cut: int = 500, **kwargs):
        super().__init__(data_folder, **kwargs)
        self.raw_cut = raw_cut


class QuarantiningJsonlReader(BaseDiskReader):
    """JSONL reader (plain, .gz, .zst) that yields a placeholder for every line it cannot use.

    Args:
        data_folder: folder (or datatrove DataFolder) holding the files.
        compression: "infer" from the file name, "gzip", "zstd" or None.
        raw_cut: characters of a bad line kept for the quarantine record.
        text_key / id_key: fields of the text and id; all other fields go to the metadata.
        glob_pattern, paths_file, limit, skip, recursive: as in datatrove's readers.
    """

    name = "🐿 Jsonl (quarantining)"
    _requires_dependencies = ["orjson"]

    def __init__(self, data_folder, compression: str | None = "infer", raw_cut: int = 500, **kwargs):
        super().__init__(data_folder, **kwargs)
        self.compression = compression
        self.raw_cut = raw_cut

    def _parse(self, raw: bytes, filepath: str, line: int) -> Document:
        import orjson

        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return placeholder(filepath, line, "invalid_utf8", raw, self.raw_cut)
        try:
            rec = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return placeholder(filepath, line, "malformed_json", raw, self.raw_cut)
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
            with self.data_folder.open(filepath, "rb", compression=self.compression) as f:
                for line, raw in enumerate(f, start=1):
                    if not raw.strip():
                        continue  # blank lines separate nothing; they are not records
                    with self.track_time():
                        doc = self._parse(raw.rstrip(b"\r\n"), filepath, line)
                    if "quarantine" in doc.metadata:
                        self.stat_update(f"bad_{doc.metadata['quarantine']}")
                    yield doc
        except Exception as e:  # noqa: BLE001 - unreadable/corrupt file: record it and go on
            self.stat_update("unreadable_files")
            yield placeholder(filepath, line + 1, "unreadable_file", f"{type(e).__name__}: {e}", self.raw_cut)
