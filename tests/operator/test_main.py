"""`parakeet-operator`, the console script: configured by its variables, each described in --help."""

from __future__ import annotations

import subprocess
import sys

from parakeet_operator.settings import OperatorSettings


def test_the_operators_help_describes_every_variable() -> None:
    shown = subprocess.run([sys.executable, "-m", "parakeet_operator", "--help"], capture_output=True, text=True,
                           check=True, timeout=60).stdout
    for name, field in OperatorSettings.model_fields.items():
        assert f"PARAKEET_OPERATOR_{name.upper()}" in shown and field.description and field.description in shown
