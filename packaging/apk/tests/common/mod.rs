//! Fixtures shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use socksbalance_apk::{Dir, File, Info, Package};

pub fn info() -> Info {
    Info {
        name: "tiny".into(),
        version: "1.2.3-r1".into(),
        description: "A tiny fixed package for the golden test".into(),
        arch: "mipsel_24kc".into(),
        license: "MIT".into(),
        origin: "feeds/test/tiny".into(),
        maintainer: "Test <test@example.invalid>".into(),
        url: "https://example.invalid/tiny".into(),
        depends: Vec::new(),
    }
}

fn file(name: &str, mode: u32, content: &[u8]) -> File {
    File {
        name: name.into(),
        mode,
        user: "root".into(),
        group: "root".into(),
        mtime: 1_700_000_000,
        content: content.to_vec(),
    }
}

fn dir(path: &str, files: Vec<File>) -> Dir {
    Dir { path: path.into(), mode: 0o755, user: "root".into(), group: "root".into(), files }
}

/// A small package with the shapes that matter: the root dir, nested dirs,
/// an executable, a 0600 file, an empty file (no DATA block), a file over
/// 255 bytes (Blob16 is not used for content, but its size is an Int) and
/// two scripts.
pub fn tiny() -> Package {
    Package {
        info: info(),
        dirs: vec![
            dir("", vec![]),
            dir("etc", vec![]),
            dir("etc/tiny", vec![file("empty", 0o644, b""), file("secret.conf", 0o600, b"token: x\n")]),
            dir("usr", vec![]),
            dir(
                "usr/bin",
                vec![
                    file("tiny", 0o755, &[0x7f, b'E', b'L', b'F', 1, 2, 3]),
                    file("zz", 0o755, &[b'z'; 300]),
                ],
            ),
        ],
        scripts: vec![
            ("post-install".into(), b"#!/bin/sh\necho installed\n".to_vec()),
            ("pre-deinstall".into(), b"#!/bin/sh\necho removing\n".to_vec()),
        ],
    }
}

/// A fresh, empty directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("socksbalance-apk-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
