//! Every config under tests/fixtures/config/: the valid ones load, the
//! invalid ones fail with the error their first line promises.

use std::path::{Path, PathBuf};

use socksbalance::config::{Config, Mode, Target};

/// How many fixtures each directory holds; a fixture that silently stops
/// being read (renamed, wrong extension) fails this count.
const VALID: usize = 7;
const INVALID: usize = 16;

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config").join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn valid_fixtures_load() {
    let files = fixtures("valid");
    for path in &files {
        if let Err(e) = Config::load(path) {
            panic!("{}: {e}", path.display());
        }
    }
    assert_eq!(files.len(), VALID, "valid fixtures read");
}

#[test]
fn invalid_fixtures_fail_with_their_documented_error() {
    let files = fixtures("invalid");
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let expected = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# error: "))
            .unwrap_or_else(|| panic!("{}: first line must be `# error: ...`", path.display()));
        match Config::from_yaml(&text) {
            Ok(_) => panic!("{}: accepted", path.display()),
            Err(e) => assert!(
                e.to_string().contains(expected),
                "{}:\n  expected: {expected}\n  got:      {e}",
                path.display()
            ),
        }
    }
    assert_eq!(files.len(), INVALID, "invalid fixtures read");
}

#[test]
fn socksbalance_config_means_the_same_thing() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/valid/socksbalance-complete.yaml");
    let c = Config::load(&path).unwrap();
    assert_eq!(c.listen, vec!["0.0.0.0:1080".parse().unwrap()]);
    assert_eq!(c.mode, Mode::Transparent);
    // 20 from the Tor range, 1, 1, and 3 from the IPv6 range.
    assert_eq!(c.backends.len(), 25);
    assert_eq!(c.backends[0].name, "Tor#1");
    assert_eq!(
        c.backends[19].target,
        Target::Proxy { host: socksbalance::config::Host::Ip("127.0.0.1".parse().unwrap()), port: 9089 }
    );
    assert_eq!(c.backends[20].name, "Primary Proxy");
    assert_eq!(c.backends[24].name, "IPv6 Range#3");
    assert_eq!(c.backends[24].target.to_string(), "[2001:db8::1]:8082");
    assert_eq!(c.health.test_url.as_ref().map(|u| u.raw.as_str()), Some("https://www.google.com"));
    assert_eq!(c.balancer.max_latency, Some(std::time::Duration::from_millis(2000)));
    assert_eq!(c.balancer.sticky_session_ttl, Some(std::time::Duration::from_secs(900)));
    assert_eq!(c.balancer.max_active_backends.map(|n| n.get()), Some(3));
    assert!(c.web.enabled);
    assert_eq!(c.web.refresh_interval.get(), 2);
}
