//! The binary as scripts/package-openwrt.sh uses it: build from a staged
//! tree, check, dump; usage errors exit 2, bad packages exit 1.

mod common;

use std::fs;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_socksbalance-apk"))
}

#[test]
fn build_check_and_dump_a_staged_tree() {
    let s = common::scratch("cli");
    let root = s.join("root");
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::write(root.join("usr/bin/tiny"), b"binary").unwrap();
    fs::write(s.join("post-install"), b"#!/bin/sh\ndefault_postinst\n").unwrap();
    let out = s.join("tiny-1.0-r1.apk");
    let st = bin()
        .args(["build", "--files"])
        .arg(&root)
        .arg("--output")
        .arg(&out)
        .args(["--name", "tiny", "--version", "1.0-r1", "--arch", "x86_64", "--mtime", "1700000000"])
        .args(["--description", "Tiny", "--license", "MIT"])
        .arg("--script")
        .arg(format!("post-install:{}", s.join("post-install").display()))
        .status()
        .unwrap();
    assert!(st.success());
    let check = bin().arg("check").arg(&out).output().unwrap();
    assert!(check.status.success());
    assert!(String::from_utf8_lossy(&check.stdout)
        .contains("tiny 1.0-r1 x86_64 (1 files, 6 bytes installed, 0 signature(s))"));
    let dump = bin().arg("dump").arg(&out).output().unwrap();
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(text.contains("  post-install: |\n    #!/bin/sh\n    default_postinst\n"), "{text}");

    // A damaged file: exit 1 with the file named.
    let mut bytes = fs::read(&out).unwrap();
    let n = bytes.len();
    bytes.truncate(n - 3);
    fs::write(&out, &bytes).unwrap();
    let bad = bin().arg("check").arg(&out).output().unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("tiny-1.0-r1.apk"));
    fs::remove_dir_all(&s).unwrap();
}

#[test]
fn bad_usage_exits_2_and_bad_values_exit_1() {
    assert_eq!(bin().status().unwrap().code(), Some(2));
    assert_eq!(bin().args(["build", "--files"]).status().unwrap().code(), Some(2));
    assert_eq!(bin().args(["build", "--mtime", "soon"]).status().unwrap().code(), Some(2));
    let s = common::scratch("cli-bad");
    let out = bin()
        .args(["build", "--files"])
        .arg(&s)
        .arg("--output")
        .arg(s.join("x.apk"))
        .args(["--name", "x", "--version", "v1", "--arch", "x86_64"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not apk syntax"));
    assert!(!s.join("x.apk").exists());
    fs::remove_dir_all(&s).unwrap();
}
