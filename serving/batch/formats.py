"""Line formats of batch translation: what to translate on each input line, and the output line that
carries its translation.

- ``plain``: the whole line is the text; the output line is its translation.
- ``tsv``: column ``column`` (1-based, like ``cut -f``) is the text; the output keeps every column and
  puts the translation in place of the source.
- ``jsonl``: field ``field`` of each JSON object is the text; the output keeps every field and adds the
  translation as ``output_field`` (``null`` if the line failed).

With ``n_best > 1`` the n-best list is appended as (text, score) pairs: plain and TSV lines get ``2·n``
more tab-separated columns after the translation's (plain: the pairs alone, best first), JSONL objects a
field ``<output_field>_nbest``: ``[{"text": …, "score": …}, …]``. Texts written into plain and TSV lines
have tabs and line breaks replaced by spaces, so every output line keeps its columns.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnmt.errors import RnnmtError
from rnnmt.serving.core.translator import TextHypothesis

FORMATS = ("plain", "tsv", "jsonl")
FLAT = str.maketrans({"\t": " ", "\n": " ", "\r": " "})


class LineError(Exception):
    """An input line that cannot be read in its format (too few TSV columns, not a JSON object, …)."""


@dataclass(frozen=True)
class LineFormat:
    """How to read the text of a line and write its translation; see the module docstring."""

    kind: str = "plain"
    column: int = 1
    field: str = "text"
    output_field: str = "translation"
    n_best: int = 1

    def __post_init__(self) -> None:
        if self.kind not in FORMATS:
            raise RnnmtError(f"the format must be one of {', '.join(FORMATS)}, not {self.kind!r}")
        if self.column < 1:
            raise RnnmtError(f"--tsv-column counts from 1, not {self.column}")
        if self.n_best < 1:
            raise RnnmtError(f"n_best must be at least 1, not {self.n_best}")

    def source(self, line: str) -> str:
        """The text to translate on ``line`` (no line ending); :class:`LineError` if it has none."""
        if self.kind == "plain":
            return line
        if self.kind == "tsv":
            cells = line.split("\t")
            if len(cells) < self.column:
                raise LineError(f"has {len(cells)} TSV columns, not the {self.column} --tsv-column needs")
            return cells[self.column - 1]
        record = self._record(line)
        text = record.get(self.field)
        if not isinstance(text, str):
            raise LineError(f"has no string field {self.field!r}")
        return text

    def render(self, line: str, hypotheses: Sequence[TextHypothesis] | None) -> str:
        """The output line for ``line`` (whose :meth:`source` succeeded) given its hypotheses, best first;
        ``None`` for a line that failed: an empty translation (JSONL: ``null``), empty n-best cells."""
        if self.kind == "jsonl":
            record = self._record(line)
            record[self.output_field] = hypotheses[0].text if hypotheses else None
            if self.n_best > 1:
                record[self.output_field + "_nbest"] = [
                    {"text": h.text, "score": h.score} for h in list(hypotheses or ())[: self.n_best]
                ]
            return json.dumps(record, ensure_ascii=False)
        best = hypotheses[0].text.translate(FLAT) if hypotheses else ""
        pairs: list[str] = []
        if self.n_best > 1:
            for h in list(hypotheses or ())[: self.n_best]:
                pairs += [h.text.translate(FLAT), f"{h.score:.4f}"]
            pairs += [""] * (2 * self.n_best - len(pairs))
        if self.kind == "plain":
            return "\t".join(pairs) if pairs else best
        cells = line.split("\t")
        cells[self.column - 1] = best
        return "\t".join(cells + pairs)

    def translation(self, output_line: str) -> str:
        """The best translation held by an output line that :meth:`render` wrote ("" for a blank line)."""
        if not output_line.strip():
            return ""
        if self.kind == "plain":
            return output_line.split("\t")[0] if self.n_best > 1 else output_line
        if self.kind == "tsv":
            cells = output_line.split("\t")
            return cells[self.column - 1] if len(cells) >= self.column else ""
        return json.loads(output_line).get(self.output_field) or ""

    def _record(self, line: str) -> dict[str, Any]:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LineError(f"is not valid JSON: {exc}") from None
        if not isinstance(record, dict):
            raise LineError("is not a JSON object")
        return record


def line_format(
    path: Path,
    tsv_column: int | None = None,
    jsonl_field: str | None = None,
    output_field: str | None = None,
    n_best: int = 1,
    kind: str | None = None,
) -> LineFormat:
    """The format of ``path``: ``kind`` (``--format``), else from the flags, else from its extension
    (``.tsv``: column 1; ``.jsonl`` or ``.ndjson``: field ``text``), else plain text."""
    if tsv_column is not None and jsonl_field is not None:
        raise RnnmtError("give --tsv-column or --jsonl-field, not both")
    suffix = path.suffix.lower()
    if kind is not None:
        if (tsv_column is not None and kind != "tsv") or (jsonl_field is not None and kind != "jsonl"):
            raise RnnmtError(f"--format {kind}: --tsv-column is for tsv, --jsonl-field for jsonl")
    elif tsv_column is not None or (jsonl_field is None and suffix == ".tsv"):
        kind = "tsv"
    elif jsonl_field is not None or suffix in (".jsonl", ".ndjson"):
        kind = "jsonl"
    else:
        kind = "plain"
    if output_field is not None and kind != "jsonl":
        raise RnnmtError("--output-field is for JSONL input only (--jsonl-field or a .jsonl file)")
    return LineFormat(
        kind=kind,
        column=1 if tsv_column is None else tsv_column,
        field=jsonl_field or "text",
        output_field=output_field or "translation",
        n_best=n_best,
    )
