//! The ADB wire format: tagged 32-bit values, the ADB block's value area,
//! and the block framing of an apk v3 file.
//!
//! Sources, cited by section below: apk-tools `doc/apk-v3.5.scd` ("WIRE
//! FORMAT", "BLOCKS") and the constants in apk-tools `src/adb.h`, which the
//! manual page leaves out (block alignment, the `adb_hdr` at the start of the
//! ADB block, how each indirect value is aligned). This is our own code
//! written from those descriptions.
//!
//! ```text
//! value tag (u32 LE):  [type:4][value or offset:28]
//! block header (u32 LE): [type:2][raw size incl. this header:30], then the
//!                        payload, then zeros up to a multiple of 8
//! ```

use std::collections::HashMap;
use std::fmt;

/// apk-v3(5) "WIRE FORMAT": the high 4 bits of a value tag.
pub const TYPE_SPECIAL: u32 = 0x0000_0000;
/// apk-v3(5): Int, direct (the value is in the low 28 bits).
pub const TYPE_INT: u32 = 0x1000_0000;
/// apk-v3(5): Int32, indirect.
pub const TYPE_INT32: u32 = 0x2000_0000;
/// apk-v3(5): Int64, indirect.
pub const TYPE_INT64: u32 = 0x3000_0000;
/// apk-v3(5): Blob8, indirect: a u8 length, then the bytes.
pub const TYPE_BLOB8: u32 = 0x8000_0000;
/// apk-v3(5): Blob16, indirect: a u16 LE length, then the bytes.
pub const TYPE_BLOB16: u32 = 0x9000_0000;
/// apk-v3(5): Blob32, indirect: a u32 LE length, then the bytes.
pub const TYPE_BLOB32: u32 = 0xa000_0000;
/// apk-v3(5): Array, indirect: slot 0 is the slot count, then the items.
pub const TYPE_ARRAY: u32 = 0xd000_0000;
/// apk-v3(5): Object, indirect: slot 0 is the slot count, then field i in slot i.
pub const TYPE_OBJECT: u32 = 0xe000_0000;
/// adb.h `ADB_TYPE_MASK`.
pub const TYPE_MASK: u32 = 0xf000_0000;
/// adb.h `ADB_VALUE_MASK`: offsets and direct ints have 28 bits.
pub const VALUE_MASK: u32 = 0x0fff_ffff;
/// apk-v3(5): the Special atom NULL (an unset field).
pub const NULL: u32 = 0;

/// adb.h `ADB_FORMAT_MAGIC`: "ADB." as a little-endian u32.
pub const FORMAT_MAGIC: &[u8; 4] = b"ADB.";
/// adb_comp.c: a file that starts "ADBd" is the same stream, raw-deflated
/// after these four bytes.
pub const DEFLATE_MAGIC: &[u8; 4] = b"ADBd";
/// apk_adb.h `ADB_SCHEMA_PACKAGE`: "pckg", the root schema of a package.
pub const SCHEMA_PACKAGE: &[u8; 4] = b"pckg";
/// The schema of a repository index, `packages.adb` (apk_adb.h ADB_SCHEMA_INDEX).
pub const SCHEMA_INDEX: &[u8; 4] = b"indx";

/// apk-v3(5) "BLOCKS": the two type bits of a block header.
pub const BLOCK_ADB: u32 = 0;
/// apk-v3(5): a signature of the ADB block.
pub const BLOCK_SIG: u32 = 1;
/// apk-v3(5): file contents.
pub const BLOCK_DATA: u32 = 2;
/// adb.h `ADB_BLOCK_EXT` (apk-v3(5) calls it DATAX): a block too large for
/// 30 bits; its real type and 64-bit size follow. We never write one.
pub const BLOCK_EXT: u32 = 3;
/// adb.h `ADB_BLOCK_ALIGNMENT`: every block starts at a multiple of 8.
pub const BLOCK_ALIGNMENT: usize = 8;
/// Largest raw block size a plain (non-EXT) header can carry.
pub const MAX_BLOCK_RAW: usize = 0x3fff_ffff;
/// adb.h `struct adb_hdr`: compat version, version, reserved u16, root
/// value; the first 8 bytes of the ADB block's payload.
pub const ADB_HDR_LEN: usize = 8;

/// A problem in a value area or a block stream, with where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub(crate) fn err<T>(msg: impl Into<String>) -> Result<T, Error> {
    Err(Error(msg.into()))
}

/// Builds the payload of an ADB block: the 8-byte header, then values.
///
/// Each indirect value is aligned as apk-tools' writer aligns it (adb.c:
/// a blob to the width of its length field, ints and objects to 4), and
/// identical bytes are stored once, as apk-tools does, so names like
/// "root" appear once however often they are used.
///
/// The reuse rule is adb.c `adb_w_data`'s, so that our bytes are the bytes
/// `apk mkpkg` writes: it remembers one offset per distinct byte string (the
/// latest written), reuses it when it suits the alignment asked for, and
/// otherwise writes a new copy that from then on is the one remembered.
pub struct Writer {
    /// The payload so far; bytes 4..8 receive the root value at the end.
    buf: Vec<u8>,
    /// The offset of each byte string written with reuse (apk's hash buckets).
    seen: HashMap<Vec<u8>, u32>,
}

impl Default for Writer {
    fn default() -> Self {
        Self::new()
    }
}

impl Writer {
    /// An empty value area: adb_hdr with compat version 0 and version 0
    /// (what apk-tools writes; readers refuse a non-zero compat version).
    pub fn new() -> Self {
        Writer { buf: vec![0; ADB_HDR_LEN], seen: HashMap::new() }
    }

    fn raw(&mut self, data: &[u8], align: usize) -> Result<u32, Error> {
        while self.buf.len() % align != 0 {
            self.buf.push(0);
        }
        let offset = self.buf.len();
        if offset > VALUE_MASK as usize {
            return err("ADB value area is larger than 256 MiB (28-bit offsets)");
        }
        self.buf.extend_from_slice(data);
        Ok(offset as u32)
    }

    fn data(&mut self, data: &[u8], align: usize) -> Result<u32, Error> {
        // adb.c adb_w_data: `if ((entry->offs & (alignment-1)) != 0) goto
        // add;` replaces the bucket entry with the new copy. (Older
        // apk-tools, e.g. adb.c at 6941f8bd, tested `offs & alignment`, a
        // bug fixed since; we follow the fixed rule of apk 3.0.)
        if let Some(&o) = self.seen.get(data) {
            if o as usize % align == 0 {
                return Ok(o);
            }
        }
        let offset = self.raw(data, align)?;
        self.seen.insert(data.to_vec(), offset);
        Ok(offset)
    }

    fn blob_bytes(bytes: &[u8]) -> Result<(u32, Vec<u8>, usize), Error> {
        let n = bytes.len();
        let (tag, mut v, align) = if n > 0xffff {
            let n32 = u32::try_from(n).or_else(|_| err("blob longer than 4 GiB"))?;
            (TYPE_BLOB32, n32.to_le_bytes().to_vec(), 4)
        } else if n > 0xff {
            (TYPE_BLOB16, (n as u16).to_le_bytes().to_vec(), 2)
        } else {
            (TYPE_BLOB8, vec![n as u8], 1)
        };
        v.extend_from_slice(bytes);
        Ok((tag, v, align))
    }

    /// A byte string; empty is NULL, as in apk-tools (an unset field).
    pub fn blob(&mut self, bytes: &[u8]) -> Result<u32, Error> {
        if bytes.is_empty() {
            return Ok(NULL);
        }
        let (tag, v, align) = Self::blob_bytes(bytes)?;
        Ok(tag | self.data(&v, align)?)
    }

    /// A blob that is never shared with an identical one, so it can be
    /// patched in place later (the unique-id). Returns the value and the
    /// offset of its first content byte.
    pub fn blob_unshared(&mut self, bytes: &[u8]) -> Result<(u32, usize), Error> {
        let (tag, v, align) = Self::blob_bytes(bytes)?;
        let header = v.len() - bytes.len();
        let offset = self.raw(&v, align)?;
        Ok((tag | offset, offset as usize + header))
    }

    /// An integer: direct below 2^28, else a 4-byte-aligned u32 or u64.
    pub fn int(&mut self, v: u64) -> Result<u32, Error> {
        if v <= VALUE_MASK as u64 {
            Ok(TYPE_INT | v as u32)
        } else if v <= u32::MAX as u64 {
            Ok(TYPE_INT32 | self.data(&(v as u32).to_le_bytes(), 4)?)
        } else {
            Ok(TYPE_INT64 | self.data(&v.to_le_bytes(), 4)?)
        }
    }

    fn slots(&mut self, tag: u32, items: &[u32]) -> Result<u32, Error> {
        // apk trims trailing unset slots and writes nothing for an empty
        // object: an object with only its count slot reads as NULL.
        let n = items.iter().rposition(|&v| v != NULL).map_or(0, |i| i + 1);
        if n == 0 {
            return Ok(NULL);
        }
        let mut v = Vec::with_capacity(4 * (n + 1));
        v.extend_from_slice(&(n as u32 + 1).to_le_bytes());
        for item in &items[..n] {
            v.extend_from_slice(&item.to_le_bytes());
        }
        Ok(tag | self.data(&v, 4)?)
    }

    /// An object whose field i (1-based, as the schema numbers it) is
    /// `fields[i - 1]`.
    pub fn object(&mut self, fields: &[u32]) -> Result<u32, Error> {
        self.slots(TYPE_OBJECT, fields)
    }

    /// An array of the non-NULL `items`, in order, under the Array tag
    /// (adb.c `adb_w_arr`).
    pub fn array(&mut self, items: &[u32]) -> Result<u32, Error> {
        let items: Vec<u32> = items.iter().copied().filter(|&v| v != NULL).collect();
        self.slots(TYPE_ARRAY, &items)
    }

    /// An array of the non-NULL `items` written as apk's mkpkg writes its
    /// "paths" and "files" arrays: built with `adb_wa_append_obj` and stored
    /// with `adb_wo_obj`, which goes through `adb_w_obj` and so gives the
    /// array the Object tag (0xe), not the Array tag (0xd). apk reads either
    /// (adb.c `adb_r_obj`); the tag only matters for being byte-identical.
    pub fn object_array(&mut self, items: &[u32]) -> Result<u32, Error> {
        let items: Vec<u32> = items.iter().copied().filter(|&v| v != NULL).collect();
        self.slots(TYPE_OBJECT, &items)
    }

    /// The finished payload with `root` stored in the header.
    pub fn finish(mut self, root: u32) -> Vec<u8> {
        self.buf[4..8].copy_from_slice(&root.to_le_bytes());
        self.buf
    }
}

/// One framed block: header, payload, zero padding to 8 bytes.
pub fn block(kind: u32, payload: &[&[u8]]) -> Result<Vec<u8>, Error> {
    let len: usize = payload.iter().map(|p| p.len()).sum();
    let raw = 4 + len;
    if raw > MAX_BLOCK_RAW {
        return err(format!("block of {len} bytes needs an EXT header, which this writer does not produce"));
    }
    let mut out = Vec::with_capacity(raw + BLOCK_ALIGNMENT);
    out.extend_from_slice(&((kind << 30) | raw as u32).to_le_bytes());
    for p in payload {
        out.extend_from_slice(p);
    }
    out.resize(raw.next_multiple_of(BLOCK_ALIGNMENT), 0);
    Ok(out)
}

/// A block as found in a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block<'a> {
    /// BLOCK_ADB, BLOCK_SIG or BLOCK_DATA (an EXT block reports its real type).
    pub kind: u32,
    /// Offset of the block header in the (uncompressed) stream.
    pub offset: usize,
    /// The payload, without header or padding.
    pub payload: &'a [u8],
}

/// Splits `stream` (after the 8-byte file header) into blocks, checking
/// that each starts 8-aligned, fits, and is padded with zeros.
pub fn blocks(stream: &[u8], base: usize) -> Result<Vec<Block<'_>>, Error> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < stream.len() {
        let at = base + pos;
        let rest = &stream[pos..];
        if rest.len() < 4 {
            return err(format!("truncated block header at byte {at}"));
        }
        let ts = u32::from_le_bytes(rest[..4].try_into().unwrap());
        let (kind, hdr, raw) = if ts >> 30 == BLOCK_EXT {
            if rest.len() < 16 {
                return err(format!("truncated EXT block header at byte {at}"));
            }
            let x = u64::from_le_bytes(rest[8..16].try_into().unwrap());
            (ts & 0x3fff_ffff, 16usize, usize::try_from(x).unwrap_or(usize::MAX))
        } else {
            (ts >> 30, 4usize, (ts & 0x3fff_ffff) as usize)
        };
        if raw < hdr {
            return err(format!("block at byte {at} is shorter than its header"));
        }
        let padded = raw
            .checked_next_multiple_of(BLOCK_ALIGNMENT)
            .filter(|&p| p <= rest.len())
            .ok_or_else(|| Error(format!("block at byte {at} runs past the end ({raw} bytes)")))?;
        if rest[raw..padded].iter().any(|&b| b != 0) {
            return err(format!("block at byte {at} has non-zero padding"));
        }
        out.push(Block { kind, offset: at, payload: &rest[hdr..raw] });
        pos += padded;
    }
    Ok(out)
}

/// A decoded value of an ADB value area, schema-free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// The NULL atom (also TRUE/FALSE would land in Special; we write neither).
    Null,
    /// Int, Int32 or Int64.
    Int(u64),
    /// Blob8/16/32 contents.
    Blob(Vec<u8>),
    /// Object slots 1..n (index 0 of the Vec is field 1).
    Object(Vec<Value>),
    /// Array items.
    Array(Vec<Value>),
}

impl Value {
    /// The field `i` (1-based) of an object, or Null.
    pub fn field(&self, i: usize) -> &Value {
        match self {
            Value::Object(f) if i >= 1 && i <= f.len() => &f[i - 1],
            _ => &Value::Null,
        }
    }

    /// Items of an array (or of an object read as array: apk accepts both
    /// tags where its schema expects an array); empty for Null.
    pub fn items(&self) -> &[Value] {
        match self {
            Value::Array(v) | Value::Object(v) => v,
            _ => &[],
        }
    }

    /// Blob contents, or None.
    pub fn blob(&self) -> Option<&[u8]> {
        match self {
            Value::Blob(b) => Some(b),
            _ => None,
        }
    }

    /// Integer value, or None.
    pub fn int(&self) -> Option<u64> {
        match self {
            Value::Int(v) => Some(*v),
            _ => None,
        }
    }
}

/// Where each indirect value sits, for the structure checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The value's tag type (TYPE_*).
    pub kind: u32,
    /// Its offset in the value area.
    pub offset: usize,
}

/// Reads values out of an ADB block payload, bounds-checked, with a depth
/// limit so a hostile file cannot recurse without end.
pub struct Reader<'a> {
    area: &'a [u8],
    /// Every indirect value visited, in visiting order.
    pub placements: Vec<Placement>,
}

const MAX_DEPTH: usize = 16;

impl<'a> Reader<'a> {
    /// A reader over an ADB block payload; checks the adb_hdr.
    pub fn new(area: &'a [u8]) -> Result<Self, Error> {
        if area.len() < ADB_HDR_LEN {
            return err("ADB block shorter than its 8-byte header");
        }
        if area[0] != 0 {
            return err(format!("ADB compat version {} (only 0 exists)", area[0]));
        }
        Ok(Reader { area, placements: Vec::new() })
    }

    /// The root value from the header.
    pub fn root_tag(&self) -> u32 {
        u32::from_le_bytes(self.area[4..8].try_into().unwrap())
    }

    fn at(&self, offset: usize, len: usize) -> Result<&'a [u8], Error> {
        offset
            .checked_add(len)
            .filter(|&end| end <= self.area.len())
            .map(|end| &self.area[offset..end])
            .ok_or_else(|| Error(format!("value at offset {offset} (+{len}) is outside the ADB block")))
    }

    /// Decodes the value with tag `tag`.
    pub fn value(&mut self, tag: u32) -> Result<Value, Error> {
        self.value_at_depth(tag, 0)
    }

    fn value_at_depth(&mut self, tag: u32, depth: usize) -> Result<Value, Error> {
        if depth > MAX_DEPTH {
            return err("values nested deeper than 16 levels");
        }
        let kind = tag & TYPE_MASK;
        let v = (tag & VALUE_MASK) as usize;
        if kind != TYPE_SPECIAL && kind != TYPE_INT {
            self.placements.push(Placement { kind, offset: v });
        }
        Ok(match kind {
            TYPE_SPECIAL if v == 0 => Value::Null,
            TYPE_INT => Value::Int(v as u64),
            TYPE_INT32 => Value::Int(u32::from_le_bytes(self.at(v, 4)?.try_into().unwrap()) as u64),
            TYPE_INT64 => Value::Int(u64::from_le_bytes(self.at(v, 8)?.try_into().unwrap())),
            TYPE_BLOB8 => {
                let n = self.at(v, 1)?[0] as usize;
                Value::Blob(self.at(v + 1, n)?.to_vec())
            }
            TYPE_BLOB16 => {
                let n = u16::from_le_bytes(self.at(v, 2)?.try_into().unwrap()) as usize;
                Value::Blob(self.at(v + 2, n)?.to_vec())
            }
            TYPE_BLOB32 => {
                let n = u32::from_le_bytes(self.at(v, 4)?.try_into().unwrap()) as usize;
                Value::Blob(self.at(v + 4, n)?.to_vec())
            }
            TYPE_ARRAY | TYPE_OBJECT => {
                let n = u32::from_le_bytes(self.at(v, 4)?.try_into().unwrap()) as usize;
                if n == 0 {
                    return err(format!("object at offset {v} has a zero slot count"));
                }
                let slots = self.at(v, 4 * n)?;
                let tags: Vec<u32> =
                    slots[4..].chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
                let mut items = Vec::with_capacity(tags.len());
                for t in tags {
                    items.push(self.value_at_depth(t, depth + 1)?);
                }
                if kind == TYPE_ARRAY {
                    Value::Array(items)
                } else {
                    Value::Object(items)
                }
            }
            _ => return err(format!("value tag {tag:#010x} has an unknown or unused type")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints_are_direct_below_2_pow_28_and_aligned_above() {
        let mut w = Writer::new();
        assert_eq!(w.int(0x0fff_ffff).unwrap(), 0x1fff_ffff);
        let big = w.int(0x1000_0000).unwrap();
        assert_eq!(big & TYPE_MASK, TYPE_INT32);
        assert_eq!((big & VALUE_MASK) % 4, 0);
        let huge = w.int(1 << 40).unwrap();
        assert_eq!(huge & TYPE_MASK, TYPE_INT64);
        let area = w.finish(NULL);
        let mut r = Reader::new(&area).unwrap();
        assert_eq!(r.value(big).unwrap(), Value::Int(0x1000_0000));
        assert_eq!(r.value(huge).unwrap(), Value::Int(1 << 40));
    }

    #[test]
    fn blob_width_follows_length_and_identical_blobs_are_shared() {
        let mut w = Writer::new();
        let a = w.blob(b"root").unwrap();
        let b = w.blob(b"root").unwrap();
        assert_eq!(a, b);
        assert_eq!(a & TYPE_MASK, TYPE_BLOB8);
        assert_eq!(w.blob(&[7; 256]).unwrap() & TYPE_MASK, TYPE_BLOB16);
        assert_eq!(w.blob(&[7; 0x10000]).unwrap() & TYPE_MASK, TYPE_BLOB32);
        assert_eq!(w.blob(b"").unwrap(), NULL);
    }

    #[test]
    fn reuse_follows_adb_w_data_one_offset_per_byte_string() {
        // Regression: we kept every copy and reused the first that fit; apk
        // remembers only the latest copy, so a later request can land on a
        // different offset than ours did.
        let mut w = Writer::new();
        w.buf.push(0); // make the next free offset odd (9)
        let first = w.data(b"abcd", 1).unwrap();
        assert_eq!(first, 9);
        let aligned = w.data(b"abcd", 4).unwrap();
        assert_eq!(aligned, 16, "9 is not 4-aligned: a new copy");
        assert_eq!(w.data(b"abcd", 1).unwrap(), 16, "the latest copy is the one reused");
        assert_eq!(w.data(b"abcd", 4).unwrap(), 16);
    }

    #[test]
    fn object_arrays_carry_the_object_tag() {
        let mut w = Writer::new();
        let one = w.int(1).unwrap();
        assert_eq!(w.object_array(&[NULL, one]).unwrap() & TYPE_MASK, TYPE_OBJECT);
        assert_eq!(w.array(&[one]).unwrap() & TYPE_MASK, TYPE_ARRAY);
        assert_eq!(w.object_array(&[NULL]).unwrap(), NULL);
    }

    #[test]
    fn empty_objects_are_null_and_trailing_nulls_are_trimmed() {
        let mut w = Writer::new();
        assert_eq!(w.object(&[NULL, NULL]).unwrap(), NULL);
        assert_eq!(w.array(&[]).unwrap(), NULL);
        let one = w.int(5).unwrap();
        let o = w.object(&[one, NULL, NULL]).unwrap();
        let area = w.finish(o);
        let off = (o & VALUE_MASK) as usize;
        assert_eq!(&area[off..off + 4], &2u32.to_le_bytes(), "count slot = 1 field + itself");
    }

    #[test]
    fn blocks_are_padded_to_8_and_reject_garbage() {
        let b = block(BLOCK_DATA, &[b"abc"]).unwrap();
        assert_eq!(b.len(), 8);
        assert_eq!(u32::from_le_bytes(b[..4].try_into().unwrap()), (2 << 30) | 7);
        let parsed = blocks(&b, 8).unwrap();
        assert_eq!(parsed[0].payload, b"abc");
        assert_eq!(parsed[0].offset, 8);
        let mut bad = b.clone();
        bad[7] = 1;
        assert!(blocks(&bad, 0).unwrap_err().0.contains("padding"));
        assert!(blocks(&b[..6], 0).is_err());
        assert!(blocks(&[0xff, 0xff, 0xff, 0x3f], 0).is_err());
    }

    #[test]
    fn ext_blocks_are_read_with_their_64_bit_size() {
        // adb.h adb_block_init: type_size = (EXT << 30) + type, a reserved
        // u32, then x_size = header (16) + payload length.
        let mut b = ((BLOCK_EXT << 30) | BLOCK_DATA).to_le_bytes().to_vec();
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&(16u64 + 3).to_le_bytes());
        b.extend_from_slice(b"xyz");
        b.resize(24, 0);
        let parsed = blocks(&b, 0).unwrap();
        assert_eq!(parsed[0].kind, BLOCK_DATA);
        assert_eq!(parsed[0].payload, b"xyz");
        b[8] = 2; // x_size smaller than the header
        assert!(blocks(&b, 0).is_err());
    }

    #[test]
    fn reader_refuses_out_of_bounds_and_deep_values() {
        let area = [0u8; 8];
        let mut r = Reader::new(&area).unwrap();
        assert!(r.value(TYPE_BLOB8 | 100).is_err());
        assert!(r.value(TYPE_OBJECT | 4).is_err());
        assert!(r.value(0x5000_0000).is_err());
        // An object whose only item points at itself.
        let mut area = vec![0u8; 8];
        area.extend_from_slice(&2u32.to_le_bytes());
        area.extend_from_slice(&(TYPE_OBJECT | 8).to_le_bytes());
        let mut r = Reader::new(&area).unwrap();
        assert!(r.value(TYPE_OBJECT | 8).unwrap_err().0.contains("deeper"));
        assert!(Reader::new(&[1, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
