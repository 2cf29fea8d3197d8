//! The DNS listener's message code on arbitrary bytes, as query and as
//! an upstream's answer. None may panic. Every query that parses, or
//! fails to with a header there, gets a reply that is itself a response
//! with the query's ID; a truncated answer keeps only the question; aging
//! an answer never raises a TTL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socksbalance::dns;

fuzz_target!(|data: &[u8]| {
    match dns::parse_query(data) {
        Ok(q) => {
            assert!(q.udp_size >= dns::CLASSIC_UDP);
            assert!(q.key.len() >= 5 && q.key.len() <= 260);
            let r = dns::reply(data, dns::SERVFAIL).expect("a reply to a query");
            assert_eq!(&r[..2], &data[..2]);
            assert_eq!(dns::rcode(&r), Some(dns::SERVFAIL));
            assert!(dns::answers(&r, &q), "our own reply answers the query");
            let t = dns::truncated(&r, q.key.len()).expect("the question is there");
            assert_eq!(t.len(), dns::HEADER + q.key.len());
            // The same bytes as an answer to that query.
            if dns::answers(data, &q) {
                let before = dns::cache_ttl(data, q.key.len());
                let mut aged = data.to_vec();
                dns::age(&mut aged, q.key.len(), 30);
                let after = dns::cache_ttl(&aged, q.key.len());
                assert!(after.unwrap_or(0) <= before.unwrap_or(0));
            }
        }
        Err(dns::Refused(code)) => {
            if let Some(r) = dns::reply(data, code) {
                assert_eq!(&r[..2], &data[..2]);
                assert_eq!(r[2] & 0x80, 0x80, "a response");
                assert_eq!(dns::rcode(&r), Some(code));
            } else {
                assert!(data.len() < dns::HEADER);
            }
        }
    }
    // As an upstream's answer to anything: the TTL walk stays in bounds.
    for key_len in [0, 5, 17] {
        let _ = dns::ttl_offsets(data, key_len);
        let _ = dns::cache_ttl(data, key_len);
        let mut copy = data.to_vec();
        dns::age(&mut copy, key_len, 1);
    }
});
