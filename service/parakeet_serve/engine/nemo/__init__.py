"""The NeMo (PyTorch) backend: engine, stream model, greedy read-back, word boosting, ONNX export."""
