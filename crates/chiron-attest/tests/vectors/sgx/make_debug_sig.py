#!/usr/bin/env python3
"""Makes `chiron-debug.sig`, the second SIGSTRUCT vector of this directory (see README.md).

A SIGSTRUCT laid out as gramine-sgx-sign writes one (Intel SDM vol. 3D, "Enclave Signature
Structure"), written here independently of the Rust parser, with the values the real vector
`enarx-encl.sig` leaves at zero:

- DATE 2025-06-20 (binary-coded decimal: 20 06 25 20);
- MISCSELECT 1 (EXINFO), ATTRIBUTES.FLAGS 0x6 (MODE64BIT | DEBUG), XFRM 0x3;
- ENCLAVEHASH = SHA-256(b"chiron test enclave"), a stand-in, not a real measurement;
- ISVPRODID 0x0102 and ISVSVN 0x0304, so that a byte-order mistake shows.

It is signed with a fresh RSA-3072 key of exponent 3 (PKCS#1 v1.5, SHA-256, over bytes
0..128 and 900..1028; modulus, signature, Q1 and Q2 little-endian). The key is thrown away:
running this again gives another MRSIGNER and signature, which the tests then need.

Needs the `cryptography` package. Run from this directory:
    python3 make_debug_sig.py
"""

import hashlib
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

SIZE = 1808
HEADER = bytes.fromhex("06000000e10000000000010000000000")
HEADER2 = bytes.fromhex("01010000600000006000000001000000")


def main() -> None:
    key = rsa.generate_private_key(public_exponent=3, key_size=3072)
    n = key.public_key().public_numbers().n

    out = bytearray(SIZE)
    out[0:16] = HEADER
    struct.pack_into("<I", out, 16, 0)  # VENDOR: not Intel
    out[20:24] = bytes([0x20, 0x06, 0x25, 0x20])  # DATE: day, month, year (BCD)
    out[24:40] = HEADER2
    struct.pack_into("<I", out, 40, 0)  # SWDEFINED
    out[128:512] = n.to_bytes(384, "little")  # MODULUS
    struct.pack_into("<I", out, 512, 3)  # EXPONENT
    struct.pack_into("<I", out, 900, 1)  # MISCSELECT: EXINFO
    struct.pack_into("<I", out, 904, 0xFFFFFFFF)  # MISCMASK
    struct.pack_into("<QQ", out, 928, 0x6, 0x3)  # ATTRIBUTES: flags, XFRM
    struct.pack_into("<QQ", out, 944, 0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFF9FF1B)  # ATTRIBUTEMASK
    out[960:992] = hashlib.sha256(b"chiron test enclave").digest()  # ENCLAVEHASH
    struct.pack_into("<HH", out, 1024, 0x0102, 0x0304)  # ISVPRODID, ISVSVN

    signed = bytes(out[0:128]) + bytes(out[900:1028])
    s = int.from_bytes(key.sign(signed, padding.PKCS1v15(), hashes.SHA256()), "big")
    out[516:900] = s.to_bytes(384, "little")  # SIGNATURE
    q1, rest = divmod(s * s, n)
    q2 = rest * s // n
    out[1040:1424] = q1.to_bytes(384, "little")
    out[1424:1808] = q2.to_bytes(384, "little")

    with open("chiron-debug.sig", "wb") as f:
        f.write(out)
    print("mrenclave", out[960:992].hex())
    print("mrsigner ", hashlib.sha256(out[128:512]).hexdigest())


if __name__ == "__main__":
    main()
