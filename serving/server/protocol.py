"""The ``rnnmt.v1`` messages ↔ the inference core's types: request options, translations, model info."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rnnmt.serving.core.options import MAX_BEAM_SIZE, MAX_OUTPUT_TOKENS, Decoding
from rnnmt.serving.core.translator import TextHypothesis
from rnnmt.serving.server.call import TranslationCall
from rnnmt.serving.server.model_repository import ReloadReport, ServedModel
from rnnmt.v1 import admin_pb2 as admin_pb
from rnnmt.v1 import translator_pb2 as pb


def decoding(options: pb.DecodingOptions) -> Decoding:
    """A request's decoding options; 0 or an absent ``length_penalty`` keep the model's default."""
    return Decoding(
        beam_size=options.beam_size,
        n_best=options.n_best,
        length_penalty=options.length_penalty if options.HasField("length_penalty") else None,
        max_output_tokens=options.max_output_tokens,
    )


def translation_call(request: pb.TranslateRequest, timeout: float | None) -> TranslationCall:
    """The call of a TranslateRequest, given ``timeout`` seconds (None: no deadline)."""
    return TranslationCall(
        texts=request.texts,
        decoding=decoding(request.options),
        format=request.format or "text",
        split=request.split_sentences,
        timeout=timeout,
        detect_language=request.detect_language,
    )


def translate_response(
    model: ServedModel,
    results: list[list[TextHypothesis]],
    detected: Sequence[tuple[str, float]] | None = None,
) -> pb.TranslateResponse:
    """The response of ``model`` with, per text, its hypotheses, best first, and the language detected
    in it (language, confidence), when asked."""
    languages: Sequence[tuple[str, float] | None] = detected or [None] * len(results)
    return pb.TranslateResponse(
        translations=[
            pb.Translation(
                hypotheses=[pb.Hypothesis(text=h.text, score=h.score) for h in hypotheses],
                detected_language=None
                if language is None
                else pb.DetectedLanguage(language=language[0], confidence=language[1]),
            )
            for hypotheses, language in zip(results, languages, strict=True)
        ],
        model=model.name,
        model_version=model.version,
    )


def model_message(model: ServedModel, latest: bool, max_texts_per_request: int) -> pb.Model:
    """The ModelInfo entry of a served model version: languages, versions, scores, defaults and limits."""
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
        model_version=model.version,
        latest=latest,
        signed_by=(translator.package and translator.package.signed_by) or "",
    )


def model_info(
    models: Mapping[str, Mapping[str, ServedModel]], default_model: str, max_texts_per_request: int
) -> pb.ModelInfo:
    """The GetModelInfo response listing every version of ``models`` (name → version → model)."""
    return pb.ModelInfo(
        models=[
            model_message(model, i == len(versions) - 1, max_texts_per_request)
            for versions in models.values()
            for i, model in enumerate(versions.values())
        ],
        default_model=default_model,
    )


def model_version(model: ServedModel) -> admin_pb.ModelVersion:
    return admin_pb.ModelVersion(
        name=model.name, model_version=model.version, version=model.translator.version
    )


def reload_response(report: ReloadReport) -> admin_pb.ReloadModelsResponse:
    """The ReloadModels response of a reload's report."""
    return admin_pb.ReloadModelsResponse(
        loaded=[model_version(m) for m in report.loaded],
        kept=[model_version(m) for m in report.kept],
        unloaded=[model_version(m) for m in report.unloaded],
        failed=[
            admin_pb.LoadFailure(name=f.name, model_version=f.version, path=str(f.path), error=f.error)
            for f in report.failed
        ],
    )
