"""`parakeet-serve export`: a NeMo model as ONNX graphs in onnx-asr's directory layout.

NeMo's own exporter writes the graphs: `encoder-model.onnx` and `decoder_joint-model.onnx` for a
transducer (a hybrid's CTC head as `ctc_head-model.onnx`, fed by the same encoder), `model.onnx`
for a CTC model. Beside them `vocab.txt` (`piece id` per line, `<blk>` last) and `config.json`
(onnx-asr's keys plus the feature settings this server needs). `int8` adds onnx-asr's
`*.int8.onnx` files: the encoder's matrix products quantised dynamically by onnxruntime.

For streaming (not in onnx-asr's layout), NeMo's cache-aware export of the encoder, twice: for an
utterance's first chunk (no subsampling context before it) and for the later ones (whose context's
frames are dropped), with the chunking in `config.json` under `streaming`. A model trained with
chunked attention streams with its own chunking; one trained with full attention with chunks of
four frames over `stream_context_s` of left context (the first pass of two-pass streaming). And the
SentencePiece model (`tokenizer.model`), with which the ONNX backend spells boosted phrases.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

from parakeet_serve.engine.loader import load_nemo_model, quiet_nemo, resolve_model_file
from parakeet_serve.engine.onnx.layout import (
    CTC_HEAD,
    CTC_MODEL,
    DECODER_JOINT,
    ENCODER,
    STREAM_ENCODER,
    STREAM_ENCODER_FIRST,
    TOKENIZER,
)


def export(model_id: str, out: Path, int8: bool = False, cache_dir: Path | None = None,
           offline: bool = False, stream_context_s: float = 10.0) -> list[Path]:
    """Write `model_id`'s graphs, vocabulary and config into `out`; the files written."""
    quiet_nemo()
    model = load_nemo_model(resolve_model_file(model_id, cache_dir, offline)).eval()
    out.mkdir(parents=True, exist_ok=True)
    transducer = hasattr(model, "joint")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's warnings about Python values in the graph
        if transducer:
            if hasattr(model, "ctc_decoder"):
                model.set_export_config({"decoder_type": "rnnt"})
                model.ctc_decoder.export(str(out / CTC_HEAD), check_trace=False)
            model.export(str(out / "model.onnx"), check_trace=False)  # NeMo names them encoder-/decoder_joint-
        else:
            model.export(str(out / CTC_MODEL), check_trace=False)
            model.decoder.export(str(out / CTC_HEAD), check_trace=False)  # for streaming's own encoder
        streaming = _export_streaming(model, out, stream_context_s)
    _write_vocabulary(model, out / "vocab.txt")
    processor = getattr(model.tokenizer, "tokenizer", None)
    if hasattr(processor, "serialized_model_proto"):
        (out / TOKENIZER).write_bytes(processor.serialized_model_proto())
    config = {**_config(model, transducer), "streaming": streaming}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if int8:
        _quantise(out, transducer)
    return sorted(p for p in out.iterdir() if p.is_file())


def _config(model: Any, transducer: bool) -> dict[str, Any]:
    cfg = model.cfg
    tdt = transducer and str(cfg.decoding.get("model_type", "rnnt")) == "tdt"
    kind = "tdt" if tdt else "rnnt" if transducer else "ctc"
    pre = cfg.preprocessor
    return {
        "model_type": f"nemo-conformer-{kind}",
        "features_size": int(pre.features),
        "subsampling_factor": int(cfg.encoder.subsampling_factor),
        "max_tokens_per_step": 10,
        # Not onnx-asr's: what featurisation and CTC lengths need, and a TDT's durations.
        "sample_rate": int(cfg.sample_rate),
        "n_fft": int(pre.n_fft),
        "window_size": float(pre.window_size),
        "window_stride": float(pre.window_stride),
        "normalize": str(pre.normalize),
        "causal_downsampling": bool(cfg.encoder.get("causal_downsampling", False)),
        **({"durations": list(cfg.model_defaults.tdt_durations)} if tdt else {}),
    }


def _export_streaming(model: Any, out: Path, stream_context_s: float) -> dict[str, Any]:
    """The cache-aware encoder step as two graphs (first chunk, later chunks); the chunking, for config.json."""
    from parakeet_serve.engine.nemo.stream_model import setup_streaming, smallest_tail
    from parakeet_serve.engine.streaming import pair

    encoder = model.encoder
    frame_s = float(model.cfg.preprocessor.window_stride) * int(encoder.subsampling_factor)
    setup_streaming(encoder, stream_context_s, frame_s)
    cfg = encoder.streaming_cfg
    first, later = pair(cfg.chunk_size)
    context, drop = pair(cfg.pre_encode_cache_size)[1], int(cfg.drop_extra_pre_encoded)
    channel, time, _ = encoder.get_initial_cache_state(batch_size=1)
    encoder.export_cache_support = True
    try:
        for name, dropped in ((STREAM_ENCODER_FIRST, 0), (STREAM_ENCODER, drop)):
            cfg.drop_extra_pre_encoded = dropped  # NeMo's export bakes the step's drop in
            encoder.export(str(out / name), check_trace=False)
    finally:
        cfg.drop_extra_pre_encoded = drop
        encoder.export_cache_support = False
    return {"first": first, "later": later, "context": context, "drop": drop,
            "min_tail": smallest_tail(encoder, later, context, drop), "out_frames": int(cfg.valid_out_len),
            "trained_for_streaming": encoder.att_context_style == "chunked_limited",
            "left_context_s": stream_context_s,
            # The caches' shapes without the batch (the graphs take them batch first).
            "cache_last_channel": [channel.shape[0], *channel.shape[2:]],
            "cache_last_time": [time.shape[0], *time.shape[2:]]}


def _write_vocabulary(model: Any, path: Path) -> None:
    tokenizer = model.tokenizer
    pieces = tokenizer.ids_to_tokens(list(range(tokenizer.vocab_size)))
    lines = [f"{piece} {i}" for i, piece in enumerate(pieces)] + [f"<blk> {len(pieces)}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _quantise(out: Path, transducer: bool) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    for name in (ENCODER if transducer else CTC_MODEL, STREAM_ENCODER_FIRST, STREAM_ENCODER):
        source, prepared = out / name, out / "quantisation-input.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(str(prepared), str(_int8(source)), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gemm"])
        prepared.unlink()
    if transducer:  # onnx-asr loads int8 pairs; the small decoder stays in float
        shutil.copy(out / DECODER_JOINT, _int8(out / DECODER_JOINT))


def _int8(path: Path) -> Path:
    return path.with_name(path.name.replace(".onnx", ".int8.onnx"))
