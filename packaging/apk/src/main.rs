//! `socksbalance-apk`: builds, checks and dumps apk v3 packages.
//!
//! ```text
//! socksbalance-apk build --files DIR --output FILE --name N --version V --arch A
//!     [--description D] [--license L] [--origin O] [--maintainer M] [--url U] [--depends NAME]...
//!     [--mtime SECONDS] [--script SLOT:FILE]... [--sign-key KEY.pem] [--no-compress]
//! socksbalance-apk check [--verify-key PUBLIC.pem] FILE...
//! socksbalance-apk dump [--hex] FILE
//! ```
//! Exit codes: 0 success, 1 a package failed, 2 bad usage.

use std::path::PathBuf;
use std::process::ExitCode;

use socksbalance_apk::{dump, package, read, sign, Info, Options, Package};

const USAGE: &str = "usage:
  socksbalance-apk build --files DIR --output FILE --name N --version V --arch A
      [--description D] [--license L] [--origin O] [--maintainer M] [--url U] [--depends NAME]...
      [--mtime SECONDS] [--script SLOT:FILE]... [--sign-key KEY.pem] [--no-compress]
  socksbalance-apk check [--verify-key PUBLIC.pem] FILE...
  socksbalance-apk index --output packages.adb [--description D] [--sign-key KEY.pem] PACKAGE.apk...
  socksbalance-apk dump [--hex] FILE";

fn usage(msg: &str) -> ExitCode {
    eprintln!("socksbalance-apk: {msg}\n{USAGE}");
    ExitCode::from(2)
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("socksbalance-apk: {msg}");
    ExitCode::from(1)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("build") => build(&args[1..]),
        Some("check") => check(&args[1..]),
        Some("dump") => dump_cmd(&args[1..]),
        Some("index") => index_cmd(&args[1..]),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => usage("expected build, check, index or dump"),
    }
}

fn build(args: &[String]) -> ExitCode {
    let mut info = Info {
        name: String::new(),
        version: String::new(),
        description: String::new(),
        arch: String::new(),
        license: String::new(),
        origin: String::new(),
        maintainer: String::new(),
        url: String::new(),
        depends: Vec::new(),
    };
    let (mut files, mut output, mut key) = (None, None, None);
    let mut mtime = 0u64;
    let mut opts = Options::default();
    let mut scripts = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--no-compress" {
            opts.compress = false;
            continue;
        }
        let Some(v) = it.next() else {
            return usage(&format!("{flag} needs a value"));
        };
        match flag.as_str() {
            "--files" => files = Some(PathBuf::from(v)),
            "--output" => output = Some(PathBuf::from(v)),
            "--sign-key" => key = Some(PathBuf::from(v)),
            "--name" => info.name = v.clone(),
            "--version" => info.version = v.clone(),
            "--arch" => info.arch = v.clone(),
            "--description" => info.description = v.clone(),
            "--license" => info.license = v.clone(),
            "--origin" => info.origin = v.clone(),
            "--maintainer" => info.maintainer = v.clone(),
            "--url" => info.url = v.clone(),
            "--depends" => info.depends.push(v.clone()),
            "--mtime" => match v.parse() {
                Ok(t) => mtime = t,
                Err(_) => return usage(&format!("--mtime {v:?} is not a number of seconds")),
            },
            "--script" => {
                let Some((slot, path)) = v.split_once(':') else {
                    return usage(&format!(
                        "--script {v:?}: expected SLOT:FILE, e.g. post-install:./postinst"
                    ));
                };
                match std::fs::read(path) {
                    Ok(body) => scripts.push((slot.to_string(), body)),
                    Err(e) => return fail(format!("{path}: {e}")),
                }
            }
            _ => return usage(&format!("unknown option {flag}")),
        }
    }
    let (Some(files), Some(output)) = (files, output) else {
        return usage("build needs --files and --output");
    };
    let signer = match key.map(|k| sign::Signer::new(&k)).transpose() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let bytes =
        Package::from_tree(info, &files, mtime, scripts).and_then(|p| p.to_bytes(opts, signer.as_ref()));
    match bytes {
        Ok(b) => match std::fs::write(&output, &b) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(format!("{}: {e}", output.display())),
        },
        Err(e) => fail(e),
    }
}

fn check(args: &[String]) -> ExitCode {
    let mut key = None;
    let mut files = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--verify-key" {
            match it.next() {
                Some(k) => key = Some(PathBuf::from(k)),
                None => return usage("--verify-key needs a file"),
            }
        } else {
            files.push(PathBuf::from(a));
        }
    }
    if files.is_empty() {
        return usage("check needs at least one FILE");
    }
    for f in &files {
        let parsed = std::fs::read(f)
            .map_err(|e| socksbalance_apk::Error(e.to_string()))
            .and_then(|b| read::parse(&b));
        let p = match parsed {
            Ok(p) => p,
            Err(e) => return fail(format!("{}: {e}", f.display())),
        };
        if let Some(k) = &key {
            let scratch = std::env::temp_dir();
            let ok = p.signatures.iter().any(|s| {
                let msg = package::signed_message(&s.header, &p.adb);
                sign::verify_with_openssl(k, &msg, &s.signature, &scratch).unwrap_or(false)
            });
            if !ok {
                return fail(format!("{}: no signature verifies with {}", f.display(), k.display()));
            }
        }
        let i = &p.package.info;
        let n: usize = p.package.dirs.iter().map(|d| d.files.len()).sum();
        println!(
            "OK   {}  {} {} {} ({n} files, {} bytes installed, {} signature(s))",
            f.display(),
            i.name,
            i.version,
            i.arch,
            p.installed_size,
            p.signatures.len()
        );
    }
    ExitCode::SUCCESS
}

fn dump_cmd(args: &[String]) -> ExitCode {
    let hex = args.iter().any(|a| a == "--hex");
    let files: Vec<&String> = args.iter().filter(|a| *a != "--hex").collect();
    let [f] = files.as_slice() else {
        return usage("dump needs exactly one FILE");
    };
    match std::fs::read(f)
        .map_err(|e| socksbalance_apk::Error(e.to_string()))
        .and_then(|b| read::parse(&b).map(|p| (p, b)))
    {
        Ok((p, b)) => {
            print!("{}", dump::dump(&p, &b, hex));
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("{f}: {e}")),
    }
}

/// `index`: a repository index (packages.adb) of the packages given, as
/// `apk mkndx` makes it (src/index.rs).
fn index_cmd(args: &[String]) -> ExitCode {
    let (mut output, mut description, mut key, mut files) = (None, String::new(), None, Vec::new());
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if !arg.starts_with("--") {
            files.push(arg.clone());
            continue;
        }
        let Some(v) = it.next() else {
            return usage(&format!("{arg} needs a value"));
        };
        match arg.as_str() {
            "--output" => output = Some(v.clone()),
            "--description" => description = v.clone(),
            "--sign-key" => key = Some(PathBuf::from(v)),
            _ => return usage(&format!("unknown option {arg}")),
        }
    }
    let Some(output) = output else { return usage("index needs --output") };
    if files.is_empty() {
        return usage("index needs at least one package");
    }
    let mut packages = Vec::new();
    for f in &files {
        match std::fs::read(f) {
            Ok(b) => {
                let name = std::path::Path::new(f)
                    .file_name()
                    .map_or(f.clone(), |n| n.to_string_lossy().into_owned());
                packages.push((name, b));
            }
            Err(e) => return fail(format!("{f}: {e}")),
        }
    }
    let signer = match key.map(|k| sign::Signer::new(&k)).transpose() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    match socksbalance_apk::index::index(&packages, &description, signer.as_ref()) {
        Ok(b) => match std::fs::write(&output, &b) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(format!("{output}: {e}")),
        },
        Err(e) => fail(e),
    }
}
