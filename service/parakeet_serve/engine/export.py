"""`parakeet-serve export`: a NeMo model as ONNX graphs in onnx-asr's directory layout.

NeMo's own exporter writes the graphs: `encoder-model.onnx` and `decoder_joint-model.onnx` for a
transducer (a hybrid's CTC head as `ctc_head-model.onnx`, fed by the same encoder), `model.onnx`
for a CTC model. Beside them `vocab.txt` (`piece id` per line, `<blk>` last) and `config.json`
(onnx-asr's keys plus the feature settings this server needs). `int8` adds onnx-asr's
`*.int8.onnx` files: the encoder's matrix products quantised dynamically by onnxruntime.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

from parakeet_serve.engine.loader import load_nemo_model, quiet_nemo, resolve_model_file

ENCODER, DECODER_JOINT, CTC_HEAD, CTC_MODEL = (
    "encoder-model.onnx", "decoder_joint-model.onnx", "ctc_head-model.onnx", "model.onnx")


def export(model_id: str, out: Path, int8: bool = False, cache_dir: Path | None = None,
           offline: bool = False) -> list[Path]:
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
    _write_vocabulary(model, out / "vocab.txt")
    (out / "config.json").write_text(json.dumps(_config(model, transducer), indent=2) + "\n")
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


def _write_vocabulary(model: Any, path: Path) -> None:
    tokenizer = model.tokenizer
    pieces = tokenizer.ids_to_tokens(list(range(tokenizer.vocab_size)))
    lines = [f"{piece} {i}" for i, piece in enumerate(pieces)] + [f"<blk> {len(pieces)}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _quantise(out: Path, transducer: bool) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = out / (ENCODER if transducer else CTC_MODEL)
    prepared = out / "quantisation-input.onnx"
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    quantize_dynamic(str(prepared), str(_int8(source)), weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul", "Gemm"])
    prepared.unlink()
    if transducer:  # onnx-asr loads int8 pairs; the small decoder stays in float
        shutil.copy(out / DECODER_JOINT, _int8(out / DECODER_JOINT))


def _int8(path: Path) -> Path:
    return path.with_name(path.name.replace(".onnx", ".int8.onnx"))
