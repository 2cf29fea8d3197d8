//! A small JSON reader (RFC 8259), for `socksbalance status` reading the
//! daemon's own `/api/stats`. A hand-written reader costs the router
//! binary a few KB; serde's derived visitors for the stats document cost
//! several times that (docs/performance.md, "Binary size").
//!
//! It reads any JSON text into a [`Value`], nesting at most
//! [`MAX_DEPTH`] deep, and never panics on bad input (the `status` fuzz
//! target feeds it).

/// Deepest nesting of arrays and objects accepted.
pub const MAX_DEPTH: usize = 64;

/// A JSON value. Numbers keep their text, so integers read exactly.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    Number(&'a str),
    String(String),
    Array(Vec<Value<'a>>),
    Object(Vec<(String, Value<'a>)>),
}

impl<'a> Value<'a> {
    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        match self {
            Value::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Number(n) => n.parse().ok(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => n.parse().ok(),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }
}

/// Parses a whole JSON text; says where it went wrong otherwise.
pub fn parse(text: &str) -> Result<Value<'_>, String> {
    let mut p = Parser { text, at: 0 };
    let value = p.value(0)?;
    p.space();
    if p.at != text.len() {
        return Err(p.error("trailing characters"));
    }
    Ok(value)
}

struct Parser<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Parser<'a> {
    fn error(&self, what: &str) -> String {
        format!("{what} at byte {}", self.at)
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, word: &str) -> bool {
        let hit = self.text[self.at..].starts_with(word);
        if hit {
            self.at += word.len();
        }
        hit
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, String> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deep"));
        }
        self.space();
        match self.peek() {
            Some(b'{') => {
                self.at += 1;
                let mut members = Vec::new();
                self.space();
                if self.eat("}") {
                    return Ok(Value::Object(members));
                }
                loop {
                    self.space();
                    if self.peek() != Some(b'"') {
                        return Err(self.error("expected a member name"));
                    }
                    let key = self.string()?;
                    self.space();
                    if !self.eat(":") {
                        return Err(self.error("expected ':'"));
                    }
                    members.push((key, self.value(depth + 1)?));
                    self.space();
                    if self.eat("}") {
                        return Ok(Value::Object(members));
                    }
                    if !self.eat(",") {
                        return Err(self.error("expected ',' or '}'"));
                    }
                }
            }
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                self.space();
                if self.eat("]") {
                    return Ok(Value::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.space();
                    if self.eat("]") {
                        return Ok(Value::Array(items));
                    }
                    if !self.eat(",") {
                        return Err(self.error("expected ',' or ']'"));
                    }
                }
            }
            Some(b'"') => self.string().map(Value::String),
            Some(b't') if self.eat("true") => Ok(Value::Bool(true)),
            Some(b'f') if self.eat("false") => Ok(Value::Bool(false)),
            Some(b'n') if self.eat("null") => Ok(Value::Null),
            Some(b'-' | b'0'..=b'9') => {
                let start = self.at;
                while matches!(self.peek(), Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')) {
                    self.at += 1;
                }
                let number = &self.text[start..self.at];
                match number.parse::<f64>() {
                    Ok(_) => Ok(Value::Number(number)),
                    Err(_) => Err(self.error("bad number")),
                }
            }
            _ => Err(self.error("expected a value")),
        }
    }

    /// A string, the opening quote at `at`.
    fn string(&mut self) -> Result<String, String> {
        self.at += 1;
        let mut out = String::new();
        loop {
            let rest = &self.text[self.at..];
            let Some(stop) = rest.find(['"', '\\']) else { return Err(self.error("unterminated string")) };
            if rest[..stop].chars().any(|c| c < ' ') {
                return Err(self.error("a control character in a string"));
            }
            out.push_str(&rest[..stop]);
            self.at += stop + 1;
            if rest.as_bytes()[stop] == b'"' {
                return Ok(out);
            }
            let escape = self.peek().ok_or_else(|| self.error("unterminated escape"))?;
            self.at += 1;
            match escape {
                b'"' => out.push('"'),
                b'\\' => out.push('\\'),
                b'/' => out.push('/'),
                b'b' => out.push('\u{8}'),
                b'f' => out.push('\u{c}'),
                b'n' => out.push('\n'),
                b'r' => out.push('\r'),
                b't' => out.push('\t'),
                b'u' => {
                    let unit = self.hex4()?;
                    let c = if (0xD800..0xDC00).contains(&unit) && self.eat("\\u") {
                        // A high surrogate and, if it is one, its low half;
                        // a broken pair is a replacement character.
                        let low = self.hex4()?;
                        (0xDC00..0xE000)
                            .contains(&low)
                            .then(|| char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)))
                            .flatten()
                    } else {
                        char::from_u32(unit)
                    };
                    out.push(c.unwrap_or('\u{fffd}'));
                }
                _ => return Err(self.error("bad escape")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self.text.get(self.at..self.at + 4).ok_or_else(|| self.error("short \\u escape"))?;
        let unit = u32::from_str_radix(digits, 16).map_err(|_| self.error("bad \\u escape"))?;
        self.at += 4;
        Ok(unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_kind_of_value() {
        let v =
            parse(r#" {"a": [1, -2.5e3, true, false, null], "s": "x\"\\\/\n\u00e9\ud83d\ude00", "o": {}} "#)
                .unwrap();
        let a = v.get("a").unwrap().as_array().unwrap();
        assert_eq!(a[0].as_u64(), Some(1));
        assert_eq!(a[1].as_f64(), Some(-2500.0));
        assert_eq!((a[2].as_bool(), a[3].as_bool(), &a[4]), (Some(true), Some(false), &Value::Null));
        assert_eq!(v.get("s").unwrap().as_str(), Some("x\"\\/\n\u{e9}\u{1f600}"));
        assert_eq!(v.get("o"), Some(&Value::Object(vec![])));
        assert_eq!(parse("18446744073709551615").unwrap().as_u64(), Some(u64::MAX), "integers read exactly");
    }

    /// Found by the `status` fuzz target: a high surrogate followed by a
    /// "low" one below 0xDC00 overflowed the code point arithmetic.
    #[test]
    fn a_broken_surrogate_pair_is_a_replacement_character() {
        assert_eq!(
            parse(r#""+3\udFfa\udFfa\udBfa\udBfa""#).unwrap(),
            Value::String("+3\u{fffd}\u{fffd}\u{fffd}".into())
        );
        assert_eq!(parse(r#""\ud800x""#).unwrap(), Value::String("\u{fffd}x".into()));
    }

    #[test]
    fn bad_json_is_an_error_not_a_panic() {
        for bad in
            ["", "{", "[1,]", "{\"a\" 1}", "\"\\x\"", "\"\\u12\"", "tru", "1 2", "\"a\nb\"", "--1", "{1:2}"]
        {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let deep = "[".repeat(MAX_DEPTH + 2);
        assert!(parse(&deep).unwrap_err().contains("deep"));
    }
}
