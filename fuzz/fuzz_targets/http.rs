//! The HTTP proxy's head reader on arbitrary bytes: finding the head's
//! end, parsing it, reading its target and Basic credentials, and
//! building the head forwarded to the origin. None may panic or hang;
//! a forwarded head must itself parse, to the same method and path, with
//! no hop-by-hop header left but a WebSocket's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socksbalance::http;

fuzz_target!(|data: &[u8]| {
    let end = http::head_end(data).unwrap_or(data.len().min(http::MAX_HEAD + 1));
    let Ok(head) = http::parse_head(&data[..end]) else { return };
    assert!(head.headers.len() <= http::MAX_HEADERS);
    if let Some(value) = head.header("proxy-authorization") {
        let _ = http::basic_credentials(value);
    }
    if let Ok(http::Target::Absolute { authority, path, .. }) = http::parse_target(&head) {
        let forwarded = http::forward_head(&head, authority, path);
        let again = http::parse_head(&forwarded).expect("a forwarded head parses");
        assert_eq!((again.method, again.target), (head.method, path));
        for hop in ["proxy-authorization", "proxy-connection", "keep-alive", "te", "trailer"] {
            assert!(again.header(hop).is_none(), "{hop} was forwarded");
        }
    }
});
