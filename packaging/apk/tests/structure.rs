//! The bytes themselves, checked against the format's sources: the file
//! header, block types and 8-byte alignment (apk-v3(5) "BLOCKS", adb.h
//! ADB_BLOCK_ALIGNMENT), value tags and their alignment (apk-v3(5) "WIRE
//! FORMAT", adb.c's writer), and the schema slots (apk_adb.h ADBI_*).

mod common;

use socksbalance_apk::adb::{self, Value};
use socksbalance_apk::{read, Options};

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

#[test]
fn header_and_blocks_follow_apk_v3_5() {
    let bytes = common::tiny().to_bytes(Options { compress: false }, None).unwrap();
    // adb.h ADB_FORMAT_MAGIC 0x2e424441 ("ADB." little-endian), then the
    // schema id; apk_adb.h ADB_SCHEMA_PACKAGE 0x676b6370 ("pckg").
    assert_eq!(le32(&bytes, 0), 0x2e42_4441);
    assert_eq!(le32(&bytes, 4), 0x676b_6370);
    // Walk the blocks by hand: 2 type bits, 30 size bits including the
    // 4-byte header; the next block starts at the size rounded up to 8.
    let mut pos = 8;
    let mut kinds = Vec::new();
    while pos < bytes.len() {
        assert_eq!(pos % 8, 0, "block at {pos} not 8-aligned");
        let ts = le32(&bytes, pos);
        let (kind, raw) = (ts >> 30, (ts & 0x3fff_ffff) as usize);
        assert!(raw >= 4);
        let next = pos + raw.next_multiple_of(8);
        assert!(bytes[pos + raw..next].iter().all(|&b| b == 0), "padding not zero");
        kinds.push(kind);
        pos = next;
    }
    assert_eq!(pos, bytes.len());
    // One ADB block (type 0), then DATA blocks (type 2); no SIG unsigned.
    assert_eq!(kinds, vec![0, 2, 2, 2]);

    // DATA payloads open with adb_data_package {path_idx, file_idx}.
    let p = read::parse(&bytes).unwrap();
    let data: Vec<_> = p.blocks.iter().filter(|b| b.0 == 2).collect();
    let idx: Vec<(u32, u32)> =
        data.iter().map(|(_, off, _)| (le32(&bytes, off + 4), le32(&bytes, off + 8))).collect();
    // paths: 1 "/", 2 etc, 3 etc/tiny, 4 usr, 5 usr/bin; etc/tiny's file 1
    // is empty and has no block.
    assert_eq!(idx, vec![(3, 2), (5, 1), (5, 2)]);
}

#[test]
fn the_compressed_form_is_adbd_and_raw_deflate() {
    let packed = common::tiny().to_bytes(Options::default(), None).unwrap();
    let plain = common::tiny().to_bytes(Options { compress: false }, None).unwrap();
    assert_eq!(&packed[..4], b"ADBd");
    // Raw deflate (no zlib header): inflating the rest gives the plain form.
    let inflated = miniz_oxide::inflate::decompress_to_vec(&packed[4..]).unwrap();
    assert_eq!(inflated, plain);
}

#[test]
fn adb_header_and_value_tags_follow_the_wire_format() {
    let bytes = common::tiny().to_bytes(Options { compress: false }, None).unwrap();
    let p = read::parse(&bytes).unwrap();
    let a = &p.adb;
    // adb.h struct adb_hdr: adb_compat_ver 0, adb_ver 0, reserved 0, root.
    assert_eq!(&a[..4], &[0, 0, 0, 0]);
    let root = le32(a, 4);
    assert_eq!(root & 0xf000_0000, 0xe000_0000, "root is an Object (type 0xe)");
    // Every indirect value is aligned as adb.c writes it: Blob8 anywhere,
    // Blob16 to 2, Blob32/Int32/Int64 and Array/Object slots to 4.
    for pl in &p.placements {
        let align = match pl.kind {
            adb::TYPE_BLOB8 => 1,
            adb::TYPE_BLOB16 => 2,
            _ => 4,
        };
        assert_eq!(pl.offset % align, 0, "{:#x} at {}", pl.kind, pl.offset);
    }
    // Object slot 0 is the slot count (apk-v3(5): "The first slot is
    // always the total number of slots").
    let root_off = (root & 0x0fff_ffff) as usize;
    let n = le32(a, root_off) as usize;
    assert_eq!(n, 4, "info, paths, scripts + the count slot");
    let slot = |obj: u32, i: usize| le32(a, (obj & 0x0fff_ffff) as usize + 4 * i);
    // apk_adb.h: ADBI_PKG_PKGINFO 1 (object), ADBI_PKG_PATHS 2 (an array
    // in the schema, but mkpkg stores it with adb_wo_obj, hence the Object
    // tag 0xe, as are each directory's "files"), ADBI_PKG_SCRIPTS 3.
    assert_eq!(slot(root, 1) >> 28, 0xe);
    assert_eq!(slot(root, 2) >> 28, 0xe);
    assert_eq!(slot(root, 3) >> 28, 0xe);
    let usr_bin = le32(a, (slot(root, 2) & 0x0fff_ffff) as usize + 4 * 5);
    assert_eq!(slot(usr_bin, 3) >> 28, 0xe, "usr/bin's files, Object-tagged too");
    let info = slot(root, 1);
    // ADBI_PI_NAME 1, ADBI_PI_VERSION 2, ADBI_PI_HASHES 3 (20 bytes),
    // ADBI_PI_ARCH 5, ADBI_PI_INSTALLED_SIZE 0x0c (a direct Int, type 1).
    let blob = |tag: u32| {
        assert_eq!(tag >> 28, 0x8, "Blob8");
        let off = (tag & 0x0fff_ffff) as usize;
        &a[off + 1..off + 1 + a[off] as usize]
    };
    assert_eq!(blob(slot(info, 1)), b"tiny");
    assert_eq!(blob(slot(info, 2)), b"1.2.3-r1");
    assert_eq!(blob(slot(info, 3)), p.unique_id.as_slice());
    assert_eq!(blob(slot(info, 5)), b"mipsel_24kc");
    assert_eq!(slot(info, 0x0c), 0x1000_0000 | 316);
    // Nothing past installed-size: depends (0x0f) is empty, so unset.
    assert_eq!(le32(a, (info & 0x0fff_ffff) as usize), 0x0c + 1);
    // ADBI_SCRPT_POSTINST 3, ADBI_SCRPT_PREDEINST 4.
    let scripts = slot(root, 3);
    assert_eq!(le32(a, (scripts & 0x0fff_ffff) as usize), 5);
    assert_eq!(slot(scripts, 1), 0);
    assert_eq!(slot(scripts, 2), 0);
    assert!(blob(slot(scripts, 3)).starts_with(b"#!/bin/sh\necho installed"));
    assert!(blob(slot(scripts, 4)).starts_with(b"#!/bin/sh\necho removing"));
    // The first path is "/": ADBI_DI_NAME unset, ADBI_DI_ACL 2 set.
    let paths = slot(root, 2);
    let first = slot(paths, 1);
    assert_eq!(slot(first, 1), 0);
    let acl = slot(first, 2);
    // ADBI_ACL_MODE 1 = 0755 as a direct Int; USER 2, GROUP 3 "root".
    assert_eq!(slot(acl, 1), 0x1000_0000 | 0o755);
    assert_eq!(blob(slot(acl, 2)), b"root");
    assert_eq!(slot(acl, 2), slot(acl, 3), "identical blobs are stored once");
}

#[test]
fn file_objects_use_the_apk_v3_5_file_schema() {
    let bytes = common::tiny().to_bytes(Options { compress: false }, None).unwrap();
    let p = read::parse(&bytes).unwrap();
    // ADBI_FI_NAME 1, ACL 2, SIZE 3, MTIME 4, HASHES 5 (apk-v3(5) "FILE
    // SCHEMAS" order), read through the schema-free tree.
    let usr_bin = &p.root.field(2).items()[4];
    assert_eq!(usr_bin.field(1), &Value::Blob(b"usr/bin".to_vec()));
    let zz = &usr_bin.field(3).items()[1];
    assert_eq!(zz.field(1), &Value::Blob(b"zz".to_vec()));
    assert_eq!(zz.field(2).field(1), &Value::Int(0o755));
    assert_eq!(zz.field(3), &Value::Int(300));
    assert_eq!(zz.field(4), &Value::Int(1_700_000_000));
    use sha2::Digest;
    assert_eq!(zz.field(5), &Value::Blob(sha2::Sha256::digest([b'z'; 300]).to_vec()));
    assert_eq!(zz.field(6), &Value::Null, "no target: a regular file");
}
