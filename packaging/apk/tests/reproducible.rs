//! Same input, same bytes: from memory, and from two copies of a tree whose
//! on-disk times differ (the package's mtime is the one passed in).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use socksbalance_apk::{Options, Package};

fn write_tree(root: &Path) {
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("etc/config")).unwrap();
    fs::write(root.join("usr/bin/tiny"), b"\x7fELF binary").unwrap();
    fs::set_permissions(root.join("usr/bin/tiny"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("etc/config/tiny"), b"config tiny\n").unwrap();
    fs::set_permissions(root.join("etc/config/tiny"), fs::Permissions::from_mode(0o600)).unwrap();
    for d in ["", "usr", "usr/bin", "etc", "etc/config"] {
        fs::set_permissions(root.join(d), fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn same_package_gives_same_bytes() {
    let a = common::tiny().to_bytes(Options::default(), None).unwrap();
    let b = common::tiny().to_bytes(Options::default(), None).unwrap();
    assert_eq!(a, b);
}

#[test]
fn two_copies_of_a_tree_give_the_same_bytes() {
    let s = common::scratch("repro");
    write_tree(&s.join("one"));
    // Different creation order and times on disk for the second copy.
    std::thread::yield_now();
    fs::create_dir_all(s.join("two/etc/config")).unwrap();
    write_tree(&s.join("two"));
    let scripts = vec![("post-install".to_string(), b"#!/bin/sh\n".to_vec())];
    let one = Package::from_tree(common::info(), &s.join("one"), 1_600_000_000, scripts.clone()).unwrap();
    let two = Package::from_tree(common::info(), &s.join("two"), 1_600_000_000, scripts).unwrap();
    assert_eq!(one, two);
    let paths: Vec<&str> = one.dirs.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(paths, ["", "etc", "etc/config", "usr", "usr/bin"], "mkpkg order");
    assert_eq!(one.dirs[2].files[0].mode, 0o600);
    assert_eq!(
        one.to_bytes(Options::default(), None).unwrap(),
        two.to_bytes(Options::default(), None).unwrap()
    );
    fs::remove_dir_all(&s).unwrap();
}

#[test]
fn a_symlink_in_the_tree_is_refused() {
    let s = common::scratch("symlink");
    write_tree(&s);
    std::os::unix::fs::symlink("tiny", s.join("usr/bin/alias")).unwrap();
    let e = Package::from_tree(common::info(), &s, 0, vec![]).unwrap_err();
    assert!(e.0.contains("only directories and regular files"), "{e}");
    fs::remove_dir_all(&s).unwrap();
}
