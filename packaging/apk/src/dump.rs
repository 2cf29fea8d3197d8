//! A text dump of a parsed package: the blocks, the metadata tree with the
//! field names `apk adbdump` uses, and a hex dump of the uncompressed
//! stream. The golden test compares it whole, so any changed byte shows up
//! as a readable diff.

use std::fmt::Write;

use sha2::{Digest, Sha256};

use crate::adb;
use crate::read::Parsed;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn block_name(kind: u32) -> &'static str {
    match kind {
        adb::BLOCK_ADB => "ADB",
        adb::BLOCK_SIG => "SIG",
        adb::BLOCK_DATA => "DATA",
        _ => "EXT",
    }
}

/// The dump of `p`; `file` is the .apk's bytes (for its SHA-256).
pub fn dump(p: &Parsed, file: &[u8], with_hex: bool) -> String {
    let mut o = String::new();
    let pk = &p.package;
    let i = &pk.info;
    let _ = writeln!(
        o,
        "# apk v3 package, {} ({} bytes, sha256 {})",
        if p.compressed { "ADBd" } else { "ADB." },
        file.len(),
        hex(&Sha256::digest(file))
    );
    let _ = writeln!(o, "blocks:");
    for (kind, offset, len) in &p.blocks {
        let _ = writeln!(o, "  - {} at {offset}, payload {len}", block_name(*kind));
    }
    let _ = writeln!(o, "#%SCHEMA: {}", String::from_utf8_lossy(adb::SCHEMA_PACKAGE));
    let _ = writeln!(o, "info:");
    for (k, v) in [
        ("name", &i.name),
        ("version", &i.version),
        ("hashes", &hex(&p.unique_id)),
        ("description", &i.description),
        ("arch", &i.arch),
        ("license", &i.license),
        ("origin", &i.origin),
        ("maintainer", &i.maintainer),
        ("url", &i.url),
        ("installed-size", &p.installed_size.to_string()),
    ] {
        let _ = writeln!(o, "  {k}: {v}");
    }
    if !i.depends.is_empty() {
        let _ = writeln!(o, "  depends: {}", i.depends.join(" "));
    }
    let _ = writeln!(o, "paths:");
    for d in &pk.dirs {
        let _ = writeln!(o, "  - name: {}", if d.path.is_empty() { "(/)" } else { &d.path });
        let _ = writeln!(o, "    acl: mode {:o} {}:{}", d.mode, d.user, d.group);
        if !d.files.is_empty() {
            let _ = writeln!(o, "    files:");
        }
        for f in &d.files {
            let _ = writeln!(o, "      - name: {}", f.name);
            let _ = writeln!(o, "        acl: mode {:o} {}:{}", f.mode, f.user, f.group);
            let _ = writeln!(o, "        size: {}", f.content.len());
            let _ = writeln!(o, "        mtime: {}", f.mtime);
            let _ = writeln!(o, "        hash: {}", hex(&Sha256::digest(&f.content)));
        }
    }
    let _ = writeln!(o, "scripts:");
    for (name, body) in &pk.scripts {
        let _ = writeln!(o, "  {name}: |");
        for line in String::from_utf8_lossy(body).lines() {
            let _ = writeln!(o, "    {line}");
        }
    }
    let _ = writeln!(o, "signatures: {}", p.signatures.len());
    for s in &p.signatures {
        let _ = writeln!(o, "  - alg {} key id {}", s.header[1], hex(&s.header[2..]));
    }
    if with_hex {
        let _ = writeln!(o, "stream ({} bytes):", p.stream.len());
        for (n, chunk) in p.stream.chunks(16).enumerate() {
            let ascii: String =
                chunk.iter().map(|&c| if (0x20..0x7f).contains(&c) { c as char } else { '.' }).collect();
            let _ = writeln!(o, "  {:06x}  {:<32}  {ascii}", n * 16, hex(chunk));
        }
    }
    o
}
