//! A package as apk's `mkpkg` lays it out, and its encoding.
//!
//! The layout follows apk-tools' `mkpkg` (src/app_mkpkg.c), which OpenWrt
//! 25.12's include/package-pack.mk runs: every directory of the tree is an
//! entry of "paths", / first (with no name) and then the others sorted by
//! full path; files sorted by name within their directory; each regular file
//! carries its size, mtime and SHA-256; one DATA block per non-empty file, in
//! the same order. The file is the ADB block, optional SIG blocks, then the
//! DATA blocks (apk-v3(5) "BLOCKS"), raw-deflated behind "ADBd" unless asked
//! not to.

use std::fs;
use std::path::Path;

use sha2::{Digest, Sha256, Sha512};

use crate::adb::{self, Error, Writer, NULL};
use crate::schema::{self, acl, dir, file, info, pkg};
use crate::sign::Signer;

/// The package info fields we write (apk-package(5)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// [a-zA-Z0-9._+-], starting alphanumeric.
    pub name: String,
    /// apk version syntax, e.g. 1.2.3-r1.
    pub version: String,
    /// One line.
    pub description: String,
    /// The target's arch string, as in its /etc/apk/arch (OpenWrt: e.g. mipsel_24kc).
    pub arch: String,
    /// SPDX expression.
    pub license: String,
    /// Source package; OpenWrt writes its SOURCE, e.g. feeds/packages/net/foo.
    pub origin: String,
    /// Name and address.
    pub maintainer: String,
    /// Project home page.
    pub url: String,
    /// Packages this one needs, by name (any version).
    pub depends: Vec<String>,
}

/// A regular file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Name within its directory.
    pub name: String,
    /// Permission bits (07777).
    pub mode: u32,
    /// Owner name.
    pub user: String,
    /// Group name.
    pub group: String,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
    /// Contents.
    pub content: Vec<u8>,
}

/// A directory and the files directly in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dir {
    /// Path without leading slash; "" is /.
    pub path: String,
    /// Permission bits (07777).
    pub mode: u32,
    /// Owner name.
    pub user: String,
    /// Group name.
    pub group: String,
    /// Files, sorted by name.
    pub files: Vec<File>,
}

/// Everything that goes into one .apk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// Package info.
    pub info: Info,
    /// Directories in "paths" order: / first, then sorted by path.
    pub dirs: Vec<Dir>,
    /// (slot name, body), e.g. ("post-install", "#!/bin/sh\n...").
    pub scripts: Vec<(String, Vec<u8>)>,
}

/// How to write the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Raw deflate behind "ADBd" (apk's default), or the plain "ADB." stream.
    pub compress: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { compress: true }
    }
}

fn invalid<T>(msg: String) -> Result<T, Error> {
    Err(Error(msg))
}

/// apk-package(5) "name": [a-zA-Z0-9._+-], starting with [a-zA-Z0-9].
pub fn check_name(name: &str) -> Result<(), Error> {
    let ok_first = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = name.chars().all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c));
    if !ok_first || !ok_rest {
        return invalid(format!(
            "package name {name:?}: use [a-zA-Z0-9._+-] and start with a letter or digit"
        ));
    }
    Ok(())
}

/// apk-package(5) "version":
/// `number{.number}...{letter}{_suffix{number}}...{~hash}{-r#}`.
pub fn check_version(version: &str) -> Result<(), Error> {
    const SUFFIXES: [&str; 9] = ["alpha", "beta", "pre", "rc", "cvs", "svn", "git", "hg", "p"];
    let bad = || {
        invalid(format!(
            "version {version:?} is not apk syntax number{{.number}}{{letter}}{{_suffix{{number}}}}{{~hash}}{{-r#}}, e.g. 1.2.3-r1"
        ))
    };
    let b = version.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    if !digits(&mut i) {
        return bad();
    }
    while i < b.len() && b[i] == b'.' {
        i += 1;
        if !digits(&mut i) {
            return bad();
        }
    }
    if i < b.len() && b[i].is_ascii_lowercase() {
        i += 1;
    }
    while i < b.len() && b[i] == b'_' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_lowercase() {
            i += 1;
        }
        if !SUFFIXES.contains(&&version[start..i]) {
            return bad();
        }
        digits(&mut i);
    }
    if i < b.len() && b[i] == b'~' {
        i += 1;
        let start = i;
        while i < b.len() && (b[i].is_ascii_digit() || (b'a'..=b'f').contains(&b[i])) {
            i += 1;
        }
        if i == start {
            return bad();
        }
    }
    if i < b.len() && b[i] == b'-' {
        if b.get(i + 1) != Some(&b'r') {
            return bad();
        }
        i += 2;
        if !digits(&mut i) {
            return bad();
        }
    }
    if i != b.len() {
        return bad();
    }
    Ok(())
}

impl Info {
    /// Refuses what apk would refuse or misread.
    pub fn check(&self) -> Result<(), Error> {
        check_name(&self.name)?;
        check_version(&self.version)?;
        for d in &self.depends {
            check_name(d).map_err(|e| Error(format!("depends: {}", e.0)))?;
        }
        if self.arch.is_empty() || !self.arch.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        {
            return invalid(format!("arch {:?}: expected e.g. mipsel_24kc or x86_64", self.arch));
        }
        for (key, v) in [
            ("description", &self.description),
            ("license", &self.license),
            ("origin", &self.origin),
            ("maintainer", &self.maintainer),
            ("url", &self.url),
        ] {
            if v.contains('\n') {
                return invalid(format!("{key} must be one line"));
            }
        }
        Ok(())
    }
}

/// The file name OpenWrt 25.12 gives a package: include/package-pack.mk
/// `PACK_$(1) := $(PDIR)/$(1)$(ABIV)-$(VERSION).apk`, without the arch.
pub fn file_name(info: &Info) -> String {
    format!("{}-{}.apk", info.name, info.version)
}

impl Package {
    /// Reads a staged tree like `apk mkpkg --files DIR`: every directory and
    /// regular file, modes from the file system, every entry owned by
    /// root:root (as under OpenWrt's fakeroot) and dated `mtime`.
    /// Symlinks and special files are refused: nothing we ship has one.
    pub fn from_tree(
        info: Info,
        root: &Path,
        mtime: u64,
        scripts: Vec<(String, Vec<u8>)>,
    ) -> Result<Package, Error> {
        let io = |p: &Path, e: std::io::Error| Error(format!("{}: {e}", p.display()));
        let mut dirs = Vec::new();
        let mut pending = vec![String::new()];
        while let Some(rel) = pending.pop() {
            let path = if rel.is_empty() { root.to_path_buf() } else { root.join(&rel) };
            let meta = fs::symlink_metadata(&path).map_err(|e| io(&path, e))?;
            let mut entries: Vec<(String, fs::Metadata)> = Vec::new();
            for entry in fs::read_dir(&path).map_err(|e| io(&path, e))? {
                let entry = entry.map_err(|e| io(&path, e))?;
                let name = entry
                    .file_name()
                    .into_string()
                    .map_err(|n| Error(format!("{}: file name {n:?} is not UTF-8", path.display())))?;
                let m = entry.metadata().map_err(|e| io(&entry.path(), e))?;
                entries.push((name, m));
            }
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            let mut files = Vec::new();
            for (name, m) in entries {
                let child = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
                let ft = m.file_type();
                if ft.is_dir() {
                    pending.push(child);
                } else if ft.is_file() {
                    let p = root.join(&child);
                    files.push(File {
                        name,
                        mode: mode_of(&m),
                        user: "root".into(),
                        group: "root".into(),
                        mtime,
                        content: fs::read(&p).map_err(|e| io(&p, e))?,
                    });
                } else {
                    return invalid(format!("{child}: only directories and regular files can be packaged"));
                }
            }
            dirs.push(Dir {
                path: rel,
                mode: mode_of(&meta),
                user: "root".into(),
                group: "root".into(),
                files,
            });
        }
        // mkpkg: "/" first, then the other paths sorted (strcmp order).
        dirs.sort_by(|a, b| {
            (!a.path.is_empty(), a.path.as_bytes()).cmp(&(!b.path.is_empty(), b.path.as_bytes()))
        });
        let p = Package { info, dirs, scripts };
        p.check()?;
        Ok(p)
    }

    /// Refuses input apk would reject or misread.
    pub fn check(&self) -> Result<(), Error> {
        self.info.check()?;
        for (i, (name, _)) in self.scripts.iter().enumerate() {
            if schema::script_slot(name).is_none() {
                return invalid(format!(
                    "unknown script {name:?}; apk knows {}",
                    schema::SCRIPT_NAMES.join(", ")
                ));
            }
            // A slot holds one script: mkpkg keeps the last --script for a
            // slot and still leaves the earlier body's bytes in the file.
            // Refuse instead of silently dropping one.
            if self.scripts[..i].iter().any(|(n, _)| n == name) {
                return invalid(format!("script {name:?} given twice; a package has one per slot"));
            }
        }
        match self.dirs.first() {
            Some(d) if d.path.is_empty() => {}
            _ => return invalid("the first directory must be / (path \"\")".into()),
        }
        for w in self.dirs.windows(2) {
            if w[0].path.as_bytes() >= w[1].path.as_bytes() {
                return invalid(format!("directories out of order: {:?} before {:?}", w[0].path, w[1].path));
            }
        }
        for d in &self.dirs {
            let bad_component = |c: &str| c.is_empty() || c == "." || c == "..";
            if !d.path.is_empty() && d.path.split('/').any(bad_component) {
                return invalid(format!(
                    "directory path {:?} must be relative, without empty, . or .. parts",
                    d.path
                ));
            }
            for w in d.files.windows(2) {
                if w[0].name.as_bytes() >= w[1].name.as_bytes() {
                    return invalid(format!(
                        "files out of order in {:?}: {:?} before {:?}",
                        d.path, w[0].name, w[1].name
                    ));
                }
            }
            for f in &d.files {
                if f.name.is_empty() || f.name.contains('/') || f.name == "." || f.name == ".." {
                    return invalid(format!("bad file name {:?} in {:?}", f.name, d.path));
                }
            }
            if d.mode > 0o7777 || d.files.iter().any(|f| f.mode > 0o7777) {
                return invalid(format!("a mode in {:?} has bits beyond 07777", d.path));
            }
        }
        Ok(())
    }

    /// Sum of the regular files' sizes; apk's mkpkg writes at least 1 so a
    /// package with scripts is not taken for a meta package.
    pub fn installed_size(&self) -> u64 {
        let sum: u64 = self.dirs.iter().flat_map(|d| &d.files).map(|f| f.content.len() as u64).sum();
        sum.max(1)
    }

    /// The ADB block's payload (the package metadata), with the unique-id
    /// filled in.
    pub fn adb(&self) -> Result<Vec<u8>, Error> {
        self.check()?;
        let mut w = Writer::new();
        // Values are written in the order mkpkg writes them, so the layout
        // resembles apk's own: info strings, then the tree, then the rest.
        let mut pi = vec![NULL; info::LAST_USED];
        let i = &self.info;
        for (slot, v) in [
            (info::NAME, &i.name),
            (info::VERSION, &i.version),
            (info::DESCRIPTION, &i.description),
            (info::ARCH, &i.arch),
            (info::LICENSE, &i.license),
            (info::ORIGIN, &i.origin),
            (info::MAINTAINER, &i.maintainer),
            (info::URL, &i.url),
        ] {
            pi[slot - 1] = w.blob(v.as_bytes())?;
        }
        // "depends": one dependency object (just its name: any version)
        // per entry; unset when empty, as an array needs at least one
        // item besides its count.
        if !i.depends.is_empty() {
            let mut deps = Vec::with_capacity(i.depends.len());
            for d in &i.depends {
                let mut dobj = vec![NULL; schema::dep::NAME];
                dobj[schema::dep::NAME - 1] = w.blob(d.as_bytes())?;
                deps.push(w.object(&dobj)?);
            }
            pi[info::DEPENDS - 1] = w.array(&deps)?;
        }

        let mut paths = Vec::with_capacity(self.dirs.len());
        for d in &self.dirs {
            let mut files = Vec::with_capacity(d.files.len());
            for f in &d.files {
                let mut fo = vec![NULL; file::TARGET];
                fo[file::NAME - 1] = w.blob(f.name.as_bytes())?;
                fo[file::HASHES - 1] = w.blob(&Sha256::digest(&f.content))?;
                fo[file::MTIME - 1] = w.int(f.mtime)?;
                fo[file::SIZE - 1] = w.int(f.content.len() as u64)?;
                fo[file::ACL - 1] = acl_object(&mut w, f.mode, &f.user, &f.group)?;
                files.push(w.object(&fo)?);
            }
            let mut dobj = vec![NULL; dir::FILES];
            dobj[dir::NAME - 1] = w.blob(d.path.as_bytes())?;
            dobj[dir::ACL - 1] = acl_object(&mut w, d.mode, &d.user, &d.group)?;
            dobj[dir::FILES - 1] = w.object_array(&files)?;
            paths.push(w.object(&dobj)?);
        }

        pi[info::INSTALLED_SIZE - 1] = w.int(self.installed_size())?;
        let (uid, uid_at) = w.blob_unshared(&[0; schema::UNIQUE_ID_LEN])?;
        pi[info::HASHES - 1] = uid;

        let mut root = vec![NULL; pkg::SCRIPTS];
        root[pkg::INFO - 1] = w.object(&pi)?;
        root[pkg::PATHS - 1] = w.object_array(&paths)?;
        // mkpkg writes the script bodies slot by slot, ADBI_SCRPT_TRIGGER up
        // to ADBI_SCRPT_POSTUPGRADE, whatever order --script came in; so do
        // we, or equal scripts would land at other offsets.
        let mut scripts = vec![NULL; schema::SCRIPT_NAMES.len()];
        for (i, slot_name) in schema::SCRIPT_NAMES.iter().enumerate() {
            if let Some((_, body)) = self.scripts.iter().find(|(n, _)| n == slot_name) {
                scripts[i] = w.blob(body)?;
            }
        }
        root[pkg::SCRIPTS - 1] = w.object(&scripts)?;
        let root = w.object(&root)?;
        let mut area = w.finish(root);

        // mkpkg's unique-id: the first 20 bytes of SHA-256 over the whole
        // ADB block as written with the id still zero.
        let digest = Sha256::digest(&area);
        area[uid_at..uid_at + schema::UNIQUE_ID_LEN].copy_from_slice(&digest[..schema::UNIQUE_ID_LEN]);
        Ok(area)
    }

    /// The complete .apk file.
    pub fn to_bytes(&self, opts: Options, signer: Option<&Signer>) -> Result<Vec<u8>, Error> {
        let area = self.adb()?;
        let mut stream = Vec::new();
        stream.extend_from_slice(adb::FORMAT_MAGIC);
        stream.extend_from_slice(adb::SCHEMA_PACKAGE);
        stream.extend(adb::block(adb::BLOCK_ADB, &[&area])?);
        if let Some(s) = signer {
            stream.extend(adb::block(adb::BLOCK_SIG, &[&sign_block(s, &area)?])?);
        }
        for (di, d) in self.dirs.iter().enumerate() {
            for (fi, f) in d.files.iter().enumerate() {
                if f.content.is_empty() {
                    continue; // mkpkg writes no DATA block for an empty file
                }
                let mut hdr = [0u8; schema::DATA_HEADER_LEN];
                hdr[..4].copy_from_slice(&(di as u32 + 1).to_le_bytes());
                hdr[4..].copy_from_slice(&(fi as u32 + 1).to_le_bytes());
                stream.extend(adb::block(adb::BLOCK_DATA, &[&hdr, &f.content])?);
            }
        }
        if !opts.compress {
            return Ok(stream);
        }
        let mut out = adb::DEFLATE_MAGIC.to_vec();
        out.extend(miniz_oxide::deflate::compress_to_vec(&stream, 9));
        Ok(out)
    }
}

fn mode_of(m: &fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    m.permissions().mode() & 0o7777
}

fn acl_object(w: &mut Writer, mode: u32, user: &str, group: &str) -> Result<u32, Error> {
    let mut a = vec![NULL; acl::GROUP];
    a[acl::MODE - 1] = w.int(mode as u64)?;
    a[acl::USER - 1] = w.blob(user.as_bytes())?;
    a[acl::GROUP - 1] = w.blob(group.as_bytes())?;
    w.object(&a)
}

/// The 18-byte v0 signature header (adb.h `struct adb_sign_v0` without the
/// signature): sign_ver 0, hash_alg SHA-512, the key id.
pub fn sig_header(key_id: &[u8; 16]) -> [u8; 18] {
    let mut h = [0u8; 18];
    h[0] = 0;
    h[1] = schema::DIGEST_SHA512;
    h[2..].copy_from_slice(key_id);
    h
}

/// What a v0 signature signs (adb.c `adb_digest_v0_signature`): the schema
/// id, the signature header, and the SHA-512 of the ADB block's payload;
/// the key then signs this message with SHA-512.
pub fn signed_message(header: &[u8; 18], adb_payload: &[u8]) -> Vec<u8> {
    signed_message_of(adb::SCHEMA_PACKAGE, header, adb_payload)
}

/// [`signed_message`] for a file of another schema (an index: `indx`).
pub fn signed_message_of(schema: &[u8; 4], header: &[u8; 18], adb_payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(4 + 18 + 64);
    m.extend_from_slice(schema);
    m.extend_from_slice(header);
    m.extend_from_slice(&Sha512::digest(adb_payload));
    m
}

fn sign_block(s: &Signer, area: &[u8]) -> Result<Vec<u8>, Error> {
    sign_block_of(adb::SCHEMA_PACKAGE, s, area)
}

/// The SIG block's payload over `area`, the ADB block of a `schema` file.
pub fn sign_block_of(schema: &[u8; 4], s: &Signer, area: &[u8]) -> Result<Vec<u8>, Error> {
    let header = sig_header(&s.key_id()?);
    let sig = s.sign(&signed_message_of(schema, &header, area))?;
    let mut b = header.to_vec();
    b.extend(sig);
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_follow_apk_package_5() {
        for ok in
            ["0.1.0-r1", "1", "1.2.3a", "1.2_rc1", "2.0_p1_git20240101-r12", "1.0~abc123-r0", "1.0_alpha"]
        {
            check_version(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["", "v1.0", "1.0-1", "1.0-r", "1..2", "1.0_foo1", "1.0~", "1.0~XYZ", "1.0-r1x", "1.0 "] {
            assert!(check_version(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn names_follow_apk_package_5() {
        check_name("socksbalance").unwrap();
        check_name("lib-foo_2.0+x").unwrap();
        for bad in ["", "-x", "a b", "a/b", "ä"] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    fn one_file_package(scripts: &[(&str, &str)]) -> Package {
        Package {
            info: Info {
                name: "s".into(),
                version: "1-r0".into(),
                description: String::new(),
                arch: "x86_64".into(),
                license: String::new(),
                origin: String::new(),
                maintainer: String::new(),
                url: String::new(),
                depends: Vec::new(),
            },
            dirs: vec![Dir {
                path: String::new(),
                mode: 0o755,
                user: "root".into(),
                group: "root".into(),
                files: vec![File {
                    name: "f".into(),
                    mode: 0o644,
                    user: "root".into(),
                    group: "root".into(),
                    mtime: 1,
                    content: b"x".to_vec(),
                }],
            }],
            scripts: scripts.iter().map(|(n, b)| (n.to_string(), b.as_bytes().to_vec())).collect(),
        }
    }

    #[test]
    fn scripts_are_written_in_slot_order_whatever_order_they_come_in() {
        // Regression: bodies were written in the order given, so a package
        // built with --script post-upgrade before --script post-install
        // differed from apk mkpkg's, which walks the slots in order.
        let in_order =
            one_file_package(&[("post-install", "#!/bin/sh\na\n"), ("post-upgrade", "#!/bin/sh\nb\n")]);
        let reversed =
            one_file_package(&[("post-upgrade", "#!/bin/sh\nb\n"), ("post-install", "#!/bin/sh\na\n")]);
        assert_eq!(in_order.adb().unwrap(), reversed.adb().unwrap());
    }

    #[test]
    fn a_script_slot_given_twice_is_refused() {
        let p = one_file_package(&[("post-install", "a"), ("pre-deinstall", "b"), ("post-install", "c")]);
        let e = p.adb().unwrap_err();
        assert!(e.0.contains("\"post-install\" given twice"), "{e}");
    }

    #[test]
    fn openwrt_file_name_has_no_arch() {
        let info = Info {
            name: "socksbalance".into(),
            version: "0.1.0-r1".into(),
            description: String::new(),
            arch: "mips_24kc".into(),
            license: String::new(),
            origin: String::new(),
            maintainer: String::new(),
            url: String::new(),
            depends: Vec::new(),
        };
        assert_eq!(file_name(&info), "socksbalance-0.1.0-r1.apk");
    }
}
