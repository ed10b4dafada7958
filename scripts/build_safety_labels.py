#!/usr/bin/env python
"""Build the public safety-labels sets shipped in ``datagen/data/safety_labels/`` from their sources.

Every source is a public file with a permissive licence (see the folder's README), pinned by commit and
SHA-256. The rubric mapping of each source is defined here, once, and documented in the README.

    python scripts/build_safety_labels.py --download            # fetch the pinned files, then build
    python scripts/build_safety_labels.py --sources DIR         # files already in DIR (names below)

Output (deterministic for the same inputs):
    train.jsonl.gz            the training set of the shipped classifier (every row has ``source``)
    eval/xstest.jsonl.gz      XSTest v2 prompts (evaluation only; never in any training set)
    eval/inaugural.jsonl.gz   paragraphs of US inaugural addresses (ordinary prose; evaluation only)
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import html
import io
import json
import random
import re
import sys
import urllib.request
import zipfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "datagen" / "data" / "safety_labels"
XSTEST_DIR = ROOT / "evalkit" / "data" / "xstest"
RAW = "https://raw.githubusercontent.com"
MEDIA = "https://media.githubusercontent.com/media"

# file name -> (URL at a pinned commit, sha256)
SOURCES = {
    "labeled_data.csv": (
        f"{RAW}/t-davidson/hate-speech-and-offensive-language/cb50f7e9eb855a99abc51423bf40df0e26d6fe30/data/labeled_data.csv",
        "fcb8bc7c68120ae4af04a5b9acd58585513ede11e1548ebf36a5c2040b6f6281",
    ),
    "samples-1680.jsonl.gz": (
        f"{RAW}/openai/moderation-api-release/f4ab51b5edd3bfbcb349a56324274235b674e0e4/data/samples-1680.jsonl.gz",
        "ef3f7de86ee394fe337b0a566ba4b9c7db058f3caa8d6a4a0006138b663ab9a8",
    ),
    "harmless-base-test.jsonl.gz": (
        f"{RAW}/anthropics/hh-rlhf/354e5c3cb8960630860dd5774a6ac2a58313bf4d/harmless-base/test.jsonl.gz",
        "ebfaaed21162a4de120ae85366075b34425e2a6303fac59b99555002f7016f03",
    ),
    "seed_tasks.jsonl": (
        f"{RAW}/yizhongw/self-instruct/0b26ccaa415992100fa32df62d41b994cf928e23/data/seed_tasks.jsonl",
        "7779004fa198fdf27cf70a159363879d8a26c53329e11b436af17b3941875f48",
    ),
    "user_oriented_instructions.jsonl": (
        f"{RAW}/yizhongw/self-instruct/0b26ccaa415992100fa32df62d41b994cf928e23/human_eval/user_oriented_instructions.jsonl",
        "81d60a117db495cecedecd9193504fd07c5b5a42f6699ef6b0f9da10fc22f42e",
    ),
    "adversarial_qa_dbert_based_on.jsonl": (
        f"{RAW}/yizhongw/self-instruct/0b26ccaa415992100fa32df62d41b994cf928e23/data/finetuning/t0_train_50k/data_per_template/adversarial_qa_dbert_based_on.jsonl",
        "00d9b1c3cf5e8b1f83e91e1cd7b6d3af7a663c2de5066bc9f681d60149fc9e7e",
    ),
    "adversarial_qa_dbidaf_based_on.jsonl": (
        f"{RAW}/yizhongw/self-instruct/0b26ccaa415992100fa32df62d41b994cf928e23/data/finetuning/t0_train_50k/data_per_template/adversarial_qa_dbidaf_based_on.jsonl",
        "2e61b18d84062ad4b3aa832e70179e03af364a993f448a6d34caec03590507b4",
    ),
    "adversarial_qa_droberta_based_on.jsonl": (
        f"{RAW}/yizhongw/self-instruct/0b26ccaa415992100fa32df62d41b994cf928e23/data/finetuning/t0_train_50k/data_per_template/adversarial_qa_droberta_based_on.jsonl",
        "f18e82ad58d950d3b86a2362014e77a90c614c91623d8950d659f35d2fb5e32c",
    ),
    "state_union.zip": (
        f"{RAW}/nltk/nltk_data/5db857e6f7df11eabb5e5665836db9ec8df07e28/packages/corpora/state_union.zip",
        "366c1dc82b2abf896f42b2ec50ba802a0141a29f75d29ca48a7a243ce5bfbe8d",
    ),
    "inaugural.zip": (
        f"{RAW}/nltk/nltk_data/5db857e6f7df11eabb5e5665836db9ec8df07e28/packages/corpora/inaugural.zip",
        "7c5fb5793e31fbeae12bf1aa0ffda5336468f07cedb50654c6d31ca384e2046b",
    ),
}
SEED = 20261202
# rows kept per (source, label) for the training set; None: all of them
DAVIDSON_TAKE = {"neither": 1000, "offensive": 1000, "hate": None}
HH_TAKE = 1500
STATE_UNION_TAKE = 800
INAUGURAL_TAKE = 300
MODERATION_CATEGORIES = ("S", "H", "V", "HR", "SH", "S3", "H2", "V2")
MODERATION_SEVERE = ("S3", "H2", "V2")  # sexual/minors, hate/threatening, violence/graphic
XSTEST_FILE = "xstest_v2_completions_gpt4.csv.gz"  # every v2 file holds the same 450 prompts


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_sources(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (url, _) in SOURCES.items():
        if not (folder / name).is_file():
            print(f"downloading {url}", file=sys.stderr)
            with urllib.request.urlopen(url, timeout=60) as r:
                (folder / name).write_bytes(r.read())


def check_sources(folder: Path) -> None:
    for name, (url, digest) in SOURCES.items():
        path = folder / name
        if not path.is_file():
            sys.exit(f"{path}: missing (from {url}); run with --download")
        if sha256(path) != digest:
            sys.exit(f"{path}: sha256 {sha256(path)} is not the pinned {digest}")


def norm(text: str) -> str:
    return " ".join(text.lower().split())


def tweet_text(raw: str) -> str:
    """A tweet as plain text: HTML entities decoded, retweet markers, handles and links neutralised."""
    t = html.unescape(raw)
    t = re.sub(r"\bRT\b\s*", "", t)
    t = re.sub(r"@\w+:?", "@user", t)
    t = re.sub(r"https?://\S+", "http://url", t)
    t = re.sub(r"^[!\s\"]+", "", t)
    return " ".join(t.split())


def davidson(folder: Path, rng: random.Random) -> list[dict]:
    names = {"0": "hate", "1": "offensive", "2": "neither"}
    scores = {"neither": 0, "offensive": 2, "hate": 4}
    rows: dict[str, list[dict]] = {k: [] for k in scores}
    with open(folder / "labeled_data.csv", newline="", encoding="utf-8") as f:
        for rec in csv.DictReader(f):
            label = names[rec["class"]]
            text = tweet_text(rec["tweet"])
            if len(text.split()) < 3:
                continue
            votes = f"{rec['hate_speech']}/{rec['offensive_language']}/{rec['neither']}"
            rows[label].append(
                {
                    "id": f"davidson-{rec['']}",
                    "text": text,
                    "score": scores[label],
                    "source": "davidson",
                    "source_label": f"{label} (hate/offensive/neither votes {votes})",
                }
            )
    out = []
    for label, take in DAVIDSON_TAKE.items():
        got = rows[label]
        out += got if take is None else rng.sample(got, min(take, len(got)))
    return out


def moderation(folder: Path) -> list[dict]:
    out = []
    with gzip.open(folder / "samples-1680.jsonl.gz", "rt", encoding="utf-8") as f:
        for n, line in enumerate(f):
            rec = json.loads(line)
            flagged = [c for c in MODERATION_CATEGORIES if rec.get(c) == 1]
            known = all(c in rec for c in MODERATION_CATEGORIES)
            if not flagged and not known:
                continue  # an unknown category could be a flag: no label
            score = 4 if any(c in MODERATION_SEVERE for c in flagged) else 3 if flagged else 0
            out.append(
                {
                    "id": f"moderation-{n}",
                    "text": rec["prompt"].strip(),
                    "score": score,
                    "source": "openai_moderation",
                    "source_label": ",".join(flagged) or "none",
                }
            )
    return out


def hh_red_team(folder: Path, rng: random.Random) -> list[dict]:
    seen, rows = set(), []
    with gzip.open(folder / "harmless-base-test.jsonl.gz", "rt", encoding="utf-8") as f:
        for n, line in enumerate(f):
            first = json.loads(line)["chosen"].split("\n\nHuman: ", 1)[1].split("\n\nAssistant:", 1)[0].strip()
            if len(first.split()) < 4 or norm(first) in seen:
                continue
            seen.add(norm(first))
            rows.append(
                {
                    "id": f"hh-harmless-test-{n}",
                    "text": first,
                    "score": 3,
                    "source": "hh_rlhf_red_team",
                    "source_label": "red-team opening request",
                }
            )
    return rng.sample(rows, min(HH_TAKE, len(rows)))


def self_instruct(folder: Path) -> list[dict]:
    out = []
    for name in ("seed_tasks.jsonl", "user_oriented_instructions.jsonl"):
        with open(folder / name, encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                inst = rec["instances"][0].get("input", "") if rec.get("instances") else ""
                text = rec["instruction"].strip() + (f"\n\n{inst.strip()}" if inst.strip() else "")
                out.append(
                    {
                        "id": f"self-instruct-{rec['id']}",
                        "text": text,
                        "score": 0,
                        "source": "self_instruct",
                        "source_label": "human-written instruction",
                    }
                )
    return out


def adversarial_qa(folder: Path) -> list[dict]:
    """Questions crowd workers wrote about Wikipedia passages, and the passages (AdversarialQA)."""
    out, seen = [], set()
    for m in ("dbert", "dbidaf", "droberta"):
        with open(folder / f"adversarial_qa_{m}_based_on.jsonl", encoding="utf-8") as f:
            for n, line in enumerate(f):
                body = json.loads(line)["prompt"].split("\nQuestion: ", 1)[1]
                question, context = body.split("\nContext: ", 1)
                for kind, text in (("question", question.strip()), ("passage", context.strip())):
                    if norm(text) in seen or len(text.split()) < 3:
                        continue
                    seen.add(norm(text))
                    out.append(
                        {
                            "id": f"adversarial-qa-{m}-{n}-{kind}",
                            "text": text,
                            "score": 0,
                            "source": "adversarial_qa",
                            "source_label": f"Wikipedia reading-comprehension {kind}",
                        }
                    )
    return out


def speech_passages(zip_path: Path, source: str, rng: random.Random, take: int) -> list[dict]:
    """Passages of 80-250 words: consecutive paragraphs (one per line in these files) joined."""
    rows = []
    with zipfile.ZipFile(zip_path) as z:
        for name in sorted(z.namelist()):
            if not name.endswith(".txt"):
                continue
            stem = Path(name).stem
            lines = [" ".join(x.split()) for x in z.read(name).decode("utf-8", errors="replace").splitlines()]
            buf: list[str] = []
            for line in lines + [""]:
                if line:
                    buf.append(line)
                if sum(len(x.split()) for x in buf) >= 80 or (not line and buf):
                    words = sum(len(x.split()) for x in buf)
                    if 80 <= words <= 250:
                        rows.append(
                            {
                                "id": f"{source}-{stem}-{len(rows)}",
                                "text": "\n\n".join(buf),
                                "score": 0,
                                "source": source,
                                "source_label": f"passage of {stem}",
                            }
                        )
                    buf = []
    return rng.sample(rows, min(take, len(rows)))


def xstest() -> list[dict]:
    with gzip.open(XSTEST_DIR / XSTEST_FILE, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return [
        {
            "id": f"xstest-{r['id']}",
            "text": r["prompt"],
            "score": 3 if r["type"].startswith("contrast") else 0,
            "source": "xstest",
            "source_label": r["type"],
        }
        for r in rows
    ]


def write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode("utf-8")
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as g:  # mtime 0: the same bytes on every build
        g.write(data)
    path.write_bytes(buf.getvalue())
    print(f"{path.relative_to(ROOT)}: {len(rows)} rows, {Counter(r['score'] for r in rows)}", file=sys.stderr)


def build(folder: Path) -> None:
    check_sources(folder)
    rng = random.Random(SEED)
    evals = {
        "xstest": xstest(),
        "inaugural": speech_passages(folder / "inaugural.zip", "inaugural", rng, INAUGURAL_TAKE),
    }
    held = {norm(r["text"]) for rows in evals.values() for r in rows}
    train, seen = [], set()
    parts = [
        davidson(folder, rng),
        moderation(folder),
        hh_red_team(folder, rng),
        self_instruct(folder),
        adversarial_qa(folder),
        speech_passages(folder / "state_union.zip", "state_union", rng, STATE_UNION_TAKE),
    ]
    dropped = Counter()
    for part in parts:
        for r in part:
            key = norm(r["text"])
            if key in held:
                dropped["in an evaluation set"] += 1
            elif key in seen:
                dropped["duplicate"] += 1
            else:
                seen.add(key)
                train.append(r)
    rng.shuffle(train)
    write(OUT / "train.jsonl.gz", train)
    for name, rows in evals.items():
        write(OUT / "eval" / f"{name}.jsonl.gz", rows)
    print(f"left out of train: {dict(dropped)}; per source: {Counter(r['source'] for r in train)}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", type=Path, default=ROOT / ".cache" / "safety_label_sources")
    ap.add_argument("--download", action="store_true", help="download missing source files first")
    args = ap.parse_args()
    if args.download:
        fetch_sources(args.sources)
    build(args.sources)


if __name__ == "__main__":
    main()
