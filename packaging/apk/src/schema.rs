//! Field numbers of the package schema ("pckg").
//!
//! apk-v3(5) "FILE SCHEMAS" names the file and acl fields; the numbers are
//! the `ADBI_*` constants of apk-tools `src/apk_adb.h`, and the field names
//! (used in our dumps, as `apk adbdump` prints them) are those of
//! `src/apk_adb.c` and apk-package(5). Field i lives in object slot i.

/// apk_adb.h `ADBI_PKG_*`: the root object of a package.
pub mod pkg {
    /// "info": the package info object.
    pub const INFO: usize = 0x01;
    /// "paths": array of directory objects.
    pub const PATHS: usize = 0x02;
    /// "scripts": the scripts object.
    pub const SCRIPTS: usize = 0x03;
    /// "triggers": array of strings (unused here).
    pub const TRIGGERS: usize = 0x04;
}

/// apk_adb.h `ADBI_PI_*`: package info (apk-package(5) "PACKAGE INFO METADATA").
pub mod info {
    /// "name".
    pub const NAME: usize = 0x01;
    /// "version".
    pub const VERSION: usize = 0x02;
    /// "hashes" (older apk-tools: "unique-id"): 20 bytes, see package.rs.
    pub const HASHES: usize = 0x03;
    /// "description".
    pub const DESCRIPTION: usize = 0x04;
    /// "arch".
    pub const ARCH: usize = 0x05;
    /// "license".
    pub const LICENSE: usize = 0x06;
    /// "origin".
    pub const ORIGIN: usize = 0x07;
    /// "maintainer".
    pub const MAINTAINER: usize = 0x08;
    /// "url".
    pub const URL: usize = 0x09;
    /// "repo-commit".
    pub const REPO_COMMIT: usize = 0x0a;
    /// "build-time".
    pub const BUILD_TIME: usize = 0x0b;
    /// "installed-size".
    pub const INSTALLED_SIZE: usize = 0x0c;
    /// "file-size" (index copies only).
    pub const FILE_SIZE: usize = 0x0d;
    /// "provider-priority".
    pub const PROVIDER_PRIORITY: usize = 0x0e;
    /// "depends": array of dependency objects.
    pub const DEPENDS: usize = 0x0f;
    /// Number of slots up to and including "depends".
    pub const LAST_USED: usize = DEPENDS;
}

/// apk_adb.h `ADBI_DEP_*`: one entry of "depends".
pub mod dep {
    /// "name": the package (or provided name) depended on.
    pub const NAME: usize = 0x01;
    /// "version" (unset: any).
    pub const VERSION: usize = 0x02;
    /// "match": how "version" compares (unset with no version).
    pub const MATCH: usize = 0x03;
}

/// apk_adb.h `ADBI_DI_*`: a directory in "paths".
pub mod dir {
    /// "name": path relative to /, no leading slash; unset for / itself.
    pub const NAME: usize = 0x01;
    /// "acl".
    pub const ACL: usize = 0x02;
    /// "files": array of file objects.
    pub const FILES: usize = 0x03;
}

/// apk_adb.h `ADBI_FI_*`, as listed in apk-v3(5) "FILE SCHEMAS".
pub mod file {
    /// "name": the file name within its directory.
    pub const NAME: usize = 0x01;
    /// "acl".
    pub const ACL: usize = 0x02;
    /// "size".
    pub const SIZE: usize = 0x03;
    /// "mtime".
    pub const MTIME: usize = 0x04;
    /// "hash": the content digest; its length names the algorithm (32 = SHA-256).
    pub const HASHES: usize = 0x05;
    /// "target": symlink or device target (unused here).
    pub const TARGET: usize = 0x06;
}

/// apk_adb.h `ADBI_ACL_*`, as listed in apk-v3(5) "FILE SCHEMAS".
pub mod acl {
    /// "mode": permission bits only (07777), no file type.
    pub const MODE: usize = 0x01;
    /// "user": a user name, resolved on the target.
    pub const USER: usize = 0x02;
    /// "group": a group name.
    pub const GROUP: usize = 0x03;
    /// "xattrs" (unused here).
    pub const XATTRS: usize = 0x04;
}

/// apk_adb.h `ADBI_SCRPT_*`: script slots, named as in apk-package(5).
pub const SCRIPT_NAMES: [&str; 7] = [
    "trigger",
    "pre-install",
    "post-install",
    "pre-deinstall",
    "post-deinstall",
    "pre-upgrade",
    "post-upgrade",
];

/// The slot (1-based) of a script name, or None.
pub fn script_slot(name: &str) -> Option<usize> {
    SCRIPT_NAMES.iter().position(|&n| n == name).map(|i| i + 1)
}

/// apk_adb.h `struct adb_data_package`: the 8 bytes (path index, file
/// index, both 1-based u32 LE) that open every DATA block.
pub const DATA_HEADER_LEN: usize = 8;

/// apk_crypto.h `APK_DIGEST_SHA512`: the hash_alg byte of a v0 signature.
pub const DIGEST_SHA512: u8 = 0x04;

/// Length of the unique-id ("hashes") blob: apk's mkpkg reserves
/// `apk_digest_alg_len(APK_DIGEST_SHA1)` = 20 bytes and fills them with the
/// start of the SHA-256 of the finished ADB block.
pub const UNIQUE_ID_LEN: usize = 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_slots_match_apk_adb_h() {
        // ADBI_SCRPT_POSTINST 0x03, ADBI_SCRPT_PREDEINST 0x04,
        // ADBI_SCRPT_POSTUPGRADE 0x07.
        assert_eq!(script_slot("post-install"), Some(3));
        assert_eq!(script_slot("pre-deinstall"), Some(4));
        assert_eq!(script_slot("post-upgrade"), Some(7));
        assert_eq!(script_slot("postinst"), None);
    }
}
