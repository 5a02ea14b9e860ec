"""Certificates of a network (see docs/transport-and-runtime.md, "The TLS transport").

A network has one root CA. Each node gets a TLS key and a certificate issued by that CA whose
subject CN is the node's party name and which carries the party's identity public key (the raw
Ed25519 key of ``fibers.Party.owning_key``) in a private, non-critical extension
(``IDENTITY_KEY_OID``). The CA's signature binds the two; a transport checks both against the
network map (``peer_party``), so a certificate can only ever speak for the party it names.

TLS keys are ECDSA P-256 (every TLS 1.3 stack supports them); the identity key stays what it
is, an Ed25519 signing key that never leaves the node's encrypted storage.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fibers._identity import Party
from fibers._node_types import NetworkMap

__all__ = [
    "IDENTITY_KEY_OID",
    "CertificateMismatch",
    "IssuedCert",
    "issue_node_cert",
    "make_root_ca",
    "peer_party",
    "write_cert",
    "write_private_key",
]

IDENTITY_KEY_OID: Final = x509.ObjectIdentifier("1.3.6.1.4.1.59999.1.1")
"""The extension holding the party's raw Ed25519 identity public key (32 bytes)."""

_VALIDITY: Final = datetime.timedelta(days=3650)


class CertificateMismatch(Exception):
    """A peer's certificate does not match the network map: unknown name, or a name bound to
    another identity key. The connection must be closed."""


@dataclass(frozen=True, slots=True)
class IssuedCert:
    """A private key with its certificate."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def make_root_ca(name: str) -> IssuedCert:
    """A new self-signed root CA called ``name``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return IssuedCert(key, cert)


def issue_node_cert(ca: IssuedCert, party: Party, host: str) -> IssuedCert:
    """A TLS key and certificate for ``party`` (CN = its name, its identity key in the
    ``IDENTITY_KEY_OID`` extension), usable as TLS server and client, issued by ``ca``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, party.name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .add_extension(x509.UnrecognizedExtension(IDENTITY_KEY_OID, party.owning_key),
                       critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return IssuedCert(key, cert)


def write_private_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    """Write ``key`` as unencrypted PKCS#8 PEM to a new owner-only file ``path``."""
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    with open(path, "xb", opener=_private_opener) as f:
        f.write(data)


def write_cert(cert: x509.Certificate, path: Path) -> None:
    """Write ``cert`` as PEM to ``path``."""
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _private_opener(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def peer_party(der: bytes | None, network_map: NetworkMap) -> Party:
    """The party a peer's certificate (DER, already verified against the network's CA by the
    TLS handshake) speaks for: its CN must name a party of ``network_map`` and its identity
    key extension must hold that party's key. Raises ``CertificateMismatch`` otherwise."""
    if der is None:
        raise CertificateMismatch("the peer presented no certificate")
    cert = x509.load_der_x509_certificate(der)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or not isinstance(names[0].value, str):
        raise CertificateMismatch("the peer's certificate has no single common name")
    name = names[0].value
    try:
        party = network_map.party(name)
    except KeyError:
        raise CertificateMismatch(f"the peer's certificate names {name!r}, which is not in "
                                  "the network map") from None
    try:
        ext = cert.extensions.get_extension_for_oid(IDENTITY_KEY_OID).value
    except x509.ExtensionNotFound:
        raise CertificateMismatch(f"the certificate of {name!r} carries no identity key") \
            from None
    if not isinstance(ext, x509.UnrecognizedExtension) or ext.value != party.owning_key:
        raise CertificateMismatch(f"the certificate of {name!r} carries an identity key other "
                                  "than the network map's for that party")
    return party
