"""The ``rnnmt.v1`` messages ↔ the inference core's types: request options, translations, model info."""

from __future__ import annotations

from collections.abc import Iterable

from rnnmt.serving.core.options import MAX_BEAM_SIZE, MAX_OUTPUT_TOKENS, Decoding
from rnnmt.serving.core.translator import TextHypothesis
from rnnmt.serving.server.model_repository import ServedModel
from rnnmt.v1 import translator_pb2 as pb


def decoding(options: pb.DecodingOptions) -> Decoding:
    """A request's decoding options; 0 or an absent ``length_penalty`` keep the model's default."""
    return Decoding(
        beam_size=options.beam_size,
        n_best=options.n_best,
        length_penalty=options.length_penalty if options.HasField("length_penalty") else None,
        max_output_tokens=options.max_output_tokens,
    )


def translate_response(model: str, results: list[list[TextHypothesis]]) -> pb.TranslateResponse:
    """The response of ``model`` with, per text, its hypotheses, best first."""
    return pb.TranslateResponse(
        translations=[
            pb.Translation(hypotheses=[pb.Hypothesis(text=h.text, score=h.score) for h in hypotheses])
            for hypotheses in results
        ],
        model=model,
    )


def model_message(model: ServedModel, max_texts_per_request: int) -> pb.Model:
    """The ModelInfo entry of a served model: languages, versions, scores, defaults and limits."""
    translator = model.translator
    manifest, defaults = translator.manifest, translator.default_options
    scores = {
        key: float(value)
        for key, value in manifest.training.items()
        if key.endswith(("bleu", "chrf")) and isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    return pb.Model(
        name=model.name,
        source_language=manifest.source_language,
        target_language=manifest.target_language,
        version=translator.version,
        rnnmt_version=manifest.rnnmt_version,
        quantization=manifest.quantization or "",
        scores=scores,
        defaults=pb.DecodingOptions(
            beam_size=defaults.beam_size,
            n_best=defaults.n_best,
            length_penalty=defaults.length_penalty,
            max_output_tokens=defaults.max_output_tokens,
        ),
        limits=pb.Limits(
            max_input_tokens=manifest.max_input_tokens,
            max_texts_per_request=max_texts_per_request,
            max_beam_size=MAX_BEAM_SIZE,
            max_output_tokens=MAX_OUTPUT_TOKENS,
        ),
    )


def model_info(models: Iterable[ServedModel], default_model: str, max_texts_per_request: int) -> pb.ModelInfo:
    """The GetModelInfo response listing ``models``."""
    return pb.ModelInfo(
        models=[model_message(model, max_texts_per_request) for model in models], default_model=default_model
    )
