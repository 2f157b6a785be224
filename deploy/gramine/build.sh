#!/usr/bin/env bash
# Renders, hashes and signs the Gramine-SGX manifest of chiron-enclave: one manifest for both
# roles (training and query). See README.md beside this file.
#
#   deploy/gramine/build.sh --binary target/release/chiron-enclave --key signer.pem \
#       --isvprodid 1 --isvsvn 1 [--out DIR] [--arch-libdir DIR]
#
# Writes into DIR (default ./chiron-sgx):
#   chiron-enclave                the binary, as measured
#   chiron-enclave.manifest       the rendered manifest (trusted file hashes added)
#   chiron-enclave.manifest.sgx   what gramine-sgx runs
#   chiron-enclave.sig            the signed SIGSTRUCT (MRENCLAVE, MRSIGNER, product id, SVN)
#   chiron-enclave-sgx            the launcher to pass to `chiron-host --enclave-bin`
# and prints what an owner pins. The host starts each enclave, of either role, through
#   DIR/chiron-enclave-sgx        (gramine-sgx chiron-enclave, run in DIR)
set -euo pipefail

die() {
    printf 'build.sh: %s\n' "$*" >&2
    exit 1
}

usage() {
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

here=$(cd "$(dirname "$0")" && pwd)
template="$here/chiron-enclave.manifest.template"
launcher="$here/chiron-enclave-sgx"

binary=""
key=""
isvprodid=""
isvsvn=""
out="chiron-sgx"
arch_libdir=""
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary=${2:?--binary needs a path}; shift 2 ;;
        --key) key=${2:?--key needs a path}; shift 2 ;;
        --isvprodid) isvprodid=${2:?--isvprodid needs a number}; shift 2 ;;
        --isvsvn) isvsvn=${2:?--isvsvn needs a number}; shift 2 ;;
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        --arch-libdir) arch_libdir=${2:?--arch-libdir needs a directory}; shift 2 ;;
        -h | --help) usage 0 ;;
        *) printf 'build.sh: unknown argument %s\n\n' "$1" >&2; usage 2 ;;
    esac
done

# --- Tools -----------------------------------------------------------------------------------

missing=()
for tool in gramine-manifest gramine-sgx-sign readelf sha256sum; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    die "missing: ${missing[*]}. This script needs Gramine 1.6 or later installed with SGX
support (gramine-manifest, gramine-sgx-sign) and binutils (readelf). Install them first
(see deploy/gramine/README.md); nothing was built."
fi

# The Python that runs Gramine's tools, to ask the installed Gramine its version and where its
# runtime libraries are.
# (`#!/usr/bin/python3`, or `#!/usr/bin/env python3`, whose interpreter is the second word.)
gramine_python=$(sed -n '1s/^#! *//p' "$(command -v gramine-manifest)" |
    awk '{ if ($1 ~ /\/env$/) print $2; else print $1 }')
case "$gramine_python" in
    /*) [ -x "$gramine_python" ] || gramine_python=python3 ;;
    '') gramine_python=python3 ;;
esac
gramine_info=$("$gramine_python" -c '
import pathlib, graminelibos
print(graminelibos.__version__)
print((pathlib.Path(graminelibos._CONFIG_PKGLIBDIR) / "runtime" / "glibc").resolve())
') || die "cannot import Gramine's Python package (graminelibos) with $gramine_python"
gramine_version=$(sed -n 1p <<<"$gramine_info")
runtime_dir=$(sed -n 2p <<<"$gramine_info")
major=${gramine_version%%.*}
minor=${gramine_version#*.}
minor=${minor%%[!0-9]*}
case "$major.$minor" in
    *[!0-9.]* | . ) die "cannot parse Gramine's version '$gramine_version'" ;;
esac
if [ "$major" -lt 1 ] || { [ "$major" -eq 1 ] && [ "$minor" -lt 6 ]; }; then
    die "Gramine $gramine_version is too old: 1.6 or later is needed"
fi
# Gramine 1.8 renamed `loader.entrypoint` to the table `loader.entrypoint.{uri,sha256}`, and
# 1.9 dropped the old name.
if [ "$major" -eq 1 ] && [ "$minor" -lt 8 ]; then
    entrypoint_syntax=string
else
    entrypoint_syntax=table
fi
[ -d "$runtime_dir" ] || die "Gramine's runtime directory $runtime_dir does not exist"

# --- Arguments -------------------------------------------------------------------------------

[ -n "$binary" ] || die "--binary is required (the release build of chiron-enclave)"
[ -f "$binary" ] || die "no binary at $binary"
[ -n "$key" ] || die "--key is required: the signer's RSA-3072 private key with exponent 3
(gramine-sgx-gen-private-key makes one). Its public key's SHA-256 is the MRSIGNER owners may pin."
[ -r "$key" ] || die "cannot read the signing key $key"
for pair in "isvprodid:$isvprodid" "isvsvn:$isvsvn"; do
    name=${pair%%:*}
    value=${pair#*:}
    case "$value" in
        '' ) die "--$name is required (0..65535)" ;;
        *[!0-9]* ) die "--$name must be a decimal number, not '$value'" ;;
    esac
    if [ "${#value}" -gt 5 ] || [ "$((10#$value))" -gt 65535 ]; then
        die "--$name must be at most 65535"
    fi
done
isvprodid=$((10#$isvprodid))
isvsvn=$((10#$isvsvn))

if [ -z "$arch_libdir" ]; then
    if command -v gcc >/dev/null 2>&1; then
        arch_libdir=/lib/$(gcc -dumpmachine)
    else
        arch_libdir=/lib/x86_64-linux-gnu
    fi
fi
[ -d "$arch_libdir" ] || die "no library directory $arch_libdir (set --arch-libdir)"

# --- The binary and the libraries it loads ---------------------------------------------------

readelf -h "$binary" | grep -q 'Machine:.*X86-64' || die "$binary is not an x86-64 ELF binary"
interp=$(readelf -l "$binary" | sed -n 's/.*Requesting program interpreter: \(.*\)\]/\1/p')
[ -n "$interp" ] || die "$binary is not dynamically linked; Gramine runs it with its own glibc"
needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }

# What Gramine's patched glibc provides, and the one library taken from the host: the GCC
# unwinder Rust links. Anything else (libstdc++, libtorch...) is refused: such a build does not
# belong in the enclave.
glibc_libs=" ld-linux-x86-64.so.2 libc.so.6 libm.so.6 libpthread.so.0 libdl.so.2 librt.so.1 libutil.so.1 "
host_allowed=" libgcc_s.so.1 "
runtime_libs=" $(basename "$interp") libc.so.6 "
host_libs=" "
add_lib() {
    case "$glibc_libs" in
        *" $1 "*) case "$runtime_libs" in *" $1 "*) ;; *) runtime_libs+="$1 " ;; esac; return ;;
    esac
    case "$host_allowed" in
        *" $1 "*) case "$host_libs" in *" $1 "*) ;; *) host_libs+="$1 " ;; esac; return ;;
    esac
    die "$binary needs $1, which is neither glibc nor libgcc_s: build chiron-enclave without
optional native libraries (for example without the libtorch feature)"
}
for lib in $(needed "$binary"); do add_lib "$lib"; done
for lib in $host_libs; do
    [ -f "$arch_libdir/$lib" ] || die "$lib is not in $arch_libdir (set --arch-libdir)"
    for dep in $(needed "$arch_libdir/$lib"); do add_lib "$dep"; done
done
for lib in $runtime_libs; do
    [ -f "$runtime_dir/$lib" ] || die "Gramine's runtime has no $lib ($runtime_dir)"
done

# The binary runs against Gramine's glibc, not the build machine's: it must not need a newer
# glibc symbol version than that one defines.
glibc_version() { readelf -V "$1" | grep -o 'GLIBC_2\.[0-9]*' | sort -uV | tail -n 1; }
needs=$(glibc_version "$binary")
has=$(glibc_version "$runtime_dir/libc.so.6")
if [ -n "$needs" ] && [ -n "$has" ] &&
    [ "$(printf '%s\n%s\n' "$needs" "$has" | sort -V | tail -n 1)" != "$has" ]; then
    die "$binary needs $needs but Gramine $gramine_version's glibc provides up to $has: build
it on a distribution whose glibc is not newer than Gramine's"
fi

# --- Render, check, sign ---------------------------------------------------------------------

[ -f "$launcher" ] || die "the launcher $launcher is missing"
mkdir -p "$out"
out=$(cd "$out" && pwd)
install -m 0755 "$binary" "$out/chiron-enclave"

echo "Gramine $gramine_version, runtime $runtime_dir"
echo "trusted libraries: ${runtime_libs# }(Gramine) ${host_libs# }($arch_libdir)"

name=chiron-enclave
# Relative trusted-file URIs are measured from the output directory, as gramine-sgx will
# resolve them when started there (the launcher changes into it).
(
    cd "$out"
    gramine-manifest \
        -Dentrypoint_syntax="$entrypoint_syntax" \
        -Darch_libdir="$arch_libdir" \
        -Druntime_libs="$runtime_libs" \
        -Dhost_libs="$host_libs" \
        -Disvprodid="$isvprodid" \
        -Disvsvn="$isvsvn" \
        "$template" "$name.manifest"
)

# A last look at what will be measured: none of the settings that would let the host in, the
# fixed command line both roles share, and CHIRON_ROLE as the only value from the host.
"$gramine_python" - "$out/$name.manifest" <<'PY' || die "$name.manifest failed the checks above"
import sys
try:
    import tomllib
except ImportError:
    import tomli as tomllib
path = sys.argv[1]
with open(path, "rb") as f:
    m = tomllib.load(f)
bad = []
# The one environment variable the host may pass in: the role, which is attested.
ALLOWED_PASSTHROUGH = "loader.env.CHIRON_ROLE."
def walk(node, prefix=""):
    if isinstance(node, dict):
        for k, v in node.items():
            if "insecure__" in k or k.startswith("debug__"):
                bad.append(prefix + k)
            if k == "passthrough" and prefix != ALLOWED_PASSTHROUGH:
                bad.append(prefix + k + " (an environment variable from the host)")
            walk(v, prefix + k + ".")
    elif isinstance(node, list):
        for v in node:
            walk(v, prefix)
walk(m)
sgx, loader, sys_ = m.get("sgx", {}), m.get("loader", {}), m.get("sys", {})
if sgx.get("debug") is not False: bad.append("sgx.debug is not false")
if sgx.get("remote_attestation") != "dcap": bad.append('sgx.remote_attestation is not "dcap"')
if sgx.get("allowed_files"): bad.append("sgx.allowed_files")
if sgx.get("file_check_policy", "strict") != "strict": bad.append("sgx.file_check_policy")
if sys_.get("enable_extra_runtime_domain_names_conf"): bad.append("sys.enable_extra_runtime_domain_names_conf")
if "argv_src_file" in loader or "env_src_file" in loader: bad.append("loader.*_src_file")
if loader.get("argv") != ["/chiron-enclave", "serve", "--tee", "sgx"]:
    bad.append("loader.argv is not [/chiron-enclave, serve, --tee, sgx]")
env = loader.get("env", {})
passthrough = sorted(k for k, v in env.items() if isinstance(v, dict) and "passthrough" in v)
if passthrough != ["CHIRON_ROLE"]:
    bad.append(f"loader.env passthrough is {passthrough}, not exactly [CHIRON_ROLE]")
if env.get("CHIRON_ROLE") != {"passthrough": True}:
    bad.append("loader.env.CHIRON_ROLE is not { passthrough = true }")
for k, v in env.items():
    fixed = isinstance(v, str) or (isinstance(v, dict) and set(v) == {"value"})
    if k != "CHIRON_ROLE" and not fixed:
        bad.append(f"loader.env.{k} is neither a fixed string nor {{ value = ... }}")
for line in bad:
    print(f"{path}: refused: {line}", file=sys.stderr)
sys.exit(1 if bad else 0)
PY

# --date 0000-00-00: the signing date is signed but not measured; a fixed one makes the .sig
# byte-for-byte reproducible (RSA PKCS#1 v1.5 signatures are deterministic).
(
    cd "$out"
    gramine-sgx-sign \
        --key "$(cd "$(dirname "$key")" && pwd)/$(basename "$key")" \
        --manifest "$name.manifest" \
        --output "$name.manifest.sgx" \
        --sigfile "$name.sig" \
        --date 0000-00-00
)

# The launcher chiron-host runs (`--enclave-bin`). It is not measured: it runs on the host,
# which is untrusted anyway.
install -m 0755 "$launcher" "$out/chiron-enclave-sgx"

echo
echo "Built in $out:"
(cd "$out" && sha256sum chiron-enclave chiron-enclave.manifest.sgx chiron-enclave.sig)
echo
echo "What an owner pins, the same for both roles (MRENCLAVE, or MRSIGNER + product id +"
echo "minimum SVN):"
if command -v chiron >/dev/null 2>&1; then
    chiron measure --sgx-sigstruct "$out/chiron-enclave.sig"
else
    echo "    chiron measure --sgx-sigstruct $out/chiron-enclave.sig"
fi
if command -v gramine-sgx-sigstruct-view >/dev/null 2>&1; then
    echo
    echo "The same values as Gramine reads them (a cross-check):"
    gramine-sgx-sigstruct-view "$out/chiron-enclave.sig"
fi
echo
echo "Start chiron-host with --enclave-bin $out/chiron-enclave-sgx"
