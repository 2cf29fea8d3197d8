//! The configs the documentation shows and the packages ship: each loads,
//! and without a warning, so a user who copies one gets what it says.

use std::path::Path;

use socksbalance::Config;

/// The fenced ```yaml blocks of a Markdown file that are whole configs
/// (they list `backends:`), with the line each starts on.
fn yaml_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        match &mut current {
            None if line.trim_start() == "```yaml" => current = Some((n + 2, String::new())),
            Some(_) if line.trim_start() == "```" => {
                let (start, body) = current.take().unwrap();
                if body.lines().any(|l| l.starts_with("backends:")) {
                    blocks.push((start, body));
                }
            }
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    blocks
}

#[test]
fn every_config_in_the_docs_and_the_packages_loads_without_a_warning() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = Vec::new();
    let mut problems = Vec::new();
    let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.push(root.join("README.md"));
    docs.sort();
    for doc in docs {
        let text = std::fs::read_to_string(&doc).unwrap();
        for (line, yaml) in yaml_blocks(&text) {
            let name = format!("{}:{line}", doc.strip_prefix(root).unwrap().display());
            match Config::from_yaml(&yaml) {
                Ok(c) if c.warnings.is_empty() => {}
                Ok(c) => problems.push(format!("{name}: warns: {:?}", c.warnings)),
                // `interfaces: auto` needs Linux.
                Err(e) if !cfg!(target_os = "linux") && e.to_string().contains("needs Linux") => {}
                Err(e) => problems.push(format!("{name}: {e}")),
            }
            checked.push(name);
        }
    }
    for shipped in ["packaging/config.example.yaml", "openwrt/socksbalance/files/config.yaml"] {
        match Config::load(&root.join(shipped)) {
            Ok(c) if c.warnings.is_empty() => {}
            Ok(c) => problems.push(format!("{shipped}: warns: {:?}", c.warnings)),
            Err(e) => problems.push(format!("{shipped}: {e}")),
        }
        checked.push(shipped.to_owned());
    }
    assert!(checked.iter().any(|n| n.starts_with("README.md")), "the README's config was found: {checked:?}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The defaults column of docs/configuration.md: `section.key` (from the
/// `## \`section\`` heading above the table; none for the top level) and
/// the first backticked value of the default cell.
fn documented_defaults(text: &str) -> Vec<(String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            section = match heading.trim().trim_matches('`') {
                "Top level" => String::new(),
                "backends[]" => "backends".into(),
                other if heading.starts_with('`') => other.to_owned(),
                _ => "-".into(),
            };
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if section == "-" || cells.len() < 4 || !cells[1].starts_with('`') {
            continue;
        }
        let key = cells[1].split('`').nth(1).unwrap_or_default();
        let Some(default) = cells[2].split('`').nth(1) else { continue };
        let full = if section.is_empty() { key.to_owned() } else { format!("{section}.{key}") };
        out.push((full, default.to_owned()));
    }
    out
}

#[test]
fn the_defaults_table_says_what_the_code_does() {
    use socksbalance::config::defaults::{documented, Documented};
    use socksbalance::config::GoDuration;
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md")).unwrap();
    let table = documented_defaults(&text);
    let mut problems = Vec::new();
    for (key, default) in documented() {
        let Some((_, written)) = table.iter().find(|(k, _)| k == key) else {
            problems.push(format!("{key}: not in the defaults table"));
            continue;
        };
        let same = match &default {
            Documented::Duration(d) => written.parse::<GoDuration>().is_ok_and(|w| w.0 == *d),
            Documented::Text(t) => written == t,
        };
        if !same {
            problems.push(format!("{key}: the docs say `{written}`, the code {default:?}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
