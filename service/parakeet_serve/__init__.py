"""parakeet-serve: NVIDIA Parakeet speech recognition behind NVIDIA Riva's gRPC ASR protocol."""

__version__ = "0.1.0"
