"""API keys with limits: the keys file, token buckets on a clock of the test's own, and both doors of a
real server refusing a key over its limit (429 / RESOURCE_EXHAUSTED with retry-after) while other keys
keep working; the file read again on reload."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from servers import ServerThread, running

from rnnmt.errors import RnnmtError
from rnnmt.serving.client import TranslatorClient
from rnnmt.serving.server.api_keys import KeyRing, OverLimit, TooLarge, parse_keys

ALICE, BOB, CAROL = "alice-key-0123456789", "bob-key-abcdefghijkl", "carol-key-mnopqrstuv"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ring(tmp_path: Path, text: str) -> tuple[KeyRing, Clock, Path]:
    path = tmp_path / "keys"
    path.write_text(text)
    clock = Clock()
    return KeyRing(["the-token"], path, clock=clock), clock, path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alice\n", "line 1: expected 'NAME KEY"),
        (f"alice {ALICE} 10\n", "line 1: expected 'NAME KEY"),
        ("alice short\n", "the key of alice has fewer than 16 characters"),
        (f"# a comment\nal!ce {ALICE}\n", "line 2: a name is 1 to 64"),
        (f"alice {ALICE} ten 0\n", "limits are whole numbers"),
        (f"alice {ALICE}\nalice {BOB}\n", "line 2: alice or its key is listed twice"),
        (f"alice {ALICE}\nbob {ALICE}\n", "line 2: bob or its key is listed twice"),
    ],
)
def test_a_keys_file_that_does_not_parse_says_where(text: str, message: str) -> None:
    with pytest.raises(RnnmtError, match=message):
        parse_keys(text, "keys.txt")


def test_keys_are_found_by_their_secret_only(tmp_path: Path) -> None:
    keys, _, _ = ring(tmp_path, f"alice {ALICE} 0 0  # no limits\nbob {BOB}\n")
    assert [k.name for k in keys.keys] == ["token", "alice", "bob"]
    assert keys.find(ALICE).name == "alice" and keys.find("the-token").name == "token"  # type: ignore[union-attr]
    assert keys.find("alice") is None and keys.find("") is None and keys.find(ALICE + "x") is None


def test_requests_per_minute_refill_continuously(tmp_path: Path) -> None:
    keys, clock, _ = ring(tmp_path, f"alice {ALICE} 2 0\n")
    alice = keys.find(ALICE)
    keys.spend(alice, 10)
    keys.spend(alice, 10)
    with pytest.raises(OverLimit, match="key alice is over its limit of 2 requests a minute") as over:
        keys.spend(alice, 10)
    assert over.value.retry_after == 30
    clock.now += 29.0
    with pytest.raises(OverLimit):
        keys.spend(alice, 10)
    clock.now += 1.0
    keys.spend(alice, 10)
    keys.spend(None, 10**9)  # a server without keys: nothing to count


def test_characters_per_minute_and_a_call_that_can_never_pass(tmp_path: Path) -> None:
    keys, clock, _ = ring(tmp_path, f"alice {ALICE} 0 100\n")
    alice = keys.find(ALICE)
    keys.spend(alice, 60)
    with pytest.raises(OverLimit, match="100 characters a minute") as over:
        keys.spend(alice, 60)  # 40 left: 20 more come in 12 s
    assert over.value.retry_after == 12
    keys.spend(alice, 40)  # what was refused spent nothing
    with pytest.raises(
        TooLarge, match="the call has 101 characters; key alice may send at most 100 a minute"
    ):
        keys.spend(alice, 101)
    clock.now += 60.0
    keys.spend(alice, 100)


def test_a_reload_reads_the_file_again_and_a_bad_one_keeps_the_keys(tmp_path: Path) -> None:
    keys, _, path = ring(tmp_path, f"alice {ALICE} 1 0\n")
    keys.spend(keys.find(ALICE), 1)
    path.write_text(f"alice {ALICE} 1 0\nbob {BOB}\n")
    keys.reload()
    assert keys.find(BOB) is not None
    with pytest.raises(OverLimit):  # alice's spending carries on: her limits did not change
        keys.spend(keys.find(ALICE), 1)
    path.write_text("broken\n")
    with pytest.raises(RnnmtError, match="line 1"):
        keys.reload()
    assert keys.find(ALICE) is not None and keys.find(BOB) is not None


def post(port: int, path: str, body: dict[str, Any], key: str = "") -> tuple[int, dict[str, str], Any]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(), headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


@pytest.fixture
def server(model_dir: Path, tmp_path: Path) -> Iterator[ServerThread]:
    """Alice may make one call a minute; Bob has no limits."""
    keys = tmp_path / "keys"
    keys.write_text(f"alice {ALICE} 1 0\nbob {BOB}\n")
    with running(model_dir, workers=1, http_port=0, api_keys_file=keys, allow_insecure_token=True) as s:
        yield s


def test_a_key_over_its_limit_is_refused_on_both_doors_and_others_keep_working(server: ServerThread) -> None:
    port, texts = server.server.http_port, {"texts": ["El perro come pan."]}
    assert post(port, "/v1/translate", texts, ALICE)[0] == 200
    status, headers, answer = post(port, "/v1/translate", texts, ALICE)
    assert (status, answer["error"]["status"], headers["retry-after"]) == (429, "RESOURCE_EXHAUSTED", "60")
    status, headers, answer = post(
        port, "/translate", {"q": "Hola", "source": "es", "target": "en", "api_key": ALICE}
    )
    assert (
        status == 429 and "key alice is over its limit" in answer["error"] and headers["retry-after"] == "60"
    )
    with TranslatorClient(server.target, token=ALICE) as alice, pytest.raises(grpc.RpcError) as refused:
        alice.translate(["El perro come pan."])
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert ("retry-after", "60") in (refused.value.trailing_metadata() or ())  # type: ignore[attr-defined]
    for _ in range(3):  # Bob is not held back by Alice
        assert post(port, "/v1/translate", texts, BOB)[0] == 200
    with TranslatorClient(server.target, token=BOB) as bob:
        assert bob.translate(["El perro come pan."])[0].hypotheses[0].text == "The dog eats bread."
    assert post(port, "/v1/translate", texts, "no-such-key-at-all")[0] == 401
    assert server.metric("rnnmt_api_key_calls_total", key="alice", result="limited") == 3
    assert server.metric("rnnmt_api_key_calls_total", key="bob", result="ok") == 4
    assert server.metric("rnnmt_api_key_characters_total", key="bob") == 4 * len("El perro come pan.")
    exposed = "".join(str(m) for m in server.server.metrics.registry.collect())
    assert ALICE not in exposed and BOB not in exposed


def test_a_reload_reads_the_keys_file_again(server: ServerThread, tmp_path: Path) -> None:
    port, texts = server.server.http_port, {"texts": ["El perro come pan."]}
    assert post(port, "/v1/translate", texts, CAROL)[0] == 401
    (tmp_path / "keys").write_text(f"bob {BOB}\ncarol {CAROL}\n")
    server.run(server.server.reload())
    assert post(port, "/v1/translate", texts, CAROL)[0] == 200
    assert post(port, "/v1/translate", texts, ALICE)[0] == 401
