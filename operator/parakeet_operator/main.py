"""`parakeet-operator`: run the kopf operator for `ParakeetASR` resources."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import kopf

from parakeet_operator.settings import OperatorSettings, load_operator_settings


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="parakeet-operator", description=__doc__.splitlines()[0])
    for name, field in OperatorSettings.model_fields.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, metavar="VALUE",
                            help=f"{field.description or ''} [PARAKEET_OPERATOR_{name.upper()}]")
    args = parser.parse_args(argv)
    settings = load_operator_settings(**vars(args))
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    import parakeet_operator.handlers  # noqa: F401  (registers the handlers with kopf)

    liveness = f"http://0.0.0.0:{settings.liveness_port}/healthz" if settings.liveness_port else None
    kopf.run(standalone=True, clusterwide=not settings.namespace,
             namespaces=[settings.namespace] if settings.namespace else (), liveness_endpoint=liveness)
