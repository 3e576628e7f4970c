"""The console's browser tests run against the whole application of tests/certificates_e2e."""

from tests.certificates_e2e.conftest import server

__all__ = ["server"]
