//! The SOCKS5 wire protocol (RFC 1928) and its username/password
//! sub-negotiation (RFC 1929), for both sides of the balancer.
//!
//! Every message is read field by field with `read_exact`, so a peer that
//! sends one byte at a time, or pipelines several messages into one
//! segment, is handled the same as a well-behaved one: nothing here assumes
//! that one `recv()` is one message. Variable-length fields live in
//! fixed-capacity `heapless` buffers, so a hostile peer cannot make us
//! allocate: the protocol caps every field at 255 bytes.
//!
//! Messages are encoded into stack buffers and written with one
//! `write_all`, which keeps the handshake to one syscall per message.
//! Sockets are read through a [`Buffered`] reader, so that parsing field
//! by field still costs one `recv()` per segment that arrives, not one per
//! field; what it read past the handshake is handed on to the relay.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The protocol version byte that opens every SOCKS5 message.
pub const VERSION: u8 = 0x05;
/// The version byte of the RFC 1929 username/password sub-negotiation.
pub const AUTH_VERSION: u8 = 0x01;

/// "No authentication required" (RFC 1928 §3).
pub const METHOD_NO_AUTH: u8 = 0x00;
/// "Username/password" (RFC 1928 §3, RFC 1929).
pub const METHOD_USER_PASS: u8 = 0x02;
/// "No acceptable methods": the client must close the connection.
pub const METHOD_NONE_ACCEPTABLE: u8 = 0xFF;

const ATYP_IPV4: u8 = 0x01;
const ATYP_DOMAIN: u8 = 0x03;
const ATYP_IPV6: u8 = 0x04;

/// Longest encoded request or reply: 4 header bytes, a length byte, a
/// 255-byte domain and a 2-byte port.
const MAX_ADDRESS_MESSAGE: usize = 4 + 1 + 255 + 2;

/// A domain name as carried on the wire: 1 to 255 bytes, not necessarily
/// UTF-8 (RFC 1928 does not say), so we keep the bytes.
pub type Domain = heapless::Vec<u8, 255>;

/// A username or password field of RFC 1929: 1 to 255 bytes.
pub type Field = heapless::Vec<u8, 255>;

/// The client's method-selection message:
///
/// ```text
/// +----+----------+----------+
/// |VER | NMETHODS | METHODS  |
/// +----+----------+----------+
/// | 1  |    1     | 1 to 255 |
/// +----+----------+----------+
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// The methods the client offers, in its order of preference.
    pub methods: heapless::Vec<u8, 255>,
}

impl Greeting {
    /// Whether the client offered `method`.
    pub fn offers(&self, method: u8) -> bool {
        self.methods.contains(&method)
    }
}

/// The RFC 1929 username/password request:
///
/// ```text
/// +----+------+----------+------+----------+
/// |VER | ULEN |  UNAME   | PLEN |  PASSWD  |
/// +----+------+----------+------+----------+
/// | 1  |  1   | 1 to 255 |  1   | 1 to 255 |
/// +----+------+----------+------+----------+
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct UserPass {
    pub username: Field,
    pub password: Field,
}

impl fmt::Debug for UserPass {
    // The password never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserPass")
            .field("username", &String::from_utf8_lossy(&self.username))
            .field("password", &"MASKED")
            .finish()
    }
}

/// The command of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Connect,
    Bind,
    UdpAssociate,
}

/// A destination or bound address.
///
/// The domain is stored inline (up to 255 bytes) on purpose: a request
/// then costs no heap allocation, and an `Address` lives only for the
/// handshake, so its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    Ip(SocketAddr),
    Domain(Domain, u16),
}

impl Address {
    /// The all-zero IPv4 address, used in replies that carry no address.
    pub const UNSPECIFIED: Address = Address::Ip(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));

    /// The destination port.
    pub fn port(&self) -> u16 {
        match self {
            Address::Ip(addr) => addr.port(),
            Address::Domain(_, port) => *port,
        }
    }

    /// Appends the ATYP, address and port fields to `out`.
    fn encode(&self, out: &mut heapless::Vec<u8, MAX_ADDRESS_MESSAGE>) {
        // Capacity: at most 1 + 1 + 255 + 2 bytes after a 3-byte header,
        // which MAX_ADDRESS_MESSAGE covers, so the pushes cannot fail.
        let mut put = |bytes: &[u8]| {
            let _ = out.extend_from_slice(bytes);
        };
        match self {
            Address::Ip(SocketAddr::V4(a)) => {
                put(&[ATYP_IPV4]);
                put(&a.ip().octets());
            }
            Address::Ip(SocketAddr::V6(a)) => {
                put(&[ATYP_IPV6]);
                put(&a.ip().octets());
            }
            Address::Domain(name, _) => {
                put(&[ATYP_DOMAIN, name.len() as u8]);
                put(name);
            }
        }
        put(&self.port().to_be_bytes());
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Ip(addr) => write!(f, "{addr}"),
            Address::Domain(name, port) => {
                write!(f, "{}:{}", String::from_utf8_lossy(name), port)
            }
        }
    }
}

/// A client's request:
///
/// ```text
/// +----+-----+-------+------+----------+----------+
/// |VER | CMD |  RSV  | ATYP | DST.ADDR | DST.PORT |
/// +----+-----+-------+------+----------+----------+
/// | 1  |  1  | X'00' |  1   | Variable |    2     |
/// +----+-----+-------+------+----------+----------+
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub address: Address,
}

/// A server's reply: same layout as the request, with REP in place of
/// CMD and the bound address in place of the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The raw REP byte: a backend may send codes we have no name for,
    /// and in transparent mode they must reach the client unchanged.
    pub code: u8,
    pub bound: Address,
}

/// A reply code of RFC 1928 §6: the assigned ones as constants, and any
/// other byte a backend may send, which is passed on as it came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyCode(pub u8);

impl ReplyCode {
    pub const SUCCEEDED: ReplyCode = ReplyCode(0x00);
    pub const GENERAL_FAILURE: ReplyCode = ReplyCode(0x01);
    pub const NOT_ALLOWED: ReplyCode = ReplyCode(0x02);
    pub const NETWORK_UNREACHABLE: ReplyCode = ReplyCode(0x03);
    pub const HOST_UNREACHABLE: ReplyCode = ReplyCode(0x04);
    pub const CONNECTION_REFUSED: ReplyCode = ReplyCode(0x05);
    pub const TTL_EXPIRED: ReplyCode = ReplyCode(0x06);
    pub const COMMAND_NOT_SUPPORTED: ReplyCode = ReplyCode(0x07);
    pub const ADDRESS_TYPE_NOT_SUPPORTED: ReplyCode = ReplyCode(0x08);

    /// Maps a failed outbound connect to the reply a client should see,
    /// the way microsocks maps errno to RFC 1928 codes.
    pub fn from_io(err: &io::Error) -> ReplyCode {
        match err.kind() {
            io::ErrorKind::ConnectionRefused => ReplyCode::CONNECTION_REFUSED,
            io::ErrorKind::NetworkUnreachable | io::ErrorKind::NetworkDown => ReplyCode::NETWORK_UNREACHABLE,
            io::ErrorKind::HostUnreachable | io::ErrorKind::AddrNotAvailable => ReplyCode::HOST_UNREACHABLE,
            io::ErrorKind::TimedOut => ReplyCode::TTL_EXPIRED,
            _ => ReplyCode::GENERAL_FAILURE,
        }
    }

    /// A human-readable name, for logs.
    pub fn describe(code: u8) -> &'static str {
        match code {
            0x00 => "succeeded",
            0x01 => "general SOCKS server failure",
            0x02 => "connection not allowed by ruleset",
            0x03 => "network unreachable",
            0x04 => "host unreachable",
            0x05 => "connection refused",
            0x06 => "TTL expired",
            0x07 => "command not supported",
            0x08 => "address type not supported",
            _ => "unassigned reply code",
        }
    }
}

/// Everything that can be wrong with a peer's SOCKS5 bytes.
#[derive(Debug)]
pub enum Error {
    /// The socket failed or closed mid-message.
    Io(io::Error),
    /// The first byte was not 0x05 (a SOCKS4 or HTTP client, say).
    BadVersion(u8),
    /// A greeting offering zero methods.
    NoMethods,
    /// An RFC 1929 message with a version other than 0x01.
    BadAuthVersion(u8),
    /// An RFC 1929 username or password of length zero.
    EmptyCredential,
    /// A CMD byte RFC 1928 does not define.
    UnknownCommand(u8),
    /// An ATYP byte RFC 1928 does not define; the rest of the message
    /// cannot be framed.
    UnknownAddressType(u8),
    /// A domain name of length zero.
    EmptyDomain,
}

impl Error {
    /// The reply to send before closing, where the protocol allows one.
    pub fn reply(&self) -> Option<ReplyCode> {
        match self {
            Error::UnknownCommand(_) => Some(ReplyCode::COMMAND_NOT_SUPPORTED),
            Error::UnknownAddressType(_) => Some(ReplyCode::ADDRESS_TYPE_NOT_SUPPORTED),
            Error::EmptyDomain => Some(ReplyCode::GENERAL_FAILURE),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                f.write_str("peer closed the connection mid-message")
            }
            Error::Io(e) => write!(f, "{e}"),
            Error::BadVersion(v) => write!(f, "not SOCKS5: version byte {v:#04x}"),
            Error::NoMethods => f.write_str("greeting offers no authentication methods"),
            Error::BadAuthVersion(v) => {
                write!(f, "username/password version {v:#04x}, expected 0x01")
            }
            Error::EmptyCredential => f.write_str("empty username or password"),
            Error::UnknownCommand(c) => write!(f, "unknown command {c:#04x}"),
            Error::UnknownAddressType(t) => write!(f, "unknown address type {t:#04x}"),
            Error::EmptyDomain => f.write_str("empty domain name"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

async fn read_u8<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b).await?;
    Ok(b[0])
}

async fn read_u16<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<u16> {
    let mut b = [0u8; 2];
    r.read_exact(&mut b).await?;
    Ok(u16::from_be_bytes(b))
}

/// Reads a length byte and that many bytes into a bounded buffer.
async fn read_field<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<heapless::Vec<u8, 255>> {
    let len = read_u8(r).await? as usize;
    let mut field = heapless::Vec::new();
    // A u8 length is at most the capacity, so this cannot fail.
    let _ = field.resize(len, 0);
    r.read_exact(&mut field).await?;
    Ok(field)
}

/// Reads the client's greeting.
pub async fn read_greeting<R: AsyncRead + Unpin>(r: &mut R) -> Result<Greeting, Error> {
    let version = read_u8(r).await?;
    if version != VERSION {
        return Err(Error::BadVersion(version));
    }
    let methods = read_field(r).await?;
    if methods.is_empty() {
        return Err(Error::NoMethods);
    }
    Ok(Greeting { methods })
}

/// Reads the server's method choice: `VER METHOD`.
pub async fn read_method_choice<R: AsyncRead + Unpin>(r: &mut R) -> Result<u8, Error> {
    let version = read_u8(r).await?;
    if version != VERSION {
        return Err(Error::BadVersion(version));
    }
    Ok(read_u8(r).await?)
}

/// Reads an RFC 1929 username/password request.
pub async fn read_user_pass<R: AsyncRead + Unpin>(r: &mut R) -> Result<UserPass, Error> {
    let version = read_u8(r).await?;
    if version != AUTH_VERSION {
        return Err(Error::BadAuthVersion(version));
    }
    let username = read_field(r).await?;
    let password = read_field(r).await?;
    if username.is_empty() || password.is_empty() {
        return Err(Error::EmptyCredential);
    }
    Ok(UserPass { username, password })
}

/// Reads an RFC 1929 status reply `VER STATUS`; returns STATUS (0 = success).
pub async fn read_auth_status<R: AsyncRead + Unpin>(r: &mut R) -> Result<u8, Error> {
    let version = read_u8(r).await?;
    if version != AUTH_VERSION {
        return Err(Error::BadAuthVersion(version));
    }
    Ok(read_u8(r).await?)
}

async fn read_address<R: AsyncRead + Unpin>(r: &mut R, atyp: u8) -> Result<Address, Error> {
    match atyp {
        ATYP_IPV4 => {
            let mut ip = [0u8; 4];
            r.read_exact(&mut ip).await?;
            let port = read_u16(r).await?;
            Ok(Address::Ip(SocketAddr::new(Ipv4Addr::from(ip).into(), port)))
        }
        ATYP_IPV6 => {
            let mut ip = [0u8; 16];
            r.read_exact(&mut ip).await?;
            let port = read_u16(r).await?;
            Ok(Address::Ip(SocketAddr::new(Ipv6Addr::from(ip).into(), port)))
        }
        ATYP_DOMAIN => {
            let name = read_field(r).await?;
            let port = read_u16(r).await?;
            if name.is_empty() {
                return Err(Error::EmptyDomain);
            }
            Ok(Address::Domain(name, port))
        }
        other => Err(Error::UnknownAddressType(other)),
    }
}

/// Reads a client's request. An unknown command is reported only after
/// the whole message is read, so the caller can still send reply 0x07 on
/// a connection that is in step.
pub async fn read_request<R: AsyncRead + Unpin>(r: &mut R) -> Result<Request, Error> {
    let mut head = [0u8; 4];
    r.read_exact(&mut head).await?;
    let [version, cmd, _reserved, atyp] = head;
    if version != VERSION {
        return Err(Error::BadVersion(version));
    }
    let address = read_address(r, atyp).await?;
    let command = match cmd {
        0x01 => Command::Connect,
        0x02 => Command::Bind,
        0x03 => Command::UdpAssociate,
        other => return Err(Error::UnknownCommand(other)),
    };
    Ok(Request { command, address })
}

/// Reads a server's reply to a request.
pub async fn read_reply<R: AsyncRead + Unpin>(r: &mut R) -> Result<Reply, Error> {
    let mut head = [0u8; 4];
    r.read_exact(&mut head).await?;
    let [version, code, _reserved, atyp] = head;
    if version != VERSION {
        return Err(Error::BadVersion(version));
    }
    let bound = read_address(r, atyp).await?;
    Ok(Reply { code, bound })
}

/// Sends `VER METHOD`.
pub async fn write_method_choice<W: AsyncWrite + Unpin>(w: &mut W, method: u8) -> io::Result<()> {
    w.write_all(&[VERSION, method]).await
}

/// Sends `VER STATUS` of RFC 1929.
pub async fn write_auth_status<W: AsyncWrite + Unpin>(w: &mut W, status: u8) -> io::Result<()> {
    w.write_all(&[AUTH_VERSION, status]).await
}

/// Sends an RFC 1929 username/password request. Both fields must be
/// 1..=255 bytes; the config layer guarantees that for backends.
pub async fn write_user_pass<W: AsyncWrite + Unpin>(
    w: &mut W,
    username: &[u8],
    password: &[u8],
) -> io::Result<()> {
    let mut out: heapless::Vec<u8, 513> = heapless::Vec::new();
    let ulen = username.len().min(255);
    let plen = password.len().min(255);
    let _ = out.push(AUTH_VERSION);
    let _ = out.push(ulen as u8);
    let _ = out.extend_from_slice(&username[..ulen]);
    let _ = out.push(plen as u8);
    let _ = out.extend_from_slice(&password[..plen]);
    w.write_all(&out).await
}

fn address_message(first: u8, second: u8, address: &Address) -> heapless::Vec<u8, MAX_ADDRESS_MESSAGE> {
    let mut out = heapless::Vec::new();
    let _ = out.extend_from_slice(&[first, second, 0x00]);
    address.encode(&mut out);
    out
}

/// Sends a CONNECT request for `address`.
pub async fn write_connect<W: AsyncWrite + Unpin>(w: &mut W, address: &Address) -> io::Result<()> {
    w.write_all(&address_message(VERSION, 0x01, address)).await
}

/// Sends a UDP ASSOCIATE request; `address` is where our datagrams will
/// come from (all zeros: not known yet).
pub async fn write_udp_associate<W: AsyncWrite + Unpin>(w: &mut W, address: &Address) -> io::Result<()> {
    w.write_all(&address_message(VERSION, 0x03, address)).await
}

/// The header RFC 1928 §7 puts before every relayed datagram:
///
/// ```text
/// +----+------+------+----------+----------+----------+
/// |RSV | FRAG | ATYP | DST.ADDR | DST.PORT |   DATA   |
/// +----+------+------+----------+----------+----------+
/// | 2  |  1   |  1   | Variable |    2     | Variable |
/// +----+------+------+----------+----------+----------+
/// ```
pub fn udp_header(address: &Address) -> heapless::Vec<u8, MAX_ADDRESS_MESSAGE> {
    address_message(0, 0, address)
}

/// Why a datagram's header is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpError {
    /// Shorter than its header says.
    Short,
    /// RSV is not zero.
    Reserved,
    /// FRAG is not zero: fragments are not reassembled (RFC 1928 lets a
    /// relay drop them).
    Fragment,
    /// An address type other than IPv4, a domain or IPv6, or an empty
    /// domain.
    Address,
}

/// Reads a datagram's header: the address it is for (or from), and where
/// its data begins.
pub fn parse_udp_header(d: &[u8]) -> Result<(Address, usize), UdpError> {
    let head = d.get(..4).ok_or(UdpError::Short)?;
    if head[..2] != [0, 0] {
        return Err(UdpError::Reserved);
    }
    if head[2] != 0 {
        return Err(UdpError::Fragment);
    }
    let port_at =
        |at: usize| d.get(at..at + 2).map(|p| u16::from_be_bytes([p[0], p[1]])).ok_or(UdpError::Short);
    match head[3] {
        ATYP_IPV4 => {
            let ip: [u8; 4] = d.get(4..8).ok_or(UdpError::Short)?.try_into().map_err(|_| UdpError::Short)?;
            Ok((Address::Ip(SocketAddr::new(IpAddr::from(ip), port_at(8)?)), 10))
        }
        ATYP_IPV6 => {
            let ip: [u8; 16] =
                d.get(4..20).ok_or(UdpError::Short)?.try_into().map_err(|_| UdpError::Short)?;
            Ok((Address::Ip(SocketAddr::new(IpAddr::from(ip), port_at(20)?)), 22))
        }
        ATYP_DOMAIN => {
            let len = *d.get(4).ok_or(UdpError::Short)? as usize;
            let name = d.get(5..5 + len).ok_or(UdpError::Short)?;
            if len == 0 {
                return Err(UdpError::Address);
            }
            let name = Domain::from_slice(name).map_err(|_| UdpError::Address)?;
            Ok((Address::Domain(name, port_at(5 + len)?), 7 + len))
        }
        _ => Err(UdpError::Address),
    }
}

/// Sends a reply with `code` and `bound` address.
pub async fn write_reply<W: AsyncWrite + Unpin>(
    w: &mut W,
    code: ReplyCode,
    bound: &Address,
) -> io::Result<()> {
    w.write_all(&address_message(VERSION, code.0, bound)).await
}

/// Bytes [`Buffered`] takes from the socket at once: a whole greeting,
/// login or request of any length fits, so a peer that sends each message
/// in one segment costs one `recv()` per message.
pub const READ_AHEAD: usize = 1024;

/// An [`AsyncRead`] that reads ahead into a [`READ_AHEAD`] buffer and
/// hands the bytes out as the parsers ask for them.
///
/// The parsers read field by field (a version byte, a length, the field);
/// straight from the socket that was a `recv()` per field, and a wait on
/// the reactor each time one found nothing yet. Reading ahead can take
/// bytes past the handshake, such as a client's first payload pipelined
/// behind its request, or a server's banner right behind a backend's
/// reply: [`Buffered::into_leftover`] returns them, and the session sends
/// them on before the relay starts. The buffer lives only while the
/// handshake runs.
pub struct Buffered<R> {
    inner: R,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl<R> Buffered<R> {
    pub fn new(inner: R) -> Self {
        Buffered { inner, buf: vec![0u8; READ_AHEAD].into_boxed_slice(), start: 0, end: 0 }
    }

    /// The bytes read from the socket but not yet handed out.
    pub fn leftover(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Ends the reader, keeping what it read ahead (usually nothing, so
    /// usually no allocation).
    pub fn into_leftover(self) -> Vec<u8> {
        self.leftover().to_vec()
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Buffered<R> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        out: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.start == this.end {
            let n = match std::pin::Pin::new(&mut this.inner).poll_read(cx, &mut this.buf) {
                std::task::Poll::Ready(Ok(n)) => n,
                other => return other,
            };
            (this.start, this.end) = (0, n);
        }
        let n = out.len().min(this.end - this.start);
        out[..n].copy_from_slice(&this.buf[this.start..this.start + n]);
        this.start += n;
        std::task::Poll::Ready(Ok(n))
    }
}

/// An [`AsyncRead`] that keeps a copy of every byte it hands out.
///
/// Transparent mode reads the client's handshake through one of these: it
/// needs the message boundaries (so it parses), but the backend must get
/// the bytes exactly as the client sent them (so it forwards the copy, not
/// a re-encoding).
pub struct Recorder<'a, R> {
    inner: R,
    copy: &'a mut Vec<u8>,
}

impl<'a, R> Recorder<'a, R> {
    pub fn new(inner: R, copy: &'a mut Vec<u8>) -> Self {
        Recorder { inner, copy }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Recorder<'_, R> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &poll {
            this.copy.extend_from_slice(&buf[..*n]);
        }
        poll
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn udp_headers_round_trip_and_bad_ones_say_why() {
        let v4 = Address::Ip("198.19.0.1:53".parse().unwrap());
        let v6 = Address::Ip("[2001:2::1]:443".parse().unwrap());
        let name = Address::Domain(Domain::from_slice(b"example.org").unwrap(), 123);
        for a in [&v4, &v6, &name] {
            let mut d = udp_header(a).to_vec();
            let len = d.len();
            d.extend_from_slice(b"data");
            assert_eq!(parse_udp_header(&d), Ok((a.clone(), len)));
            for cut in 0..len {
                assert!(parse_udp_header(&d[..cut]).is_err(), "cut at {cut}");
            }
        }
        assert_eq!(udp_header(&v4)[..], [0, 0, 0, 1, 198, 19, 0, 1, 0, 53]);
        assert_eq!(parse_udp_header(&[0, 0, 1, 1, 1, 2, 3, 4, 0, 53]), Err(UdpError::Fragment));
        assert_eq!(parse_udp_header(&[0, 1, 0, 1, 1, 2, 3, 4, 0, 53]), Err(UdpError::Reserved));
        assert_eq!(parse_udp_header(&[0, 0, 0, 9, 1, 2, 3, 4, 0, 53]), Err(UdpError::Address));
        assert_eq!(parse_udp_header(&[0, 0, 0, 3, 0, 0, 53]), Err(UdpError::Address), "an empty name");
    }

    use super::*;
    use smol::block_on;

    /// A reader that yields one byte per read, as a slow client would.
    struct Trickle<'a>(&'a [u8]);

    impl AsyncRead for Trickle<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<io::Result<usize>> {
            if self.0.is_empty() || buf.is_empty() {
                return std::task::Poll::Ready(Ok(0));
            }
            buf[0] = self.0[0];
            self.0 = &self.0[1..];
            std::task::Poll::Ready(Ok(1))
        }
    }

    fn domain(name: &str) -> Domain {
        Domain::from_slice(name.as_bytes()).unwrap()
    }

    #[test]
    fn greeting_parses_methods_in_order() {
        let g = block_on(read_greeting(&mut &[5, 2, 2, 0][..])).unwrap();
        assert_eq!(&g.methods[..], &[2, 0]);
        assert!(g.offers(METHOD_NO_AUTH) && g.offers(METHOD_USER_PASS));
        assert!(!g.offers(0x01));
    }

    #[test]
    fn greeting_rejects_socks4_and_zero_methods() {
        let e = block_on(read_greeting(&mut &[4, 1, 0][..])).unwrap_err();
        assert!(matches!(e, Error::BadVersion(4)), "{e}");
        let e = block_on(read_greeting(&mut &[5, 0][..])).unwrap_err();
        assert!(matches!(e, Error::NoMethods), "{e}");
    }

    #[test]
    fn truncated_greeting_is_an_eof_error_not_a_panic() {
        let e = block_on(read_greeting(&mut &[5, 3, 0][..])).unwrap_err();
        match e {
            Error::Io(io) => assert_eq!(io.kind(), io::ErrorKind::UnexpectedEof),
            other => panic!("expected EOF, got {other}"),
        }
    }

    #[test]
    fn request_with_each_address_type() {
        let v4 = [5, 1, 0, 1, 10, 0, 0, 1, 0x1f, 0x90];
        let r = block_on(read_request(&mut &v4[..])).unwrap();
        assert_eq!(r.command, Command::Connect);
        assert_eq!(r.address, Address::Ip("10.0.0.1:8080".parse().unwrap()));

        let mut v6 = vec![5, 1, 0, 4];
        v6.extend_from_slice(&"::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0, 80]);
        let r = block_on(read_request(&mut &v6[..])).unwrap();
        assert_eq!(r.address, Address::Ip("[::1]:80".parse().unwrap()));

        let dom = [5, 1, 0, 3, 9, b'l', b'o', b'c', b'a', b'l', b'h', b'o', b's', b't', 0, 80];
        let r = block_on(read_request(&mut &dom[..])).unwrap();
        assert_eq!(r.address, Address::Domain(domain("localhost"), 80));
    }

    #[test]
    fn request_read_one_byte_at_a_time() {
        let dom = [5, 1, 0, 3, 4, b'h', b'o', b's', b't', 1, 187];
        let r = block_on(read_request(&mut Trickle(&dom))).unwrap();
        assert_eq!(r.address, Address::Domain(domain("host"), 443));
    }

    #[test]
    fn longest_domain_round_trips() {
        let name = "a".repeat(255);
        let addr = Address::Domain(domain(&name), 65535);
        let mut wire = Vec::new();
        block_on(write_connect(&mut wire, &addr)).unwrap();
        assert_eq!(wire.len(), MAX_ADDRESS_MESSAGE);
        let r = block_on(read_request(&mut &wire[..])).unwrap();
        assert_eq!(r.address, addr);
    }

    #[test]
    fn unknown_command_is_read_whole_then_rejected_with_0x07() {
        let wire = [5, 9, 0, 1, 127, 0, 0, 1, 0, 80];
        let e = block_on(read_request(&mut &wire[..])).unwrap_err();
        assert!(matches!(e, Error::UnknownCommand(9)));
        assert_eq!(e.reply(), Some(ReplyCode::COMMAND_NOT_SUPPORTED));
    }

    #[test]
    fn bind_and_udp_associate_parse_as_commands() {
        let bind = [5, 2, 0, 1, 127, 0, 0, 1, 0, 80];
        assert_eq!(block_on(read_request(&mut &bind[..])).unwrap().command, Command::Bind);
        let udp = [5, 3, 0, 1, 0, 0, 0, 0, 0, 0];
        assert_eq!(block_on(read_request(&mut &udp[..])).unwrap().command, Command::UdpAssociate);
    }

    #[test]
    fn unknown_address_type_maps_to_0x08() {
        let e = block_on(read_request(&mut &[5, 1, 0, 7, 1, 2][..])).unwrap_err();
        assert!(matches!(e, Error::UnknownAddressType(7)));
        assert_eq!(e.reply(), Some(ReplyCode::ADDRESS_TYPE_NOT_SUPPORTED));
    }

    #[test]
    fn empty_domain_is_rejected() {
        let e = block_on(read_request(&mut &[5, 1, 0, 3, 0, 0, 80][..])).unwrap_err();
        assert!(matches!(e, Error::EmptyDomain));
    }

    #[test]
    fn user_pass_round_trip_and_debug_masks_password() {
        let mut wire = Vec::new();
        block_on(write_user_pass(&mut wire, b"alice", b"s3cret")).unwrap();
        assert_eq!(wire, b"\x01\x05alice\x06s3cret");
        let up = block_on(read_user_pass(&mut &wire[..])).unwrap();
        assert_eq!(&up.username[..], b"alice");
        assert_eq!(&up.password[..], b"s3cret");
        let shown = format!("{up:?}");
        assert!(!shown.contains("s3cret") && shown.contains("MASKED"), "{shown}");
    }

    #[test]
    fn user_pass_rejects_wrong_version_and_empty_fields() {
        let e = block_on(read_user_pass(&mut &[5, 1, b'a', 1, b'b'][..])).unwrap_err();
        assert!(matches!(e, Error::BadAuthVersion(5)));
        let e = block_on(read_user_pass(&mut &[1, 0, 1, b'b'][..])).unwrap_err();
        assert!(matches!(e, Error::EmptyCredential));
    }

    #[test]
    fn oversized_length_prefix_cannot_overrun() {
        // ULEN says 255 but only 3 bytes follow: an EOF, never a panic.
        let e = block_on(read_user_pass(&mut &[1, 255, b'a', b'b', b'c'][..])).unwrap_err();
        assert!(matches!(e, Error::Io(_)));
    }

    #[test]
    fn reply_round_trip_keeps_unassigned_codes() {
        let mut wire = Vec::new();
        let bound = Address::Ip("[2001:db8::1]:1080".parse().unwrap());
        block_on(write_reply(&mut wire, ReplyCode(0x42), &bound)).unwrap();
        let r = block_on(read_reply(&mut &wire[..])).unwrap();
        assert_eq!(r.code, 0x42);
        assert_eq!(r.bound, bound);
        assert_eq!(ReplyCode::describe(0x42), "unassigned reply code");
    }

    #[test]
    fn io_errors_map_to_reply_codes() {
        let code = |k| ReplyCode::from_io(&io::Error::from(k));
        assert_eq!(code(io::ErrorKind::ConnectionRefused), ReplyCode::CONNECTION_REFUSED);
        assert_eq!(code(io::ErrorKind::TimedOut), ReplyCode::TTL_EXPIRED);
        assert_eq!(code(io::ErrorKind::NetworkUnreachable), ReplyCode::NETWORK_UNREACHABLE);
        assert_eq!(code(io::ErrorKind::HostUnreachable), ReplyCode::HOST_UNREACHABLE);
        assert_eq!(code(io::ErrorKind::Other), ReplyCode::GENERAL_FAILURE);
    }

    #[test]
    fn buffered_parses_pipelined_messages_and_keeps_the_rest() {
        // Greeting, request and the first payload bytes in one segment.
        let wire = [5, 1, 0, 5, 1, 0, 1, 10, 0, 0, 1, 0, 80, b'G', b'E', b'T'];
        let mut reader = Buffered::new(&wire[..]);
        let g = block_on(read_greeting(&mut reader)).unwrap();
        assert_eq!(&g.methods[..], &[0]);
        let r = block_on(read_request(&mut reader)).unwrap();
        assert_eq!(r.address, Address::Ip("10.0.0.1:80".parse().unwrap()));
        assert_eq!(reader.into_leftover(), b"GET");
    }

    #[test]
    fn buffered_handles_one_byte_segments() {
        let dom = [5, 1, 0, 3, 4, b'h', b'o', b's', b't', 1, 187];
        let mut reader = Buffered::new(Trickle(&dom));
        let r = block_on(read_request(&mut reader)).unwrap();
        assert_eq!(r.address, Address::Domain(domain("host"), 443));
        assert!(reader.into_leftover().is_empty());
    }

    #[test]
    fn recorder_over_buffered_records_only_the_message() {
        let wire = [5, 1, 0, 3, 1, b'x', 0, 80, 0xAA, 0xBB];
        let mut copy = Vec::new();
        let mut reader = Buffered::new(&wire[..]);
        block_on(read_request(&mut Recorder::new(&mut reader, &mut copy))).unwrap();
        assert_eq!(copy, &wire[..8]);
        assert_eq!(reader.leftover(), &[0xAA, 0xBB]);
    }

    #[test]
    fn recorder_keeps_exact_bytes() {
        let wire = [5, 1, 0, 3, 1, b'x', 0, 80, 0xAA];
        let mut copy = Vec::new();
        let mut src = &wire[..];
        let r = block_on(read_request(&mut Recorder::new(&mut src, &mut copy))).unwrap();
        assert_eq!(r.address.port(), 80);
        assert_eq!(copy, &wire[..8], "only the request's own bytes are taken");
        assert_eq!(src, &[0xAA], "the next message stays unread");
    }
}
