"""Prompt sets: local JSONL files and the public benchmarks' own formats.

Every loader returns ``PromptSet(prompts, skipped)``: bad rows are never silently lost, each one is
listed with its file, line and reason, and the suites write them to ``skipped.jsonl`` and count them.
Hub loaders read the benchmark's published file format; offline, pass a local copy as ``NAME:PATH``.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from infra.log import get_logger
from infra.paths import REPO_ROOT

log = get_logger(__name__)


class DataError(ValueError):
    """A prompt source that cannot be used at all (missing file, unknown hub name)."""


@dataclass
class Prompt:
    id: str
    prompt: str
    meta: dict = field(default_factory=dict)


@dataclass
class PromptSet:
    """Prompts, the rows skipped as bad (``{file, line, reason}``) and the prompts left out by a
    filter (``filtered``: ``{id, reason}``, e.g. another ``split``), which the suites can report."""

    prompts: list[Prompt]
    skipped: list[dict]
    source: str = ""
    filtered: list[dict] = field(default_factory=list)

    def split(self, name: str) -> PromptSet:
        """Prompts whose ``split`` field equals ``name`` ('all' keeps everything; rows without a split
        field count as test); the others are listed in ``filtered``."""
        if name == "all":
            return self
        keep, out = [], list(self.filtered)
        for p in self.prompts:
            s = p.meta.get("split", "test")
            if s == name:
                keep.append(p)
            else:
                out.append({"id": p.id, "reason": f"split {s!r} is not {name!r}"})
        return PromptSet(keep, self.skipped, self.source, out)

    def limit(self, n: int) -> PromptSet:
        out = list(self.filtered)
        if n:
            out += [{"id": p.id, "reason": f"beyond limit {n}"} for p in self.prompts[n:]]
        return PromptSet(self.prompts[:n] if n else self.prompts, self.skipped, self.source, out)


def resolve_path(path: str | Path) -> Path:
    """Relative paths are tried from the working directory, then from the repository root."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    alt = REPO_ROOT / p
    return alt if alt.exists() else p


def load_jsonl_prompts(path: str | Path, text_keys=("prompt", "goal", "behavior", "Behavior")) -> PromptSet:
    """Read ``{"id", "prompt", ...}`` rows; other fields go to ``meta``. A row that is not JSON, not an
    object, or has no non-empty prompt text is skipped with its line number and reason."""
    p = resolve_path(path)
    if not p.is_file():
        raise DataError(f"prompt file not found: {path}")
    prompts, skipped, seen = [], [], set()
    with p.open(encoding="utf-8-sig", errors="replace") as f:  # -sig: a UTF-8 BOM is not part of row 1
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                skipped.append({"file": str(path), "line": lineno, "reason": f"not JSON: {e.msg}", "raw": line[:200]})
                continue
            if not isinstance(row, dict):
                skipped.append({"file": str(path), "line": lineno, "reason": "row is not an object", "raw": line[:200]})
                continue
            text = next((row[k] for k in text_keys if isinstance(row.get(k), str)), None)
            if text is None or not text.strip():
                skipped.append(
                    {
                        "file": str(path),
                        "line": lineno,
                        "reason": f"no non-empty text field (one of {list(text_keys)})",
                        "raw": line[:200],
                    }
                )
                continue
            # a missing or null id gets one from the file and line (str(None) would make every later
            # null-id row a duplicate of "None")
            pid = str(row["id"]) if row.get("id") is not None else f"{p.stem}-{lineno}"
            if pid in seen:
                skipped.append(
                    {"file": str(path), "line": lineno, "reason": f"duplicate id {pid!r}", "raw": line[:200]}
                )
                continue
            seen.add(pid)
            meta = {k: v for k, v in row.items() if k not in ("id",) + tuple(text_keys)}
            prompts.append(Prompt(pid, text, meta))
    for s in skipped:
        log.warning("%s:%d skipped: %s", s["file"], s["line"], s["reason"])
    return PromptSet(prompts, skipped, str(path))


def _csv_prompts(
    name: str,
    text: str,
    text_col: str,
    id_col: str | None,
    meta_cols: tuple[str, ...],
    keep=lambda row: True,
    category_col: str | None = None,
) -> PromptSet:
    prompts, skipped, filtered = [], [], []
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    if reader.fieldnames is None or text_col not in reader.fieldnames:
        raise DataError(f"{name}: expected a CSV with a '{text_col}' column, got {reader.fieldnames}")
    for i, row in enumerate(reader, 2):  # line 1 is the header
        pid = (row.get(id_col) or "").strip() if id_col else ""
        if not keep(row):
            filtered.append({"id": pid or f"{name}-{i}", "line": i, "reason": "left out by the set's row filter"})
            continue
        t = (row.get(text_col) or "").strip()
        if not t:
            skipped.append({"file": name, "line": i, "reason": f"empty '{text_col}'"})
            continue
        meta = {c: row.get(c) for c in meta_cols if c in row}
        if category_col and row.get(category_col):
            meta["category"] = row[category_col]
        prompts.append(Prompt(pid or f"{name}-{i}", t, meta))
    return PromptSet(prompts, skipped, name, filtered)


# name -> (published URL, text column, id column, metadata columns, row filter)
HUB_SETS = {
    "advbench": (
        "https://raw.githubusercontent.com/llm-attacks/llm-attacks/main/data/advbench/harmful_behaviors.csv",
        "goal",
        None,
        ("target",),
        None,
    ),
    "harmbench": (
        "https://raw.githubusercontent.com/centerforaisafety/HarmBench/main/data/"
        "behavior_datasets/harmbench_behaviors_text_all.csv",
        "Behavior",
        "BehaviorID",
        ("FunctionalCategory", "SemanticCategory"),
        lambda r: (r.get("FunctionalCategory") or "standard") == "standard",
    ),
    "jailbreakbench": (
        "https://raw.githubusercontent.com/JailbreakBench/jailbreakbench/main/src/jailbreakbench/data/behaviors.csv",
        "Goal",
        "Index",
        ("Category", "Source"),
        None,
    ),
    "tdc": (
        "https://raw.githubusercontent.com/centerforaisafety/tdc2023-starter-kit/main/red_teaming/"
        "data/dev/behaviors.json",
        None,
        None,
        (),
        None,
    ),
    "xstest": (
        "https://raw.githubusercontent.com/paul-rottger/exaggerated-safety/main/xstest_prompts.csv",
        "prompt",
        "id",
        ("type", "label", "focus"),
        lambda r: r.get("label", "safe") == "safe",
    ),
    "phtest": (
        "https://huggingface.co/datasets/furonghuang-lab/PHTest/resolve/main/phtest.jsonl",
        None,
        None,
        (),
        None,
    ),
}


def _parse_hub(name: str, text: str, source: str) -> PromptSet:
    url, col, id_col, meta, keep = HUB_SETS[name]
    if name == "tdc":  # a JSON list of behaviour strings
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{source}: TDC behaviours must be a JSON list of strings: {e}") from None
        prompts = [Prompt(f"tdc-{i}", s.strip()) for i, s in enumerate(items) if isinstance(s, str) and s.strip()]
        skipped = [
            {"file": source, "line": i, "reason": "not a non-empty string"}
            for i, s in enumerate(items)
            if not (isinstance(s, str) and s.strip())
        ]
        return PromptSet(prompts, skipped, source)
    if name == "phtest":  # JSONL with a "prompt" field
        tmp = PromptSet([], [], source)
        for i, line in enumerate(text.splitlines(), 1):
            try:
                row = json.loads(line)
                tmp.prompts.append(
                    Prompt(
                        str(row.get("id", f"phtest-{i}")),
                        row["prompt"],
                        {"category": row.get("harmfulness") or row.get("category")},
                    )
                )
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                tmp.skipped.append({"file": source, "line": i, "reason": f"bad row: {e}"})
        return tmp
    # XSTest's prompt type ("homonyms", "safe_targets", ...) is its category
    category_col = "type" if name == "xstest" else None
    return _csv_prompts(source, text, col, id_col, meta, keep or (lambda r: True), category_col)


def load_hub(spec: str) -> PromptSet:
    """``hub:NAME`` downloads the published file; ``hub:NAME:PATH`` parses a local copy of it."""
    rest = spec[len("hub:") :]
    name, _, local = rest.partition(":")
    name = name.lower()
    if name not in HUB_SETS:
        raise DataError(f"unknown hub prompt set {name!r}; known: {', '.join(HUB_SETS)}")
    if local:
        p = resolve_path(local)
        if not p.is_file():
            raise DataError(f"local copy of {name} not found: {local}")
        return _parse_hub(name, p.read_text(encoding="utf-8-sig", errors="replace"), str(local))
    import httpx

    url = HUB_SETS[name][0]
    try:
        r = httpx.get(url, timeout=30, follow_redirects=True)
        r.raise_for_status()
    except httpx.HTTPError as e:
        raise DataError(
            f"cannot download {name} from {url} ({e}); offline, pass a local copy as hub:{name}:PATH"
        ) from None
    return _parse_hub(name, r.text, url)


def load_prompts(spec: str) -> PromptSet:
    """A prompt source from config: ``hub:NAME[:PATH]``, a ``.csv`` (column ``prompt``/``goal``) or JSONL."""
    if spec.startswith("hub:"):
        return load_hub(spec)
    p = resolve_path(spec)
    if p.suffix == ".csv":
        if not p.is_file():
            raise DataError(f"prompt file not found: {spec}")
        text = p.read_text(encoding="utf-8-sig", errors="replace")
        header = next(csv.reader(io.StringIO(text)), [])
        col = next((c for c in ("prompt", "goal", "Goal", "Behavior") if c in header), None)
        if col is None:
            raise DataError(f"{spec}: CSV has none of the columns prompt/goal/Goal/Behavior")
        return _csv_prompts(str(spec), text, col, "id" if "id" in header else None, ())
    return load_jsonl_prompts(p)


def load_human_labels(path: str) -> tuple[list[dict], list[dict]]:
    """Rows ``{id, prompt, output, label: refusal|non_refusal, ...}``; bad rows returned as skipped
    (``evalkit.validate.load_labels``: JSONL, XSTest CSV or a folder of them)."""
    from evalkit.validate import load_labels

    return load_labels(path)
