"""The ONNX Runtime backend: engine, stream model, greedy decoder, word boosting, beam search."""
