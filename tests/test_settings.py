"""Settings: environment variables, explicit values, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from parakeet_serve.errors import SettingsError
from parakeet_serve.settings import load_settings


def test_defaults_match_the_reference_service(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings()
    assert s.model_id == "nvidia/parakeet-tdt_ctc-1.1b"
    assert (s.microbatch_window_ms, s.microbatch_max_batch, s.port) == (8.0, 32, 50051)
    assert (s.max_audio_seconds, s.max_upload_mb) == (600.0, 64)
    assert s.served_model_name == "parakeet-tdt_ctc-1.1b"


def test_environment_and_port_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARAKEET_MODEL_ID", "/models/x.nemo")
    monkeypatch.setenv("PORT", "6000")
    monkeypatch.setenv("PARAKEET_MICROBATCH_MAX_BATCH", "64")
    s = load_settings()
    assert (s.model_id, s.port, s.microbatch_max_batch, s.served_model_name) == ("/models/x.nemo", 6000, 64, "x")
    assert load_settings(port=7000).port == 7000  # explicit (CLI) values win


@pytest.mark.parametrize(
    ("env", "phrase"),
    [
        ({"PARAKEET_MICROBATCH_MAX_BATCH": "0"}, "PARAKEET_MICROBATCH_MAX_BATCH='0'"),
        ({"PARAKEET_MAX_AUDIO_SECONDS": "lots"}, "PARAKEET_MAX_AUDIO_SECONDS='lots'"),
        ({"PORT": "70000"}, "PORT='70000'"),
        ({"PARAKEET_HOST_MEMORY_RETAIN_MB": "4096"}, "PARAKEET_HOST_MEMORY_RETAIN_MB='4096'"),
        ({"PARAKEET_DEVICE": "tpu"}, "PARAKEET_DEVICE='tpu'"),
        ({"PARAKEET_GRPC_TLS": "true"}, "needs PARAKEET_GRPC_CERT and PARAKEET_GRPC_KEY"),
        ({"PARAKEET_GRPC_TLS": "1", "PARAKEET_GRPC_CERT": "/no/such.crt", "PARAKEET_GRPC_KEY": "/no/such.key"},
         "no such file"),
        ({"PARAKEET_GRPC_CLIENT_CA": "/ca.pem"}, "needs PARAKEET_GRPC_TLS"),
        ({"PARAKEET_BACKEND": "onnx", "PARAKEET_PRECISION": "bf16"}, "PARAKEET_PRECISION=bf16 applies to the nemo"),
        ({"PARAKEET_ONNX_INT8": "true"}, "PARAKEET_ONNX_INT8=true needs PARAKEET_BACKEND=onnx"),
    ],
)
def test_bad_values_name_the_variable_and_value(monkeypatch: pytest.MonkeyPatch, env: dict, phrase: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert phrase in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_setting_is_refused() -> None:
    with pytest.raises(SettingsError):
        load_settings(modle_id="typo")


def test_tls_files_are_checked(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("y")
    assert load_settings(grpc_tls=True, grpc_cert=cert, grpc_key=key).grpc_tls


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """The image leaves PARAKEET_MODEL_ID empty unless a model is baked in."""
    monkeypatch.setenv("PARAKEET_MODEL_ID", "")
    monkeypatch.setenv("PARAKEET_HUB_OFFLINE", "")
    s = load_settings()
    assert s.model_id == "nvidia/parakeet-tdt_ctc-1.1b" and s.hub_offline is False


def test_every_setting_is_described_in_serve_help() -> None:
    import subprocess
    import sys

    from parakeet_serve.settings import Settings

    shown = " ".join(subprocess.run([sys.executable, "-m", "parakeet_serve", "serve", "--help"], capture_output=True,
                                    text=True, check=True, timeout=60).stdout.split())
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no docstring"
        assert " ".join(field.description.split())[:30] in shown, name
