#!/usr/bin/env python3
"""Write the seed corpora of the store fuzz targets (fuzz/seeds/*; fuzz/corpus is the untracked working corpus): the hostile inputs
of issue 11 and the tarball checks of docs/security.md. Run from anywhere; rewrites the
files it owns. Archives are cut after their end marker (no 10 KiB record padding)."""

import io, os, sys, tarfile

HERE = os.path.dirname(os.path.abspath(__file__))


def member(t, name, kind=tarfile.REGTYPE, data=b"x\n", mode=0o644, link=""):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.linkname = kind, mode, link
    ti.size = len(data) if kind == tarfile.REGTYPE else 0
    t.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def archive(members, fmt=tarfile.GNU_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for m in members:
            member(t, *m)
    data = buf.getvalue()
    # Keep the members and the two zero blocks of the end marker.
    end = len(data.rstrip(b"\0"))
    end = (end + 511) // 512 * 512
    return data[:end] + b"\0" * 1024


D, L, S, F, H = tarfile.DIRTYPE, tarfile.LNKTYPE, tarfile.SYMTYPE, tarfile.FIFOTYPE, tarfile.LNKTYPE
TARS = {
    "plain": [("a", D, b"", 0o755), ("a/f",), ("a/x", tarfile.REGTYPE, b"#!/bin/sh\n", 0o4755)],
    "dotdot": [("ok/file",), ("ok/../../escape",)],
    "absolute": [("/tmp/x/PWNED",)],
    "through-symlink": [("link", S, b"", 0o777, "/etc"), ("link/passwd", tarfile.REGTYPE, b"evil\n")],
    "hardlink-outside": [("ok/file",), ("ok/pw", H, b"", 0o644, "../../etc/passwd")],
    "hardlink-dir": [("d", D, b"", 0o755), ("h", H, b"", 0o644, "d")],
    "fifo-and-dir-swap": [("p", F), ("p/x",), ("d", D, b"", 0), ("d", tarfile.REGTYPE)],
    "dot-and-empty": [(".", D, b"", 0o700), ("./",), ("a//b",), ("a/./c",)],
    "git-names": [(".git/config",), ("git~1/HEAD",), ("GITMOD~1",), (".g\u200cit/x",),
                  (".grove-",), (".grove-..",), ("gi7eba~1",)],
    "deep": [("d/" * 1100 + "f",)],
    "long-name": [("n" * 300,), ("d" * 200 + "/" + "e" * 200,)],
}
LAYERS = {
    "whiteout-self": [("a", D, b"", 0o755), ("a/keep",)], "whiteout-self-up": [("a/.wh.",)],
    "whiteout-dot": [("a", D, b"", 0o755), ("a/keep",)], "whiteout-dot-up": [("a/.wh..",)],
    "whiteout-dotdot": [("a/keep",)], "whiteout-dotdot-up": [("a/.wh...",)],
    "opaque": [("a/old",), ("b",)], "opaque-up": [("a/.wh..wh..opq",), ("a/new",), (".wh.b",)],
}


def write(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


for name, members in TARS.items():
    fmt = tarfile.PAX_FORMAT if name in ("deep", "git-names") else tarfile.GNU_FORMAT
    write("import_tar", name + ".tar", archive(members, fmt))
for name, members in LAYERS.items():
    if name.endswith("-up"):
        continue
    lower = archive(members)
    upper = archive(LAYERS[name + "-up"])
    blocks = len(lower) // 512
    write("apply_layer", name, bytes([blocks >> 8, blocks & 0xFF]) + lower + upper)
for name in ("dotdot", "absolute", "through-symlink", "deep", "git-names"):
    lower = archive(TARS[name])
    blocks = len(lower) // 512
    write("apply_layer", name, bytes([blocks >> 8, blocks & 0xFF]) + lower)
