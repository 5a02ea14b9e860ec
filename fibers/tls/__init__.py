"""Real networks: TCP with mutual TLS 1.3 between nodes (see docs/transport-and-runtime.md,
"The TLS transport").

``TlsTransport`` implements ``fibers.transport.Transport``; ``TlsFiles`` names a node's TLS
material; the certificate helpers make a network's root CA and its nodes' certificates, which
bind a party name (CN) to its identity key (``IDENTITY_KEY_OID``).
"""

from fibers.tls._certs import (
    IDENTITY_KEY_OID,
    CertificateMismatch,
    IssuedCert,
    issue_node_cert,
    make_root_ca,
    peer_party,
    write_cert,
    write_private_key,
)
from fibers.tls._framing import MAX_FRAME, BadFrame, encode_frame, read_frame
from fibers.tls._transport import TlsFiles, TlsTransport, TransportStats

__all__ = [
    "IDENTITY_KEY_OID",
    "MAX_FRAME",
    "BadFrame",
    "CertificateMismatch",
    "IssuedCert",
    "TlsFiles",
    "TlsTransport",
    "TransportStats",
    "encode_frame",
    "issue_node_cert",
    "make_root_ca",
    "peer_party",
    "read_frame",
    "write_cert",
    "write_private_key",
]
