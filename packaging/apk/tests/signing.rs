//! Signing with user keys through openssl: the SIG block sits between the
//! ADB and DATA blocks, its key id is apk's (SHA-512 of i2d_PublicKey,
//! computed here independently from openssl's own encodings), and openssl
//! verifies the signature over apk's signed message. Needs the openssl CLI
//! (.ci/run installs it).

mod common;

use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha512};
use socksbalance_apk::sign::{self, Signer};
use socksbalance_apk::{package, read, Options};

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl").args(args).output().expect("openssl CLI");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn check_signed(key: &Path, public_i2d: &[u8], scratch: &Path) {
    let signer = Signer::new(key).unwrap();
    let want_id: [u8; 16] = Sha512::digest(public_i2d)[..16].try_into().unwrap();
    assert_eq!(signer.key_id().unwrap(), want_id);

    let bytes = common::tiny().to_bytes(Options::default(), Some(&signer)).unwrap();
    let parsed = read::parse(&bytes).unwrap();
    assert_eq!(parsed.package, common::tiny());
    let kinds: Vec<u32> = parsed.blocks.iter().map(|b| b.0).collect();
    assert_eq!(kinds, vec![0, 1, 2, 2, 2], "ADB, SIG, DATA...");
    let sig = &parsed.signatures[0];
    assert_eq!(sig.header[0], 0, "sign_ver 0");
    assert_eq!(sig.header[1], 4, "APK_DIGEST_SHA512");
    assert_eq!(&sig.header[2..], &want_id);

    let public = scratch.join("public.pem");
    std::fs::write(&public, openssl(&["pkey", "-in", p(key), "-pubout"])).unwrap();
    let msg = package::signed_message(&sig.header, &parsed.adb);
    assert_eq!(&msg[..4], b"pckg");
    assert!(sign::verify_with_openssl(&public, &msg, &sig.signature, scratch).unwrap());
    // A different ADB block must not verify with the same signature.
    let mut other = parsed.adb.clone();
    other[20] ^= 1;
    let forged = package::signed_message(&sig.header, &other);
    assert!(!sign::verify_with_openssl(&public, &forged, &sig.signature, scratch).unwrap());
}

#[test]
fn ecdsa_p256_signature_verifies_and_has_apks_key_id() {
    let s = common::scratch("sign-ec");
    let key = s.join("ec.pem");
    openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", p(&key)]);
    // i2d_PublicKey of an EC key is the uncompressed point: the last 65
    // bytes of the P-256 SubjectPublicKeyInfo.
    let spki = openssl(&["pkey", "-in", p(&key), "-pubout", "-outform", "DER"]);
    let point = &spki[spki.len() - 65..];
    assert_eq!(point[0], 0x04);
    check_signed(&key, point, &s);
    std::fs::remove_dir_all(&s).unwrap();
}

#[test]
fn rsa_signature_verifies_has_apks_key_id_and_is_reproducible() {
    let s = common::scratch("sign-rsa");
    let key = s.join("rsa.pem");
    openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", p(&key)]);
    // i2d_PublicKey of an RSA key is the PKCS#1 RSAPublicKey.
    let pkcs1 = openssl(&["rsa", "-in", p(&key), "-RSAPublicKey_out", "-outform", "DER"]);
    check_signed(&key, &pkcs1, &s);
    // PKCS#1 v1.5 is deterministic, so RSA-signed packages reproduce.
    let signer = Signer::new(&key).unwrap();
    let a = common::tiny().to_bytes(Options::default(), Some(&signer)).unwrap();
    let b = common::tiny().to_bytes(Options::default(), Some(&signer)).unwrap();
    assert_eq!(a, b);
    std::fs::remove_dir_all(&s).unwrap();
}

#[test]
fn unsupported_or_missing_keys_are_refused() {
    let s = common::scratch("sign-bad");
    let ed = s.join("ed.pem");
    openssl(&["genpkey", "-algorithm", "ED25519", "-out", p(&ed)]);
    assert!(Signer::new(&ed).unwrap_err().0.contains("RSA or ECDSA P-256"));
    let p384 = s.join("p384.pem");
    openssl(&["ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out", p(&p384)]);
    assert!(Signer::new(&p384).unwrap_err().0.contains("RSA or ECDSA P-256"));
    assert!(Signer::new(&s.join("missing.pem")).unwrap_err().0.contains("openssl"));
    std::fs::remove_dir_all(&s).unwrap();
}
