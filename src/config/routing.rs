//! `groups:` and `rules:`: which backends a connection may use, chosen by
//! where it goes. The types the daemon routes on, their validation, and
//! the rule matcher (pure: no I/O past loading a `domain_suffix_file`).
//!
//! A rule matches when every kind of condition it has matches: the
//! destination (any of its `domain`, `domain_suffix`, `domain_keyword`
//! and `cidr` entries), and `port`, `source` and `inbound` each (any of
//! their entries). The first rule that matches decides.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use super::raw::{RawGroup, RawRule};
use super::values::{Strings, Tiers};
use super::{Algorithm, Cidr, ConfigError, ProbeUrl, Protocol};
use crate::socks5::Address;

/// The most `domain_suffix` entries all rules may have together (files
/// included): 10,000 take about 80 KB.
pub const MAX_SUFFIXES: usize = 200_000;

/// The largest `domain_suffix_file` read.
const MAX_SUFFIX_FILE: u64 = 8 << 20;

/// One `groups:` entry. A group either lists backends (one tier), or
/// tiers of other groups and backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub algorithm: Algorithm,
    /// In order: the first with a usable backend takes the connection.
    pub tiers: Vec<Vec<Member>>,
    /// Whether it was written with `tiers:` (else `backends:`).
    pub tiered: bool,
    /// Probed through each of its backends, besides `health.test_url`: a
    /// backend that fails it is down for this group only.
    pub test_url: Option<ProbeUrl>,
    pub expected_status: Vec<u16>,
}

/// A name in a group: a group (in `tiers:` only), or backends by name,
/// which the pool resolves (`interfaces: auto` uplinks appear at run
/// time): a backend's name, or a port range's name for all its ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Member {
    Group(usize),
    Backends(String),
}

impl Member {
    /// Whether backend `name` is what this names: the name itself, or a
    /// port range's `name#N`.
    pub fn names(reference: &str, name: &str) -> bool {
        name == reference
            || name
                .strip_prefix(reference)
                .and_then(|r| r.strip_prefix('#'))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    }
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Balance over this group.
    Group(usize),
    /// Connect from this host, no backend.
    Direct,
    /// Refuse: SOCKS5 reply 0x02, HTTP 403, a closed connection.
    Block,
}

/// Domain suffixes, each kept as a 64-bit hash in a sorted list: 8 bytes
/// an entry, and a match is a binary search per label of the name.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SuffixSet(Vec<u64>);

impl fmt::Debug for SuffixSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SuffixSet({} entries)", self.0.len())
    }
}

impl SuffixSet {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `name` (lowercase, no trailing dot) is one of the suffixes
    /// or ends in `.` and one of them.
    pub fn matches(&self, name: &[u8]) -> bool {
        if self.0.is_empty() {
            return false;
        }
        let mut rest = name;
        loop {
            if self.0.binary_search(&fnv(rest)).is_ok() {
                return true;
            }
            match rest.iter().position(|&b| b == b'.') {
                Some(dot) => rest = &rest[dot + 1..],
                None => return false,
            }
        }
    }

    fn finish(&mut self) {
        self.0.sort_unstable();
        self.0.dedup();
    }
}

/// FNV-1a, 64 bits: stable across runs and builds (the suffix set, the
/// consistent-hashing keys and the learned table's site keys use it).
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// One `rules:` entry, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub domains: Vec<String>,
    pub suffixes: SuffixSet,
    pub keywords: Vec<String>,
    pub cidrs: Vec<Cidr>,
    /// Inclusive ranges.
    pub ports: Vec<(u16, u16)>,
    pub sources: Vec<Cidr>,
    /// Indices into `listen`.
    pub inbounds: Vec<usize>,
    pub action: Action,
}

/// What a rule is matched against.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// `None` while the destination is not known (transparent mode's
    /// first pick, a UDP association): then only rules without
    /// destination or port conditions can match.
    pub destination: Option<&'a Address>,
    /// The address the client dialled, when the destination is a name
    /// read from its first bytes (gateway sniffing): `cidr` matches it.
    pub dialled: Option<IpAddr>,
    pub source: IpAddr,
    /// The listener (index into `listen`), if the connection came in on one.
    pub inbound: Option<usize>,
}

impl Rule {
    fn has_destination(&self) -> bool {
        !(self.domains.is_empty()
            && self.suffixes.is_empty()
            && self.keywords.is_empty()
            && self.cidrs.is_empty())
    }

    /// Whether it needs to know where the connection goes.
    pub fn needs_destination(&self) -> bool {
        self.has_destination() || !self.ports.is_empty()
    }

    pub fn matches(&self, q: &Query<'_>) -> bool {
        if !self.sources.is_empty() && !self.sources.iter().any(|c| c.contains(q.source)) {
            return false;
        }
        if !self.inbounds.is_empty() && !q.inbound.is_some_and(|i| self.inbounds.contains(&i)) {
            return false;
        }
        if !self.needs_destination() {
            return true;
        }
        let Some(dest) = q.destination else { return false };
        let port = dest.port();
        if !self.ports.is_empty() && !self.ports.iter().any(|&(lo, hi)| (lo..=hi).contains(&port)) {
            return false;
        }
        if !self.has_destination() {
            return true;
        }
        if q.dialled.is_some_and(|ip| self.cidrs.iter().any(|c| c.contains(ip))) {
            return true;
        }
        match dest {
            Address::Ip(addr) => self.cidrs.iter().any(|c| c.contains(addr.ip())),
            Address::Domain(name, _) => {
                let mut buf = [0u8; 255];
                let name = lowercase(name, &mut buf);
                // A client may send an address as a name ("10.0.0.1").
                if let Some(ip) = std::str::from_utf8(name).ok().and_then(|s| s.parse::<IpAddr>().ok()) {
                    return self.cidrs.iter().any(|c| c.contains(ip));
                }
                self.suffixes.matches(name)
                    || self.domains.iter().any(|d| d.as_bytes() == name)
                    || self.keywords.iter().any(|k| contains(name, k.as_bytes()))
            }
        }
    }
}

/// `name` in lowercase without a trailing dot, in `buf` (a SOCKS5 name is
/// at most 255 bytes).
pub fn lowercase<'b>(name: &[u8], buf: &'b mut [u8; 255]) -> &'b [u8] {
    let name = name.strip_suffix(b".").unwrap_or(name);
    let n = name.len().min(buf.len());
    for (to, from) in buf.iter_mut().zip(&name[..n]) {
        *to = from.to_ascii_lowercase();
    }
    &buf[..n]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// The first rule that matches, by index.
pub fn decide(rules: &[Rule], q: &Query<'_>) -> Option<usize> {
    rules.iter().position(|r| r.matches(q))
}

/// Checks `groups:`; names in `backends:` that no backend has are an
/// error unless `interfaces: auto` may bring them (`auto`). A group
/// without `algorithm` uses `balancer.algorithm`.
pub(super) fn groups(
    raw: Vec<RawGroup>,
    backends: &[String],
    auto: bool,
    algorithm: Algorithm,
) -> Result<Vec<Group>, ConfigError> {
    let names: Vec<Option<String>> = raw.iter().map(|g| g.name.clone()).collect();
    let mut out = Vec::with_capacity(raw.len());
    for (i, g) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("groups[{i}].{field}");
        let name = g.name.ok_or_else(|| ConfigError::at(format!("groups[{i}]"), "missing field `name`"))?;
        if name.is_empty() {
            return Err(ConfigError::at(key("name"), "must not be empty"));
        }
        if names[..i].iter().flatten().any(|n| *n == name) {
            return Err(ConfigError::at(key("name"), format!("{name:?} is the name of an earlier group")));
        }
        let known_backend = |reference: &str| auto || backends.iter().any(|b| Member::names(reference, b));
        let tiered = g.tiers.is_some();
        let tiers = match (g.backends, g.tiers) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::at(key("tiers"), "a group lists `backends` or `tiers`, not both"));
            }
            (None, None) => {
                return Err(ConfigError::at(format!("groups[{i}]"), "needs `backends:` or `tiers:`"));
            }
            (Some(Strings(list)), None) => {
                if list.is_empty() {
                    return Err(ConfigError::at(key("backends"), "the list is empty"));
                }
                let mut members = Vec::with_capacity(list.len());
                for (j, reference) in list.into_iter().enumerate() {
                    if !known_backend(&reference) {
                        return Err(no_backend(format!("groups[{i}].backends[{j}]"), &reference, backends));
                    }
                    members.push(Member::Backends(reference));
                }
                vec![members]
            }
            (None, Some(Tiers(tiers))) => {
                if tiers.is_empty() {
                    return Err(ConfigError::at(key("tiers"), "the list is empty"));
                }
                let mut out_tiers = Vec::with_capacity(tiers.len());
                for (t, Strings(tier)) in tiers.into_iter().enumerate() {
                    if tier.is_empty() {
                        return Err(ConfigError::at(format!("groups[{i}].tiers[{t}]"), "the tier is empty"));
                    }
                    let mut members = Vec::with_capacity(tier.len());
                    for (j, reference) in tier.into_iter().enumerate() {
                        let at = format!("groups[{i}].tiers[{t}][{j}]");
                        match names.iter().position(|n| n.as_deref() == Some(reference.as_str())) {
                            Some(k) if k == i => {
                                return Err(ConfigError::at(
                                    at,
                                    format!("{reference:?} is this group itself"),
                                ));
                            }
                            Some(k) => members.push(Member::Group(k)),
                            None if known_backend(&reference) => members.push(Member::Backends(reference)),
                            None => {
                                return Err(ConfigError::at(
                                    at,
                                    format!("{reference:?} is neither a group nor a backend's name"),
                                ));
                            }
                        }
                    }
                    out_tiers.push(members);
                }
                out_tiers
            }
        };
        if tiered && g.test_url.is_some() {
            return Err(ConfigError::at(
                key("test_url"),
                "a group with tiers has no backends of its own to probe; set test_url on the groups it names",
            ));
        }
        let expected_status = status_codes(&key("expected_status"), g.expected_status)?;
        if !expected_status.is_empty() && g.test_url.is_none() {
            return Err(ConfigError::at(
                key("expected_status"),
                "has no effect without the group's test_url",
            ));
        }
        out.push(Group {
            name,
            algorithm: g.algorithm.unwrap_or(algorithm),
            tiers,
            tiered,
            test_url: g.test_url,
            expected_status,
        });
    }
    // A tier may name groups that list backends; a group with tiers in a
    // tier would make fallback order depend on nesting (and allow loops).
    for (i, g) in out.iter().enumerate() {
        for (t, tier) in g.tiers.iter().enumerate() {
            for (j, m) in tier.iter().enumerate() {
                if let Member::Group(k) = m {
                    if out[*k].tiered {
                        return Err(ConfigError::at(
                            format!("groups[{i}].tiers[{t}][{j}]"),
                            format!(
                                "{:?} has tiers itself; a tier names groups that list backends, or backends",
                                out[*k].name
                            ),
                        ));
                    }
                }
            }
        }
    }
    Ok(out)
}

fn no_backend(key: String, reference: &str, backends: &[String]) -> ConfigError {
    let mut known: Vec<&str> = backends.iter().map(|b| b.split('#').next().unwrap_or(b)).collect();
    known.dedup();
    let shown = if known.len() > 8 { format!("{}, …", known[..8].join(", ")) } else { known.join(", ") };
    ConfigError::at(key, format!("no backend or port range is named {reference:?} (backends: {shown})"))
}

/// HTTP status codes for `expected_status`.
pub(super) fn status_codes(key: &str, codes: Option<Strings>) -> Result<Vec<u16>, ConfigError> {
    let codes = codes.map(|s| s.0).unwrap_or_default();
    codes
        .iter()
        .enumerate()
        .map(|(j, c)| {
            c.trim().parse::<u16>().ok().filter(|c| (100..=599).contains(c)).ok_or_else(|| {
                ConfigError::at(
                    format!("{key}[{j}]"),
                    format!("{c:?} is not an HTTP status code (100 to 599)"),
                )
            })
        })
        .collect()
}

/// Each entry parsed with `parse`, an error naming `key[j]`.
fn each<T>(
    key: &str,
    v: Option<Strings>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, ConfigError> {
    let v = v.map(|s| s.0).unwrap_or_default();
    v.iter()
        .enumerate()
        .map(|(j, text)| parse(text.trim()).map_err(|e| ConfigError::at(format!("{key}[{j}]"), e)))
        .collect()
}

/// The group rules fall back to: `main` if there is one, else the first.
pub fn default_group(groups: &[Group]) -> usize {
    groups.iter().position(|g| g.name == "main").unwrap_or(0)
}

/// Checks and compiles `rules:`. Relative `domain_suffix_file` paths are
/// taken from `base` (the config file's directory).
pub(super) fn rules(
    raw: Vec<RawRule>,
    groups: &[Group],
    listen: &[std::net::SocketAddr],
    protocols: &[Protocol],
    base: Option<&Path>,
) -> Result<Vec<Rule>, ConfigError> {
    let mut total = 0;
    let mut out = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("rules[{i}].{field}");
        let list = |v: Option<Strings>| v.map(|v| v.0).unwrap_or_default();
        let action = match (r.action.as_deref(), r.group) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::at(key("group"), "a rule takes `group:` or `action:`, not both"));
            }
            (None, None) => {
                return Err(ConfigError::at(
                    format!("rules[{i}]"),
                    "needs `group: NAME`, `action: direct` or `action: block`",
                ));
            }
            (Some("direct"), None) => Action::Direct,
            (Some("block"), None) => Action::Block,
            (Some(other), None) => {
                return Err(ConfigError::at(
                    key("action"),
                    format!("unknown action {other:?}: `direct` or `block` (or `group: NAME`)"),
                ));
            }
            (None, Some(name)) => match groups.iter().position(|g| g.name == name) {
                Some(g) => Action::Group(g),
                None if groups.is_empty() => {
                    return Err(ConfigError::at(
                        key("group"),
                        format!("no group is named {name:?}: there is no `groups:`"),
                    ));
                }
                None => {
                    let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
                    return Err(ConfigError::at(
                        key("group"),
                        format!("no group is named {name:?} (groups: {})", names.join(", ")),
                    ));
                }
            },
        };
        let mut suffixes = SuffixSet::default();
        for (j, s) in list(r.domain_suffix).into_iter().enumerate() {
            let s = domain(&format!("rules[{i}].domain_suffix[{j}]"), &s)?;
            suffixes.0.push(fnv(s.as_bytes()));
        }
        if let Some(path) = r.domain_suffix_file {
            let path = match base {
                Some(base) if Path::new(&path).is_relative() => base.join(&path),
                _ => Path::new(&path).to_path_buf(),
            };
            read_suffix_file(&key("domain_suffix_file"), &path, &mut suffixes)?;
        }
        suffixes.finish();
        total += suffixes.len();
        if total > MAX_SUFFIXES {
            return Err(ConfigError::at(
                key("domain_suffix"),
                format!("the rules have more than {MAX_SUFFIXES} domain suffixes"),
            ));
        }
        let mut domains = Vec::new();
        for (j, d) in list(r.domain).into_iter().enumerate() {
            domains.push(domain(&format!("rules[{i}].domain[{j}]"), &d)?);
        }
        let mut keywords = Vec::new();
        for (j, k) in list(r.domain_keyword).into_iter().enumerate() {
            if k.is_empty() {
                return Err(ConfigError::at(format!("rules[{i}].domain_keyword[{j}]"), "must not be empty"));
            }
            keywords.push(k.to_ascii_lowercase());
        }
        let mut inbounds = Vec::new();
        for (j, name) in list(r.inbound).into_iter().enumerate() {
            let by_address = name.parse::<std::net::SocketAddr>().ok();
            let found: Vec<usize> = (0..listen.len())
                .filter(|&k| by_address.map_or(protocols[k].to_string() == name, |a| listen[k] == a))
                .collect();
            if found.is_empty() {
                return Err(ConfigError::at(
                    format!("rules[{i}].inbound[{j}]"),
                    format!(
                        "no listener is {name:?}: name a `listen` address as written, or a protocol \
                         (socks5, http, mixed, redirect, tproxy) that one of them has"
                    ),
                ));
            }
            inbounds.extend(found);
        }
        let rule = Rule {
            domains,
            suffixes,
            keywords,
            cidrs: each(&key("cidr"), r.cidr, str::parse::<Cidr>)?,
            ports: each(&key("port"), r.port, port_range)?,
            sources: each(&key("source"), r.source, str::parse::<Cidr>)?,
            inbounds,
            action,
        };
        out.push(rule);
    }
    Ok(out)
}

/// A domain as rules keep it: lowercase, no leading or trailing dot.
fn domain(key: &str, text: &str) -> Result<String, ConfigError> {
    let d = text.trim().trim_start_matches('.').trim_end_matches('.').to_ascii_lowercase();
    if d.is_empty() || d.len() > 253 || d.bytes().any(|b| b.is_ascii_whitespace() || b == b'/' || b == b':') {
        return Err(ConfigError::at(key, format!("{text:?} is not a domain name")));
    }
    Ok(d)
}

/// One suffix per line; `#` starts a comment; blank lines are skipped.
fn read_suffix_file(key: &str, path: &Path, into: &mut SuffixSet) -> Result<(), ConfigError> {
    let text = super::read_bounded(key, path, MAX_SUFFIX_FILE)?;
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let d = domain(key, line)
            .map_err(|e| ConfigError::at(key, format!("{} line {}: {}", path.display(), n + 1, e.message)))?;
        into.0.push(fnv(d.as_bytes()));
        if into.0.len() > MAX_SUFFIXES {
            return Err(ConfigError::at(
                key,
                format!("{} has more than {MAX_SUFFIXES} entries", path.display()),
            ));
        }
    }
    Ok(())
}

/// A `port:` entry: `443` or `8000-8100`.
fn port_range(v: &str) -> Result<(u16, u16), String> {
    let port = |s: &str| s.trim().parse::<u16>().ok().filter(|&p| p > 0);
    let (lo, hi) = match v.split_once('-') {
        Some((a, b)) => (port(a), port(b)),
        None => (port(v), port(v)),
    };
    match (lo, hi) {
        (Some(lo), Some(hi)) if lo <= hi => Ok((lo, hi)),
        _ => Err(format!("{v:?} is not a port (1 to 65535) or a range such as 8000-8100")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn rule(yaml: &str) -> Rule {
        let raw: RawRule = crate::config::field::parse(yaml).unwrap();
        rules(vec![raw], &[], &["127.0.0.1:1080".parse().unwrap()], &[Protocol::Socks5], None)
            .unwrap()
            .remove(0)
    }

    fn name(n: &str, port: u16) -> Address {
        Address::Domain(crate::socks5::Domain::from_slice(n.as_bytes()).unwrap(), port)
    }

    fn q(dest: &Address) -> Query<'_> {
        Query { destination: Some(dest), dialled: None, source: [192, 168, 1, 5].into(), inbound: Some(0) }
    }

    #[test]
    fn suffixes_match_whole_labels_only() {
        let r = rule("{domain_suffix: [example.com, .lan], action: direct}");
        for yes in ["example.com", "a.b.EXAMPLE.com", "example.com.", "printer.lan", "lan"] {
            assert!(r.matches(&q(&name(yes, 443))), "{yes}");
        }
        for no in ["fooexample.com", "example.org", "example.com.evil", "plan"] {
            assert!(!r.matches(&q(&name(no, 443))), "{no}");
        }
        let ip: Address = Address::Ip("93.184.216.34:443".parse().unwrap());
        assert!(!r.matches(&q(&ip)), "an IP destination matches IP rules only");
    }

    #[test]
    fn exact_keyword_cidr_and_ports() {
        let r = rule("{domain: [Exact.Example], domain_keyword: [track], action: block}");
        assert!(r.matches(&q(&name("exact.example", 1))));
        assert!(!r.matches(&q(&name("sub.exact.example", 1))));
        assert!(r.matches(&q(&name("ads.tracker.net", 1))));
        let r = rule("{cidr: [10.0.0.0/8, 'fd00::/8'], port: [22, '8000-8100'], action: direct}");
        let at = |a: &str| Address::Ip(a.parse::<SocketAddr>().unwrap());
        assert!(r.matches(&q(&at("10.1.2.3:22"))));
        assert!(r.matches(&q(&at("[fd00::1]:8050"))));
        assert!(!r.matches(&q(&at("10.1.2.3:80"))), "port must match too");
        assert!(!r.matches(&q(&at("11.1.2.3:22"))));
        assert!(r.matches(&q(&name("10.9.9.9", 22))), "an address sent as a name is an address");
        let sniffed = name("intranet.example", 22);
        let gateway = Query { dialled: Some([10, 1, 1, 1].into()), ..q(&sniffed) };
        assert!(r.matches(&gateway), "a sniffed name's dialled address matches cidr");
        let r = rule("{port: 25, action: block}");
        assert!(r.matches(&q(&name("smtp.example", 25))) && !r.matches(&q(&name("smtp.example", 26))));
    }

    #[test]
    fn source_and_inbound_need_no_destination() {
        let r = rule("{source: [192.168.1.0/24], inbound: ['127.0.0.1:1080'], action: direct}");
        let unknown =
            Query { destination: None, dialled: None, source: [192, 168, 1, 9].into(), inbound: Some(0) };
        assert!(r.matches(&unknown));
        assert!(!r.matches(&Query { source: [192, 168, 2, 9].into(), ..unknown }));
        assert!(!r.matches(&Query { inbound: None, ..unknown }));
        let r = rule("{domain_suffix: [x], action: direct}");
        assert!(!r.matches(&unknown), "a destination rule never matches an unknown destination");
        let first = [rule("{port: 1, action: block}"), rule("{source: [0.0.0.0/0], action: direct}")];
        assert_eq!(decide(&first, &unknown), Some(1));
    }

    #[test]
    fn range_names() {
        assert!(Member::names("tor", "tor") && Member::names("tor", "tor#12"));
        assert!(
            !Member::names("tor", "torx") && !Member::names("tor", "tor#") && !Member::names("tor", "tor#1a")
        );
    }

    #[test]
    fn ten_thousand_suffixes() {
        let mut set = SuffixSet::default();
        for i in 0..10_000 {
            set.0.push(fnv(format!("site{i}.example").as_bytes()));
        }
        set.finish();
        assert!(set.matches(b"www.site9999.example") && !set.matches(b"www.site10000.example"));
    }
}
