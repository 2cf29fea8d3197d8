//! Leaf value types that validate themselves while the YAML is read.
//!
//! Parsing a duration, an address or a port range as its scalar is read
//! (a `Leaf`, rather than after) is what lets every such error carry serde_yaml's
//! key path and line: `health.check_interval: invalid duration "10x" at
//! line 12 column 19`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use super::field::{leaf_from_str, lists, one_or_many, Field, Leaf, Listen, Scalar, Stop, Values};

/// A Go-style duration (`10s`, `2000ms`, `1h30m`, `1.5s`) that is never
/// zero: every duration in the config is a timeout or an interval, and
/// zero would mean "never" or "spin".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoDuration(pub Duration);

impl FromStr for GoDuration {
    type Err = String;

    /// Go's `time.ParseDuration` grammar: one or more `<number><unit>`
    /// terms, the number possibly with a fraction; units ns, us (or µs),
    /// ms, s, m, h. A bare number is refused because it is ambiguous
    /// (Go would read `10` as ten nanoseconds).
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("invalid duration {text:?}: {why} (examples: 10s, 2000ms, 15m, 1h30m)");
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(bad("empty"));
        }
        let mut total_nanos: u128 = 0;
        while !rest.is_empty() {
            let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
            let (number, after) = rest.split_at(num_len);
            if number.is_empty() {
                return Err(bad("expected a number"));
            }
            let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
            let (unit, after) = after.split_at(unit_len);
            let unit_nanos: u128 = match unit {
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                "" => return Err(bad("missing unit")),
                _ => return Err(bad(&format!("unknown unit {unit:?}"))),
            };
            let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
            if whole.is_empty() && frac.is_empty() || frac.contains('.') {
                return Err(bad("malformed number"));
            }
            let whole: u128 =
                if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad("number too large"))? };
            let mut term = whole.checked_mul(unit_nanos).ok_or_else(|| bad("too large"))?;
            // Fractions: only the digits that can matter at ns resolution.
            let mut scale = unit_nanos;
            for digit in frac.bytes().take(18) {
                scale /= 10;
                term += u128::from(digit - b'0') * scale;
            }
            total_nanos = total_nanos.checked_add(term).ok_or_else(|| bad("too large"))?;
            rest = after;
        }
        // A year is far beyond any sensible timeout and keeps the value
        // well inside what Instant arithmetic tolerates.
        if total_nanos > 365 * 24 * 3_600_000_000_000 {
            return Err(bad("longer than a year"));
        }
        if total_nanos == 0 {
            return Err(bad("must be greater than zero"));
        }
        let secs = (total_nanos / 1_000_000_000) as u64;
        let nanos = (total_nanos % 1_000_000_000) as u32;
        Ok(GoDuration(Duration::new(secs, nanos)))
    }
}

/// `threads:` as written: a count (checked later), or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawThreads {
    Auto,
    Count(u32),
}

impl Leaf for RawThreads {
    const TEXT: bool = false;
    const EXPECTING: &'static str = "a number of threads, or auto";
    fn from_scalar(s: Scalar<'_>) -> Result<Self, String> {
        match s {
            Scalar::Text("auto") => Ok(RawThreads::Auto),
            Scalar::Unsigned(_) | Scalar::Signed(_) => u32::from_scalar(s).map(RawThreads::Count),
            other => Err(other.wrong(Self::EXPECTING)),
        }
    }
}

impl Leaf for GoDuration {
    const TEXT: bool = false;
    const EXPECTING: &'static str = "a duration such as 10s, 2000ms or 15m";
    fn from_scalar(s: Scalar<'_>) -> Result<Self, String> {
        match s {
            Scalar::Text(t) => t.parse(),
            Scalar::Unsigned(v) => {
                Err(format!("invalid duration {v}: a number needs a unit, e.g. {v}s or {v}ms"))
            }
            Scalar::Signed(v) => {
                Err(format!("invalid duration {v}: must be a positive duration such as 10s"))
            }
            Scalar::Float(v) => Err(format!("invalid duration {v}: a number needs a unit, e.g. {v}s")),
            other => Err(other.wrong(Self::EXPECTING)),
        }
    }
}

/// Formats a duration the way a user would write it in the config.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        format!("{}ns", d.as_nanos())
    } else if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A measured duration for people, rounded to what matters: `850ms`,
/// `4.2s`, `3m12s`, `2h05m`, `3d4h`.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    if ms < 1000 {
        format!("{ms}ms")
    } else if s < 10 && ms % 1000 != 0 {
        format!("{:.1}s", d.as_secs_f64())
    } else if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else {
        format!("{}d{}h", s / 86_400, s % 86_400 / 3600)
    }
}

/// A listen address: `IP:PORT`, `[IPv6]:PORT`, `localhost:PORT`, or Go's
/// `:PORT` (all IPv4 interfaces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr(pub SocketAddr);

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(ListenAddr(addr));
        }
        let bad = || {
            format!("invalid listen address {text:?}: expected IP:PORT, e.g. 127.0.0.1:1080 or [::1]:1080")
        };
        let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let ip = match host {
            "" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            _ => return Err(bad()),
        };
        Ok(ListenAddr(SocketAddr::new(ip, port)))
    }
}

leaf_from_str!(
    ListenAddr => "an address such as 127.0.0.1:1080",
    BackendAddr => "an address such as 127.0.0.1:9050 or 127.0.0.1:9070-9089",
);

/// One `listen` entry: a plain address (SOCKS5, as SocksBalance has it) or
/// `{address: ..., protocol: socks5 | http | mixed}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenEntry(pub SocketAddr, pub super::Protocol);

/// One address or a list of them; `listen` takes either form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOrMany<T>(pub Vec<T>);

impl Field for OneOrMany<ListenEntry> {
    fn read(value: &mut dyn Values) -> Result<Option<Self>, Stop> {
        let mut out = Vec::new();
        let seen = value.read(&mut Listen::new(&mut out))?;
        Ok(seen.then_some(OneOrMany(out)))
    }
}

/// One value or a list, each kept as the text written (a number too),
/// parsed by validation with the entry's key: one deserializer for every
/// list of the `groups:` and `rules:` keys, which costs the router binary
/// far less than one per value type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Strings(pub Vec<String>);

impl Field for Strings {
    fn read(value: &mut dyn Values) -> Result<Option<Strings>, Stop> {
        Ok(one_or_many(value)?.map(Strings))
    }
}

/// A list of lists of names, each as text: a group's `tiers:`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tiers(pub Vec<Strings>);

impl Field for Tiers {
    fn read(value: &mut dyn Values) -> Result<Option<Tiers>, Stop> {
        Ok(lists(value)?.map(|l| Tiers(l.into_iter().map(Strings).collect())))
    }
}

/// A backend's host: an IP literal or a name resolved at connect time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// The most backends one address may expand to: a typo such as
/// `1080-10800` should not silently create 9,721 backends.
pub const MAX_RANGE: usize = 4096;

/// A backend address as SocksBalance writes it: `host:port` or
/// `host:first-last`, with IPv6 in brackets (`[::1]:1080`,
/// `[2001:db8::1]:8080-8082`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendAddr {
    pub host: Host,
    pub first_port: u16,
    pub last_port: u16,
}

impl FromStr for BackendAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: String| format!("invalid backend address {text:?}: {why}");
        let (host, ports) = if let Some(rest) = text.strip_prefix('[') {
            let (ip, after) =
                rest.split_once(']').ok_or_else(|| bad("missing ']' after IPv6 address".into()))?;
            let ports = after.strip_prefix(':').ok_or_else(|| bad("expected :PORT after ']'".into()))?;
            let ip: std::net::Ipv6Addr =
                ip.parse().map_err(|_| bad(format!("{ip:?} is not an IPv6 address")))?;
            (Host::Ip(IpAddr::V6(ip)), ports)
        } else {
            let (host, ports) =
                text.rsplit_once(':').ok_or_else(|| bad("expected HOST:PORT or HOST:FIRST-LAST".into()))?;
            if host.contains(':') {
                return Err(bad("IPv6 addresses need brackets, e.g. [::1]:1080".into()));
            }
            if host.is_empty() {
                return Err(bad("missing host".into()));
            }
            let host = match host.parse::<Ipv4Addr>() {
                Ok(ip) => Host::Ip(IpAddr::V4(ip)),
                Err(_) if valid_hostname(host) => Host::Name(host.to_owned()),
                Err(_) => return Err(bad(format!("{host:?} is neither an IPv4 address nor a host name"))),
            };
            (host, ports)
        };
        let port = |p: &str| -> Result<u16, String> {
            match p.parse::<u32>() {
                Ok(0) => Err(bad("port 0 is not a valid backend port".into())),
                Ok(n) if n > 65535 => Err(bad(format!("port {n} is over 65535"))),
                Ok(n) => Ok(n as u16),
                Err(_) => Err(bad(format!("{p:?} is not a port number"))),
            }
        };
        let (first_port, last_port) = match ports.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => {
                let p = port(ports)?;
                (p, p)
            }
        };
        if first_port > last_port {
            return Err(bad(format!("port range {first_port}-{last_port} is reversed")));
        }
        let count = usize::from(last_port - first_port) + 1;
        if count > MAX_RANGE {
            return Err(bad(format!("port range has {count} ports, more than the limit of {MAX_RANGE}")));
        }
        Ok(BackendAddr { host, first_port, last_port })
    }
}

/// RFC 1123 host names: labels of letters, digits and hyphens, at most
/// 253 characters (a SOCKS5 domain field holds 255).
fn valid_hostname(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dur(s: &str) -> Result<Duration, String> {
        s.parse::<GoDuration>().map(|d| d.0)
    }

    #[test]
    fn human_durations() {
        let ms = Duration::from_millis;
        assert_eq!(human(ms(850)), "850ms");
        assert_eq!(human(ms(4_240)), "4.2s");
        assert_eq!(human(ms(5_000)), "5s");
        assert_eq!(human(ms(42_000)), "42s");
        assert_eq!(human(ms(192_000)), "3m12s");
        assert_eq!(human(ms(7_500_000)), "2h05m");
        assert_eq!(human(ms(273_600_000)), "3d4h");
    }

    #[test]
    fn go_durations() {
        assert_eq!(dur("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(dur("2000ms"), Ok(Duration::from_millis(2000)));
        assert_eq!(dur("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(dur("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(dur("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(dur(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(dur("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(dur("1µs"), Ok(Duration::from_micros(1)));
        assert_eq!(dur("3ns"), Ok(Duration::from_nanos(3)));
    }

    #[test]
    fn bad_durations_say_why() {
        for (input, why) in [
            ("", "empty"),
            ("10", "missing unit"),
            ("10x", "unknown unit"),
            ("s", "expected a number"),
            ("0s", "greater than zero"),
            ("1.2.3s", "malformed"),
            ("9999999999h", "longer than a year"),
            ("99999999999999999999999999999999999999999h", "too large"),
            ("-5s", "expected a number"),
        ] {
            let err = dur(input).unwrap_err();
            assert!(err.contains(why), "{input:?}: {err}");
        }
    }

    #[test]
    fn durations_format_back() {
        for s in ["10s", "2000ms", "15m", "2h", "1500ms"] {
            let d = dur(s).unwrap();
            assert_eq!(format_duration(d).parse::<GoDuration>().unwrap().0, d);
        }
        assert_eq!(format_duration(Duration::from_secs(60)), "1m");
    }

    #[test]
    fn listen_addresses() {
        let p = |s: &str| s.parse::<ListenAddr>().map(|a| a.0.to_string());
        assert_eq!(p("0.0.0.0:1080").unwrap(), "0.0.0.0:1080");
        assert_eq!(p("[::1]:1080").unwrap(), "[::1]:1080");
        assert_eq!(p(":1080").unwrap(), "0.0.0.0:1080");
        assert_eq!(p("localhost:1080").unwrap(), "127.0.0.1:1080");
        assert!(p("example.com:1080").is_err());
        assert!(p("127.0.0.1:70000").is_err());
        assert!(p("127.0.0.1").is_err());
    }

    #[test]
    fn backend_addresses_and_ranges() {
        let a: BackendAddr = "127.0.0.1:9070-9089".parse().unwrap();
        assert_eq!((a.first_port, a.last_port), (9070, 9089));
        let a: BackendAddr = "[2001:db8::1]:8080-8082".parse().unwrap();
        assert_eq!(a.host.to_string(), "[2001:db8::1]");
        let a: BackendAddr = "[::1]:1080".parse().unwrap();
        assert_eq!((a.first_port, a.last_port), (1080, 1080));
        let a: BackendAddr = "proxy.lan:1080".parse().unwrap();
        assert_eq!(a.host, Host::Name("proxy.lan".into()));
    }

    #[test]
    fn bad_backend_addresses_say_why() {
        for (input, why) in [
            ("127.0.0.1:9089-9070", "reversed"),
            ("127.0.0.1:70000", "over 65535"),
            ("127.0.0.1:0", "port 0"),
            ("127.0.0.1:1-9999", "limit"),
            ("::1:1080", "brackets"),
            ("[::1:1080", "missing ']'"),
            ("[::1]", "expected :PORT"),
            ("[zz]:1", "not an IPv6"),
            ("127.0.0.1", "expected HOST:PORT"),
            (":1080", "missing host"),
            ("bad host:1080", "neither"),
            ("127.0.0.1:http", "not a port"),
            ("127.0.0.1:10-", "not a port"),
        ] {
            let err = input.parse::<BackendAddr>().unwrap_err();
            assert!(err.contains(why), "{input:?}: {err}");
        }
    }
}

/// `health.test_url`: an `http://` or `https://` URL, split once at load
/// time into what a probe needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeUrl {
    /// The URL as written, for display.
    pub raw: String,
    pub https: bool,
    /// Host without brackets: a name, an IPv4 or an IPv6 address.
    pub host: String,
    pub port: u16,
    /// Path and query, at least "/".
    pub path: String,
}

impl FromStr for ProbeUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("invalid test URL {text:?}: {why}");
        let (https, rest) = if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else {
            return Err(bad("must start with http:// or https://"));
        };
        let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(split);
        let path = match tail.split('#').next().unwrap_or("") {
            "" => "/".to_owned(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_owned(),
        };
        if authority.contains('@') {
            return Err(bad("user info in the URL is not supported"));
        }
        let default_port = if https { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (ip, after) = v6.split_once(']').ok_or_else(|| bad("missing ']'"))?;
            ip.parse::<std::net::Ipv6Addr>().map_err(|_| bad("bad IPv6 address"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad("bad port"))?,
                None if after.is_empty() => default_port,
                None => return Err(bad("junk after ']'")),
            };
            (ip.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| bad("bad port"))?),
                None => (authority.to_owned(), default_port),
            }
        };
        if port == 0 {
            return Err(bad("port 0"));
        }
        if host.parse::<IpAddr>().is_err() && !valid_hostname(&host) {
            return Err(bad("bad host name"));
        }
        Ok(ProbeUrl { raw: text.to_owned(), https, host, port, path })
    }
}

leaf_from_str!(ProbeUrl => "an http:// or https:// URL");

#[cfg(test)]
mod url_tests {
    use super::ProbeUrl;

    #[test]
    fn probe_urls() {
        let u: ProbeUrl = "https://www.google.com".parse().unwrap();
        assert!(u.https);
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("www.google.com", 443, "/"));
        let u: ProbeUrl = "http://127.0.0.1:8080/generate_204?x=1#frag".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("127.0.0.1", 8080, "/generate_204?x=1"));
        let u: ProbeUrl = "http://[::1]/".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 80));
        let u: ProbeUrl = "http://example.com?q".parse().unwrap();
        assert_eq!(u.path, "/?q");
        for bad in [
            "ftp://x",
            "http://",
            "http://a b/",
            "http://h:0/",
            "http://u:p@h/",
            "http://[::1/",
            "http://h:x/",
        ] {
            assert!(bad.parse::<ProbeUrl>().is_err(), "{bad}");
        }
    }
}

/// An address block: `192.168.0.0/16`, `fd00::/8`, or one address
/// (`10.0.0.1` = `/32`, `::1` = `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub network: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub const fn new(network: IpAddr, prefix: u8) -> Cidr {
        Cidr { network, prefix }
    }

    /// Whether `ip` is inside. IPv4-mapped IPv6 clients (`::ffff:a.b.c.d`,
    /// as a dual-stack listener sees them) count as their IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("invalid address block {text:?}: {why} (examples: 192.168.0.0/16, fd00::/8, 10.0.0.1)")
        };
        let (ip, prefix) = match text.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (text, None),
        };
        let ip: IpAddr = ip.parse().map_err(|_| bad("not an IP address"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(|| bad("bad prefix length"))?,
            None => max,
        };
        Ok(Cidr { network: ip, prefix })
    }
}

/// A `deny_destinations` entry: an address block, optionally one port of
/// it: `10.0.0.0/8`, `192.168.1.1:22`, `[fd00::/8]:443`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestRule {
    pub block: Cidr,
    pub port: Option<u16>,
}

impl DestRule {
    pub fn matches(&self, dest: SocketAddr) -> bool {
        self.block.contains(dest.ip()) && self.port.is_none_or(|p| p == dest.port())
    }
}

impl fmt::Display for DestRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.port, self.block.network) {
            (None, _) => write!(f, "{}", self.block),
            (Some(p), IpAddr::V6(_)) => write!(f, "[{}]:{p}", self.block),
            (Some(p), IpAddr::V4(_)) => write!(f, "{}:{p}", self.block),
        }
    }
}

impl FromStr for DestRule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let port = |p: &str| -> Result<u16, String> {
            p.parse().map_err(|_| format!("invalid destination rule {text:?}: {p:?} is not a port"))
        };
        if let Some(rest) = text.strip_prefix('[') {
            let (block, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("invalid destination rule {text:?}: missing ']'"))?;
            let p = after
                .strip_prefix(':')
                .ok_or_else(|| format!("invalid destination rule {text:?}: expected :PORT after ']'"))?;
            return Ok(DestRule { block: block.parse()?, port: Some(port(p)?) });
        }
        match text.matches(':').count() {
            // IPv4 (or a bare IPv6 block, which has several colons).
            0 => Ok(DestRule { block: text.parse()?, port: None }),
            1 => {
                let (block, p) = text.split_once(':').unwrap_or((text, ""));
                Ok(DestRule { block: block.parse()?, port: Some(port(p)?) })
            }
            _ => Ok(DestRule { block: text.parse()?, port: None }),
        }
    }
}

leaf_from_str!(
    Cidr => "an address block such as 192.168.0.0/16",
    DestRule => "an address block, optionally with a port: 10.0.0.0/8, 192.168.1.1:22, [fd00::/8]:443",
);

#[cfg(test)]
mod acl_tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_membership() {
        let lan: Cidr = "192.168.0.0/16".parse().unwrap();
        assert!(lan.contains(ip("192.168.77.1")));
        assert!(!lan.contains(ip("192.169.0.1")));
        assert!(lan.contains(ip("::ffff:192.168.1.2")), "IPv4-mapped clients count as IPv4");
        assert!(!lan.contains(ip("fd00::1")));
        let ula: Cidr = "fc00::/7".parse().unwrap();
        assert!(ula.contains(ip("fd12:3456::1")) && !ula.contains(ip("fe80::1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        let one: Cidr = "10.0.0.1".parse().unwrap();
        assert_eq!(one.prefix, 32);
        assert!(one.contains(ip("10.0.0.1")) && !one.contains(ip("10.0.0.2")));
        for bad in ["10.0.0.0/33", "fd00::/129", "lan", "10.0.0/8", "10.0.0.0/-1"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn destination_rules() {
        let r: DestRule = "192.168.1.1:22".parse().unwrap();
        assert!(r.matches("192.168.1.1:22".parse().unwrap()));
        assert!(!r.matches("192.168.1.1:80".parse().unwrap()));
        let r: DestRule = "[fd00::/8]:443".parse().unwrap();
        assert!(r.matches("[fd00::5]:443".parse().unwrap()));
        assert_eq!(r.to_string(), "[fd00::/8]:443");
        let r: DestRule = "10.0.0.0/8".parse().unwrap();
        assert!(r.matches("10.1.2.3:9".parse().unwrap()));
        let r: DestRule = "::1".parse().unwrap();
        assert!(r.matches("[::1]:1080".parse().unwrap()));
        for bad in ["10.0.0.0/8:http", "[::1/128", "[::1]/128", "host:22"] {
            assert!(bad.parse::<DestRule>().is_err(), "{bad}");
        }
    }
}
