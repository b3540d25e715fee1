"""How well inline tags land: Spanish sentences with tagged words (benchmarks/data/tagged-es-en.tsv,
written for this, Bible style), translated as HTML by a running `rnnmt serve` with the shipped es→en
model, against what was done before: the text between tags translated apart.

    .venv/bin/python benchmarks/inline_tags.py --model-dir models

For each tag: whether the words it should hold (the file's second column on) are in the translation at
all, then whether the tag holds exactly them ("exact"), holds them and more ("wider"), or misses them.
And per sentence whether its translation, tags left out, is the one the sentence gets without tags.
"""

from __future__ import annotations

import argparse
import json
import re
import urllib.request
from pathlib import Path

from local_server import ServerProcess

HERE = Path(__file__).resolve().parent
TAG = re.compile(r"<(\w+)[^>]*>(.*?)</\1>")
MARKUP = re.compile(r"<[^>]*>")
WORD = re.compile(r"\w+")


def post(port: int, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/translate", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        answer: dict[str, object] = json.loads(response.read())
        return answer


def judge(tagged: str, expected: list[set[str]], plain: str) -> list[str]:
    """Per tag: absent (its words not in the plain translation), exact, wider or missed."""
    found = TAG.findall(tagged)
    verdicts = []
    for k, words in enumerate(expected):
        if not words & set(WORD.findall(plain)):
            verdicts.append("absent")
            continue
        held = set(WORD.findall(found[k][1])) if k < len(found) else set()
        inside = held & words
        verdicts.append("missed" if not inside else "exact" if held <= words else "wider")
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=HERE.parent / "models")
    parser.add_argument("--data", type=Path, default=HERE / "data" / "tagged-es-en.tsv")
    args = parser.parse_args()
    rows = [
        line.split("\t") for line in args.data.read_text().splitlines() if line and not line.startswith("#")
    ]
    server = ServerProcess(args.model_dir, ["--http-port", "0"])
    counts: dict[str, dict[str, int]] = {"attention": {}, "pieces": {}}
    intact = {"attention": 0, "pieces": 0}
    try:
        for source, *expected_columns in rows:
            expected = [set(column.split("|")) for column in expected_columns]
            pair = {"source": "es", "target": "en"}
            plain = str(post(server.http_port, {**pair, "q": MARKUP.sub("", source)})["translatedText"])
            tagged = str(post(server.http_port, {**pair, "q": source, "format": "html"})["translatedText"])
            pieces = re.split(f"({MARKUP.pattern})", source)
            texts = [p for p in pieces[::2] if WORD.search(p)]
            done = iter(post(server.http_port, {**pair, "q": texts})["translatedText"] if texts else [])  # type: ignore[arg-type]
            apart = "".join(p if i % 2 or not WORD.search(p) else next(done) for i, p in enumerate(pieces))
            for name, out in (("attention", tagged), ("pieces", apart)):
                for verdict in judge(out, expected, plain):
                    counts[name][verdict] = counts[name].get(verdict, 0) + 1
                intact[name] += MARKUP.sub("", out) == plain
            print(f"{source}\n  attention: {tagged}\n  pieces:    {apart}")
    finally:
        server.stop()
    tags = sum(len(row) - 1 for row in rows)
    print(f"\n{len(rows)} sentences, {tags} tags")
    print(
        "| placement | sentence as without tags | tag holds exactly its words | holds them and more | misses them | words not in the translation |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in ("attention", "pieces"):
        c = counts[name]
        print(
            f"| {name} | {intact[name]}/{len(rows)} | {c.get('exact', 0)} | {c.get('wider', 0)} | "
            f"{c.get('missed', 0)} | {c.get('absent', 0)} |"
        )


if __name__ == "__main__":
    main()
