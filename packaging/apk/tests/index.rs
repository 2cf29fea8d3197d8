//! The repository index (`packages.adb`): what `apk mkndx` writes, read
//! back with our own ADB reader; its signature verified by openssl over
//! the message apk checks (schema `indx`). The real apk-tools takes it in
//! scripts/openwrt-feed-test.sh (install, upgrade, tampered and unsigned
//! indexes refused).

mod common;

use std::process::Command;

use sha2::{Digest, Sha256};
use socksbalance_apk::adb::{self, Reader, Value};
use socksbalance_apk::schema::info;
use socksbalance_apk::sign::{self, Signer};
use socksbalance_apk::{index, package, read, Options};

fn two_packages() -> Vec<(String, Vec<u8>)> {
    let a = common::tiny();
    let mut b = common::tiny();
    b.info.name = "another".into();
    b.info.version = "2.0-r3".into();
    vec![
        ("tiny-1.2.3-r1.apk".into(), a.to_bytes(Options::default(), None).unwrap()),
        ("another-2.0-r3.apk".into(), b.to_bytes(Options::default(), None).unwrap()),
    ]
}

/// The blocks after the ADB block: (type, payload).
type Rest = Vec<(u32, Vec<u8>)>;

/// The index's root value, its ADB block's payload, and the blocks after.
fn root_of(file: &[u8]) -> (Value, Vec<u8>, Rest) {
    assert_eq!(&file[..4], b"ADB.");
    assert_eq!(&file[4..8], b"indx", "schema");
    let blocks = adb::blocks(&file[8..], 8).unwrap();
    let area = blocks[0].payload.to_vec();
    assert_eq!(blocks[0].kind, adb::BLOCK_ADB);
    let mut r = Reader::new(&area).unwrap();
    let root = r.value(r.root_tag()).unwrap();
    (root, area, blocks.iter().skip(1).map(|b| (b.kind, b.payload.to_vec())).collect())
}

#[test]
fn each_package_is_its_info_with_file_size_and_the_sha256_of_its_adb_block() {
    let packages = two_packages();
    let file = index::index(&packages, "test repo", None).unwrap();
    let (root, _, rest) = root_of(&file);
    assert!(rest.is_empty(), "unsigned: no SIG block");
    assert_eq!(root.field(1).blob(), Some(&b"test repo"[..]));
    let entries = root.field(2).items();
    assert_eq!(entries.len(), 2);
    // Listed by file name: another-… before tiny-….
    for (entry, (name, bytes)) in entries.iter().zip([&packages[1], &packages[0]]) {
        let parsed = read::parse(bytes).unwrap();
        assert_eq!(entry.field(info::NAME).blob(), Some(parsed.package.info.name.as_bytes()), "{name}");
        assert_eq!(entry.field(info::VERSION).blob(), Some(parsed.package.info.version.as_bytes()));
        assert_eq!(entry.field(info::ARCH).blob(), Some(&b"mipsel_24kc"[..]));
        assert_eq!(entry.field(info::FILE_SIZE).int(), Some(bytes.len() as u64));
        assert_eq!(entry.field(info::HASHES).blob(), Some(&Sha256::digest(&parsed.adb)[..]));
        assert_eq!(entry.field(info::INSTALLED_SIZE).int(), Some(parsed.installed_size));
    }
}

#[test]
fn the_order_given_does_not_matter() {
    let mut packages = two_packages();
    let a = index::index(&packages, "", None).unwrap();
    packages.reverse();
    assert_eq!(a, index::index(&packages, "", None).unwrap());
}

#[test]
fn a_signed_index_verifies_over_the_indx_message_and_a_changed_one_does_not() {
    let s = common::scratch("index-sign");
    let key = s.join("ec.pem");
    let public = s.join("public.pem");
    let run = |args: &[&str]| assert!(Command::new("openssl").args(args).status().unwrap().success());
    run(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key.to_str().unwrap()]);
    run(&["pkey", "-in", key.to_str().unwrap(), "-pubout", "-out", public.to_str().unwrap()]);
    let signer = Signer::new(&key).unwrap();
    let file = index::index(&two_packages(), "signed", Some(&signer)).unwrap();
    let (_, area, rest) = root_of(&file);
    assert_eq!(rest.len(), 1);
    let (kind, sig) = &rest[0];
    assert_eq!(*kind, adb::BLOCK_SIG);
    let header: [u8; 18] = sig[..18].try_into().unwrap();
    assert_eq!(&header[2..], &signer.key_id().unwrap());
    let msg = package::signed_message_of(adb::SCHEMA_INDEX, &header, &area);
    assert_eq!(&msg[..4], b"indx");
    assert!(sign::verify_with_openssl(&public, &msg, &sig[18..], &s).unwrap());
    let mut changed = area.clone();
    changed[20] ^= 1;
    let forged = package::signed_message_of(adb::SCHEMA_INDEX, &header, &changed);
    assert!(!sign::verify_with_openssl(&public, &forged, &sig[18..], &s).unwrap());
    // The package schema's message is not the index's.
    assert!(!sign::verify_with_openssl(&public, &package::signed_message(&header, &area), &sig[18..], &s)
        .unwrap());
    std::fs::remove_dir_all(&s).unwrap();
}

#[test]
fn a_file_that_is_not_a_package_is_refused_by_name() {
    let e = index::index(&[("junk.apk".into(), b"not an apk".to_vec())], "", None).unwrap_err();
    assert!(e.0.contains("junk.apk"), "{e}");
}
