//! DNS messages as the DNS listener needs them (RFC 1035 §4, EDNS0's OPT
//! from RFC 6891): a query's question and its UDP size, the TTLs of an
//! answer (to cache it, and to age it when it is served from the cache),
//! and the short replies we make ourselves (FORMERR, SERVFAIL, a
//! truncated answer). Pure and panic-free on any bytes: a fuzz target
//! (`fuzz/fuzz_targets/dns.rs`) holds it to that.

/// A DNS header's size.
pub const HEADER: usize = 12;

/// The most a UDP answer may be when the query has no OPT record.
pub const CLASSIC_UDP: usize = 512;

/// Response codes we send or read.
pub const NOERROR: u8 = 0;
pub const FORMERR: u8 = 1;
pub const SERVFAIL: u8 = 2;
pub const NXDOMAIN: u8 = 3;
pub const NOTIMP: u8 = 4;
pub const REFUSED: u8 = 5;

/// What a query asks, as far as forwarding and caching need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    /// The question in wire form, name in lower case, with type and
    /// class: the cache key.
    pub key: Vec<u8>,
    /// The largest UDP answer the client takes (512 without EDNS0).
    pub udp_size: usize,
}

/// Why a query is not forwarded, and the code it is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused(pub u8);

/// Walks a name (labels, maybe ending in a compression pointer) from `at`;
/// returns where it ends.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)? as usize;
        match len {
            0 => return Some(at + 1),
            1..=63 => at += 1 + len,
            0xC0..=0xFF => return (at + 2 <= msg.len()).then_some(at + 2),
            _ => return None,
        }
    }
}

fn u16_at(msg: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]))
}

/// Parses a query. A message that is not one (a response, a bad
/// question) is refused with FORMERR; an opcode other than QUERY with
/// NOTIMP.
pub fn parse_query(msg: &[u8]) -> Result<Query, Refused> {
    if msg.len() < HEADER {
        return Err(Refused(FORMERR));
    }
    let id = u16::from_be_bytes([msg[0], msg[1]]);
    if msg[2] & 0x80 != 0 {
        return Err(Refused(FORMERR));
    }
    if (msg[2] >> 3) & 0x0F != 0 {
        return Err(Refused(NOTIMP));
    }
    let count = |i: usize| u16::from_be_bytes([msg[4 + 2 * i], msg[5 + 2 * i]]);
    if count(0) != 1 || count(1) != 0 || count(2) != 0 {
        return Err(Refused(FORMERR));
    }
    // The question: a name of plain labels (no pointer can point back in
    // a message that has only this), at most 255 bytes, then type and
    // class.
    let mut key = Vec::with_capacity(64);
    let mut at = HEADER;
    loop {
        let len = *msg.get(at).ok_or(Refused(FORMERR))? as usize;
        if len > 63 {
            return Err(Refused(FORMERR));
        }
        let label = msg.get(at..at + 1 + len).ok_or(Refused(FORMERR))?;
        key.extend(label.iter().map(u8::to_ascii_lowercase));
        at += 1 + len;
        if key.len() > 255 {
            return Err(Refused(FORMERR));
        }
        if len == 0 {
            break;
        }
    }
    key.extend_from_slice(msg.get(at..at + 4).ok_or(Refused(FORMERR))?);
    at += 4;
    // The additional section: EDNS0's OPT says how large an answer the
    // client takes over UDP.
    let mut udp_size = CLASSIC_UDP;
    for _ in 0..count(3) {
        let end = skip_name(msg, at).ok_or(Refused(FORMERR))?;
        let kind = u16_at(msg, end).ok_or(Refused(FORMERR))?;
        let class = u16_at(msg, end + 2).ok_or(Refused(FORMERR))?;
        let rdlen = u16_at(msg, end + 8).ok_or(Refused(FORMERR))? as usize;
        at = end + 10 + rdlen;
        if at > msg.len() {
            return Err(Refused(FORMERR));
        }
        if kind == 41 {
            udp_size = (class as usize).max(CLASSIC_UDP);
        }
    }
    Ok(Query { id, key, udp_size })
}

/// Our own reply to `query` with `rcode`: its ID, opcode, RD bit and
/// question, no records. `None` when there is not even a header to
/// answer.
pub fn reply(query: &[u8], rcode: u8) -> Option<Vec<u8>> {
    let header = query.get(..HEADER)?;
    let question = match parse_query(query) {
        Ok(q) => Some(q.key),
        Err(_) => None,
    };
    let mut out = Vec::with_capacity(HEADER + question.as_ref().map_or(0, Vec::len));
    out.extend_from_slice(&header[..2]);
    // QR, the opcode and RD from the query; RA; the code.
    out.push(0x80 | (header[2] & 0x79));
    out.push(0x80 | (rcode & 0x0F));
    out.extend_from_slice(&[0, u8::from(question.is_some()), 0, 0, 0, 0, 0, 0]);
    if let Some(q) = question {
        out.extend_from_slice(&q);
    }
    Some(out)
}

/// An answer cut to its header and question with TC set, for a UDP
/// client that takes less than the whole: it asks again over TCP.
pub fn truncated(answer: &[u8], key_len: usize) -> Option<Vec<u8>> {
    let end = HEADER + key_len;
    let mut out = answer.get(..end)?.to_vec();
    out[2] |= 0x02;
    out[4..HEADER].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    Some(out)
}

/// The response code of a message (the low four bits; extended codes
/// live in OPT and do not matter here).
pub fn rcode(msg: &[u8]) -> Option<u8> {
    msg.get(3).map(|b| b & 0x0F)
}

/// Whether `answer` answers `query`: a response, with its ID, and its
/// question.
pub fn answers(answer: &[u8], query: &Query) -> bool {
    answer.len() >= HEADER + query.key.len()
        && answer[2] & 0x80 != 0
        && u16::from_be_bytes([answer[0], answer[1]]) == query.id
        && answer[4..6] == [0, 1]
        && answer[HEADER..HEADER + query.key.len()].eq_ignore_ascii_case(&query.key)
}

/// Where each record's TTL is in `answer` (a message whose question is
/// `key_len` bytes), OPT's left out: it has none. `None` if the records
/// do not parse.
pub fn ttl_offsets(answer: &[u8], key_len: usize) -> Option<Vec<usize>> {
    let count = |i: usize| u16_at(answer, 6 + 2 * i).map(usize::from);
    let records = count(0)? + count(1)? + count(2)?;
    let mut at = HEADER + key_len;
    let mut offsets = Vec::with_capacity(records);
    for _ in 0..records {
        let end = skip_name(answer, at)?;
        let kind = u16_at(answer, end)?;
        let rdlen = usize::from(u16_at(answer, end + 8)?);
        at = end + 10 + rdlen;
        if at > answer.len() {
            return None;
        }
        if kind != 41 {
            offsets.push(end + 4);
        }
    }
    Some(offsets)
}

fn ttl_at(msg: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([msg[at], msg[at + 1], msg[at + 2], msg[at + 3]])
}

/// How long `answer` may be cached, in seconds: the least TTL of its
/// records, for a NOERROR with records or an NXDOMAIN (whose SOA's TTL
/// bounds it, RFC 2308); `None` for anything else, or a truncated one.
pub fn cache_ttl(answer: &[u8], key_len: usize) -> Option<u32> {
    if !matches!(rcode(answer)?, NOERROR | NXDOMAIN) || answer[2] & 0x02 != 0 {
        return None;
    }
    let offsets = ttl_offsets(answer, key_len)?;
    offsets.iter().map(|&at| ttl_at(answer, at)).min().filter(|&ttl| ttl > 0)
}

/// Takes `elapsed` seconds off every TTL in `answer`, in place, as a
/// cached answer must be served.
pub fn age(answer: &mut [u8], key_len: usize, elapsed: u32) {
    for at in ttl_offsets(answer, key_len).unwrap_or_default() {
        let ttl = ttl_at(answer, at).saturating_sub(elapsed);
        answer[at..at + 4].copy_from_slice(&ttl.to_be_bytes());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A query for `name` type A, with an OPT record offering `edns`.
    pub(crate) fn query(id: u16, name: &str, edns: Option<u16>) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
        for label in name.split('.').filter(|l| !l.is_empty()) {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        if let Some(size) = edns {
            q.extend_from_slice(&[0, 0, 41]);
            q.extend_from_slice(&size.to_be_bytes());
            q.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        }
        q
    }

    /// The answer to `query(id, name, _)`: one A record per TTL, with the
    /// name compressed, and an OPT record.
    pub(crate) fn answer(id: u16, name: &str, ttls: &[u32]) -> Vec<u8> {
        let q = query(id, name, None);
        let mut a = q[..HEADER].to_vec();
        a[2] = 0x81;
        a[3] = 0x80;
        a[6..8].copy_from_slice(&(ttls.len() as u16).to_be_bytes());
        a[10..12].copy_from_slice(&[0, 1]);
        a.extend_from_slice(&q[HEADER..]);
        for (i, ttl) in ttls.iter().enumerate() {
            a.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
            a.extend_from_slice(&ttl.to_be_bytes());
            a.extend_from_slice(&[0, 4, 198, 19, 0, i as u8]);
        }
        a.extend_from_slice(&[0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0]);
        a
    }

    #[test]
    fn a_query_is_read_with_its_udp_size_and_a_case_blind_key() {
        let q = parse_query(&query(7, "Example.ORG", Some(1232))).unwrap();
        assert_eq!(q.id, 7);
        assert_eq!(q.udp_size, 1232);
        assert_eq!(q.key, parse_query(&query(9, "example.org", None)).unwrap().key);
        assert_eq!(parse_query(&query(9, "example.org", None)).unwrap().udp_size, CLASSIC_UDP);
    }

    #[test]
    fn malformed_queries_are_refused_with_their_code() {
        let good = query(1, "example.org", None);
        assert_eq!(parse_query(&good[..HEADER - 1]), Err(Refused(FORMERR)));
        for cut in HEADER..good.len() {
            assert_eq!(parse_query(&good[..cut]), Err(Refused(FORMERR)), "cut at {cut}");
        }
        let mut response = good.clone();
        response[2] |= 0x80;
        assert_eq!(parse_query(&response), Err(Refused(FORMERR)));
        let mut notify = good.clone();
        notify[2] = 4 << 3;
        assert_eq!(parse_query(&notify), Err(Refused(NOTIMP)));
        let mut two = good.clone();
        two[5] = 2;
        assert_eq!(parse_query(&two), Err(Refused(FORMERR)));
        // FORMERR keeps the ID and, where it parsed, the question.
        let r = reply(&good[..HEADER + 3], FORMERR).unwrap();
        assert_eq!((&r[..2], r[3] & 0x0F, &r[4..6]), (&[0u8, 1][..], FORMERR, &[0u8, 0][..]));
        let r = reply(&good, SERVFAIL).unwrap();
        assert_eq!(r[3] & 0x0F, SERVFAIL);
        assert_eq!(&r[HEADER..], &good[HEADER..]);
        assert_eq!(reply(b"ab", FORMERR), None);
    }

    #[test]
    fn answers_are_cached_for_their_least_ttl_and_aged() {
        let q = parse_query(&query(3, "example.org", None)).unwrap();
        let mut a = answer(3, "example.org", &[300, 60, 120]);
        assert!(answers(&a, &q));
        assert!(!answers(&answer(4, "example.org", &[1]), &q), "another ID");
        assert!(!answers(&answer(3, "example.com", &[1]), &q), "another question");
        assert_eq!(cache_ttl(&a, q.key.len()), Some(60));
        age(&mut a, q.key.len(), 50);
        assert_eq!(cache_ttl(&a, q.key.len()), Some(10));
        age(&mut a, q.key.len(), 500);
        assert_eq!(cache_ttl(&a, q.key.len()), None, "all expired");
        let mut servfail = answer(3, "example.org", &[60]);
        servfail[3] = 0x82;
        assert_eq!(cache_ttl(&servfail, q.key.len()), None);
        let t = truncated(&answer(3, "example.org", &[60]), q.key.len()).unwrap();
        assert_eq!((t[2] & 0x02, &t[6..8], t.len()), (0x02, &[0u8, 0][..], HEADER + q.key.len()));
        // Records that run past the end do not parse.
        let a = answer(3, "example.org", &[60]);
        assert_eq!(ttl_offsets(&a[..a.len() - 3], q.key.len()), None);
    }
}
