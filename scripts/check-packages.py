#!/usr/bin/env python3
"""Unpacks every OpenWrt .ipk in a directory (default dist/openwrt) and
checks what opkg and OpenWrt rely on:

- the outer gzip'd tar holds exactly ./debian-binary ("2.0\\n"),
  ./data.tar.gz and ./control.tar.gz;
- control has every field, Architecture matching the file name, an empty
  Depends, and Installed-Size equal to the payload's bytes;
- conffiles lists /etc/config/socksbalance and /etc/socksbalance/config.yaml;
- postinst/prerm are executable and call default_postinst/default_prerm;
- the payload's paths, modes and owners (root, numeric 0);
- the binary's ELF class, endianness and machine match the architecture,
  and it is statically linked (no PT_INTERP).

Exits non-zero on the first package that fails. Standard library only.
Usage: check-packages.py [DIR]
"""

import gzip
import io
import os
import struct
import sys
import tarfile

# OpenWrt arch prefix -> (ELF class, data encoding, e_machine)
# class 1 = 32-bit, 2 = 64-bit; data 1 = little-endian, 2 = big-endian.
ELF = {
    "x86_64": (2, 1, 62),
    "i386": (1, 1, 3),
    "aarch64": (2, 1, 183),
    "arm": (1, 1, 40),
    "mips64el": (2, 1, 8),
    "mips64": (2, 2, 8),
    "mipsel": (1, 1, 8),
    "mips": (1, 2, 8),
    "riscv64": (2, 1, 243),
}

PAYLOAD = {
    "./usr/bin/socksbalance": 0o755,
    "./etc/init.d/socksbalance": 0o755,
    "./etc/config/socksbalance": 0o644,
    "./etc/socksbalance/config.yaml": 0o644,
}
CONFFILES = ["/etc/config/socksbalance", "/etc/socksbalance/config.yaml"]
FIELDS = ["Package", "Version", "Depends", "Source", "License", "Section", "Architecture",
          "Installed-Size", "Maintainer", "Description"]


def fail(ipk, why):
    raise SystemExit(f"FAIL {ipk}: {why}")


def elf_expectation(arch):
    for prefix in sorted(ELF, key=len, reverse=True):
        if arch == prefix or arch.startswith(prefix + "_"):
            return ELF[prefix]
    return None


def check_elf(ipk, arch, data):
    if data[:4] != b"\x7fELF":
        fail(ipk, "binary is not ELF")
    cls, enc = data[4], data[5]
    endian = "<" if enc == 1 else ">"
    machine = struct.unpack(endian + "H", data[18:20])[0]
    want = elf_expectation(arch)
    if want is None:
        fail(ipk, f"no ELF expectation for arch {arch}")
    if (cls, enc, machine) != want:
        fail(ipk, f"ELF class/endianness/machine {(cls, enc, machine)} != {want} for {arch}")
    # Program headers: a static binary has no PT_INTERP (type 3).
    if cls == 2:
        phoff, = struct.unpack(endian + "Q", data[32:40])
        phentsize, phnum = struct.unpack(endian + "HH", data[54:58])
    else:
        phoff, = struct.unpack(endian + "I", data[28:32])
        phentsize, phnum = struct.unpack(endian + "HH", data[42:46])
    for i in range(phnum):
        p_type, = struct.unpack(endian + "I", data[phoff + i * phentsize: phoff + i * phentsize + 4])
        if p_type == 3:
            fail(ipk, "binary has an ELF interpreter: not static")


def inner_tar(outer, name):
    member = outer.extractfile(name)
    return tarfile.open(fileobj=io.BytesIO(member.read()), mode="r:gz")


def check(ipk):
    base = os.path.basename(ipk)
    parts = base[: -len(".ipk")].split("_", 2)
    if len(parts) != 3 or parts[0] != "socksbalance":
        fail(ipk, "name is not socksbalance_<version>_<arch>.ipk")
    _, version, arch = parts
    raw = open(ipk, "rb").read()
    if raw[:2] != b"\x1f\x8b":
        fail(ipk, "not gzip")
    outer = tarfile.open(fileobj=io.BytesIO(gzip.decompress(raw)), mode="r:")
    names = outer.getnames()
    if names != ["./debian-binary", "./data.tar.gz", "./control.tar.gz"]:
        fail(ipk, f"outer members {names}")
    for m in outer.getmembers():
        if m.uid != 0 or m.gid != 0:
            fail(ipk, f"{m.name} not owned by 0:0")
    if outer.extractfile("./debian-binary").read() != b"2.0\n":
        fail(ipk, "debian-binary is not 2.0")

    control_tar = inner_tar(outer, "./control.tar.gz")
    ctl = {m.name: m for m in control_tar.getmembers()}
    for name in ["./control", "./conffiles", "./postinst", "./prerm"]:
        if name not in ctl:
            fail(ipk, f"control.tar.gz lacks {name}")
    text = control_tar.extractfile("./control").read().decode()
    fields = {}
    for line in text.splitlines():
        if line and not line.startswith(" ") and ":" in line:
            k, v = line.split(":", 1)
            fields[k] = v.strip()
    for f in FIELDS:
        if f not in fields:
            fail(ipk, f"control lacks {f}")
    if fields["Package"] != "socksbalance" or fields["Version"] != version:
        fail(ipk, f"Package/Version {fields['Package']} {fields['Version']}")
    if fields["Architecture"] != arch:
        fail(ipk, f"Architecture {fields['Architecture']} != {arch}")
    if fields["Depends"] != "":
        fail(ipk, f"Depends should be empty (static binary): {fields['Depends']!r}")
    conffiles = control_tar.extractfile("./conffiles").read().decode().split()
    if conffiles != CONFFILES:
        fail(ipk, f"conffiles {conffiles}")
    for script, call in [("./postinst", "default_postinst"), ("./prerm", "default_prerm")]:
        if ctl[script].mode & 0o111 == 0:
            fail(ipk, f"{script} not executable")
        body = control_tar.extractfile(script).read().decode()
        if not body.startswith("#!/bin/sh") or ". ${IPKG_INSTROOT}/lib/functions.sh" not in body or call not in body:
            fail(ipk, f"{script} is not OpenWrt's standard script")

    data_tar = inner_tar(outer, "./data.tar.gz")
    files = {m.name: m for m in data_tar.getmembers() if m.isfile()}
    if set(files) != set(PAYLOAD):
        fail(ipk, f"payload files {sorted(files)}")
    for name, mode in PAYLOAD.items():
        m = files[name]
        if m.mode & 0o7777 != mode or m.uid != 0 or m.gid != 0:
            fail(ipk, f"{name}: mode {oct(m.mode)} owner {m.uid}:{m.gid}")
    size = sum(m.size for m in files.values())
    if int(fields["Installed-Size"]) != size:
        fail(ipk, f"Installed-Size {fields['Installed-Size']} != {size}")
    check_elf(ipk, arch, data_tar.extractfile("./usr/bin/socksbalance").read())
    print(f"OK   {base}  ({arch}, {size} bytes installed)")


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else "dist/openwrt"
    ipks = sorted(os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(".ipk"))
    if not ipks:
        raise SystemExit(f"FAIL: no .ipk files in {directory}")
    for ipk in ipks:
        check(ipk)
    print(f"{len(ipks)} package(s) checked")


if __name__ == "__main__":
    main()
