#!/usr/bin/env python3
"""Makes the two forged VCEKs of this directory (see README.md).

Each is the real Milan VCEK `vcek_milan.der` (same subject, public key, validity and AMD
extensions; serial number 1, since AMD's is 0, which `cryptography` refuses to write)
re-issued by a certificate authority made here, with a fresh RSA-PSS key:

- forged-vcek-own-root.der: issued by "Not an AMD signing key", a name of our own;
- forged-vcek-amd-name.der: issued under the exact name of AMD's Milan ASK ("SEV-Milan"),
  but signed by our key, not AMD's.

The report `report_milan.hex` still verifies under their public key, so only the chain is
wrong. The CA key is thrown away; running this again gives other (equally valid) bytes.

Needs the `cryptography` package (41 or later). Run from this directory:
    python3 forge.py path/to/milan/ask.pem
where ask.pem is AMD's Milan ASK (the sev crate ships it as src/certs/snp/builtin/milan/ask.pem).
"""

import sys
import warnings

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID


def reissue(vcek: x509.Certificate, issuer: x509.Name, key: rsa.RSAPrivateKey) -> bytes:
    builder = (
        x509.CertificateBuilder()
        .subject_name(vcek.subject)
        .issuer_name(issuer)
        .public_key(vcek.public_key())
        # AMD's VCEKs have serial number 0, which the library refuses to write.
        .serial_number(1)
        .not_valid_before(vcek.not_valid_before_utc)
        .not_valid_after(vcek.not_valid_after_utc)
    )
    for ext in vcek.extensions:
        builder = builder.add_extension(ext.value, critical=ext.critical)
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
    cert = builder.sign(key, hashes.SHA384(), rsa_padding=pss)
    return cert.public_bytes(Encoding.DER)


def main() -> None:
    # AMD's serial number 0 is not RFC 5280 conformant; reading it only warns.
    warnings.simplefilter("ignore")
    with open(sys.argv[1], "rb") as f:
        amd_ask = x509.load_pem_x509_certificate(f.read())
    with open("vcek_milan.der", "rb") as f:
        vcek = x509.load_der_x509_certificate(f.read())
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    own = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Chiron test vectors"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Not an AMD signing key"),
        ]
    )
    with open("forged-vcek-own-root.der", "wb") as f:
        f.write(reissue(vcek, own, key))
    with open("forged-vcek-amd-name.der", "wb") as f:
        f.write(reissue(vcek, amd_ask.subject, key))


if __name__ == "__main__":
    main()
