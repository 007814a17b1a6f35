"""Certificates for the TLS tests, made by ``trustme``, a test-only dependency.

The fixtures in conftest.py use these: an authority for each test module,
and files for each test of a certificate for 127.0.0.1 and localhost, its
key, and the authority that signed it, as ``mechat serve --tls-cert`` and
``mechat chat --cafile`` take them.
"""

from pathlib import Path
from typing import NamedTuple

import trustme

#: The names each test certificate is issued for.
NAMES = ("127.0.0.1", "localhost")


class Files(NamedTuple):
    """A certificate, its key and the authority that signed it, as files."""

    cert: str
    key: str
    cafile: str


def issue(authority: trustme.CA, directory: Path) -> Files:
    """Write a certificate for NAMES signed by ``authority``, its key and the authority to ``directory``."""
    issued = authority.issue_cert(*NAMES)
    files = Files(str(directory / "cert.pem"), str(directory / "key.pem"), str(directory / "ca.pem"))
    issued.cert_chain_pems[0].write_to_path(files.cert)
    issued.private_key_pem.write_to_path(files.key)
    authority.cert_pem.write_to_path(files.cafile)
    return files
