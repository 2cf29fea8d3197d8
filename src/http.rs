//! HTTP/1.x request heads as a proxy reads them: the request line, the
//! headers, the target (`CONNECT host:port` or an absolute-form
//! `http://host/path`), `Proxy-Authorization: Basic`, and the head we
//! forward to the origin with the hop-by-hop headers taken out.
//!
//! Everything here is a pure function of bytes, so the fuzz target
//! (`fuzz/fuzz_targets/http.rs`) drives it directly. Limits: a head is at
//! most [`MAX_HEAD`] bytes and [`MAX_HEADERS`] headers; lines may end in
//! CRLF or a bare LF (RFC 9112 §2.2 lets a recipient accept that).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::socks5::{Address, Domain};

/// The largest request head read, request line included.
pub const MAX_HEAD: usize = 8192;

/// The most header lines in a head.
pub const MAX_HEADERS: usize = 100;

/// Why a head cannot be served; each has its status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// Not a valid HTTP/1.x request head (400), and why.
    Malformed(&'static str),
    /// Longer than [`MAX_HEAD`] or with more than [`MAX_HEADERS`] (431).
    TooLarge,
}

impl HeadError {
    pub fn status(&self) -> u16 {
        match self {
            HeadError::Malformed(_) => 400,
            HeadError::TooLarge => 431,
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::Malformed(why) => write!(f, "malformed request: {why}"),
            HeadError::TooLarge => write!(f, "request head over {MAX_HEAD} bytes or {MAX_HEADERS} headers"),
        }
    }
}

/// A parsed request head, borrowing from the bytes it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head<'a> {
    pub method: &'a str,
    pub target: &'a str,
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub headers: Vec<(&'a str, &'a str)>,
}

impl<'a> Head<'a> {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|&(_, v)| v)
    }
}

/// Where the head ends in `buf`: its length with the blank line, once the
/// blank line has arrived.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(at) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + at;
        // A line that is empty, or only "\r", ends the head.
        let rest = &buf[nl + 1..];
        if rest.first() == Some(&b'\n') {
            return Some(nl + 2);
        }
        if rest.starts_with(b"\r\n") {
            return Some(nl + 3);
        }
        i = nl + 1;
    }
    None
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parses a whole head (as [`head_end`] delimits it).
pub fn parse_head(bytes: &[u8]) -> Result<Head<'_>, HeadError> {
    if bytes.len() > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| HeadError::Malformed("bytes that are not UTF-8"))?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request = lines.next().unwrap_or_default();
    let mut parts = request.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed("the request line is not METHOD TARGET VERSION"));
    };
    if !is_token(method) {
        return Err(HeadError::Malformed("bad method"));
    }
    if target.is_empty() || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(HeadError::Malformed("bad request target"));
    }
    let minor = match version {
        "HTTP/1.1" => 1,
        "HTTP/1.0" => 0,
        _ => return Err(HeadError::Malformed("not HTTP/1.0 or HTTP/1.1")),
    };
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            return Err(HeadError::Malformed("a folded header line"));
        }
        let (name, value) = line.split_once(':').ok_or(HeadError::Malformed("a header line without ':'"))?;
        if !is_token(name) {
            return Err(HeadError::Malformed("bad header name"));
        }
        if headers.len() == MAX_HEADERS {
            return Err(HeadError::TooLarge);
        }
        headers.push((name, value.trim_matches([' ', '\t'])));
    }
    Ok(Head { method, target, minor, headers })
}

/// What the client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target<'a> {
    /// `CONNECT host:port`: a tunnel.
    Connect(Address),
    /// `GET http://host[:port]/path`: one request, forwarded to `dest` with
    /// `path` (origin-form) and `authority` as its Host.
    Absolute { dest: Address, authority: &'a str, path: &'a str },
}

/// Reads the request's target: an authority for CONNECT, an `http://`
/// URL for the rest.
pub fn parse_target<'a>(head: &Head<'a>) -> Result<Target<'a>, HeadError> {
    if head.method.eq_ignore_ascii_case("CONNECT") {
        return authority(head.target, None)
            .map(Target::Connect)
            .ok_or(HeadError::Malformed("CONNECT needs host:port"));
    }
    let rest = match head.target.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("http://") => &head.target[7..],
        _ => {
            return Err(HeadError::Malformed(
                "not a proxy request (the target must be http://host/... or CONNECT host:port)",
            ))
        }
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (auth, path) = rest.split_at(end);
    // userinfo@ in a proxy URL is not forwarded anywhere; refuse it.
    if auth.contains('@') {
        return Err(HeadError::Malformed("user info in the URL"));
    }
    let dest = authority(auth, Some(80)).ok_or(HeadError::Malformed("bad host in the URL"))?;
    let path = match path {
        "" => "/",
        p if p.starts_with('/') => p,
        // `http://host?q`: origin-form needs the slash.
        _ => return Err(HeadError::Malformed("a URL path must start with /")),
    };
    Ok(Target::Absolute { dest, authority: auth, path })
}

/// `host:port`, `[v6]:port` or `ipv4:port`; the port may be left out when
/// `default` gives one.
pub fn authority(s: &str, default: Option<u16>) -> Option<Address> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (ip, rest) = v6.split_once(']')?;
        let port = match rest.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if rest.is_empty() => default?,
            None => return None,
        };
        let ip: std::net::Ipv6Addr = ip.parse().ok()?;
        return (port != 0).then_some(Address::Ip(SocketAddr::new(IpAddr::V6(ip), port)));
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().ok()?),
            None => (s, default?),
        }
    };
    if port == 0 || host.is_empty() {
        return None;
    }
    if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
        return Some(Address::Ip(SocketAddr::new(IpAddr::V4(ip), port)));
    }
    if host.contains(':')
        || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        return None;
    }
    let name = Domain::from_slice(host.as_bytes()).ok()?;
    Some(Address::Domain(name, port))
}

/// The user and password of a `Proxy-Authorization: Basic ...` value.
pub fn basic_credentials(value: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64_decode(token.trim())?;
    let at = decoded.iter().position(|&b| b == b':')?;
    Some((decoded[..at].to_vec(), decoded[at + 1..].to_vec()))
}

/// Standard base64 (RFC 4648) with optional padding; `None` if malformed.
/// Basic logins, of HTTP proxy clients and of the dashboard, use it.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim_end_matches('=').as_bytes();
    if s.len() % 4 == 1 || s.len() > 4096 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1),
/// besides those the request's `Connection` header names.
const HOP_BY_HOP: [&str; 7] =
    ["connection", "proxy-connection", "keep-alive", "proxy-authorization", "te", "trailer", "upgrade"];

/// Whether the request asks to become a WebSocket (its `Upgrade` and
/// `Connection: upgrade` then go through).
pub fn is_websocket(head: &Head<'_>) -> bool {
    head.header("upgrade").is_some_and(|u| u.trim().eq_ignore_ascii_case("websocket"))
}

/// The head to send the origin for an absolute-form request: origin-form
/// target, the hop-by-hop headers out, a Host if the client sent none,
/// and `Connection: close` (one request per connection; a WebSocket
/// upgrade keeps `Connection: upgrade` instead).
pub fn forward_head(head: &Head<'_>, authority: &str, path: &str) -> Vec<u8> {
    let listed: Vec<&str> = head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .collect();
    let websocket = is_websocket(head);
    let mut out = Vec::with_capacity(256);
    let mut line = |parts: &[&str]| {
        for p in parts {
            out.extend_from_slice(p.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    };
    line(&[head.method, " ", path, if head.minor == 0 { " HTTP/1.0" } else { " HTTP/1.1" }]);
    if head.header("host").is_none() {
        line(&["Host: ", authority]);
    }
    for &(name, value) in &head.headers {
        let hop = HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
            || listed.iter().any(|l| name.eq_ignore_ascii_case(l));
        let kept_for_websocket = websocket && name.eq_ignore_ascii_case("upgrade");
        if !hop || kept_for_websocket {
            line(&[name, ": ", value]);
        }
    }
    line(&["Connection: ", if websocket { "upgrade" } else { "close" }]);
    line(&[]);
    out
}

/// A complete response with a one-line text body, and `Connection:
/// close`: every error ends the client's connection.
pub fn response(status: u16, extra: &str, body: &str) -> Vec<u8> {
    let reason = match status {
        200 => "Connection established",
        400 => "Bad Request",
        403 => "Forbidden",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\n{extra}Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}\n",
        body.len() + 1
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head<'_> {
        parse_head(text.as_bytes()).unwrap()
    }

    #[test]
    fn the_head_ends_at_the_blank_line_with_or_without_cr() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\nbody"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
        assert_eq!(head_end(b""), None);
    }

    #[test]
    fn connect_targets_take_names_ipv4_and_bracketed_ipv6() {
        let t = |s: &str| {
            let text = format!("CONNECT {s} HTTP/1.1\r\n\r\n");
            parse_head(text.as_bytes()).and_then(|h| {
                parse_target(&h).map(|t| match t {
                    Target::Connect(a) => a,
                    other => panic!("{other:?}"),
                })
            })
        };
        assert_eq!(t("127.0.0.1:443"), Ok(Address::Ip("127.0.0.1:443".parse().unwrap())));
        assert_eq!(t("[::1]:8443"), Ok(Address::Ip("[::1]:8443".parse().unwrap())));
        assert!(matches!(t("example.com:443"), Ok(Address::Domain(n, 443)) if n == b"example.com"));
        for bad in ["example.com", "[::1]", "a:0", ":443", "a b:1", "[::1:443", "host:99999"] {
            assert!(t(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn absolute_form_gives_the_destination_and_the_origin_form_path() {
        let h = head("GET http://Example.com:8080/a/b?c=d HTTP/1.1\r\nHost: example.com:8080\r\n\r\n");
        let Target::Absolute { dest, authority, path } = parse_target(&h).unwrap() else { panic!() };
        assert_eq!(dest.to_string(), "Example.com:8080");
        assert_eq!((authority, path), ("Example.com:8080", "/a/b?c=d"));
        let h = head("GET http://127.0.0.1 HTTP/1.0\r\n\r\n");
        assert!(matches!(parse_target(&h), Ok(Target::Absolute { path: "/", .. })));
        for bad in [
            "GET / HTTP/1.1",
            "GET https://a/ HTTP/1.1",
            "GET http://u:p@a/ HTTP/1.1",
            "GET http:// HTTP/1.1",
        ] {
            assert!(parse_target(&head(&format!("{bad}\r\n\r\n"))).is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_and_oversized_heads_have_their_status() {
        for bad in [
            "GET / HTTP/2\r\n\r\n",
            "GET /\r\n\r\n",
            "GET  / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nno colon\r\n\r\n",
            "GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
            "G(T / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse_head(bad.as_bytes()).unwrap_err().status(), 400, "{bad:?}");
        }
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(MAX_HEADERS + 1));
        assert_eq!(parse_head(many.as_bytes()), Err(HeadError::TooLarge));
        assert_eq!(parse_head(&vec![b'a'; MAX_HEAD + 1]), Err(HeadError::TooLarge));
        assert!(parse_head(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn base64_round_trips_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
        ] {
            assert_eq!(base64_decode(encoded).unwrap(), plain.as_bytes(), "{encoded}");
        }
        assert_eq!(base64_decode("YWRtaW46czNjcjN0").unwrap(), b"admin:s3cr3t");
        assert!(base64_decode("Z").is_none());
        assert!(base64_decode("Zm9v!").is_none());
    }

    #[test]
    fn basic_credentials_decode() {
        assert_eq!(basic_credentials("Basic dTpw"), Some((b"u".to_vec(), b"p".to_vec())));
        assert_eq!(
            basic_credentials("basic YWxpY2U6d29uZGVybGFuZA=="),
            Some((b"alice".to_vec(), b"wonderland".to_vec()))
        );
        assert_eq!(basic_credentials("Basic YTpiOmM="), Some((b"a".to_vec(), b"b:c".to_vec())));
        for bad in ["Bearer dTpw", "Basic d=Tp", "Basic ====", "Basic !!!!", "Basic", "Basic dXNlcg=="] {
            assert_eq!(basic_credentials(bad), None, "{bad}");
        }
    }

    #[test]
    fn forwarded_heads_drop_hop_by_hop_headers_and_close() {
        let h = head(
            "GET http://a/x HTTP/1.1\r\nHost: a\r\nProxy-Connection: keep-alive\r\nConnection: keep-alive, X-Hop\r\n\
             X-Hop: 1\r\nKeep-Alive: 5\r\nProxy-Authorization: Basic dTpw\r\nTE: trailers\r\nAccept: */*\r\n\r\n",
        );
        let out = String::from_utf8(forward_head(&h, "a", "/x")).unwrap();
        assert_eq!(out, "GET /x HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nConnection: close\r\n\r\n");
        let h = head("GET http://a:81/ HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
        let out = String::from_utf8(forward_head(&h, "a:81", "/")).unwrap();
        assert_eq!(out, "GET / HTTP/1.0\r\nHost: a:81\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n");
    }

    #[test]
    fn responses_are_complete() {
        let r = String::from_utf8(response(502, "", "connection refused")).unwrap();
        assert!(r.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{r}");
        assert!(r.ends_with("Content-Length: 19\r\nConnection: close\r\n\r\nconnection refused\n"), "{r}");
    }
}
