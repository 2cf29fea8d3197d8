//! The ADB block `apk mkpkg` would write for a one-file package, worked out
//! by hand, value by value, from apk-tools' source, and compared with ours.
//!
//! The expected bytes below do not come from our writer: each line follows
//! one call of `mkpkg_main` / `mkpkg_process_directory` /
//! `mkpkg_process_dirent` (src/app_mkpkg.c) through adb.c's `adb_w_blob`,
//! `adb_w_int`, `adb_w_obj` and `adb_w_data` (alignment, reuse of equal
//! bytes) and `adb_w_blob_raw` (the unique-id, never shared), with the
//! slots of src/apk_adb.h. It was written before any `apk` could be run
//! here; the real `apk mkpkg` later wrote exactly these bytes (the golden
//! files at the end of this file; docs/openwrt.md, "Checked with
//! apk-tools").
//!
//! The package: `mkpkg -I name:t -I version:1-r0 -I arch:x86_64
//! -s post-install:SCRIPT -F DIR`, DIR (0755 root:root) holding `f`
//! (0644 root:root, "x", mtime 1), SCRIPT holding "#!/bin/sh\n".

use sha2::{Digest, Sha256};
use socksbalance_apk::{Dir, File, Info, Options, Package};

fn package() -> Package {
    Package {
        info: Info {
            name: "t".into(),
            version: "1-r0".into(),
            description: String::new(),
            arch: "x86_64".into(),
            license: String::new(),
            origin: String::new(),
            maintainer: String::new(),
            url: String::new(),
            depends: Vec::new(),
        },
        dirs: vec![Dir {
            path: String::new(),
            mode: 0o755,
            user: "root".into(),
            group: "root".into(),
            files: vec![File {
                name: "f".into(),
                mode: 0o644,
                user: "root".into(),
                group: "root".into(),
                mtime: 1,
                content: b"x".to_vec(),
            }],
        }],
        scripts: vec![("post-install".into(), b"#!/bin/sh\n".to_vec())],
    }
}

/// Appends little-endian u32 values.
fn words(out: &mut Vec<u8>, ws: &[u32]) {
    for w in ws {
        out.extend_from_slice(&w.to_le_bytes());
    }
}

const INT: u32 = 0x1000_0000;
const BLOB8: u32 = 0x8000_0000;
const OBJECT: u32 = 0xe000_0000;
const NULL: u32 = 0;

fn expected_adb_block() -> (Vec<u8>, usize) {
    let mut b = Vec::new();
    // adb_w_init_dynamic: struct adb_hdr {compat 0, version 0, reserved 0,
    // root}; the root is filled in last.
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
    // assign_fields(info): slot order, each through adb_w_blob (Blob8,
    // alignment 1): name @8, version @10, arch @15.
    b.extend_from_slice(b"\x01t"); // 8..10
    b.extend_from_slice(b"\x041-r0"); // 10..15
    b.extend_from_slice(b"\x06x86_64"); // 15..22
                                        // mkpkg_process_directory(root) walks its entries first; for "f":
    b.extend_from_slice(b"\x01f"); // ADBI_FI_NAME @22
    b.push(32); // ADBI_FI_HASHES: the SHA-256 @24
    b.extend_from_slice(&Sha256::digest(b"x")); // ..57
                                                // mtime 1 and size 1 are direct Ints; acl mode 0644 is direct;
                                                // user "root" @57, group "root" is the same bytes: reused.
    b.extend_from_slice(b"\x04root"); // 57..62
                                      // The acl object (4-aligned: 2 bytes of padding), [count, mode, user,
                                      // group] @64.
    b.extend_from_slice(&[0, 0]);
    words(&mut b, &[4, INT | 0o644, BLOB8 | 57, BLOB8 | 57]); // 64..80
                                                              // The file object: name, acl, size, mtime, hashes (target unset) @80.
    words(&mut b, &[6, BLOB8 | 22, OBJECT | 64, INT | 1, INT | 1, BLOB8 | 24]); // ..104
                                                                                // Then the directory itself: no name (/), acl 0755 root root @104,
    words(&mut b, &[4, INT | 0o755, BLOB8 | 57, BLOB8 | 57]); // ..120
                                                              // its files array, stored by adb_wo_obj: the Object tag, @120,
    words(&mut b, &[2, OBJECT | 80]); // ..128
                                      // and the directory object [name NULL, acl, files] @128.
    words(&mut b, &[4, NULL, OBJECT | 104, OBJECT | 120]); // ..144
                                                           // installed-size 1 is direct; the unique-id through adb_w_blob_raw:
                                                           // 20 zero bytes at 144, never shared, filled in at the end.
    b.push(20);
    let uid_at = b.len();
    b.extend_from_slice(&[0; 20]); // 144..165
                                   // The info object, slots 1..=0x0c (installed-size), 4-aligned @168.
    b.extend_from_slice(&[0, 0, 0]);
    words(
        &mut b,
        &[
            13,
            BLOB8 | 8,   // name
            BLOB8 | 10,  // version
            BLOB8 | 144, // unique-id
            NULL,        // description
            BLOB8 | 15,  // arch
            NULL,        // license
            NULL,        // origin
            NULL,        // maintainer
            NULL,        // url
            NULL,        // repo-commit
            NULL,        // build-time
            INT | 1,     // installed-size
        ],
    ); // 168..220
       // The paths array, again by adb_wo_obj, @220.
    words(&mut b, &[2, OBJECT | 128]); // ..228
                                       // Scripts: each slot in order, here only post-install (slot 3) @228.
    b.extend_from_slice(b"\x0a#!/bin/sh\n"); // 228..239
    b.push(0);
    words(&mut b, &[4, NULL, NULL, BLOB8 | 228]); // 240..256
                                                  // The root object [info, paths, scripts] @256; no triggers.
    words(&mut b, &[4, OBJECT | 168, OBJECT | 220, OBJECT | 240]); // ..272
    b[4..8].copy_from_slice(&(OBJECT | 256).to_le_bytes());
    // mkpkg_main: the unique-id is the start of the SHA-256 of the block.
    let digest = Sha256::digest(&b);
    b[uid_at..uid_at + 20].copy_from_slice(&digest[..20]);
    (b, uid_at)
}

#[test]
fn adb_block_is_what_mkpkg_writes() {
    let (want, _) = expected_adb_block();
    let got = package().adb().unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "ADB block differs at byte {i}");
    }
    assert_eq!(got.len(), want.len());
}

#[test]
fn whole_file_is_header_adb_block_and_one_data_block() {
    let (adb, _) = expected_adb_block();
    let mut want = b"ADB.pckg".to_vec();
    // adb_c_block: type ADB (0) and the size with its 4-byte header.
    words(&mut want, &[4 + adb.len() as u32]);
    want.extend_from_slice(&adb);
    want.extend_from_slice(&[0; 4]); // to a multiple of 8
                                     // adb_c_block_data: type DATA (2), adb_data_package {path 1, file 1},
                                     // the content, padding.
    words(&mut want, &[(2 << 30) | (4 + 8 + 1), 1, 1]);
    want.extend_from_slice(b"x\0\0\0");
    assert_eq!(package().to_bytes(Options { compress: false }, None).unwrap(), want);
}

// Golden files written by a real `apk mkpkg` (apk-tools 3.0's app_mkpkg.c,
// built locally; docs/openwrt.md, "Checked with apk-tools", says how), run
// as root with umask 022 and:
//   tiny.apk-mkpkg: the package above, from `files/f` ("x", 0644, mtime 1)
//     in `files/` (0755) and `post-install` = "#!/bin/sh\n":
//     SOURCE_DATE_EPOCH=1 apk mkpkg --compression none -I name:t \
//       -I version:1-r0 -I arch:x86_64 -s post-install:post-install \
//       -F files -o tiny.apk-mkpkg
//   edge.apk-mkpkg: the tree `write_edge_tree` makes, with
//     SOURCE_DATE_EPOCH=5 apk mkpkg --compression none -I name:edge \
//       -I version:2.0_rc1-r3 -I arch:mips_24kc -I description:d \
//       -s pre-install:pre-install -s post-deinstall:post-deinstall \
//       -F edge -o edge.apk-mkpkg
// (`pre-install` = "#!/bin/sh\necho hi\n", `post-deinstall` =
// "#!/bin/sh\necho bye\n"). Unsigned and uncompressed, so every byte is
// mkpkg's: ours must match exactly.

const TINY_MKPKG: &[u8] = include_bytes!("golden/tiny.apk-mkpkg");
const EDGE_MKPKG: &[u8] = include_bytes!("golden/edge.apk-mkpkg");

fn first_difference(got: &[u8], want: &[u8]) -> Option<usize> {
    got.iter().zip(want).position(|(g, w)| g != w).or(if got.len() == want.len() {
        None
    } else {
        Some(got.len().min(want.len()))
    })
}

#[test]
fn tiny_package_is_byte_for_byte_what_real_mkpkg_wrote() {
    let got = package().to_bytes(Options { compress: false }, None).unwrap();
    assert_eq!(first_difference(&got, TINY_MKPKG), None, "differs from golden/tiny.apk-mkpkg");
}

#[test]
fn tiny_tree_read_from_disk_is_what_real_mkpkg_wrote() {
    use std::os::unix::fs::PermissionsExt;
    let root = std::env::temp_dir().join(format!("socksbalance-apk-{}-mkpkg-tiny", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("f"), b"x").unwrap();
    std::fs::set_permissions(root.join("f"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = package();
    let scripts = p.scripts.clone();
    let got = Package::from_tree(p.info, &root, 1, scripts)
        .unwrap()
        .to_bytes(Options { compress: false }, None)
        .unwrap();
    std::fs::remove_dir_all(&root).unwrap();
    assert_eq!(first_difference(&got, TINY_MKPKG), None, "differs from golden/tiny.apk-mkpkg");
}

/// Nested directories whose names sort differently by path and by
/// component ("a/b" and "a-b"), an empty 0700 directory, an empty file (no
/// DATA block), a 0600 file, a setuid file, two files with equal contents
/// (one stored hash) and a file named like the owner ("root": one stored
/// blob for both).
fn write_edge_tree(root: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_dir_all(root);
    for d in ["a/b", "a-b/c", "empty", "usr/lib/x"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let files: [(&str, &[u8], u32); 7] = [
        ("a/dup1", b"same", 0o644),
        ("a/dup2", b"same", 0o644),
        ("a/b/s", b"secret", 0o600),
        ("a-b/root", b"root", 0o644),
        ("a-b/c/big", &[b'b'; 300], 0o644),
        ("usr/lib/x/tool", b"suid", 0o4755),
        ("zero", b"", 0o644),
    ];
    for (path, content, mode) in files {
        std::fs::write(root.join(path), content).unwrap();
        std::fs::set_permissions(root.join(path), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    for (d, mode) in [
        ("", 0o755),
        ("a", 0o755),
        ("a/b", 0o755),
        ("a-b", 0o755),
        ("a-b/c", 0o755),
        ("empty", 0o700),
        ("usr", 0o755),
        ("usr/lib", 0o755),
        ("usr/lib/x", 0o755),
    ] {
        std::fs::set_permissions(root.join(d), std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

#[test]
fn edge_tree_is_byte_for_byte_what_real_mkpkg_wrote() {
    let root = std::env::temp_dir().join(format!("socksbalance-apk-{}-mkpkg-edge", std::process::id()));
    write_edge_tree(&root);
    let info = Info {
        name: "edge".into(),
        version: "2.0_rc1-r3".into(),
        description: "d".into(),
        arch: "mips_24kc".into(),
        license: String::new(),
        origin: String::new(),
        maintainer: String::new(),
        url: String::new(),
        depends: Vec::new(),
    };
    let scripts = vec![
        ("pre-install".into(), b"#!/bin/sh\necho hi\n".to_vec()),
        ("post-deinstall".into(), b"#!/bin/sh\necho bye\n".to_vec()),
    ];
    let got = Package::from_tree(info, &root, 5, scripts)
        .unwrap()
        .to_bytes(Options { compress: false }, None)
        .unwrap();
    std::fs::remove_dir_all(&root).unwrap();
    assert_eq!(first_difference(&got, EDGE_MKPKG), None, "differs from golden/edge.apk-mkpkg");
}
