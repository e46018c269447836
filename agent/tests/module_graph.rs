//! The module graph of the agent crate, read from its source, and the import cycles in it.
//!
//! A module depends on another when its code names it by a `crate::`, `super::` or `self::` path
//! (in a `use`, an expression, a type or a macro's tokens). Cycles are looked for among siblings:
//! at the crate root (`daemon`, `metrics`, `model`, ...) and inside each module (`bpf::features`,
//! `bpf::programs`, ...), a sibling standing for everything under it. A module naming its own
//! parent or child is not a cycle (a `mod.rs` and its files are one unit). Test code
//! (`#[cfg(test)]`) is left out: it may reach across modules to build its fixtures.
//!
//! `cargo test -p iommu-enforcer --test module_graph -- --nocapture` prints the graph and the
//! edges of every cycle.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// A module's path below the crate root (`["bpf", "features"]`); the root is empty.
type ModPath = Vec<String>;

/// One module: where it is and the paths its code names (each with the module it is written in).
#[derive(Default)]
struct Crate {
    modules: BTreeSet<ModPath>,
    /// (module the path is written in, the absolute path it names).
    references: Vec<(ModPath, ModPath)>,
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

impl Crate {
    fn read(root_file: &Path) -> Crate {
        let mut krate = Crate::default();
        let dir = root_file
            .parent()
            .expect("lib.rs has a directory")
            .to_path_buf();
        krate.read_file(root_file, Vec::new(), &dir);
        krate
    }

    /// Reads the module `path` from `file`; its `mod x;` children live in `child_dir`.
    fn read_file(&mut self, file: &Path, path: ModPath, child_dir: &Path) {
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let parsed =
            syn::parse_file(&text).unwrap_or_else(|e| panic!("parse {}: {e}", file.display()));
        self.read_items(&parsed.items, path, child_dir);
    }

    fn read_items(&mut self, items: &[syn::Item], path: ModPath, child_dir: &Path) {
        self.modules.insert(path.clone());
        for item in items {
            if let syn::Item::Mod(m) = item {
                if is_cfg_test(&m.attrs) {
                    continue;
                }
                let mut child = path.clone();
                child.push(m.ident.to_string());
                let grandchild_dir = child_dir.join(m.ident.to_string());
                match &m.content {
                    Some((_, inner)) => self.read_items(inner, child, &grandchild_dir),
                    None => {
                        let flat = child_dir.join(format!("{}.rs", m.ident));
                        let file = if flat.exists() {
                            flat
                        } else {
                            grandchild_dir.join("mod.rs")
                        };
                        self.read_file(&file, child, &grandchild_dir);
                    }
                }
                continue;
            }
            let mut refs = References {
                module: &path,
                found: Vec::new(),
            };
            refs.visit_item(item);
            self.references
                .extend(refs.found.into_iter().map(|r| (path.clone(), r)));
        }
    }

    /// The module a path names: the longest known module that prefixes it.
    fn module_of(&self, target: &[String]) -> ModPath {
        (0..=target.len())
            .rev()
            .map(|n| target[..n].to_vec())
            .find(|prefix| self.modules.contains(prefix))
            .unwrap_or_default()
    }
}

/// Collects the absolute paths named in one item, leaving out `#[cfg(test)]` parts.
struct References<'a> {
    module: &'a ModPath,
    found: Vec<ModPath>,
}

impl References<'_> {
    /// `crate::a::b` / `super::a` / `self::a` made absolute; any other path is not ours.
    fn resolve(&self, segments: &[String]) -> Option<ModPath> {
        let mut base = self.module.clone();
        let mut rest = segments;
        match rest.first().map(String::as_str) {
            Some("crate") => {
                base.clear();
                rest = &rest[1..];
            }
            Some("self") => rest = &rest[1..],
            Some("super") => {
                while rest.first().map(String::as_str) == Some("super") {
                    base.pop()?;
                    rest = &rest[1..];
                }
            }
            _ => return None,
        }
        base.extend(rest.iter().cloned());
        Some(base)
    }

    fn add(&mut self, segments: &[String]) {
        if let Some(p) = self.resolve(segments) {
            self.found.push(p);
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            // `use a::b::{self}` names `a::b`.
            syn::UseTree::Name(n) if n.ident == "self" => self.add(prefix),
            syn::UseTree::Name(n) => {
                prefix.push(n.ident.to_string());
                self.add(prefix);
                prefix.pop();
            }
            syn::UseTree::Rename(r) => {
                prefix.push(r.ident.to_string());
                self.add(prefix);
                prefix.pop();
            }
            syn::UseTree::Glob(_) => self.add(prefix),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }

    /// Paths inside a macro's tokens (`format!("{}", crate::x::y)`): `crate`/`super`/`self`
    /// followed by `::ident` runs.
    fn tokens(&mut self, tokens: TokenStream) {
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < trees.len() {
            match &trees[i] {
                TokenTree::Group(g) => self.tokens(g.stream()),
                TokenTree::Ident(id)
                    if matches!(id.to_string().as_str(), "crate" | "super" | "self") =>
                {
                    let mut segments = vec![id.to_string()];
                    let mut j = i + 1;
                    while let (
                        Some(TokenTree::Punct(a)),
                        Some(TokenTree::Punct(b)),
                        Some(TokenTree::Ident(next)),
                    ) = (trees.get(j), trees.get(j + 1), trees.get(j + 2))
                    {
                        if a.as_char() != ':' || b.as_char() != ':' {
                            break;
                        }
                        segments.push(next.to_string());
                        j += 3;
                    }
                    if segments.len() > 1 {
                        self.add(&segments);
                    }
                    i = j;
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }
}

fn segments(path: &syn::Path) -> Vec<String> {
    path.segments.iter().map(|s| s.ident.to_string()).collect()
}

impl<'ast> Visit<'ast> for References<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs: &[syn::Attribute] = match item {
            syn::Item::Const(i) => &i.attrs,
            syn::Item::Enum(i) => &i.attrs,
            syn::Item::Fn(i) => &i.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Macro(i) => &i.attrs,
            syn::Item::Static(i) => &i.attrs,
            syn::Item::Struct(i) => &i.attrs,
            syn::Item::Trait(i) => &i.attrs,
            syn::Item::Type(i) => &i.attrs,
            syn::Item::Use(i) => &i.attrs,
            syn::Item::Mod(i) => &i.attrs,
            _ => &[],
        };
        if is_cfg_test(attrs) {
            return;
        }
        syn::visit::visit_item(self, item);
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if !is_cfg_test(&f.attrs) {
            syn::visit::visit_impl_item_fn(self, f);
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        self.add(&segments(path));
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.tokens(mac.tokens.clone());
        syn::visit::visit_macro(self, mac);
    }

    fn visit_attribute(&mut self, attr: &'ast syn::Attribute) {
        // Doc links (`[`x`](crate::y)`) are text, not imports; other attributes may carry paths
        // (`#[serde(with = "...")]` is a string and so not seen either).
        if !attr.path().is_ident("doc") {
            syn::visit::visit_attribute(self, attr);
        }
    }
}

/// Sibling edges: for every parent, which of its children's subtrees name which others'.
/// Each edge keeps the (from module, named path) pairs that make it, for the report.
type Siblings = BTreeMap<ModPath, BTreeMap<(String, String), BTreeSet<(String, String)>>>;

fn sibling_edges(krate: &Crate) -> Siblings {
    let mut out = Siblings::new();
    for (from, target) in &krate.references {
        let to = krate.module_of(target);
        let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
        if common == from.len() || common == to.len() {
            continue; // the same module, or a parent and its child
        }
        let parent = from[..common].to_vec();
        out.entry(parent)
            .or_default()
            .entry((from[common].clone(), to[common].clone()))
            .or_default()
            .insert((from.join("::"), target.join("::")));
    }
    out
}

/// Strongly connected components with more than one member (Tarjan).
fn cycles(nodes: &BTreeSet<String>, edges: &BTreeSet<(String, String)>) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        edges: &'a BTreeSet<(String, String)>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            let next: Vec<&'a str> = self
                .edges
                .iter()
                .filter(|(a, _)| a == v)
                .map(|(_, b)| b.as_str())
                .collect();
            for w in next {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.out.push(component);
                }
            }
        }
    }
    let mut t = Tarjan {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in nodes {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out.sort();
    t.out
}

struct Report {
    text: String,
    cycles: Vec<(String, Vec<String>)>,
}

fn report(krate: &Crate) -> Report {
    let siblings = sibling_edges(krate);
    let mut text = String::new();
    let mut found = Vec::new();
    for (parent, edges) in &siblings {
        let name = if parent.is_empty() {
            "crate".to_string()
        } else {
            format!("crate::{}", parent.join("::"))
        };
        let _ = writeln!(text, "{name}:");
        let mut by_from: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (a, b) in edges.keys() {
            by_from.entry(a).or_default().push(b);
        }
        for (a, bs) in &by_from {
            let _ = writeln!(text, "  {a} -> {}", bs.join(", "));
        }
        let nodes: BTreeSet<String> = edges
            .keys()
            .flat_map(|(a, b)| [a.clone(), b.clone()])
            .collect();
        let keys: BTreeSet<(String, String)> = edges.keys().cloned().collect();
        for cycle in cycles(&nodes, &keys) {
            let _ = writeln!(text, "  CYCLE {}", cycle.join(" <-> "));
            for ((a, b), why) in edges {
                if cycle.contains(a) && cycle.contains(b) {
                    for (from, target) in why {
                        let _ =
                            writeln!(text, "    {a} -> {b}: crate::{from} names crate::{target}");
                    }
                }
            }
            found.push((name.clone(), cycle));
        }
    }
    Report {
        text,
        cycles: found,
    }
}

fn agent_crate() -> Crate {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs");
    Crate::read(&root)
}

#[test]
fn no_import_cycles_between_agent_modules() {
    let krate = agent_crate();
    let checked = report(&krate);
    println!("every reference:\n{}", checked.text);
    assert!(
        checked.cycles.is_empty(),
        "import cycles between agent modules: {:?}\n{}",
        checked.cycles,
        checked.text
    );
}

/// The reader itself: a cycle written into a small crate is found, a parent/child pair is not.
#[test]
fn finds_a_cycle_between_siblings_and_not_between_parent_and_child() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\npub mod c;\n").expect("write");
    std::fs::write(src.join("a.rs"), "use crate::b::X;\npub struct Y;\n").expect("write");
    std::fs::create_dir(src.join("b")).expect("mkdir");
    std::fs::write(
        src.join("b/mod.rs"),
        "mod inner;\npub struct X;\nfn f() -> super::a::Y { inner::g() }\n",
    )
    .expect("write");
    std::fs::write(
        src.join("b/inner.rs"),
        "pub fn g() -> super::X { super::X }\n",
    )
    .expect("write");
    std::fs::write(
        src.join("c.rs"),
        "#[cfg(test)]\nmod tests { use crate::a::Y; }\npub fn h() { let _ = format!(\"{}\", crate::b::X); }\n",
    )
    .expect("write");
    let report = report(&Crate::read(&src.join("lib.rs")));
    assert_eq!(
        report.cycles,
        vec![("crate".to_string(), vec!["a".to_string(), "b".to_string()])],
        "{}",
        report.text
    );
    assert!(report.text.contains("c -> b"), "{}", report.text);
    assert!(!report.text.contains("c -> a"), "{}", report.text);
}
