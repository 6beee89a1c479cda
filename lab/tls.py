"""A throwaway certificate authority for lab tests of https downloads: made in the test, trusted on a lab
host for that test only.

    ca = TestCA(tmp_path / "ca")
    server = FileServer(root, f"{lab.SUBNET}.1", tls=ca.server_context(f"{lab.SUBNET}.1"))
    with ca.trusted_on("halo1"):       # /usr/local/share/ca-certificates + update-ca-certificates
        ...                            # curl on halo1 accepts https://10.151.<id>.1:<port>/...
    # afterwards the host's trust store is as before (update-ca-certificates --fresh)

The certificates live one day; the server's names its IP address (subjectAltName), as curl checks.
"""

from __future__ import annotations

import datetime
import ipaddress
import shlex
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lab import lab

TRUSTED_NAME = "halo-lab-test-ca.crt"  # in /usr/local/share/ca-certificates on the lab host


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class TestCA:
    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        self.name = _name(f"halo-provision lab test CA {x509.random_serial_number() % 10**12}")
        self.cert = (x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                  content_commitment=False, key_encipherment=False,
                                                  data_encipherment=False, key_agreement=False,
                                                  encipher_only=False, decipher_only=False), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)
        (self.directory / "ca.crt").write_bytes(self.pem)

    def server_context(self, address: str) -> ssl.SSLContext:
        """A TLS server context with a certificate for IP `address`, signed by this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(_name(address)).issuer_name(self.name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]),
                               critical=False)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(self.key, hashes.SHA256()))
        cert_file, key_file = self.directory / f"{address}.crt", self.directory / f"{address}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + self.pem)
        key_file.write_bytes(_pem(key))
        key_file.chmod(0o600)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        return context

    @contextmanager
    def trusted_on(self, name: str) -> Iterator[None]:
        """This CA in lab host `name`'s trust store (Debian's update-ca-certificates) while the block runs."""
        path = f"/usr/local/share/ca-certificates/{TRUSTED_NAME}"
        lab.ssh(name, f"printf %s {shlex.quote(self.pem.decode())} > {path} && update-ca-certificates >/dev/null")
        try:
            yield
        finally:
            lab.ssh(name, f"rm -f {path} && update-ca-certificates --fresh >/dev/null", check=False)
