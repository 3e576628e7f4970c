"""Functions the renderer's worker processes run in tests (importable by name, so they pickle)."""

from __future__ import annotations

import os

from bots.certificates.render import CertificateData, RenderedCertificate, render_certificate


def render_with_pid(data: CertificateData) -> tuple[int, RenderedCertificate]:
    """The certificate and the id of the process that drew it."""
    return os.getpid(), render_certificate(data)
