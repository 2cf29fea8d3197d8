//! Signing with a user-supplied key through the `openssl` command, so the
//! writer needs no crypto library. apk-tools accepts RSA and ECDSA keys; we
//! accept RSA and ECDSA P-256 (prime256v1) private keys in PEM.
//!
//! apk finds the key for a signature by its id: the first 16 bytes of the
//! SHA-512 of the public key as OpenSSL's `i2d_PublicKey` encodes it
//! (apk-tools crypto_openssl.c). That encoding is exactly the contents of
//! the subjectPublicKey BIT STRING of the key's SubjectPublicKeyInfo (the
//! PKCS#1 RSAPublicKey for RSA, the uncompressed point for EC), which
//! `openssl pkey -pubout -outform DER` prints; we take it from there.
//!
//! An ECDSA signature is randomised: a signed package is not byte-for-byte
//! reproducible. Unsigned and RSA-signed ones are.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha512};

use crate::adb::Error;

/// DER of OID 1.2.840.113549.1.1.1 (rsaEncryption).
const OID_RSA: &[u8] = &[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// DER of OID 1.2.840.10045.2.1 (id-ecPublicKey).
const OID_EC: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// DER of OID 1.2.840.10045.3.1.7 (prime256v1, P-256).
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// A private key file used through the openssl CLI.
#[derive(Debug, Clone)]
pub struct Signer {
    key: PathBuf,
}

fn openssl(args: &[&str], stdin: Option<&[u8]>) -> Result<Vec<u8>, Error> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error(format!("cannot run openssl (needed for signing): {e}")))?;
    if let Some(input) = stdin {
        // Dropping the handle after writing closes the pipe: openssl sees EOF.
        let mut pipe = child.stdin.take().expect("piped");
        pipe.write_all(input).map_err(|e| Error(format!("writing to openssl: {e}")))?;
    }
    let out = child.wait_with_output().map_err(|e| Error(format!("openssl: {e}")))?;
    if !out.status.success() {
        return Err(Error(format!(
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

/// Reads one DER TLV at `at`: (tag, contents range end, contents start).
fn der_tlv(d: &[u8], at: usize) -> Result<(u8, usize, usize), Error> {
    let bad = || Error("public key: malformed DER".into());
    let tag = *d.get(at).ok_or_else(bad)?;
    let first = *d.get(at + 1).ok_or_else(bad)? as usize;
    let (len, start) = if first < 0x80 {
        (first, at + 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return Err(bad());
        }
        let mut len = 0usize;
        for k in 0..n {
            len = (len << 8) | *d.get(at + 2 + k).ok_or_else(bad)? as usize;
        }
        (len, at + 2 + n)
    };
    let end = start.checked_add(len).filter(|&e| e <= d.len()).ok_or_else(bad)?;
    Ok((tag, end, start))
}

/// The i2d_PublicKey bytes inside a SubjectPublicKeyInfo, after checking
/// that the key is RSA or EC P-256.
pub fn spki_public_key(spki: &[u8]) -> Result<Vec<u8>, Error> {
    let (tag, end, start) = der_tlv(spki, 0)?;
    if tag != 0x30 {
        return Err(Error("public key: not a SubjectPublicKeyInfo".into()));
    }
    let (atag, aend, astart) = der_tlv(spki, start)?;
    if atag != 0x30 {
        return Err(Error("public key: no AlgorithmIdentifier".into()));
    }
    let alg = &spki[astart..aend];
    let supported =
        alg.starts_with(OID_RSA) || (alg.starts_with(OID_EC) && alg[OID_EC.len()..].starts_with(OID_P256));
    if !supported {
        return Err(Error(
            "signing key must be RSA or ECDSA P-256 (prime256v1), the types apk-tools accepts".into(),
        ));
    }
    let (btag, bend, bstart) = der_tlv(spki, aend)?;
    if btag != 0x03 || bend != end || bstart >= bend || spki[bstart] != 0 {
        return Err(Error("public key: malformed subjectPublicKey".into()));
    }
    Ok(spki[bstart + 1..bend].to_vec())
}

impl Signer {
    /// A signer for the PEM private key at `key`; fails early if openssl
    /// cannot read it or it is not RSA / EC P-256.
    pub fn new(key: &Path) -> Result<Signer, Error> {
        let s = Signer { key: key.to_path_buf() };
        s.key_id()?;
        Ok(s)
    }

    fn key_arg(&self) -> Result<&str, Error> {
        self.key.to_str().ok_or_else(|| Error(format!("key path {} is not UTF-8", self.key.display())))
    }

    /// The key's public half as SubjectPublicKeyInfo DER.
    pub fn public_der(&self) -> Result<Vec<u8>, Error> {
        openssl(&["pkey", "-in", self.key_arg()?, "-pubout", "-outform", "DER"], None)
    }

    /// apk's key id: SHA-512 of i2d_PublicKey, first 16 bytes.
    pub fn key_id(&self) -> Result<[u8; 16], Error> {
        key_id_of_spki(&self.public_der()?)
    }

    /// Signs `message` with SHA-512 (PKCS#1 v1.5 for RSA, DER ECDSA for
    /// EC), as apk's EVP_DigestSign with EVP_sha512 does.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        openssl(&["dgst", "-sha512", "-sign", self.key_arg()?], Some(message))
    }
}

/// apk's key id for a SubjectPublicKeyInfo DER.
pub fn key_id_of_spki(spki: &[u8]) -> Result<[u8; 16], Error> {
    let digest = Sha512::digest(spki_public_key(spki)?);
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    Ok(id)
}

/// Checks `signature` over `message` against the public key in PEM at
/// `public_pem` with `openssl dgst -verify`; Ok(true) if it verifies.
pub fn verify_with_openssl(
    public_pem: &Path,
    message: &[u8],
    signature: &[u8],
    scratch: &Path,
) -> Result<bool, Error> {
    let sig = scratch.join("apk-signature.bin");
    std::fs::write(&sig, signature).map_err(|e| Error(format!("{}: {e}", sig.display())))?;
    let key = public_pem.to_str().ok_or_else(|| Error("key path is not UTF-8".into()))?;
    let s = sig.to_str().ok_or_else(|| Error("scratch path is not UTF-8".into()))?;
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha512", "-verify", key, "-signature", s])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error(format!("cannot run openssl: {e}")))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(message)
        .map_err(|e| Error(format!("writing to openssl: {e}")))?;
    let out = child.wait_with_output().map_err(|e| Error(format!("openssl: {e}")))?;
    // openssl exits 1 both for a wrong signature ("Verification failure")
    // and for one it cannot parse; either way it does not verify.
    Ok(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Verified OK"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spki_parser_refuses_garbage_and_other_key_types() {
        assert!(spki_public_key(&[]).is_err());
        assert!(spki_public_key(&[0x30, 0x05, 0x30]).is_err());
        // An Ed25519 SubjectPublicKeyInfo (OID 1.3.101.112): apk cannot use it.
        let mut ed = vec![0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
        ed.extend([7u8; 32]);
        assert!(spki_public_key(&ed).unwrap_err().0.contains("RSA or ECDSA P-256"));
    }
}
