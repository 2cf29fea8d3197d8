//! Where in the text a key is: the line locator that errors and warnings
//! found after parsing use (serde_yaml knows lines only while it parses),
//! the plain-words rewrite of the parser's own errors, and the nesting
//! guard that runs before the parser.

use super::ConfigError;

/// One structural piece of a YAML line: a sequence item's `-`, or a
/// `key:`, each at its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    Item(usize),
    Key(usize, &'a str),
}

impl Token<'_> {
    fn indent(self) -> usize {
        match self {
            Token::Item(i) | Token::Key(i, _) => i,
        }
    }
}

/// Splits block-style YAML into (line, token) pairs: `  - name: x`
/// gives `Item(2)` and `Key(4, "name")`. Comments, blank lines and
/// anything inside flow collections or multi-line scalars are not
/// structure and are skipped or read as plain values.
fn tokens(text: &str) -> Vec<(usize, Token<'_>)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut rest = line.trim_start();
        let mut col = line.len() - rest.len();
        if rest.is_empty() || rest.starts_with('#') {
            continue;
        }
        while let Some(after) = rest.strip_prefix('-').filter(|a| a.is_empty() || a.starts_with(' ')) {
            out.push((n + 1, Token::Item(col)));
            let trimmed = after.trim_start();
            col += rest.len() - trimmed.len();
            rest = trimmed;
        }
        if let Some((key, _)) = rest.split_once(':') {
            let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
            let plain = !key.is_empty() && !key.contains(['{', '[', '#', ' ']);
            if plain {
                out.push((n + 1, Token::Key(col, key)));
            }
        }
    }
    out
}

/// The line of a key path such as `backends[2].via` or `health.uplink_probe`
/// in block-style YAML; for a path that goes into a flow collection
/// (`allow: [a, b]`), the line of the deepest key found.
pub(super) fn locate(text: &str, path: &str) -> Option<usize> {
    let toks = tokens(text);
    let (mut lo, mut hi) = (0, toks.len());
    let mut line = None;
    for part in path.split('.') {
        let (name, indices) = match part.find('[') {
            Some(at) => (&part[..at], &part[at..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            let block = toks.get(lo..hi)?.first()?.1.indent();
            let j = (lo..hi).find(|&j| toks[j].1 == Token::Key(block, name))?;
            line = Some(toks[j].0);
            // A key's value runs to the next key at its level or less; a
            // sequence may sit at the key's own column.
            let end = (j + 1..hi)
                .find(|&k| match toks[k].1 {
                    Token::Key(i, _) => i <= block,
                    Token::Item(i) => i < block,
                })
                .unwrap_or(hi);
            (lo, hi) = (j + 1, end);
        }
        for index in indices.split(['[', ']']).filter(|s| !s.is_empty()) {
            let index: usize = index.parse().ok()?;
            let Some(&(_, Token::Item(col))) = toks.get(lo..hi).and_then(|t| t.first()) else {
                return line;
            };
            let mut items = (lo..hi).filter(|&k| toks[k].1 == Token::Item(col));
            let Some(j) = items.nth(index) else { return line };
            line = Some(toks[j].0);
            let end = (j + 1..hi)
                .find(|&k| match toks[k].1 {
                    Token::Item(i) => i <= col,
                    Token::Key(i, _) => i < col,
                })
                .unwrap_or(hi);
            (lo, hi) = (j + 1, end);
        }
    }
    line
}

/// Makes a parser error say what a user needs: the line of a duplicate
/// key (serde_yaml gives the line of the map that holds it), a hint for a
/// tab in the indentation, and plain words for Rust's type names.
pub(super) fn explain(text: &str, mut e: ConfigError) -> ConfigError {
    if let Some(field) = e.message.strip_prefix("duplicate field `").and_then(|m| m.strip_suffix('`')) {
        e.line = duplicate_line(text, &e.key, field).or(e.line);
        e.message = format!("`{field}` is set twice; remove one of them");
    }
    let tabbed = e
        .line
        .and_then(|n| text.lines().nth(n - 1))
        .is_some_and(|l| l[..l.len() - l.trim_start().len()].contains('\t'));
    if tabbed {
        e.message.push_str("; YAML indents with spaces, and this line has a tab");
    }
    const PLAIN: [(&str, &str); 6] = [
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected u32", "expected a whole number from 0 to 4294967295"),
        ("expected u64", "expected a whole number"),
        ("expected usize", "expected a whole number"),
        ("expected a boolean", "expected true or false"),
    ];
    for (rust, plain) in PLAIN {
        if e.message.ends_with(rust) {
            e.message.truncate(e.message.len() - rust.len());
            e.message.push_str(plain);
        }
    }
    e
}

/// The line of the second `field:` in the map at key path `path` (the
/// whole document when empty).
fn duplicate_line(text: &str, path: &str, field: &str) -> Option<usize> {
    let toks = tokens(text);
    let after = if path.is_empty() { 0 } else { locate(text, path)? };
    let first =
        toks.iter().position(|&(line, t)| line >= after && matches!(t, Token::Key(_, k) if k == field))?;
    let indent = toks[first].1.indent();
    toks[first + 1..]
        .iter()
        .take_while(|(_, t)| t.indent() >= indent)
        .find(|(_, t)| *t == Token::Key(indent, field))
        .map(|&(line, _)| line)
}

/// Deepest `[`/`{` nesting accepted. A real config needs three levels;
/// the YAML parser takes time quadratic in the depth, so a hostile file of
/// nothing but brackets would stall a (re)load for minutes.
pub(super) const MAX_NESTING: usize = 64;

/// Refuses flow collections nested deeper than [`MAX_NESTING`], skipping
/// quoted strings and comments, before the YAML parser sees the text.
pub(super) fn check_nesting(text: &str) -> Result<(), ConfigError> {
    let (mut depth, mut quote, mut comment) = (0usize, None::<char>, false);
    let mut line = 1;
    for c in text.chars() {
        match (c, quote) {
            ('\n', _) => {
                line += 1;
                comment = false;
            }
            _ if comment => {}
            (q, Some(open)) if q == open => quote = None,
            (_, Some(_)) => {}
            ('"' | '\'', None) => quote = Some(c),
            ('#', None) => comment = true,
            ('[' | '{', None) => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(ConfigError {
                        key: String::new(),
                        line: Some(line),
                        message: format!("nested more than {MAX_NESTING} levels deep"),
                    });
                }
            }
            (']' | '}', None) => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}
