//! The name a gateway client's first bytes carry: the server name of a TLS
//! ClientHello (SNI, RFC 6066 §3) or the `Host` of an HTTP/1.x request.
//!
//! A redirected connection arrives with only an IP address. Sending the
//! backend the name instead lets the proxy resolve it at the exit (no
//! local DNS answer decides where the traffic goes) and lets destination
//! rules match names. Pure: the caller reads the bytes, bounded in size
//! and time ([`LIMIT`]), and forwards them whatever this says.

use crate::socks5::Address;

/// Most bytes read ahead for a name. A ClientHello with post-quantum key
/// shares is about 1.8 KB; an HTTP head with cookies fits in most cases.
pub const LIMIT: usize = 4096;

/// What the bytes so far say. Returned and matched at once, never
/// stored: the name's size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniffed {
    /// The destination by name, with the port the client dialled.
    Name(Address),
    /// A ClientHello or request head that has not all arrived yet.
    More,
    /// Not TLS or HTTP, or no name in it (an IP literal counts as none).
    Nothing,
}

/// Reads the name in `bytes`, the first a client sent, for a connection
/// to `port`.
pub fn sniff(bytes: &[u8], port: u16) -> Sniffed {
    match bytes.first() {
        None => Sniffed::More,
        Some(0x16) => tls(bytes, port),
        Some(b'A'..=b'Z') => http(bytes, port),
        Some(_) => Sniffed::Nothing,
    }
}

/// A name as a destination, if it is a host name (not an IP literal),
/// in lower case.
fn named(host: &str, port: u16) -> Sniffed {
    match crate::http::authority(&host.to_ascii_lowercase(), Some(port)) {
        Some(Address::Domain(name, _)) if !host.contains(':') => Sniffed::Name(Address::Domain(name, port)),
        _ => Sniffed::Nothing,
    }
}

fn http(bytes: &[u8], port: u16) -> Sniffed {
    // A request line begins with a method token and a space, and a client
    // sends at least that much in its first segment. Anything else is some
    // other protocol, and waiting for more would hold it up: a client
    // that sent `E` and waits for its echo must not wait for us.
    let method = bytes.iter().take_while(|b| b.is_ascii_uppercase()).count();
    if !(1..=16).contains(&method) || bytes.get(method) != Some(&b' ') {
        return Sniffed::Nothing;
    }
    let Some(end) = crate::http::head_end(bytes) else {
        return Sniffed::More;
    };
    match crate::http::parse_head(&bytes[..end]) {
        Ok(head) => match head.header("host") {
            Some(host) => {
                let host = match host.rsplit_once(':') {
                    Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
                    _ => host,
                };
                named(host, port)
            }
            None => Sniffed::Nothing,
        },
        Err(_) => Sniffed::Nothing,
    }
}

/// A cursor over bytes that may have been cut short.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| b[0] as usize)
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    }

    /// A vector with a `len`-byte length prefix.
    fn vec(&mut self, len: usize) -> Option<Reader<'a>> {
        let n = if len == 1 { self.u8()? } else { self.u16()? };
        self.take(n).map(Reader)
    }
}

fn tls(bytes: &[u8], port: u16) -> Sniffed {
    // The record header: handshake (0x16), version 3.x, length.
    let mut r = Reader(bytes);
    let Some(header) = r.take(5) else {
        return if bytes.get(1).is_some_and(|&v| v != 3) { Sniffed::Nothing } else { Sniffed::More };
    };
    let length = u16::from_be_bytes([header[3], header[4]]) as usize;
    if header[1] != 3 || length == 0 || length > 16_384 {
        return Sniffed::Nothing;
    }
    let complete = r.0.len() >= length;
    let record = &r.0[..length.min(r.0.len())];
    match client_hello_name(record) {
        Some(Some(name)) => named(name, port),
        // Cut short: the rest of the record is on its way, unless it is
        // all here (a ClientHello spread over records, or garbage).
        None if !complete => Sniffed::More,
        _ => Sniffed::Nothing,
    }
}

/// The server name in a ClientHello handshake message: `None` when the
/// bytes end first, `Some(None)` when there is no usable one.
fn client_hello_name(record: &[u8]) -> Option<Option<&str>> {
    let mut r = Reader(record);
    if r.u8()? != 1 {
        return Some(None);
    }
    r.take(3)?; // the handshake length
    r.take(2 + 32)?; // legacy version, random
    r.vec(1)?; // session id
    r.vec(2)?; // cipher suites
    r.vec(1)?; // compression methods
    let mut extensions = r.vec(2)?;
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let mut data = extensions.vec(2)?;
        if kind != 0 {
            continue;
        }
        // server_name: a list of (type, name); type 0 is host_name.
        let mut list = data.vec(2)?;
        while !list.0.is_empty() {
            let kind = list.u8()?;
            let name = list.vec(2)?.0;
            if kind == 0 {
                return Some(std::str::from_utf8(name).ok());
            }
        }
        return Some(None);
    }
    // Extensions end without a server name (or the bytes ended inside
    // them, which the length check above already caught as `None`).
    Some(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str, port: u16) -> Sniffed {
        Sniffed::Name(crate::http::authority(&format!("{s}:{port}"), None).unwrap())
    }

    /// A ClientHello as a browser sends it, with `sni` (if any) among
    /// other extensions.
    pub(crate) fn client_hello(sni: Option<&str>) -> Vec<u8> {
        let mut ext = Vec::new();
        // supported_versions, before the name.
        ext.extend_from_slice(&[0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]);
        if let Some(sni) = sni {
            let n = sni.len() as u16;
            ext.extend_from_slice(&[0x00, 0x00]);
            ext.extend_from_slice(&(n + 5).to_be_bytes());
            ext.extend_from_slice(&(n + 3).to_be_bytes());
            ext.push(0);
            ext.extend_from_slice(&n.to_be_bytes());
            ext.extend_from_slice(sni.as_bytes());
        }
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7; 32]);
        body.extend_from_slice(&[32]);
        body.extend_from_slice(&[9; 32]);
        body.extend_from_slice(&[0x00, 0x04, 0x13, 0x01, 0x13, 0x02, 0x01, 0x00]);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![1, 0];
        hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 0x03, 0x01];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn the_server_name_of_a_client_hello() {
        let hello = client_hello(Some("Example.COM"));
        assert_eq!(sniff(&hello, 443), name("example.com", 443));
        // Every cut short of the whole record asks for more.
        for cut in 0..hello.len() {
            assert_eq!(sniff(&hello[..cut], 443), Sniffed::More, "cut at {cut}");
        }
        assert_eq!(sniff(&client_hello(None), 443), Sniffed::Nothing);
        assert_eq!(sniff(&client_hello(Some("192.0.2.1")), 443), Sniffed::Nothing, "an IP is no name");
        assert_eq!(sniff(&client_hello(Some("bad name")), 443), Sniffed::Nothing);
        // Not TLS 1.x, or an alert rather than a handshake.
        assert_eq!(sniff(&[0x16, 0x02, 0x00, 0x00, 0x10], 443), Sniffed::Nothing);
        assert_eq!(sniff(&[0x15, 0x03, 0x03, 0x00, 0x02, 2, 40], 443), Sniffed::Nothing);
    }

    #[test]
    fn the_host_of_an_http_request() {
        let req = b"GET /x HTTP/1.1\r\nHost: www.example.org:8080\r\nAccept: */*\r\n\r\n";
        assert_eq!(sniff(req, 80), name("www.example.org", 80));
        // Once the method and its space are in, the rest is waited for.
        for cut in 4..req.len() - 1 {
            assert_eq!(sniff(&req[..cut], 80), Sniffed::More, "cut at {cut}");
        }
        assert_eq!(sniff(b"GET / HTTP/1.1\r\nHost: 198.19.0.1\r\n\r\n", 80), Sniffed::Nothing);
        assert_eq!(sniff(b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", 80), Sniffed::Nothing);
        assert_eq!(sniff(b"GET / HTTP/1.0\r\n\r\n", 80), Sniffed::Nothing, "no Host");
        // Other protocols are told at once, without waiting for a head.
        assert_eq!(sniff(b"SSH-2.0-OpenSSH_9.2\r\n", 22), Sniffed::Nothing);
        assert_eq!(sniff(b"\x00\x01", 22), Sniffed::Nothing);
        assert_eq!(sniff(b"E", 7), Sniffed::Nothing, "a short word that waits for an answer");
        assert_eq!(sniff(b"GET", 80), Sniffed::Nothing);
        assert_eq!(sniff(b"EHLO x\r\n\r\n", 25), Sniffed::Nothing);
    }
}
