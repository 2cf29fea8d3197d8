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
