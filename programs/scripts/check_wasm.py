#!/usr/bin/env python3
"""Checks that compiled Chiron programs import only from module "chiron" and export only
`memory`, `chiron_train`, `chiron_predict` (plus rustc's `__data_end` / `__heap_base`).

Usage: check_wasm.py FILE.wasm...   (exit status 1 if any module breaks the rules)
"""
import sys

ALLOWED_EXPORTS = {"memory", "chiron_train", "chiron_predict", "__data_end", "__heap_base"}
REQUIRED_EXPORTS = {"memory", "chiron_train", "chiron_predict"}
KINDS = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}


def leb(buf, pos):
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def name(buf, pos):
    n, pos = leb(buf, pos)
    return buf[pos:pos + n].decode("utf-8"), pos + n


def skip_import_desc(buf, pos, kind):
    if kind == 0:  # func: type index
        return leb(buf, pos)[1]
    if kind == 1:  # table: reftype + limits
        pos += 1
    if kind in (1, 2):  # limits
        flags = buf[pos]
        pos += 1
        _, pos = leb(buf, pos)
        if flags & 1:
            _, pos = leb(buf, pos)
        return pos
    if kind == 3:  # global: valtype + mut
        return pos + 2
    if kind == 4:  # tag: attribute + type index
        return leb(buf, pos + 1)[1]
    raise ValueError(f"unknown import kind {kind}")


def sections(buf):
    assert buf[:4] == b"\0asm", "not a wasm module"
    pos = 8
    while pos < len(buf):
        sid = buf[pos]
        size, pos = leb(buf, pos + 1)
        yield sid, buf[pos:pos + size]
        pos += size


def inspect(path):
    buf = open(path, "rb").read()
    imports, exports = [], []
    for sid, body in sections(buf):
        if sid == 2:
            count, pos = leb(body, 0)
            for _ in range(count):
                module, pos = name(body, pos)
                field, pos = name(body, pos)
                kind = body[pos]
                pos = skip_import_desc(body, pos + 1, kind)
                imports.append((module, field, KINDS[kind]))
        elif sid == 7:
            count, pos = leb(body, 0)
            for _ in range(count):
                field, pos = name(body, pos)
                kind = body[pos]
                _, pos = leb(body, pos + 1)
                exports.append((field, KINDS[kind]))
    return len(buf), imports, exports


def main():
    ok = True
    for path in sys.argv[1:]:
        size, imports, exports = inspect(path)
        foreign = [i for i in imports if i[0] != "chiron" or i[2] != "func"]
        names = {e[0] for e in exports}
        extra, missing = names - ALLOWED_EXPORTS, REQUIRED_EXPORTS - names
        good = not foreign and not extra and not missing
        ok &= good
        print(f"{'ok  ' if good else 'FAIL'} {path}: {size} bytes, {len(imports)} imports "
              f"({', '.join(sorted(f for _, f, _ in imports))}); exports {sorted(names)}")
        for m, f, k in foreign:
            print(f"     foreign import {m}.{f} ({k})")
        for e in sorted(extra):
            print(f"     unexpected export {e}")
        for e in sorted(missing):
            print(f"     missing export {e}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
