#!/usr/bin/env python3
"""An opkg package feed from .ipk files, as OpenWrt's ipkg-make-index.sh
makes one: OUT/<arch>/ holds the packages of that architecture (and the
architecture-independent ones, `all`, in every folder), `Packages` (each
package's control fields plus Filename, Size and SHA256sum), `Packages.gz`
and, with a key, `Packages.sig`: a usign signature over `Packages`, which
opkg checks (with `option check_signature`) against the public keys in
/etc/opkg/keys/.

The signature is made by `usign` when it is on PATH, else by Debian's
`signify-openbsd` (the same Ed25519 format). The secret key comes from
--key FILE or the file named by $SOCKSBALANCE_FEED_KEY, never from the
repository; without either the feed is unsigned (and a router with
signature checks on refuses it). Everything is reproducible: sorted,
gzip without name or time, and Ed25519 signatures are deterministic.

Usage: opkg_feed.py OUT IPK... [--key SECRET_KEY]
       opkg_feed.py --fingerprint PUBLIC_KEY   (the file name opkg wants
                                                for it in /etc/opkg/keys)
"""

import argparse
import base64
import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile


def control_of(ipk):
    """The control file of an .ipk (a gzip'd tar holding control.tar.gz)."""
    with tarfile.open(ipk, "r:gz") as outer:
        member = next((m for m in outer.getmembers() if m.name.lstrip("./") == "control.tar.gz"), None)
        if member is None:
            raise ValueError(f"{ipk}: no control.tar.gz (not an .ipk?)")
        inner_bytes = outer.extractfile(member).read()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes), mode="r:gz") as inner:
        member = next((m for m in inner.getmembers() if m.name.lstrip("./") == "control"), None)
        if member is None:
            raise ValueError(f"{ipk}: no control file in control.tar.gz")
        return inner.extractfile(member).read().decode()


def fields(control):
    """The control file's fields (the first line of each), by name."""
    value = {}
    for line in control.splitlines():
        if line[:1] not in (" ", "\t") and ":" in line:
            key, v = line.split(":", 1)
            value.setdefault(key.strip(), v.strip())
    return value


def entry(ipk):
    """(architecture, package name, the index entry). The control file's
    lines are kept as they are, as ipkg-make-index.sh keeps them (opkg
    24.10 crashes on an empty field written as "Depends: ", with the
    space), with Filename, Size and SHA256sum before the Description."""
    data = open(ipk, "rb").read()
    control = control_of(ipk)
    value = fields(control)
    for need in ("Package", "Version", "Architecture"):
        if need not in value:
            raise ValueError(f"{ipk}: control has no {need}")
    extra = [f"Filename: {os.path.basename(ipk)}", f"Size: {len(data)}", f"SHA256sum: {hashlib.sha256(data).hexdigest()}"]
    lines = [line for line in control.splitlines() if line.strip()]
    at = next((i for i, line in enumerate(lines) if line.startswith("Description:")), len(lines))
    text = "\n".join(lines[:at] + extra + lines[at:]) + "\n"
    return value["Architecture"], value["Package"], text


def sign(message, key, sig):
    if shutil.which("usign"):
        cmd = ["usign", "-S", "-m", message, "-s", key, "-x", sig]
    elif shutil.which("signify-openbsd"):
        cmd = ["signify-openbsd", "-S", "-s", key, "-m", message, "-x", sig]
    else:
        sys.exit("opkg_feed.py: signing needs usign or signify-openbsd (Debian: apt-get install signify-openbsd)")
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"opkg_feed.py: {cmd[0]} could not sign {message}: {r.stderr.strip()}")


def fingerprint(public_key):
    """usign's key id (what `usign -F` prints): the 8 bytes after the
    algorithm in the key's base64 line, in hex."""
    lines = open(public_key).read().splitlines()
    if len(lines) < 2 or not lines[0].startswith("untrusted comment:"):
        sys.exit(f"opkg_feed.py: {public_key}: not a usign/signify public key")
    raw = base64.b64decode(lines[1])
    if len(raw) != 42 or raw[:2] != b"Ed":
        sys.exit(f"opkg_feed.py: {public_key}: not an Ed25519 usign/signify public key")
    return raw[2:10].hex()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", nargs="?")
    p.add_argument("ipks", nargs="*")
    p.add_argument("--key", default=os.environ.get("SOCKSBALANCE_FEED_KEY"))
    p.add_argument("--fingerprint", metavar="PUBLIC_KEY")
    a = p.parse_args()
    if a.fingerprint:
        print(fingerprint(a.fingerprint))
        return
    if not a.out or not a.ipks:
        p.error("needs OUT and at least one .ipk")
    if a.key and not os.path.isfile(a.key):
        sys.exit(f"opkg_feed.py: the key {a.key} does not exist")
    entries = []
    for ipk in a.ipks:
        try:
            entries.append((ipk, *entry(ipk)))
        except (ValueError, tarfile.TarError, OSError) as e:
            sys.exit(f"opkg_feed.py: {e}")
    arches = sorted({arch for _, arch, _, _ in entries if arch != "all"}) or ["all"]
    for arch in arches:
        folder = os.path.join(a.out, arch)
        os.makedirs(folder, exist_ok=True)
        mine = sorted((e for e in entries if e[1] in (arch, "all")), key=lambda e: (e[2], os.path.basename(e[0])))
        for ipk, _, _, _ in mine:
            shutil.copyfile(ipk, os.path.join(folder, os.path.basename(ipk)))
        index = "\n".join(text for _, _, _, text in mine)
        packages = os.path.join(folder, "Packages")
        with open(packages, "w") as f:
            f.write(index)
        with open(packages + ".gz", "wb") as f:
            with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=9) as z:
                z.write(index.encode())
        sig = packages + ".sig"
        if a.key:
            sign(packages, a.key, sig)
        elif os.path.exists(sig):
            os.remove(sig)
        print(f"{folder}: {len(mine)} package(s){', signed' if a.key else ', unsigned'}")


if __name__ == "__main__":
    main()
