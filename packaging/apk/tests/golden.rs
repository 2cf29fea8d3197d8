//! A checked-in dump of a tiny fixed package, down to every byte of the
//! uncompressed stream. Regenerate only on purpose, after checking the
//! change is intended:
//!   UPDATE_GOLDEN=1 cargo test -p socksbalance-apk --test golden

mod common;

use socksbalance_apk::{dump, read, Options};

#[test]
fn tiny_package_matches_the_golden_dump() {
    let bytes = common::tiny().to_bytes(Options::default(), None).unwrap();
    let got = dump::dump(&read::parse(&bytes).unwrap(), &bytes, true);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tiny.dump");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).expect("tests/golden/tiny.dump (UPDATE_GOLDEN=1 writes it)");
    if got != want {
        for (n, (g, w)) in got.lines().zip(want.lines()).enumerate() {
            if g != w {
                panic!("golden dump differs at line {}:\n  got:  {g}\n  want: {w}", n + 1);
            }
        }
        panic!("golden dump differs in length: {} lines vs {}", got.lines().count(), want.lines().count());
    }
}
