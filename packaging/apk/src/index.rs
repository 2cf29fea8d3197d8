//! A repository index, `packages.adb`, as apk-tools' `apk mkndx` makes it
//! (src/app_mkndx.c): an ADB file of schema `indx` whose root object holds
//! a description (field 1) and the packages (field 2), each the package's
//! own `info` object with two fields set from the file: `file-size` (0x0d)
//! and `hashes` (0x03), the SHA-256 of the package's ADB block, which apk
//! checks a downloaded package against (adb.c `__adb_handle_identity`). A
//! SIG block signs it as a package's is signed, with the schema `indx` in
//! the signed message; apk takes the index only if a key in
//! /etc/apk/keys verifies it.
//!
//! Packages are listed by file name, so the index does not depend on the
//! order they are given in.

use sha2::{Digest, Sha256};

use crate::adb::{self, err, Error, Value, Writer, NULL};
use crate::package::sign_block_of;
use crate::read;
use crate::schema::{info, pkg};
use crate::sign::Signer;

/// The index of `packages` (file name, bytes), signed when `signer` is given.
pub fn index(
    packages: &[(String, Vec<u8>)],
    description: &str,
    signer: Option<&Signer>,
) -> Result<Vec<u8>, Error> {
    let mut sorted: Vec<&(String, Vec<u8>)> = packages.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut w = Writer::new();
    let mut entries = Vec::new();
    for (name, bytes) in sorted {
        let parsed = read::parse(bytes).map_err(|e| Error(format!("{name}: {e}")))?;
        let mut fields = match parsed.root.field(pkg::INFO) {
            Value::Object(f) => f.clone(),
            _ => return err(format!("{name}: no info object")),
        };
        if fields.len() < info::FILE_SIZE {
            fields.resize(info::FILE_SIZE, Value::Null);
        }
        fields[info::HASHES - 1] = Value::Blob(Sha256::digest(&parsed.adb).to_vec());
        fields[info::FILE_SIZE - 1] = Value::Int(bytes.len() as u64);
        entries.push(write_value(&mut w, &Value::Object(fields))?);
    }
    let description = if description.is_empty() { NULL } else { w.blob(description.as_bytes())? };
    let packages = w.object_array(&entries)?;
    let root = w.object(&[description, packages])?;
    let area = w.finish(root);
    let mut stream = Vec::new();
    stream.extend_from_slice(adb::FORMAT_MAGIC);
    stream.extend_from_slice(adb::SCHEMA_INDEX);
    stream.extend(adb::block(adb::BLOCK_ADB, &[&area])?);
    if let Some(s) = signer {
        stream.extend(adb::block(adb::BLOCK_SIG, &[&sign_block_of(adb::SCHEMA_INDEX, s, &area)?])?);
    }
    Ok(stream)
}

/// Writes a decoded value again (objects keep their slots, arrays their
/// items; apk reads an array under either tag).
fn write_value(w: &mut Writer, v: &Value) -> Result<u32, Error> {
    Ok(match v {
        Value::Null => NULL,
        Value::Int(i) => w.int(*i)?,
        Value::Blob(b) => w.blob(b)?,
        Value::Object(fields) => {
            let ids = fields.iter().map(|f| write_value(w, f)).collect::<Result<Vec<_>, _>>()?;
            w.object(&ids)?
        }
        Value::Array(items) => {
            let ids = items.iter().map(|i| write_value(w, i)).collect::<Result<Vec<_>, _>>()?;
            w.array(&ids)?
        }
    })
}
