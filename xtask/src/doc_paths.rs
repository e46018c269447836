//! The docs name only files that are there: every repository path a Markdown file of the tree
//! cites (a relative link, or a path in backticks under one of the tree's top folders) must
//! exist, so a moved or deleted file cannot leave the README or docs/ pointing at nothing.
use std::path::Path;

/// The folders whose paths the docs cite; a backticked word starting with one is a path.
const TOP: &[&str] = &[
    "agent/",
    "common/",
    "schema/",
    "ebpf/",
    "xtask/",
    "tests/",
    "deploy/",
    "dashboards/",
    "docs/",
    "fuzz/",
    "LICENSES/",
    ".ci/",
];

/// The paths `text` (a Markdown file at `dir`, relative to the root) cites, as written and as
/// resolved against the root. Placeholders (`NAME`, `<x>`, `*`, `{a,b}`, `...`) are not paths.
pub fn cited(dir: &str, text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    // Relative links: [text](path) or [text](path#anchor).
    for part in text.split("](").skip(1) {
        let Some(end) = part.find(')') else { continue };
        let target = part[..end].split('#').next().unwrap_or("").trim();
        if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        out.push((target.to_string(), join(dir, target)));
    }
    // `path` in backticks, under one of the top folders.
    for (i, span) in text.split('`').enumerate() {
        if i % 2 == 0 {
            continue;
        }
        let word = span.split_whitespace().next().unwrap_or("");
        let word = word
            .split(':')
            .next()
            .unwrap_or("")
            .trim_end_matches([',', '.']);
        if TOP.iter().any(|t| word.starts_with(t)) && !is_placeholder(word) {
            out.push((word.to_string(), word.trim_end_matches('/').to_string()));
        }
    }
    out
}

fn is_placeholder(word: &str) -> bool {
    word.contains(['<', '>', '*', '{', '}', '$', '['])
        || word.contains("...")
        || word.contains("NAME")
        || word.contains("SERIES")
        || word.contains("KIND")
        || word.contains("/N")
        || word.contains("/X")
}

/// `target` relative to the folder `dir` of the citing file, `..` resolved.
fn join(dir: &str, target: &str) -> String {
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for p in target.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// Every cited path of the tracked Markdown files `docs` that does not exist under `root`, as
/// `file: path`.
pub fn missing(root: &Path, docs: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for doc in docs {
        let Ok(text) = std::fs::read_to_string(root.join(doc)) else {
            continue;
        };
        let dir = Path::new(doc)
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (written, path) in cited(&dir, &text) {
            if !root.join(&path).exists() {
                out.push(format!("{doc}: {written}"));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_backticked_paths_are_cited_placeholders_are_not() {
        let text = "See [design](design.md#kernel), [up](../README.md), \
            [web](https://x.io/a), `agent/src/node.rs:12`, `tests/vm/scenarios/NAME/`, \
            `cargo xtask test`, `docs/*.md`, `ebpf/src/`.";
        let paths: Vec<String> = cited("docs", text).into_iter().map(|(_, p)| p).collect();
        assert_eq!(
            paths,
            [
                "docs/design.md",
                "README.md",
                "agent/src/node.rs",
                "ebpf/src"
            ]
        );
    }

    #[test]
    fn the_trees_docs_name_only_files_that_are_there() {
        let root = crate::util::workspace_root();
        let docs = crate::lint::markdown_files().unwrap();
        assert!(docs.iter().any(|d| d == "README.md"));
        let missing = missing(&root, &docs);
        assert!(missing.is_empty(), "cited but not there: {missing:#?}");
    }
}
