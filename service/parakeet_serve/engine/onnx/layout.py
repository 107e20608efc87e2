"""The files of an exported ONNX directory (onnx-asr's layout, plus the streaming graphs and the tokenizer): what
`parakeet-serve export` writes and the ONNX engine reads."""

ENCODER, DECODER_JOINT, CTC_HEAD, CTC_MODEL = (
    "encoder-model.onnx", "decoder_joint-model.onnx", "ctc_head-model.onnx", "model.onnx")
STREAM_ENCODER, STREAM_ENCODER_FIRST = "streaming-encoder-model.onnx", "streaming-encoder-first-model.onnx"
TOKENIZER = "tokenizer.model"  # the SentencePiece model, for spelling boosted phrases
