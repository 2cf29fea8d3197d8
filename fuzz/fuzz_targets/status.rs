//! `socksbalance status` on whatever answers at the dashboard's address:
//! the HTTP response (head, chunked body), the stats document, its RFC 3339
//! times and the table rendered from it. Errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let base = "http://127.0.0.1:8080";
    if let Ok(body) = socksbalance::status::body_of(base, data) {
        let _ = socksbalance::status::table_of(base, &body);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = socksbalance::web::parse_rfc3339(text);
        let _ = socksbalance::status::table_of(base, text);
    }
});
