"""Server TLS credentials that pick up rotated certificate files without a restart.

gRPC asks for the certificate configuration at each new handshake; we re-read the files only
when their modification times change. Established connections (and their streams) keep the
certificate they were opened with.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import grpc

log = logging.getLogger(__name__)


class ReloadingCertificates:
    """Holds the PEM files and answers gRPC's per-handshake fetch."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None) -> None:
        self._paths = tuple(p for p in (cert, key, client_ca) if p is not None)
        self._cert, self._key, self._client_ca = cert, key, client_ca
        self._lock = threading.Lock()
        self._stamp = self._mtimes()
        self.initial = self._configuration()

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self.initial, self.fetch, require_client_authentication=self._client_ca is not None
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """New configuration when a file changed since the last look, else None (keep the current one)."""
        with self._lock:
            try:
                stamp = self._mtimes()
                if stamp == self._stamp:
                    return None
                config = self._configuration()
            except (OSError, ValueError) as exc:  # half-written rotation: keep serving the old pair
                log.warning("certificate reload failed; keeping the current certificate", extra={"error": str(exc)})
                return None
            self._stamp = stamp
            log.info("certificates reloaded", extra={"cert": str(self._cert)})
            return config

    def _mtimes(self) -> tuple[int, ...]:
        return tuple(p.stat().st_mtime_ns for p in self._paths)

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        pair = (self._key.read_bytes(), self._cert.read_bytes())
        ca = self._client_ca.read_bytes() if self._client_ca else None
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=ca)
