//! Our own reader: parses an .apk back into a [`Package`] and checks what
//! apk checks when it extracts one (apk-tools extract_v3.c): the block
//! order, that DATA blocks come in "paths" order with the right sizes, and
//! that each file's SHA-256 matches; plus the unique-id, which apk only uses.
//!
//! It exists to test the writer (round trip, structure checks, golden
//! dumps) and for `socksbalance-apk check`; it does not verify signatures
//! itself (see [`Parsed::signatures`] and `sign::verify_with_openssl`).

use sha2::{Digest, Sha256};

use crate::adb::{self, Block, Error, Placement, Reader, Value};
use crate::package::{Dir, File, Info, Package};
use crate::schema::{self, acl, dir, file, info, pkg};

/// One SIG block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The 18-byte header: sign_ver, hash_alg, key id.
    pub header: [u8; 18],
    /// The signature bytes.
    pub signature: Vec<u8>,
}

/// A parsed package and what was seen on the way.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// Whether the file was "ADBd" (deflated) rather than "ADB.".
    pub compressed: bool,
    /// The uncompressed stream, starting "ADB.pckg".
    pub stream: Vec<u8>,
    /// (type, offset, payload length) of each block, in order.
    pub blocks: Vec<(u32, usize, usize)>,
    /// The ADB block's payload.
    pub adb: Vec<u8>,
    /// The decoded root value, schema-free.
    pub root: Value,
    /// Every indirect value's type and offset (for alignment checks).
    pub placements: Vec<Placement>,
    /// The package as the metadata and DATA blocks describe it.
    pub package: Package,
    /// installed-size as stored.
    pub installed_size: u64,
    /// unique-id ("hashes") as stored.
    pub unique_id: Vec<u8>,
    /// SIG blocks, in order.
    pub signatures: Vec<Signature>,
}

fn text(v: &Value, what: &str) -> Result<String, Error> {
    match v {
        Value::Null => Ok(String::new()),
        Value::Blob(b) => String::from_utf8(b.clone()).map_err(|_| Error(format!("{what} is not UTF-8"))),
        _ => Err(Error(format!("{what} is not a string"))),
    }
}

fn int(v: &Value, what: &str) -> Result<u64, Error> {
    match v {
        Value::Null => Ok(0),
        Value::Int(i) => Ok(*i),
        _ => Err(Error(format!("{what} is not an integer"))),
    }
}

fn acl_of(v: &Value, what: &str) -> Result<(u32, String, String), Error> {
    let mode = int(v.field(acl::MODE), what)?;
    if mode > 0o7777 {
        return Err(Error(format!("{what}: mode {mode:o} has bits beyond 07777")));
    }
    if !matches!(v.field(acl::XATTRS), Value::Null) {
        return Err(Error(format!("{what}: xattrs are not expected")));
    }
    Ok((mode as u32, text(v.field(acl::USER), what)?, text(v.field(acl::GROUP), what)?))
}

/// Parses and checks `bytes` as an apk v3 package.
pub fn parse(bytes: &[u8]) -> Result<Parsed, Error> {
    let (compressed, stream) = match bytes.get(..4) {
        Some(m) if m == adb::DEFLATE_MAGIC => {
            // Packages are a few MiB; refuse to inflate a bomb.
            let s = miniz_oxide::inflate::decompress_to_vec_with_limit(&bytes[4..], 512 << 20)
                .map_err(|e| Error(format!("deflate stream after ADBd is broken: {e:?}")))?;
            (true, s)
        }
        Some(m) if m == adb::FORMAT_MAGIC => (false, bytes.to_vec()),
        _ => return Err(Error("not an apk v3 file: no ADB. or ADBd magic".into())),
    };
    if stream.get(..4) != Some(adb::FORMAT_MAGIC) {
        return Err(Error("stream does not start with ADB.".into()));
    }
    if stream.get(4..8) != Some(adb::SCHEMA_PACKAGE) {
        return Err(Error("schema is not pckg (not a package)".into()));
    }
    let blocks: Vec<Block> = adb::blocks(&stream[8..], 8)?;

    // apk-v3(5) "BLOCKS": one ADB block, optionally SIG, then DATA.
    let mut adb_payload: Option<&[u8]> = None;
    let mut signatures = Vec::new();
    let mut data: Vec<&Block> = Vec::new();
    for b in &blocks {
        match b.kind {
            adb::BLOCK_ADB if adb_payload.is_none() => adb_payload = Some(b.payload),
            adb::BLOCK_SIG if adb_payload.is_some() && data.is_empty() => {
                if b.payload.len() < 18 || b.payload[0] != 0 {
                    return Err(Error(format!("SIG block at byte {} is not a v0 signature", b.offset)));
                }
                signatures.push(Signature {
                    header: b.payload[..18].try_into().unwrap(),
                    signature: b.payload[18..].to_vec(),
                });
            }
            adb::BLOCK_DATA if adb_payload.is_some() => data.push(b),
            k => return Err(Error(format!("block of type {k} at byte {} is out of place", b.offset))),
        }
    }
    let area = adb_payload.ok_or_else(|| Error("no ADB block".into()))?;
    // adb.c __adb_m_parse refuses an ADB block under 16 bytes (adb_hdr plus
    // at least a root object's count and one slot).
    if area.len() < 16 {
        return Err(Error(format!("ADB block of {} bytes; apk needs at least 16", area.len())));
    }
    let mut r = Reader::new(area)?;
    let root = r.value(r.root_tag())?;
    let placements = std::mem::take(&mut r.placements);

    let pi = root.field(pkg::INFO);
    let info_out = Info {
        name: text(pi.field(info::NAME), "info.name")?,
        version: text(pi.field(info::VERSION), "info.version")?,
        description: text(pi.field(info::DESCRIPTION), "info.description")?,
        arch: text(pi.field(info::ARCH), "info.arch")?,
        license: text(pi.field(info::LICENSE), "info.license")?,
        origin: text(pi.field(info::ORIGIN), "info.origin")?,
        maintainer: text(pi.field(info::MAINTAINER), "info.maintainer")?,
        url: text(pi.field(info::URL), "info.url")?,
        depends: pi
            .field(info::DEPENDS)
            .items()
            .iter()
            .map(|d| text(d.field(crate::schema::dep::NAME), "info.depends name"))
            .collect::<Result<_, _>>()?,
    };
    let installed_size = int(pi.field(info::INSTALLED_SIZE), "info.installed-size")?;
    let unique_id = pi.field(info::HASHES).blob().unwrap_or_default().to_vec();

    let mut dirs = Vec::new();
    let mut expected: Vec<(u32, u32, usize, [u8; 32])> = Vec::new();
    for (di, d) in root.field(pkg::PATHS).items().iter().enumerate() {
        let path = text(d.field(dir::NAME), "path name")?;
        let (mode, user, group) = acl_of(d.field(dir::ACL), &format!("/{path}"))?;
        let mut files = Vec::new();
        for (fi, f) in d.field(dir::FILES).items().iter().enumerate() {
            let name = text(f.field(file::NAME), "file name")?;
            let full = format!("{path}/{name}");
            if !matches!(f.field(file::TARGET), Value::Null) {
                return Err(Error(format!("{full}: symlinks and devices are not expected")));
            }
            let (fmode, fuser, fgroup) = acl_of(f.field(file::ACL), &full)?;
            let size = int(f.field(file::SIZE), &full)? as usize;
            let hash: [u8; 32] = f
                .field(file::HASHES)
                .blob()
                .and_then(|h| h.try_into().ok())
                .ok_or_else(|| Error(format!("{full}: hash is not a 32-byte SHA-256")))?;
            if size > 0 {
                expected.push((di as u32 + 1, fi as u32 + 1, size, hash));
            } else if hash != <[u8; 32]>::from(Sha256::digest(b"")) {
                return Err(Error(format!("{full}: empty file with a non-empty hash")));
            }
            files.push(File {
                name,
                mode: fmode,
                user: fuser,
                group: fgroup,
                mtime: int(f.field(file::MTIME), &full)?,
                content: Vec::new(),
            });
        }
        dirs.push(Dir { path, mode, user, group, files });
    }

    // extract_v3.c: DATA blocks must come in order, one per non-empty file.
    if data.len() != expected.len() {
        return Err(Error(format!("{} DATA blocks for {} non-empty files", data.len(), expected.len())));
    }
    for (b, (di, fi, size, hash)) in data.iter().zip(&expected) {
        let p = b.payload;
        if p.len() < schema::DATA_HEADER_LEN {
            return Err(Error(format!("DATA block at byte {} has no header", b.offset)));
        }
        let bp = u32::from_le_bytes(p[..4].try_into().unwrap());
        let bf = u32::from_le_bytes(p[4..8].try_into().unwrap());
        let content = &p[schema::DATA_HEADER_LEN..];
        if (bp, bf) != (*di, *fi) {
            return Err(Error(format!(
                "DATA block at byte {} is for path {bp} file {bf}, expected {di}/{fi}",
                b.offset
            )));
        }
        if content.len() != *size {
            return Err(Error(format!(
                "DATA for path {di} file {fi}: {} bytes, metadata says {size}",
                content.len()
            )));
        }
        if <[u8; 32]>::from(Sha256::digest(content)) != *hash {
            return Err(Error(format!("DATA for path {di} file {fi}: SHA-256 does not match")));
        }
        dirs[*di as usize - 1].files[*fi as usize - 1].content = content.to_vec();
    }

    let slots = root.field(pkg::SCRIPTS).items();
    if slots.len() > schema::SCRIPT_NAMES.len() {
        return Err(Error("scripts object has unknown slots".into()));
    }
    let mut scripts = Vec::new();
    for (name, v) in schema::SCRIPT_NAMES.iter().zip(slots) {
        match v {
            Value::Null => {}
            Value::Blob(b) => scripts.push((name.to_string(), b.clone())),
            _ => return Err(Error(format!("script {name} is not a blob"))),
        }
    }

    let package = Package { info: info_out, dirs, scripts };
    package.check()?;

    if unique_id.len() != schema::UNIQUE_ID_LEN {
        return Err(Error(format!("unique-id is {} bytes, expected 20", unique_id.len())));
    }
    let want = unique_id_of(area, uid_offset(area)?)?;
    if unique_id != want {
        return Err(Error("unique-id is not the SHA-256 of the ADB block".into()));
    }

    Ok(Parsed {
        compressed,
        blocks: blocks.iter().map(|b| (b.kind, b.offset, b.payload.len())).collect(),
        adb: area.to_vec(),
        root,
        placements,
        package,
        installed_size,
        unique_id,
        signatures,
        stream: stream.clone(),
    })
}

/// Offset of the unique-id's first content byte in the value area.
fn uid_offset(area: &[u8]) -> Result<usize, Error> {
    // Walk the tags by hand: root object -> info object -> slot HASHES.
    let tag_at = |off: usize| -> Result<u32, Error> {
        area.get(off..off + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
            .ok_or_else(|| Error("unique-id: offset out of range".into()))
    };
    let slot = |obj: u32, i: usize| -> Result<u32, Error> {
        let base = (obj & adb::VALUE_MASK) as usize;
        if tag_at(base)? as usize <= i {
            return Err(Error("unique-id: field missing".into()));
        }
        tag_at(base + 4 * i)
    };
    let root = tag_at(4)?;
    let pi = slot(root, pkg::INFO)?;
    let uid = slot(pi, info::HASHES)?;
    if uid & adb::TYPE_MASK != adb::TYPE_BLOB8 {
        return Err(Error("unique-id is not a Blob8".into()));
    }
    Ok((uid & adb::VALUE_MASK) as usize + 1)
}

/// The unique-id apk's mkpkg would store for this ADB block.
fn unique_id_of(area: &[u8], at: usize) -> Result<Vec<u8>, Error> {
    let mut copy = area.to_vec();
    let end = at + schema::UNIQUE_ID_LEN;
    if end > copy.len() {
        return Err(Error("unique-id runs past the ADB block".into()));
    }
    copy[at..end].fill(0);
    Ok(Sha256::digest(&copy)[..schema::UNIQUE_ID_LEN].to_vec())
}
