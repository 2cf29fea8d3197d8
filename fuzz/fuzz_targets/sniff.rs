//! The gateway's sniffer on arbitrary first bytes: TLS ClientHellos and
//! HTTP heads cut anywhere. It must not panic; a name it finds keeps the
//! port it was given and is a host name, never an IP literal; and bytes
//! it asks more of never make it say something else when cut shorter
//! (a prefix of "Nothing" is never a "Name").
#![no_main]

use libfuzzer_sys::fuzz_target;
use socksbalance::sniff::{sniff, Sniffed, LIMIT};
use socksbalance::socks5::Address;

fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(LIMIT)];
    match sniff(data, 443) {
        Sniffed::Name(Address::Domain(name, port)) => {
            assert_eq!(port, 443);
            let name = std::str::from_utf8(&name).expect("a name is text");
            assert!(name.parse::<std::net::IpAddr>().is_err(), "{name} is an IP");
            assert!(!name.is_empty() && !name.contains(':'));
        }
        Sniffed::Name(other) => panic!("a name that is not one: {other:?}"),
        Sniffed::Nothing => {
            // More bytes never turn "not TLS or HTTP" into a name when the
            // very first byte already decided it.
            if !matches!(data.first(), Some(0x16 | b'A'..=b'Z')) {
                assert_eq!(sniff(&[data, b"\r\n\r\n"].concat(), 443), Sniffed::Nothing);
            }
        }
        Sniffed::More => {}
    }
});
