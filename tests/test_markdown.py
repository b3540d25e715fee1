"""Markdown documents: the text of headings, paragraphs, lists, quotes and tables translated; code, URLs,
markers, raw HTML and front matter byte for byte; a property that any Markdown keeps its markup; and
a README through /translate_file on a real server with the tiny model."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyromark
import pytest
from hypothesis import given
from hypothesis import strategies as st
from servers import ServerThread, running
from test_documents import fetch, translate_file

from rnnmt.serving.documents.formats import BadDocument, read_document
from rnnmt.serving.documents.markdown import OPTIONS, pieces

README = """\
---
title: El perro
tags: [a, b]
---
# El *perro* `rnnmt` [enlace](https://example.com/a_b "Un título")

Setext
======

> El perro come pan, el gato
> bebe agua \\* y &amp; leche.

| Nombre | Hace |
|:-------|-----:|
| El gato | bebe \\| agua |

- [ ] uno
- [x] dos
  y tres
  1. cuatro

![un gato](img/gato.png "foto") <https://a.b/c> <b>negrita</b> <!-- nota -->\\
fin de [línea][ref] y [ref] y [ref][].

    código indentado *no*

```sh
pip install rnnmt  # *no*
```

<div align="center">
Un bloque HTML.
</div>

[ref]: https://r.s/ "Título"
"""

UPPER = """\
---
title: El perro
tags: [a, b]
---
# EL *PERRO* `rnnmt` [ENLACE](https://example.com/a_b "Un título")

SETEXT
======

> EL PERRO COME PAN, EL GATO
> BEBE AGUA \\* Y & LECHE.

| NOMBRE | HACE |
|:-------|-----:|
| EL GATO | BEBE \\| AGUA |

- [ ] UNO
- [x] DOS Y
  TRES
  1. CUATRO

![un gato](img/gato.png "foto") <https://a.b/c> <b>NEGRITA</b> <!-- nota -->\\
FIN DE [LÍNEA][ref] Y [ref] Y [ref][].

    código indentado *no*

```sh
pip install rnnmt  # *no*
```

<div align="center">
Un bloque HTML.
</div>

[ref]: https://r.s/ "Título"
"""


def translated(text: str, translate: Callable[[str], str]) -> str:
    document = read_document("a.md", text.encode())
    return document.rebuild([translate(t) for t in document.texts]).decode()


def test_only_text_is_translated_and_markup_comes_back_byte_for_byte() -> None:
    document = read_document("README.md", README.encode())
    assert document.texts == [
        "El",
        "perro",
        "enlace",
        "Setext",
        "El perro come pan, el gato bebe agua * y & leche.",  # one text across the soft break
        "Nombre",
        "Hace",
        "El gato",
        "bebe | agua",
        "uno",
        "dos y tres",
        "cuatro",
        "negrita",
        "fin de",
        "línea",
        "y",
        "y",
    ]
    assert translated(README, str.upper) == UPPER
    assert read_document("a.markdown", b"# Hola\n").texts == ["Hola"]


def test_a_translation_keeps_the_lines_of_its_text_and_stays_text() -> None:
    quote = "> uno dos tres\n> cuatro cinco\n>\n> seis\n"
    assert translated(quote, lambda t: t + " más") == "> uno dos tres\n> cuatro cinco más\n>\n> seis más\n"
    assert translated(quote, lambda t: "x") == "> x\n>\n> x\n"  # fewer words than lines: fewer lines
    markup = "- a *b* `c` <d> [e] 1. # f_g h_ ~i~ &amp; | 2\\"
    assert translated("uno\n", lambda t: markup) == (
        "\\- a \\*b\\* \\`c\\` \\<d> \\[e\\] 1. # f_g h\\_ \\~i\\~ \\&amp; | 2\\\\\n"
    )
    assert translated("| a |\n|---|\n| b |\n", lambda t: t + " | c") == "| a \\| c |\n|---|\n| b \\| c |\n"
    assert translated("Hola\n\nAdiós\n", lambda t: "1. " + t) == "1\\. Hola\n\n1\\. Adiós\n"
    assert translated("Hola[x](y)\n", lambda t: t + "!") == "Hola\\![x!](y)\n"  # not an image


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"# T\xedtulo\n", "a.md is not UTF-8 text: byte 3 is not UTF-8"),
        (b"# Hola\n\x00\x01", "a.md is not text: byte 7 is NUL"),
    ],
)
def test_a_file_that_is_not_text_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(BadDocument, match=message):
        read_document("a.md", data)


def markup(text: str) -> list[Any]:
    """The events of a document outside its texts (every event of code, HTML, links' destinations, ...),
    in order: what a translation must not change."""
    found = pieces(text)
    events = []
    for event, span in pyromark.events_with_range(text, options=OPTIONS):
        inside = any(p.start <= span["start"] < p.end for p in found)
        if not (inside and (event == "SoftBreak" or (isinstance(event, dict) and "Text" in event))):
            events.append(event)  # the text events of a text and its line breaks may change
    return events


INLINE = [
    "perro", "come pan.", " ", " ", "*", "_", "**", "`", "[", "]", "!", "#", "|", "~", "<", ">", "&", "\\",
    "*un gato*", "__dos__", "`código`", "``a ` b``", "[enlace](https://a.b/c_d 'título')", "![img](x.png)",
    "<https://a.b>", "<b>", "</b>", "&amp;", "&nbsp;", "\\*", "[ref]", "[texto][ref]", "~~tachado~~",
    "[^1]", "  \n", "\n", "1. ", "- ",
]  # fmt: skip


def inline(one_line: bool) -> st.SearchStrategy[str]:
    """Inline Markdown: words, markup and any characters (``one_line``: no line breaks, for table cells)."""
    pieces = [piece for piece in INLINE if not (one_line and "\n" in piece)]
    chars = st.characters(
        blacklist_categories=["Cs", "Cc"] if one_line else ["Cs"], blacklist_characters="\0"
    )
    return st.lists(st.sampled_from(pieces) | st.text(chars, max_size=5), min_size=1, max_size=12).map(
        "".join
    )


BLOCKS = [
    "{}", "# {}", "Título {}\n---", "> {}", "> {}\n> {}", "- {}\n- {}", "1. {}\n   {}", "- [ ] {}",
    "```\n{}\n```", "    {}", "<div>\n{}\n</div>", "[^1]: {}", "[ref]: https://r.s/ 'T'",
]  # fmt: skip
TABLE = "| {} | b |\n|---|:-:|\n| {} | {} |"
block = st.sampled_from(BLOCKS).flatmap(
    lambda template: st.lists(
        inline(False), min_size=template.count("{}"), max_size=template.count("{}")
    ).map(lambda texts: template.format(*texts))
) | st.lists(inline(True), min_size=3, max_size=3).map(lambda cells: TABLE.format(*cells))
document = st.tuples(
    st.sampled_from(["", "---\ntitle: x\n---\n"]),
    st.lists(block, max_size=6),
    st.sampled_from(["\n\n", "\n", "\r\n\r\n"]),
).map(lambda parts: parts[0] + parts[2].join(parts[1]))


LETTERS = re.compile(r"[^\W_]+")
TRANSLATIONS = [
    str,
    str.upper,
    lambda text: LETTERS.sub("zz", text),
    lambda text: f"{text[0]} zz zz {text[-1]}",  # more words than lines
    lambda text: text[0] + text[-1],  # fewer
]  # each keeps the kind of character (letter, punctuation) at both ends, which emphasis depends on


@given(document, st.sampled_from(TRANSLATIONS))
def test_any_markdown_comes_back_with_the_same_markup(text: str, translate: Callable[[str], str]) -> None:
    assert markup(translated(text, translate)) == markup(text)


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[ServerThread]:
    with running(model_dir, workers=1, http_port=0) as s:
        yield s


TOY_README = """\
# El perro come pan.

El perro come pan. Un gato
bebe agua. `rnnmt serve` [El niño ve leche.](https://example.com/docs_1 "Un niño")

> Un gato come pan.

- Un perro bebe leche.
- ![logo](https://example.com/logo.png) El gato ve agua.

| El niño come pan. |
|:-:|
| Un niño bebe agua. |

```python
print("El perro come pan.")
```
"""


def test_a_readme_through_translate_file_keeps_its_code_urls_and_markers(server: ServerThread) -> None:
    status, answer = translate_file(server, "README.md", TOY_README.encode())
    assert status == 200, answer
    status, data = fetch(answer["translatedFileUrl"])
    assert status == 200
    assert (
        data.decode()
        == """\
# The dog eats bread.

The dog eats bread.
A cat drinks water. `rnnmt serve` [The boy sees milk.](https://example.com/docs_1 "Un niño")

> A cat eats bread.

- A dog drinks milk.
- ![logo](https://example.com/logo.png) The cat sees water.

| The boy eats bread. |
|:-:|
| A boy drinks water. |

```python
print("El perro come pan.")
```
"""
    )
