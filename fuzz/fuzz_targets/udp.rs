//! The SOCKS5 UDP header reader (RFC 1928 §7) on arbitrary datagrams, as
//! a client or a backend might send them: it must not panic, the data it
//! points at is inside the datagram, and a header that parses re-encodes
//! to exactly the bytes it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socksbalance::socks5::{parse_udp_header, udp_header};

fuzz_target!(|data: &[u8]| {
    if let Ok((address, at)) = parse_udp_header(data) {
        assert!(at <= data.len());
        assert_eq!(&udp_header(&address)[..], &data[..at]);
    }
});
