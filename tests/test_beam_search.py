"""The shared beam search against brute-force enumeration, on toy models small enough to enumerate.

A toy model gives next-token log-probs over seven ids (PAD, UNK, BOS, EOS and three words a, b, c; only
EOS and the words are ever likely) as a function of the source and the decoder input so far (BOS, then
the output ids). :class:`FakeBackend` runs such a model behind the :class:`DecoderBackend` protocol in
numpy, with an output layer that may be wider than the toy vocabulary (ids that are never likely), so
that a beam can be wide enough to hold every prefix: then the search is exhaustive, and its results can
be compared exactly with an enumeration of every output.

How the search counts (see :mod:`rnnmt.serving.core.beam_search`): at step t a row emits its t-th id. A
hypothesis ended by EOS at step t has t-1 output ids and length t; one cut at the maximum length L has L
output ids and length L. Its score is its summed log-prob (EOS's included) / ((5 + length) / 6) ** α.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pytest

from rnnmt.serving.core.beam_search import (
    Arrays,
    BeamSearch,
    Hypothesis,
    beam_search,
    search_sorted,
)
from rnnmt.serving.core.options import SearchOptions
from rnnmt.tokenizers.sentencepiece import BOS_ID, EOS_ID, PAD_ID, UNK_ID

A, B, C = 4, 5, 6
WORDS = (A, B, C)
TOY_VOCAB = 7
assert len({PAD_ID, UNK_ID, BOS_ID, EOS_ID, *WORDS}) == TOY_VOCAB and max(WORDS) == TOY_VOCAB - 1

Model = Callable[[tuple[int, ...], tuple[int, ...]], np.ndarray]
"""(source ids, decoder input: BOS and the output ids so far) → next-token log-probs [TOY_VOCAB] float32."""


def full_beam(max_len: int) -> int:
    """The beam at which the search is exhaustive up to ``max_len`` steps: every step's candidates (each
    prefix of the previous step × EOS and the three words) fit in the top K, so none is cut."""
    return len(WORDS) ** (max_len - 1) * (len(WORDS) + 1)


# ---- toy models ---------------------------------------------------------------------------------------


def table_model(table: dict[int, dict[int, float]]) -> Model:
    """Next-token probabilities that depend only on the previous token; ids left out are impossible."""
    for prev, row in table.items():
        assert sum(row.values()) == pytest.approx(1.0), f"row {prev} is not a distribution"
    log_table = np.full((TOY_VOCAB, TOY_VOCAB), -np.inf, dtype=np.float32)
    for prev, row in table.items():
        for token, p in row.items():
            log_table[prev, token] = math.log(p)

    def model(source: tuple[int, ...], inputs: tuple[int, ...]) -> np.ndarray:
        return log_table[inputs[-1]]

    return model


def random_model(seed: int, eos_offset: float = 0.0) -> Model:
    """Log-probs over EOS and the words drawn afresh for every (source, prefix): a model whose every
    output depends on the whole prefix and on the source, so that a row given another row's state or
    memory is scored differently. ``eos_offset`` is added to EOS's logit (negative: longer outputs)."""

    @functools.cache
    def model(source: tuple[int, ...], inputs: tuple[int, ...]) -> np.ndarray:
        rng = np.random.default_rng([seed, *source, TOY_VOCAB, *inputs])
        logits = rng.normal(scale=1.5, size=1 + len(WORDS))
        logits[0] += eos_offset
        log_probs = np.full(TOY_VOCAB, -np.inf, dtype=np.float32)
        log_probs[[EOS_ID, *WORDS]] = logits - np.logaddexp.reduce(logits)
        log_probs.flags.writeable = False
        return log_probs

    return model


def by_source(models: dict[int, Model]) -> Model:
    """A different model for each first source id."""
    return lambda source, inputs: models[source[0]](source, inputs)


CYCLE = table_model(
    {
        BOS_ID: {A: 0.9, B: 0.05, C: 0.03, EOS_ID: 0.02},
        A: {B: 0.91, C: 0.04, A: 0.03, EOS_ID: 0.02},
        B: {C: 0.92, A: 0.045, B: 0.02, EOS_ID: 0.015},
        C: {A: 0.93, B: 0.035, C: 0.02, EOS_ID: 0.015},
    }
)
"""a b c a b c …: EOS is never a likely continuation, so every search runs to its maximum length."""

STOP_AT_ONCE = table_model(
    {
        BOS_ID: {EOS_ID: 0.9, A: 0.05, B: 0.03, C: 0.02},
        A: {EOS_ID: 0.9, A: 0.04, B: 0.035, C: 0.025},
        B: {EOS_ID: 0.9, A: 0.045, B: 0.03, C: 0.025},
        C: {EOS_ID: 0.9, A: 0.05, B: 0.03, C: 0.02},
    }
)
"""EOS first, so the empty output wins at step 1."""


# ---- the fake backend ---------------------------------------------------------------------------------


class FakeBackend:
    """A :class:`DecoderBackend` over a toy :data:`Model`, exactly as the protocol states it. Memory is
    ``(src [R,S], lengths [R])``, the state ``(decoder inputs so far [R,t],)``; ``vocab_size`` ≥ 7 is the
    width of the output layer (ids beyond the toy vocabulary are impossible). It checks that every array
    it is given has one row per row of ``prev``, and records what it was asked to do."""

    def __init__(self, model: Model, vocab_size: int = TOY_VOCAB) -> None:
        assert vocab_size >= TOY_VOCAB
        self.model, self.vocab_size = model, vocab_size
        self.encoded: list[list[tuple[int, ...]]] = []  # the sources of each encode call
        self.step_rows: list[int] = []  # rows of each step call

    def encode(self, src: np.ndarray, lengths: np.ndarray) -> tuple[Arrays, Arrays]:
        assert src.dtype == np.int64 and lengths.dtype == np.int64 and src.shape[0] == lengths.shape[0]
        assert all((row[n:] == PAD_ID).all() for row, n in zip(src, lengths, strict=True))
        self.encoded.append([tuple(int(x) for x in row[:n]) for row, n in zip(src, lengths, strict=True)])
        return (src, lengths), (np.zeros((len(src), 0), dtype=np.int64),)

    def take(self, arrays: Arrays, rows: np.ndarray) -> Arrays:
        assert rows.dtype == np.int64
        return tuple(a[rows] for a in arrays)

    def step(
        self,
        prev: np.ndarray,
        state: Arrays,
        memory: Arrays,
        beam_scores: np.ndarray,
        eos_bias: np.ndarray,
        k: int,
    ) -> tuple[np.ndarray, np.ndarray, Arrays]:
        (inputs,), (src, lengths) = state, memory
        n = len(prev)
        assert prev.dtype == np.int64 and beam_scores.dtype == np.float32 and eos_bias.dtype == np.float32
        assert inputs.shape[0] == src.shape[0] == lengths.shape[0] == beam_scores.shape[0] == n
        assert eos_bias.shape == (n,) and 1 <= k <= self.vocab_size
        self.step_rows.append(n)
        inputs = np.concatenate([inputs, prev[:, None]], axis=1)
        log_probs = np.full((n, self.vocab_size), -np.inf, dtype=np.float32)
        for r in np.nonzero(np.isfinite(beam_scores))[0]:  # a dead row's scores are -inf whatever it says
            source = tuple(int(x) for x in src[r, : lengths[r]])
            log_probs[r, :TOY_VOCAB] = self.model(source, tuple(int(x) for x in inputs[r]))
        log_probs[:, EOS_ID] += eos_bias
        scores = beam_scores[:, None] + log_probs
        ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, ids, axis=1), ids.astype(np.int64), (inputs,)


# ---- brute force --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Output:
    tokens: tuple[int, ...]
    log_prob: float  # summed, EOS included
    length: int  # as the search counts it: the step that finished it (EOS emitted, or the limit reached)
    ended: bool  # by EOS (else cut at the maximum length)

    def score(self, alpha: float) -> float:
        return self.log_prob / ((5.0 + self.length) / 6.0) ** alpha


def enumerate_outputs(model: Model, source: Sequence[int], options: SearchOptions) -> list[Output]:
    """Every output the search could give (finite log-prob): each prefix of at most L-1 ids followed by
    EOS, where EOS is allowed (after ``min_output_tokens`` ids), and each L-id prefix cut at L."""
    source, max_len, outputs = tuple(source), options.max_length(len(source)), []

    def walk(prefix: tuple[int, ...], log_prob: float) -> None:
        t = len(prefix) + 1  # the step that emits the next id
        log_probs = model(source, (BOS_ID, *prefix)).astype(np.float64)
        if t > options.min_output_tokens and np.isfinite(log_probs[EOS_ID]):
            outputs.append(Output(prefix, log_prob + log_probs[EOS_ID], t, True))
        for token in WORDS:
            if np.isfinite(log_probs[token]):
                if t == max_len:
                    outputs.append(Output((*prefix, token), log_prob + log_probs[token], t, False))
                else:
                    walk((*prefix, token), log_prob + log_probs[token])

    walk((), 0.0)
    return outputs


def stopping_step(outputs: list[Output], model: Model, source: Sequence[int], options: SearchOptions) -> int:
    """The step at which a search that keeps every prefix stops, by the documented rule: its best
    candidate (by summed log-prob) is EOS and it has ``n_best`` finished hypotheses; or the maximum
    length."""
    source, max_len = tuple(source), options.max_length(len(source))
    for t in range(1, max_len):
        ended = [o.log_prob for o in outputs if o.ended and o.length == t]
        going = [
            sum(float(model(source, (BOS_ID, *p[:i]))[p[i]]) for i in range(t))
            for p in itertools.product(WORDS, repeat=t)
        ]
        going = [g for g in going if np.isfinite(g)]
        finished = sum(1 for o in outputs if o.ended and o.length <= t)
        if ended and max(ended) > max(going, default=-np.inf) and finished >= options.n_best:
            return t
    return max_len


def best(outputs: list[Output], alpha: float, n: int) -> list[tuple[tuple[int, ...], float]]:
    ranked = sorted(outputs, key=lambda o: -o.score(alpha))[:n]
    return [(o.tokens, o.score(alpha)) for o in ranked]


def expected(
    model: Model, source: Sequence[int], options: SearchOptions
) -> list[tuple[tuple[int, ...], float]]:
    """What a search that keeps every prefix must return: the best output finished by the step where a
    search for one stops, then the n - 1 best of the others finished by its own stop."""
    outputs = enumerate_outputs(model, source, options)
    alpha, one = options.length_penalty, replace(options, n_best=1)
    (first,) = best([o for o in outputs if o.length <= stopping_step(outputs, model, source, one)], alpha, 1)
    stop = stopping_step(outputs, model, source, options)
    others = [o for o in outputs if o.length <= stop and o.tokens != first[0]]
    return [first, *best(others, alpha, options.n_best - 1)]


def found(hyps: list[Hypothesis]) -> list[tuple[tuple[int, ...], float]]:
    return [(tuple(h.tokens), h.score) for h in hyps]


def assert_same(got: list[Hypothesis], want: list[tuple[tuple[int, ...], float]], context: str) -> None:
    assert [tokens for tokens, _ in found(got)] == [tokens for tokens, _ in want], context
    assert [score for _, score in found(got)] == pytest.approx([s for _, s in want], rel=1e-5), context


def search_alone(
    model: Model, sources: Sequence[Sequence[int]], options: SearchOptions
) -> list[list[Hypothesis]]:
    """Each source searched in a batch of its own."""
    return [beam_search(FakeBackend(model), [s], options)[0] for s in sources]


SOURCES = [[A, EOS_ID], [B, C, EOS_ID], [C, C, A, B, EOS_ID]]
SEEDS = range(6)


# ---- exhaustive search --------------------------------------------------------------------------------


@pytest.mark.parametrize("min_output_tokens", [0, 2])
def test_a_full_beam_finds_the_best_output(min_output_tokens: int) -> None:
    """No length penalty, one best: with every prefix kept, the search returns the best of all outputs."""
    options = SearchOptions(
        beam_size=full_beam(4), max_output_tokens=4, length_penalty=0.0, min_output_tokens=min_output_tokens
    )
    for seed in SEEDS:
        model = random_model(seed)
        results = beam_search(FakeBackend(model, options.beam_size + 1), SOURCES, options)
        for source, hyps in zip(SOURCES, results, strict=True):
            assert_same(hyps, best(enumerate_outputs(model, source, options), 0.0, 1), f"{seed=} {source=}")


@pytest.mark.parametrize("n_best", [1, 4])
@pytest.mark.parametrize("alpha", [0.0, 1.0, 3.0])
@pytest.mark.parametrize("min_output_tokens", [0, 2])
def test_a_full_beam_returns_the_n_best_outputs_finished_by_its_stop(
    alpha: float, n_best: int, min_output_tokens: int
) -> None:
    """With every prefix kept: first the best (length-normalised) of the outputs that end at or before
    the step at which the rule stops a search for one, then the best others of those that end by the
    search's own stop (all of them when the search reaches its maximum length)."""
    options = SearchOptions(
        beam_size=full_beam(4),
        n_best=n_best,
        max_output_tokens=4,
        length_penalty=alpha,
        min_output_tokens=min_output_tokens,
    )
    stops = set()
    for seed in SEEDS:
        model = random_model(seed)
        results = beam_search(FakeBackend(model, options.beam_size + 1), SOURCES, options)
        for source, hyps in zip(SOURCES, results, strict=True):
            context = f"{seed=} {source=}"
            assert_same(hyps, expected(model, source, options), context)
            scores = [h.score for h in hyps[1:]]
            assert scores == sorted(scores, reverse=True), context
            assert len({tuple(h.tokens) for h in hyps}) == n_best, context
            assert all(len(h.tokens) >= min_output_tokens for h in hyps), context
            outputs = enumerate_outputs(model, source, options)
            stops.add(stopping_step(outputs, model, source, options) < options.max_length(len(source)))
    assert stops == {True, False}, "the cases should cover both an early stop and the maximum length"


LONGER_IS_BETTER = table_model(
    {
        BOS_ID: {A: 0.7, EOS_ID: 0.1, B: 0.1, C: 0.1},
        A: {EOS_ID: 0.45, B: 0.44, A: 0.06, C: 0.05},
        B: {EOS_ID: 0.98, A: 0.01, B: 0.005, C: 0.005},
        C: {EOS_ID: 0.5, A: 0.25, B: 0.25},
    }
)
"""For the source [A, EOS]: (A) ends first, and (A, B), found a step later, scores higher under a length
penalty of 1."""


def test_the_search_stops_when_its_best_candidate_ends_a_hypothesis() -> None:
    """The documented stopping rule, pinned: once the best candidate is EOS (and n_best are finished), the
    search ends, even where a length penalty would prefer a longer output that was still to come."""
    model = LONGER_IS_BETTER
    options = SearchOptions(beam_size=full_beam(4), max_output_tokens=4, length_penalty=1.0)
    outputs = enumerate_outputs(model, [A, EOS_ID], options)
    assert best(outputs, 1.0, 1)[0][0] == (A, B)  # ln(.7·.44·.98) / (8/6) > ln(.7·.45) / (7/6)
    backend = FakeBackend(model, options.beam_size + 1)
    (hyps,) = beam_search(backend, [[A, EOS_ID]], options)
    assert found(hyps) == [((A,), pytest.approx(math.log(0.7 * 0.45) / (7 / 6)))]
    assert len(backend.step_rows) == 2


def test_alternatives_never_change_the_translation() -> None:
    """An n-best list starts with what n_best 1 gives, even when an alternative found later scores higher."""
    # Four outputs end by step 2 ((), (A), (B), (C)): a fifth keeps the search going to (A, B).
    options = SearchOptions(beam_size=full_beam(4), n_best=5, max_output_tokens=4, length_penalty=1.0)
    (hyps,) = beam_search(FakeBackend(LONGER_IS_BETTER, options.beam_size + 1), [[A, EOS_ID]], options)
    assert [tuple(h.tokens) for h in hyps[:2]] == [(A,), (A, B)]
    assert hyps[1].score > hyps[0].score
    for seed in SEEDS:
        model = random_model(seed, eos_offset=-1.0)
        for alpha in (0.0, 1.0, 3.0):
            one = SearchOptions(beam_size=4, max_output_tokens=6, length_penalty=alpha)
            alone = beam_search(FakeBackend(model), SOURCES, one)
            for n_best in (2, 4):
                listed = beam_search(FakeBackend(model), SOURCES, replace(one, n_best=n_best))
                assert [h[:1] for h in listed] == alone, f"{seed=} {alpha=} {n_best=}"


def test_only_eos_among_the_top_k_candidates_ends_a_hypothesis() -> None:
    """Beam 1 is greedy decoding: EOS second at step 1 (its output the likeliest of all) is not kept."""
    model = table_model(
        {
            BOS_ID: {A: 0.6, EOS_ID: 0.4},
            A: {B: 0.5, EOS_ID: 0.3, A: 0.1, C: 0.1},
            B: {EOS_ID: 0.9, A: 0.05, B: 0.03, C: 0.02},
            C: {EOS_ID: 1.0},
        }
    )
    options = SearchOptions(beam_size=1, length_penalty=0.0)
    assert best(enumerate_outputs(model, [A, EOS_ID], options), 0.0, 1)[0][0] == ()
    (hyps,) = beam_search(FakeBackend(model), [[A, EOS_ID]], options)
    assert found(hyps) == [((A, B), pytest.approx(math.log(0.6 * 0.5 * 0.9)))]


def test_n_best_must_fit_the_beam() -> None:
    with pytest.raises(ValueError, match="n_best"):
        BeamSearch(FakeBackend(CYCLE), [[A, EOS_ID]], SearchOptions(beam_size=2, n_best=3))


# ---- options ------------------------------------------------------------------------------------------


def test_the_length_penalty_changes_the_choice() -> None:
    """The empty output is likelier than ``a b``, but ``a b`` is longer: α = 0 picks the one, α = 1 the
    other, as brute force does."""
    model = table_model(
        {
            BOS_ID: {EOS_ID: 0.35, A: 0.6, B: 0.025, C: 0.025},
            A: {B: 0.8, EOS_ID: 0.1, A: 0.05, C: 0.05},
            B: {EOS_ID: 0.7, A: 0.1, B: 0.1, C: 0.1},
            C: {EOS_ID: 0.5, A: 0.2, B: 0.2, C: 0.1},
        }
    )
    source = [A, EOS_ID]
    for alpha, tokens, log_prob, length in [
        (0.0, (), math.log(0.35), 1),
        (1.0, (A, B), math.log(0.6 * 0.8 * 0.7), 3),
    ]:
        options = SearchOptions(beam_size=3, max_output_tokens=5, length_penalty=alpha)
        outputs = enumerate_outputs(model, source, options)
        assert best(outputs, alpha, 1) == [(tokens, pytest.approx(log_prob / ((5 + length) / 6) ** alpha))]
        (hyps,) = beam_search(FakeBackend(model), [source], options)
        assert_same(hyps, best(outputs, alpha, 1), f"{alpha=}")


def test_min_output_tokens_blocks_eos() -> None:
    """EOS is likeliest at every step; with min_output_tokens=2 no hypothesis ends before two ids, and
    the best is the best two-id output (EOS is allowed right after them)."""
    source = [A, EOS_ID]
    (hyps,) = beam_search(FakeBackend(STOP_AT_ONCE), [source], SearchOptions(beam_size=3, n_best=3))
    assert hyps[0].tokens == [] and hyps[0].score == pytest.approx(math.log(0.9))

    options = SearchOptions(beam_size=3, n_best=3, max_output_tokens=6, min_output_tokens=2)
    backend = FakeBackend(STOP_AT_ONCE)
    (hyps,) = beam_search(backend, [source], options)
    assert all(len(h.tokens) >= 2 for h in hyps)
    want = best(enumerate_outputs(STOP_AT_ONCE, source, options), 1.0, 3)
    assert want[0][0] == (A, A) and want[0][1] == pytest.approx(math.log(0.05 * 0.04 * 0.9) / (8 / 6))
    assert_same(hyps, want, "min_output_tokens=2")
    assert len(backend.step_rows) == 3  # EOS first allowed, and taken, at step 3


def test_max_output_tokens_cuts_hypotheses_as_they_stand() -> None:
    """EOS is never likely: at the maximum length the surviving hypotheses are finished without it,
    their length L (not L+1), their score their summed log-prob / ((5 + L) / 6) ** α."""
    options = SearchOptions(beam_size=full_beam(4), n_best=4, max_output_tokens=4)
    backend = FakeBackend(CYCLE, options.beam_size + 1)
    (hyps,) = beam_search(backend, [[A, EOS_ID]], options)
    assert len(backend.step_rows) == 4
    assert hyps[0].tokens == [A, B, C, A]
    assert hyps[0].score == pytest.approx(math.log(0.9 * 0.91 * 0.92 * 0.93) / (9 / 6))
    assert all(len(h.tokens) == 4 for h in hyps)
    assert_same(hyps, expected(CYCLE, [A, EOS_ID], options), "max_output_tokens=4")


def test_max_length_ratio_cuts_each_source_at_its_own_length() -> None:
    """max_length = min(max_output_tokens, int(ratio × source length) + 10): 11 and 16 ids here; the
    shorter source leaves the batch when it reaches its limit."""
    options = SearchOptions(beam_size=2, n_best=2, max_output_tokens=256, max_length_ratio=0.5)
    sources = [[A, EOS_ID], [B] * 11 + [EOS_ID]]
    backend = FakeBackend(CYCLE)
    results = beam_search(backend, sources, options)
    assert backend.step_rows == [4] * 11 + [2] * 5
    for hyps, length in zip(results, [11, 16], strict=True):
        assert hyps[0].tokens == [(A, B, C)[i % 3] for i in range(length)]
        for h in hyps:
            log_prob = sum(
                float(CYCLE((), (BOS_ID, *h.tokens[:i]))[token]) for i, token in enumerate(h.tokens)
            )
            assert len(h.tokens) == length
            assert h.score == pytest.approx(log_prob / ((5 + length) / 6))


# ---- batches ------------------------------------------------------------------------------------------


def test_finished_sentences_leave_the_batch() -> None:
    """A sentence done at step 1 stops costing rows: its memory, state and bookkeeping go (the backend
    checks that every array it gets has one row per row searched)."""
    model = by_source({A: STOP_AT_ONCE, B: CYCLE})
    sources = [[A, EOS_ID], [B, B, EOS_ID]]
    options = SearchOptions(beam_size=2, max_output_tokens=5)
    backend = FakeBackend(model)
    search = BeamSearch(backend, sources, options)
    assert search.rows == 4
    search.step()
    assert search.rows == 2 and not search.done
    while not search.done:
        search.step()
    assert backend.step_rows == [4, 2, 2, 2, 2]
    results = search.results()
    assert results[0][0].tokens == [] and results[1][0].tokens == [A, B, C, A, B]
    assert results == search_alone(model, sources, options)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_batch_gives_each_source_what_it_gives_alone(seed: int) -> None:
    """Sources of different lengths (so different maximum lengths) that end at different steps."""
    model = random_model(seed, eos_offset=-1.0)
    sources = [[A, EOS_ID], [C] * 9 + [EOS_ID], [B, C, EOS_ID], [A, A, B, B, A, EOS_ID]]
    options = SearchOptions(beam_size=3, n_best=2, max_length_ratio=0.5)
    backend = FakeBackend(model)
    results = beam_search(backend, sources, options)
    assert results == search_alone(model, sources, options)
    assert backend.step_rows[0] == 12 and backend.step_rows == sorted(backend.step_rows, reverse=True)


@pytest.mark.parametrize("when", [0, 2])
def test_drop_removes_a_sentence_without_changing_the_others(when: int) -> None:
    """The dropped sentence (which has a finished hypothesis by step 2, EOS being second at step 1)
    gets no results; the others get exactly what they get alone."""
    early_eos = table_model(
        {
            BOS_ID: {A: 0.6, EOS_ID: 0.3, B: 0.06, C: 0.04},
            A: {B: 0.8, C: 0.1, A: 0.07, EOS_ID: 0.03},
            B: {C: 0.8, A: 0.1, B: 0.07, EOS_ID: 0.03},
            C: {A: 0.8, B: 0.1, C: 0.07, EOS_ID: 0.03},
        }
    )
    model = by_source(
        {A: random_model(7, eos_offset=-3.0), B: early_eos, C: random_model(8, eos_offset=-3.0)}
    )
    sources = [[A, EOS_ID], [B, C, EOS_ID], [C, A, EOS_ID]]
    options = SearchOptions(beam_size=3, n_best=2, max_output_tokens=8)
    alone = search_alone(model, sources, options)
    assert alone[1][1].tokens == []  # the hypothesis finished at step 1
    backend = FakeBackend(model)
    search = BeamSearch(backend, sources, options)
    for _ in range(when):
        search.step()
    assert search.rows == 9, "no sentence should be done before the drop"
    search.drop([1])
    assert search.rows == 6
    while not search.done:
        search.step()
    results = search.results()
    assert results[1] == [] and results[0] == alone[0] and results[2] == alone[2]
    assert all(rows <= 6 for rows in backend.step_rows[when:])

    search = BeamSearch(FakeBackend(model), sources, options)
    for _ in range(when):
        search.step()
    search.drop([0, 2])
    while not search.done:
        search.step()
    assert search.results() == [[], alone[1], []]


def test_search_sorted_batches_by_length_and_answers_in_input_order() -> None:
    model = random_model(3, eos_offset=-1.0)
    sources = [[A, B, EOS_ID], [C, EOS_ID], [B, B, B, EOS_ID], [A, EOS_ID], [C, B, A, C, EOS_ID]]
    options = SearchOptions(beam_size=2, n_best=2, max_output_tokens=6)
    backend = FakeBackend(model)
    results = search_sorted(backend, sources, options, max_batch_rows=5)  # 2 sentences × beam 2 a batch
    assert results == search_alone(model, sources, options)
    assert [[len(s) for s in batch] for batch in backend.encoded] == [[2, 2], [3, 4], [5]]
    assert max(backend.step_rows) <= 5

    backend = FakeBackend(model)
    assert search_sorted(backend, sources, options, max_batch_rows=1) == results  # one sentence a batch
    assert [len(batch) for batch in backend.encoded] == [1] * 5
