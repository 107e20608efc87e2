"""`parakeet-operator`: run the kopf operator for `ParakeetASR` resources."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import kopf

from parakeet_operator.settings import OperatorSettings, load_operator_settings


def main(argv: Sequence[str] | None = None) -> None:
    # Configuration is by variables only: the handlers read them when kopf imports them.
    variables = "\n".join(f"  PARAKEET_OPERATOR_{name.upper():<22} {field.description}"
                          for name, field in OperatorSettings.model_fields.items())
    argparse.ArgumentParser(prog="parakeet-operator", description=__doc__.splitlines()[0],
                            epilog=f"settings (environment variables):\n{variables}",
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    settings = load_operator_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    import parakeet_operator.handlers  # noqa: F401  (registers the handlers with kopf)

    liveness = f"http://0.0.0.0:{settings.liveness_port}/healthz" if settings.liveness_port else None
    kopf.run(standalone=True, clusterwide=not settings.namespace,
             namespaces=[settings.namespace] if settings.namespace else (), liveness_endpoint=liveness)
