#!/usr/bin/env python3
"""Unpacks every OpenWrt .ipk in a directory (default dist/openwrt) and
every .apk in its <arch>/ folders, and checks what opkg, apk and OpenWrt
rely on. For an .ipk:

- the outer gzip'd tar holds exactly ./debian-binary ("2.0\\n"),
  ./data.tar.gz and ./control.tar.gz;
- control has every field, Architecture matching the file name, an empty
  Depends, and Installed-Size equal to the payload's bytes;
- conffiles lists /etc/config/socksbalance and /etc/socksbalance/config.yaml;
- postinst/prerm are executable and call default_postinst/default_prerm;
- the payload's paths, modes and owners (root, numeric 0);
- the binary's ELF class, endianness and machine match the architecture,
  and it is statically linked (no PT_INTERP).

For an .apk (apk-tools v3 "ADB", read here by a second, independent
parser, not the Rust one that wrote it):

- "ADBd" + raw deflate of "ADB.pckg", then one ADB block, optional SIG
  blocks, DATA blocks, each 8-aligned with zero padding;
- info: name, version and arch matching socksbalance-<version>.apk in the
  <arch>/ folder, every descriptive field set, no depends, installed-size
  equal to the files' bytes, and the unique-id (SHA-256 of the ADB block);
- the same payload as the .ipk plus lib/apk/packages/socksbalance.list,
  .conffiles and .conffiles_static with OpenWrt 25.12's contents;
- every file's SHA-256 against its DATA block, and the DATA order;
- post-install, post-upgrade and pre-deinstall as OpenWrt writes them;
- the binary's ELF as for the .ipk; and each .ipk has its .apk.

Exits non-zero on the first package that fails. Standard library only.
Usage: check-packages.py [DIR]
"""

import gzip
import hashlib
import io
import json
import os
import struct
import sys
import tarfile
import zlib

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
    "./etc/config/socksbalance": 0o600,
    "./etc/socksbalance/config.yaml": 0o600,
    "./etc/hotplug.d/iface/30-socksbalance": 0o644,
    "./usr/libexec/socksbalance-gateway": 0o755,
    "./usr/libexec/socksbalance-uci": 0o755,
    "./usr/share/nftables.d/table-post/socksbalance.nft": 0o644,
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


def open_ipk(ipk):
    """The outer tar of an .ipk, checked as opkg reads it."""
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
    return outer


def check_payload(ipk, data_tar, payload):
    """The data tar's regular files are exactly `payload`, with its modes,
    owned by 0:0; returns them by name."""
    files = {m.name: m for m in data_tar.getmembers() if m.isfile()}
    if set(files) != set(payload):
        fail(ipk, f"payload files {sorted(files)}")
    for name, mode in payload.items():
        m = files[name]
        if m.mode & 0o7777 != mode or m.uid != 0 or m.gid != 0:
            fail(ipk, f"{name}: mode {oct(m.mode)} owner {m.uid}:{m.gid}")
    return files


def check(ipk):
    base = os.path.basename(ipk)
    parts = base[: -len(".ipk")].split("_", 2)
    if len(parts) != 3 or parts[0] != "socksbalance":
        fail(ipk, "name is not socksbalance_<version>_<arch>.ipk")
    _, version, arch = parts
    outer = open_ipk(ipk)

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
    files = check_payload(ipk, data_tar, PAYLOAD)
    size = sum(m.size for m in files.values())
    if int(fields["Installed-Size"]) != size:
        fail(ipk, f"Installed-Size {fields['Installed-Size']} != {size}")
    check_elf(ipk, arch, data_tar.extractfile("./usr/bin/socksbalance").read())
    print(f"OK   {base}  ({arch}, {size} bytes installed)")


# apk v3 (apk-tools doc/apk-v3.5.scd, src/adb.h, src/apk_adb.h).
T_OBJECT, T_ARRAY = 0xE, 0xD
APK_EXTRA = {
    "lib/apk/packages/socksbalance.list": 0o644,
    "lib/apk/packages/socksbalance.conffiles": 0o644,
    "lib/apk/packages/socksbalance.conffiles_static": 0o644,
}


def adb_value(area, tag, depth=0):
    """Decodes one tagged value: None, int, bytes, or a list of slots
    (index 0 = field 1) for objects and arrays."""
    if depth > 16:
        raise ValueError("nested too deep")
    kind, v = tag >> 28, tag & 0x0FFFFFFF

    def take(off, n):
        if off + n > len(area):
            raise ValueError(f"value at {off} out of range")
        return area[off:off + n]

    if kind == 0 and v == 0:
        return None
    if kind == 1:
        return v
    if kind == 2:
        return struct.unpack("<I", take(v, 4))[0]
    if kind == 3:
        return struct.unpack("<Q", take(v, 8))[0]
    if kind in (8, 9, 0xA):
        width = {8: 1, 9: 2, 0xA: 4}[kind]
        n = int.from_bytes(take(v, width), "little")
        return bytes(take(v + width, n))
    if kind in (T_OBJECT, T_ARRAY):
        if v % 4:
            raise ValueError(f"object at {v} not 4-aligned")
        n = struct.unpack("<I", take(v, 4))[0]
        slots = struct.unpack(f"<{n}I", take(v, 4 * n))[1:]
        return [adb_value(area, t, depth + 1) for t in slots]
    raise ValueError(f"bad tag {tag:#x}")


def field(obj, i):
    return obj[i - 1] if obj and len(obj) >= i else None


def read_apk(path):
    """An .apk's blocks (kind, payload), the ADB block's area and its root
    object, each checked as apk-tools reads them."""
    raw = open(path, "rb").read()
    if raw[:4] != b"ADBd":
        fail(path, "does not start with ADBd")
    stream = zlib.decompress(raw[4:], -15)
    if stream[:8] != b"ADB.pckg":
        fail(path, "stream does not start with ADB.pckg")
    pos, blocks = 8, []
    while pos < len(stream):
        ts = struct.unpack("<I", stream[pos:pos + 4])[0]
        kind, size = ts >> 30, ts & 0x3FFFFFFF
        end = pos + ((size + 7) & ~7)
        if size < 4 or end > len(stream) or any(stream[pos + size:end]):
            fail(path, f"bad block at {pos}")
        blocks.append((kind, stream[pos + 4:pos + size]))
        pos = end
    kinds = [k for k, _ in blocks]
    if not kinds or kinds[0] != 0 or kinds.count(0) != 1 or kinds != sorted(kinds):
        fail(path, f"block order {kinds}")
    area = blocks[0][1]
    if area[0] != 0:
        fail(path, "ADB compat version is not 0")
    return blocks, area, adb_value(area, struct.unpack("<I", area[4:8])[0])


def check_apk(path):
    arch = os.path.basename(os.path.dirname(path))
    base = os.path.basename(path)
    if not (base.startswith("socksbalance-") and base.endswith(".apk")):
        fail(path, "name is not socksbalance-<version>.apk")
    version = base[len("socksbalance-"):-len(".apk")]
    blocks, area, root = read_apk(path)
    kinds = [k for k, _ in blocks]
    info, paths, scripts = field(root, 1), field(root, 2) or [], field(root, 3)
    text = {k: (field(info, i) or b"").decode() for k, i in
            [("name", 1), ("version", 2), ("description", 4), ("arch", 5), ("license", 6),
             ("origin", 7), ("maintainer", 8), ("url", 9)]}
    if text["name"] != "socksbalance" or text["version"] != version or text["arch"] != arch:
        fail(path, f"name/version/arch {text['name']} {text['version']} {text['arch']}")
    for k, v in text.items():
        if not v:
            fail(path, f"info.{k} is empty")
    if field(info, 15) is not None:
        fail(path, "depends should be empty (static binary)")

    # unique-id: SHA-256 of the ADB block with the id zeroed, first 20 bytes.
    uid = field(info, 3)
    root_off = struct.unpack("<I", area[4:8])[0] & 0x0FFFFFFF
    info_off = struct.unpack("<I", area[root_off + 4:root_off + 8])[0] & 0x0FFFFFFF
    uid_off = (struct.unpack("<I", area[info_off + 12:info_off + 16])[0] & 0x0FFFFFFF) + 1
    zeroed = area[:uid_off] + bytes(20) + area[uid_off + 20:]
    if uid is None or len(uid) != 20 or uid != hashlib.sha256(zeroed).digest()[:20]:
        fail(path, "unique-id is not the SHA-256 of the ADB block")

    files, order = {}, []
    for di, d in enumerate(paths, 1):
        dname = (field(d, 1) or b"").decode()
        acl = field(d, 2)
        if field(acl, 1) != 0o755 or field(acl, 2) != b"root" or field(acl, 3) != b"root":
            fail(path, f"directory /{dname} acl {acl}")
        for fi, f in enumerate(field(d, 3) or [], 1):
            name = (dname + "/" if dname else "") + field(f, 1).decode()
            acl = field(f, 2)
            if field(acl, 2) != b"root" or field(acl, 3) != b"root":
                fail(path, f"{name} not owned by root:root")
            files[name] = {"mode": field(acl, 1), "size": field(f, 3) or 0, "hash": field(f, 5)}
            if files[name]["size"]:
                order.append((di, fi, name))
    want = {n[2:]: m for n, m in PAYLOAD.items()}
    want.update(APK_EXTRA)
    if set(files) != set(want):
        fail(path, f"payload files {sorted(files)}")
    for name, mode in want.items():
        if files[name]["mode"] != mode:
            fail(path, f"{name}: mode {oct(files[name]['mode'])}")
    data = [b for k, b in blocks if k == 2]
    if len(data) != len(order):
        fail(path, f"{len(data)} DATA blocks for {len(order)} files")
    content = {}
    for payload, (di, fi, name) in zip(data, order):
        if struct.unpack("<II", payload[:8]) != (di, fi):
            fail(path, f"DATA block out of order at {name}")
        body = payload[8:]
        if len(body) != files[name]["size"] or hashlib.sha256(body).digest() != files[name]["hash"]:
            fail(path, f"{name}: size or SHA-256 does not match its DATA block")
        content[name] = body
    size = sum(f["size"] for f in files.values())
    if field(info, 12) != size:
        fail(path, f"installed-size {field(info, 12)} != {size}")

    listed = content["lib/apk/packages/socksbalance.list"].decode().splitlines()
    if listed != sorted(n[1:] for n in PAYLOAD):
        fail(path, f"socksbalance.list is {listed}")
    if content["lib/apk/packages/socksbalance.conffiles"].decode().splitlines() != CONFFILES:
        fail(path, "socksbalance.conffiles")
    static = [line.split(" ") for line in
              content["lib/apk/packages/socksbalance.conffiles_static"].decode().splitlines()]
    if [c[0] for c in static] != CONFFILES or any(
            hashlib.sha256(content[c[0][1:]]).hexdigest() != c[1] for c in static):
        fail(path, "socksbalance.conffiles_static does not list the conffiles' SHA-256")

    head = ('. ${IPKG_INSTROOT}/lib/functions.sh\nexport root="${IPKG_INSTROOT}"\n'
            'export pkgname="socksbalance"\n')
    post = (field(scripts, 3) or b"").decode()
    upgrade = (field(scripts, 7) or b"").decode()
    prerm = (field(scripts, 4) or b"").decode()
    if not post.startswith("#!/bin/sh\n") or head + "add_group_and_user\ndefault_postinst\n" not in post:
        fail(path, "post-install is not OpenWrt's")
    if not upgrade.startswith("#!/bin/sh\nexport PKG_UPGRADE=1\n") or "default_postinst" not in upgrade:
        fail(path, "post-upgrade is not OpenWrt's")
    if not prerm.startswith("#!/bin/sh\n") or head + "default_prerm\n" not in prerm:
        fail(path, "pre-deinstall is not OpenWrt's")
    if [i for i, v in enumerate(scripts or [], 1) if v is not None] != [3, 4, 7]:
        fail(path, "unexpected scripts")
    check_elf(path, arch, content["usr/bin/socksbalance"])
    print(f"OK   {arch}/{base}  ({size} bytes installed, {kinds.count(1)} signature(s))")


# luci-app-socksbalance: one package for every arch (all / noarch).
LUCI = "luci-app-socksbalance"
LUCI_PAYLOAD = {
    "./www/luci-static/resources/view/socksbalance/settings.js": 0o644,
    "./www/luci-static/resources/view/socksbalance/status.js": 0o644,
    "./usr/share/luci/menu.d/luci-app-socksbalance.json": 0o644,
    "./usr/share/rpcd/acl.d/luci-app-socksbalance.json": 0o644,
    "./usr/libexec/rpcd/luci.socksbalance": 0o755,
}


def check_luci_ipk(ipk):
    base = os.path.basename(ipk)
    parts = base[: -len(".ipk")].split("_", 2)
    if len(parts) != 3 or parts[0] != LUCI or parts[2] != "all":
        fail(ipk, f"name is not {LUCI}_<version>_all.ipk")
    outer = open_ipk(ipk)
    control = inner_tar(outer, "./control.tar.gz").extractfile("./control").read().decode()
    fields = dict(line.split(": ", 1) for line in control.splitlines() if ": " in line and not line.startswith(" "))
    want = {"Package": LUCI, "Version": parts[1], "Architecture": "all", "Depends": "libc, socksbalance, luci-base"}
    for k, v in want.items():
        if fields.get(k) != v:
            fail(ipk, f"control {k}: {fields.get(k)!r}, expected {v!r}")
    data = inner_tar(outer, "./data.tar.gz")
    files = check_payload(ipk, data, LUCI_PAYLOAD)
    for name in files:
        if name.endswith(".json"):
            json.loads(data.extractfile(name).read())
    print(f"OK   {base}  (all, {sum(m.size for m in files.values())} bytes installed)")


def check_luci_apk(path):
    base = os.path.basename(path)
    if os.path.basename(os.path.dirname(path)) != "noarch" or not base.startswith(LUCI + "-"):
        fail(path, f"not noarch/{LUCI}-<version>.apk")
    root = read_apk(path)[2]
    info, paths = field(root, 1), field(root, 2) or []
    if field(info, 1) != LUCI.encode() or field(info, 5) != b"noarch":
        fail(path, f"name/arch {field(info, 1)} {field(info, 5)}")
    depends = [field(d, 1) for d in field(info, 15) or []]
    if depends != [b"socksbalance", b"luci-base"]:
        fail(path, f"depends {depends}")
    files = {}
    for d in paths:
        dname = (field(d, 1) or b"").decode()
        for f in field(d, 3) or []:
            files["./" + (dname + "/" if dname else "") + field(f, 1).decode()] = field(field(f, 2), 1)
    want = dict(LUCI_PAYLOAD)
    want[f"./lib/apk/packages/{LUCI}.list"] = 0o644
    if files != want:
        fail(path, f"payload {sorted(files.items())}")
    print(f"OK   noarch/{base}")


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else "dist/openwrt"
    ipks = sorted(os.path.join(directory, f) for f in os.listdir(directory)
                  if f.endswith(".ipk") and not f.startswith(LUCI))
    if not ipks:
        raise SystemExit(f"FAIL: no .ipk files in {directory}")
    for ipk in ipks:
        check(ipk)
    apks = sorted(os.path.join(directory, d, f) for d in os.listdir(directory)
                  if os.path.isdir(os.path.join(directory, d)) and d != "noarch"
                  for f in os.listdir(os.path.join(directory, d)) if f.endswith(".apk"))
    for apk in apks:
        check_apk(apk)
    luci_ipks = [os.path.join(directory, f) for f in os.listdir(directory) if f.startswith(LUCI) and f.endswith(".ipk")]
    noarch = os.path.join(directory, "noarch")
    luci_apks = [os.path.join(noarch, f) for f in os.listdir(noarch)] if os.path.isdir(noarch) else []
    if len(luci_ipks) != 1 or len(luci_apks) != 1:
        raise SystemExit(f"FAIL: expected one {LUCI} .ipk and one .apk, found {luci_ipks} {luci_apks}")
    check_luci_ipk(luci_ipks[0])
    check_luci_apk(luci_apks[0])
    ipk_archs = sorted(os.path.basename(i)[:-4].split("_", 2)[2] for i in ipks)
    apk_archs = sorted(os.path.basename(os.path.dirname(a)) for a in apks)
    if ipk_archs != apk_archs:
        raise SystemExit(f"FAIL: .ipk arches {ipk_archs} but .apk arches {apk_archs}")
    print(f"{len(ipks)} .ipk and {len(apks)} .apk package(s) checked")


if __name__ == "__main__":
    main()
