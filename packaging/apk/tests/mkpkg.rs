//! The ADB block `apk mkpkg` would write for a one-file package, worked out
//! by hand, value by value, from apk-tools' source, and compared with ours.
//!
//! The expected bytes below do not come from our writer: each line follows
//! one call of `mkpkg_main` / `mkpkg_process_directory` /
//! `mkpkg_process_dirent` (src/app_mkpkg.c) through adb.c's `adb_w_blob`,
//! `adb_w_int`, `adb_w_obj` and `adb_w_data` (alignment, reuse of equal
//! bytes) and `adb_w_blob_raw` (the unique-id, never shared), with the
//! slots of src/apk_adb.h. It pins what a golden file from a real
//! `apk mkpkg` would pin (docs/openwrt.md, "Checked with apk-tools", says why
//! there is none) for the ADB block: value order, offsets, padding, tags.
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
