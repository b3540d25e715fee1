"""The `rnnmt` command line: every command's help, the decoding flags shared by translate, batch and
evaluate, and `rnnmt batch merge` beside `rnnmt batch INPUT`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import toy_pairs

from rnnmt.cli import build_parser, main
from rnnmt.commands import batch
from rnnmt.commands.common import decoding
from rnnmt.serving.batch.checkpoint import errors_path
from rnnmt.serving.core.options import Decoding

HELP = [
    ["data", "prepare"],
    ["data", "bible"],
    ["train"],
    ["evaluate"],
    ["export"],
    ["upgrade"],
    ["keys", "new"],
    ["sign"],
    ["serve"],
    ["reload"],
    ["translate"],
    ["batch"],
    ["batch", "merge"],
    ["batch", "ray"],
    ["health"],
    ["plot"],
]
DECODING_COMMANDS = {
    "translate": ["translate", "Hola."],
    "batch": ["batch", "in.es", "--out", "out.en", "--model", "m"],
    "evaluate": ["evaluate", "m", "--source", "test.es"],
}
BAD = "perro " * 300  # over the package's 250-token limit: refused, left empty, listed in the errors


def rnnmt(*args: object) -> int | str | None:
    """The exit code of `rnnmt ARGS` run in this process."""
    try:
        return main([str(a) for a in args])
    except SystemExit as exit:
        return exit.code


def test_every_command_is_covered(capsys: pytest.CaptureFixture[str]) -> None:
    assert rnnmt("--help") == 0
    listed = re.search(r"\{([a-z,]+)\}", capsys.readouterr().out)
    assert listed is not None
    assert listed.group(1).split(",") == list(dict.fromkeys(argv[0] for argv in HELP))


@pytest.mark.parametrize("argv", HELP, ids=" ".join)
def test_every_command_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert rnnmt(*argv, "--help") == 0
    assert capsys.readouterr().out.startswith(f"usage: rnnmt {' '.join(argv)}")


@pytest.mark.parametrize("command", DECODING_COMMANDS)
def test_decoding_flags_parse_alike(command: str) -> None:
    parser = build_parser()
    flags = ["--beam-size", "4", "--n-best", "2", "--length-penalty", "0", "--max-output-tokens", "99"]
    assert decoding(parser.parse_args([*DECODING_COMMANDS[command], *flags])) == Decoding(4, 2, 0.0, 99)
    assert decoding(parser.parse_args(DECODING_COMMANDS[command])) == Decoding()  # the model's defaults


def test_merge_is_the_first_word_of_batch() -> None:
    parser = build_parser()
    merge = parser.parse_args(["batch", "merge", "a.en", "b.en", "--out", "all.en"])
    assert (merge.func, merge.shards, merge.out) == (
        batch.run_merge,
        [Path("a.en"), Path("b.en")],
        Path("all.en"),
    )
    translate = parser.parse_args(["batch", "./merge", "--out", "merge.en", "--model", "m"])
    assert (translate.func, translate.input) == (batch.run, Path("merge"))
    with pytest.raises(SystemExit):
        parser.parse_args(["batch", "merge", "a.en", "--out", "all.en", "--model", "m"])


def test_batch_merge_puts_the_shards_together(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.es"
    lines = [p.src for p in toy_pairs()[:20]]
    source.write_text("".join(line + "\n" for line in [*lines[:15], BAD, *lines[15:]]))
    job = ["--model", model_dir / "toy", "--concurrency", "1", "--chunk-lines", "4"]
    assert rnnmt("batch", source, "--out", tmp_path / "whole.en", *job) == 3
    parts = [tmp_path / f"part{k}.en" for k in (1, 2)]
    assert [
        rnnmt("batch", source, "--out", part, "--shard", f"{k}/2", *job) for k, part in enumerate(parts, 1)
    ] == [0, 3]
    capsys.readouterr()

    assert rnnmt("batch", "merge", parts[1], parts[0], "--out", tmp_path / "all.en") == 3
    assert f"merged 2 shards: 21 lines → {tmp_path / 'all.en'}" in capsys.readouterr().out
    assert (tmp_path / "all.en").read_bytes() == (tmp_path / "whole.en").read_bytes()
    assert errors_path(tmp_path / "all.en").read_bytes() == errors_path(tmp_path / "whole.en").read_bytes()

    assert rnnmt("batch", "merge", parts[0], "--out", tmp_path / "half.en") == 2
    assert "rnnmt: error: merging needs shards 1/2 to 2/2, each once; found 1/2" in capsys.readouterr().err
