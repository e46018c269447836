//! The policy's TOML, read in one pass over the event stream of `toml_parser` (the lexer and
//! grammar under the `toml` crate) into a small tree of spanned values. Why not serde: building
//! `toml`'s document tree and deserialising it cost over a second for 200,000 reservations;
//! this costs the lexer plus one walk, a few thousand tokens at a time (see [`read_in_chunks`]).
//! Linear: a key is looked up by a scan while its table is small (the schema's have at most six
//! keys) and in a hash index beyond that, and keys and strings are borrowed from the text unless
//! they hold escapes.
//!
//! Syntax errors take `toml`'s own message and span (see [`read`]), so they read as before.
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::ops::Range;

use toml_parser::decoder::{Encoding, ScalarKind};
use toml_parser::lexer::{Token, TokenKind};
use toml_parser::parser::{Event, EventKind, RecursionGuard, ValidateWhitespace};
use toml_parser::{ParseError, Source};

/// Arrays and inline tables nested deeper than this are a syntax error (as in `toml`).
const MAX_DEPTH: u32 = 80;

/// Tables made by dotted keys, arrays and inline tables nested deeper than this in all are an
/// error: the tree is dropped recursively, and a 10,000-part dotted key overflowed the stack.
const MAX_TREE_DEPTH: usize = MAX_DEPTH as usize;

/// A value and the byte range it was written at.
#[derive(Debug)]
pub struct Spanned<T> {
    value: T,
    span: Range<usize>,
}

impl<T> Spanned<T> {
    pub fn new(span: Range<usize>, value: T) -> Self {
        Spanned { value, span }
    }
    pub fn span(&self) -> Range<usize> {
        self.span.clone()
    }
    pub fn get_ref(&self) -> &T {
        &self.value
    }
    pub fn into_inner(self) -> T {
        self.value
    }
}

/// A key or string as written: borrowed from the text, owned only when it held escapes.
pub type Str<'i> = Cow<'i, str>;

/// One TOML value, as far as the policy needs to tell them apart.
#[derive(Debug)]
pub enum Value<'i> {
    String(Str<'i>),
    Integer(i64),
    Boolean(bool),
    Array(Vec<Spanned<Value<'i>>>),
    Table(Table<'i>),
    /// A float, a date-time or an integer out of i64's range: never valid in a policy.
    Other(&'static str),
}

impl Value<'_> {
    /// As serde names it in "invalid type" messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::String(_) => "string",
            Value::Integer(_) => "integer",
            Value::Boolean(_) => "boolean",
            Value::Array(_) => "sequence",
            Value::Table(_) => "map",
            Value::Other(k) => k,
        }
    }
}

/// Keys in the order written.
#[derive(Debug, Default)]
pub struct Table<'i> {
    pub entries: Vec<(Spanned<Str<'i>>, Spanned<Value<'i>>)>,
    /// Made by a dotted key (`a.b = 1`): later dotted keys may add to it.
    dotted: bool,
    /// Key -> entry, once the table outgrows a scan (a file of many unknown keys would
    /// otherwise cost a scan per key). Boxed: unboxed it doubles the size of every value, and
    /// 200,000 `[[reserve]]` tables never have one.
    #[allow(clippy::box_collection)]
    index: Option<Box<HashMap<Str<'i>, usize>>>,
}

/// Tables up to this many keys are searched by a scan (every table of a valid policy).
const SCAN_LIMIT: usize = 8;

impl<'i> Table<'i> {
    fn dotted() -> Self {
        Table {
            dotted: true,
            ..Table::default()
        }
    }

    fn find(&self, key: &str) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(key).copied(),
            None => self.entries.iter().position(|(k, _)| k.value == key),
        }
    }

    /// Appends `key` (not in the table yet); returns its entry's position.
    fn push(&mut self, key: Spanned<Str<'i>>, value: Spanned<Value<'i>>) -> usize {
        let n = self.entries.len();
        match &mut self.index {
            Some(index) => {
                index.insert(key.value.clone(), n);
            }
            None if n == SCAN_LIMIT => {
                let mut index: HashMap<Str<'i>, usize> = self
                    .entries
                    .iter()
                    .enumerate()
                    .map(|(i, (k, _))| (k.value.clone(), i))
                    .collect();
                index.insert(key.value.clone(), n);
                self.index = Some(Box::new(index));
            }
            None => {}
        }
        self.entries.push((key, value));
        n
    }
}

/// An error: where, and the message.
pub type Error = (Range<usize>, String);

/// Tokens lexed and parsed at a time, at least (a chunk ends at a line end): the tokens and
/// events of a large policy would otherwise take twelve times its size in memory at once, and
/// the page faults to map it cost as much as the parse.
const CHUNK_TOKENS: usize = 4096;

/// The document's root table. `[[name]]` headers append tables to the array `name`; `[name]`
/// makes the table `name`; deeper header paths are not part of any policy and are refused.
pub fn read(text: &str) -> Result<Table<'_>, Error> {
    read_in_chunks(text, CHUNK_TOKENS)
}

/// [`read`], lexing, parsing and walking about `chunk` tokens at a time. A chunk ends after a
/// newline outside any brackets: there a document without errors is between two expressions
/// (only arrays and inline tables continue past a line end, and strings spanning lines are one
/// token), and the parser keeps no state from one expression to the next. So the events are
/// those of the whole document, and a chunk with an error has it where the whole document does
/// (no later chunk is parsed then). After a stray closing bracket no chunk ends.
fn read_in_chunks(text: &str, chunk: usize) -> Result<Table<'_>, Error> {
    let source = Source::new(text);
    let mut lexer = source.lex();
    let mut tokens: Vec<Token> = Vec::with_capacity(chunk.min(text.len() / 2) + 64);
    let mut events: Vec<Event> = Vec::new();
    let mut parse_errors: Vec<ParseError> = Vec::new();
    let mut decode_errors: Vec<ParseError> = Vec::new();
    let mut doc = Document::default();
    // Once the walk fails, the rest is still parsed: a syntax error anywhere comes first.
    let mut walked = Ok(());
    // Brackets open; `None` after a closing bracket too many.
    let mut depth = Some(0u32);
    let mut more = true;
    while more {
        tokens.clear();
        more = false;
        for t in lexer.by_ref() {
            depth = match t.kind() {
                TokenKind::LeftSquareBracket | TokenKind::LeftCurlyBracket => depth.map(|d| d + 1),
                TokenKind::RightSquareBracket | TokenKind::RightCurlyBracket => {
                    depth.and_then(|d| d.checked_sub(1))
                }
                _ => depth,
            };
            tokens.push(t);
            if t.kind() == TokenKind::Newline && depth == Some(0) && tokens.len() >= chunk {
                more = true;
                break;
            }
        }
        events.clear();
        {
            // Only the events the walk looks at: whitespace, comments and newlines (half of
            // all events) are still validated by `ValidateWhitespace`, but not kept.
            let mut keep = |e: Event| {
                if !matches!(
                    e.kind(),
                    EventKind::Whitespace | EventKind::Comment | EventKind::Newline
                ) {
                    events.push(e);
                }
            };
            let mut ws = ValidateWhitespace::new(&mut keep, source);
            let mut guard = RecursionGuard::new(&mut ws, MAX_DEPTH);
            toml_parser::parser::parse_document(&tokens, &mut guard, &mut parse_errors);
        }
        if !parse_errors.is_empty() {
            break;
        }
        if walked.is_ok() {
            let mut w = Walker {
                source,
                events: &events,
                at: 0,
                errors: &mut decode_errors,
                doc: &mut doc,
                nesting: 0,
            };
            walked = w.expressions();
        }
    }
    // Parse errors before decoding errors, as when the walk waited for the whole parse.
    if let Some(first) = parse_errors.first().or(decode_errors.first()) {
        return Err(syntax_error(text, first));
    }
    walked.map(|()| doc.root)
}

/// The message `toml` gives for a document `toml_parser` found an error in (the same grammar,
/// so it finds one too); `first` only if it did not.
fn syntax_error(text: &str, first: &ParseError) -> Error {
    match toml::from_str::<toml::Table>(text) {
        Err(e) => (
            e.span().unwrap_or(0..0),
            e.message().trim().replace('\n', "; "),
        ),
        Ok(_) => {
            let at = first.unexpected().or(first.context()).unwrap_or_default();
            (at.start()..at.end(), first.description().to_string())
        }
    }
}

/// What the walk has made so far, from one chunk of events to the next.
#[derive(Default)]
struct Document<'i> {
    root: Table<'i>,
    /// Root entries made by `[[name]]` headers (only those may be appended to).
    array_tables: HashSet<usize>,
    target: Target,
}

/// One chunk's walk.
struct Walker<'a, 'i> {
    source: Source<'i>,
    /// Without whitespace, comments and newlines.
    events: &'a [Event],
    at: usize,
    errors: &'a mut Vec<ParseError>,
    doc: &'a mut Document<'i>,
    /// Arrays and inline tables open around the value being read.
    nesting: usize,
}

/// Where key/value lines go: the root, or the last table of the root entry `n` (a `[name]`
/// table or the last element of a `[[name]]` array).
#[derive(Clone, Copy, Default)]
enum Target {
    #[default]
    Root,
    Entry(usize),
}

/// `a.b.c`: its first key and the rest (empty, so not allocated, for the usual plain key).
struct KeyPath<'i> {
    head: Spanned<Str<'i>>,
    rest: Vec<Spanned<Str<'i>>>,
}

impl<'i> Walker<'_, 'i> {
    fn next(&mut self) -> Option<Event> {
        let e = self.events.get(self.at).copied();
        self.at += 1;
        e
    }

    fn peek(&self) -> Option<Event> {
        self.events.get(self.at).copied()
    }

    /// The chunk's headers and key/value lines into the document.
    fn expressions(&mut self) -> Result<(), Error> {
        while let Some(e) = self.next() {
            match e.kind() {
                EventKind::StdTableOpen | EventKind::ArrayTableOpen => {
                    let array = e.kind() == EventKind::ArrayTableOpen;
                    let open = span(&e);
                    let first = self.next();
                    let path = self.key_path(first)?;
                    let close = self.next().map(|e| span(&e)).unwrap_or(open.clone());
                    let header = open.start..close.end;
                    if let Some(second) = path.rest.first() {
                        let names: Vec<&str> = std::iter::once(&path.head)
                            .chain(&path.rest)
                            .map(|k| k.get_ref().as_ref())
                            .collect();
                        return Err((
                            second.span(),
                            format!("table {} is not part of the policy", names.join(".")),
                        ));
                    }
                    let name = path.head;
                    let Document {
                        root, array_tables, ..
                    } = &mut *self.doc;
                    let existing = root.find(&name.value);
                    self.doc.target = match (array, existing) {
                        (true, Some(n)) if array_tables.contains(&n) => {
                            let (_, v) = &mut root.entries[n];
                            if let Value::Array(items) = &mut v.value {
                                items.push(Spanned::new(header, Value::Table(Table::default())));
                            }
                            Target::Entry(n)
                        }
                        (_, Some(_)) => return Err(duplicate(&name)),
                        (true, None) => {
                            let first =
                                Spanned::new(header.clone(), Value::Table(Table::default()));
                            let n =
                                root.push(name, Spanned::new(header, Value::Array(vec![first])));
                            array_tables.insert(n);
                            Target::Entry(n)
                        }
                        (false, None) => Target::Entry(
                            root.push(name, Spanned::new(header, Value::Table(Table::default()))),
                        ),
                    };
                }
                EventKind::SimpleKey => {
                    let (path, value) = self.key_value(e)?;
                    let root = &mut self.doc.root;
                    let table = match self.doc.target {
                        Target::Root => root,
                        Target::Entry(n) => last_table(&mut root.entries[n].1.value),
                    };
                    insert(table, path.head, path.rest.into_iter(), value)?;
                }
                _ => return Err(unexpected(&e)),
            }
        }
        Ok(())
    }

    /// `a.b.c` starting at `first`, decoded (quoted keys included).
    fn key_path(&mut self, first: Option<Event>) -> Result<KeyPath<'i>, Error> {
        let head = self.key(first)?;
        let mut rest = Vec::new();
        while self.peek().map(|e| e.kind()) == Some(EventKind::KeySep) {
            self.next();
            let e = self.next();
            rest.push(self.key(e)?);
        }
        Ok(KeyPath { head, rest })
    }

    /// One key of a path.
    fn key(&mut self, e: Option<Event>) -> Result<Spanned<Str<'i>>, Error> {
        let key = match e {
            Some(k) if k.kind() == EventKind::SimpleKey => k,
            Some(other) => return Err(unexpected(&other)),
            None => return Err((0..0, "a key is missing".to_string())),
        };
        let Some(raw) = self.source.get(key) else {
            return Ok(Spanned::new(span(&key), Str::Borrowed("")));
        };
        if let Some(name) = verbatim(raw.as_str(), key.encoding(), true) {
            return Ok(Spanned::new(span(&key), Str::Borrowed(name)));
        }
        let mut name = Str::Borrowed("");
        raw.decode_key(&mut name, self.errors);
        Ok(Spanned::new(span(&key), name))
    }

    /// `key = value` starting at the key event `first`.
    fn key_value(&mut self, first: Event) -> Result<(KeyPath<'i>, Spanned<Value<'i>>), Error> {
        let path = self.key_path(Some(first))?;
        if self.nesting + path.rest.len() >= MAX_TREE_DEPTH {
            let end = path
                .rest
                .last()
                .map_or(path.head.span().end, |k| k.span().end);
            return Err((
                path.head.span().start..end,
                format!("keys and values nested deeper than {MAX_TREE_DEPTH}"),
            ));
        }
        match self.next() {
            Some(e) if e.kind() == EventKind::KeyValSep => {}
            Some(e) => return Err(unexpected(&e)),
            None => return Err((span(&first), "a value is missing".to_string())),
        }
        let value = match self.next() {
            Some(e) => self.value(e)?,
            None => return Err((span(&first), "a value is missing".to_string())),
        };
        Ok((path, value))
    }

    fn value(&mut self, e: Event) -> Result<Spanned<Value<'i>>, Error> {
        let start = span(&e).start;
        match e.kind() {
            EventKind::Scalar => Ok(Spanned::new(span(&e), self.scalar(&e))),
            EventKind::ArrayOpen => {
                let mut items = Vec::new();
                self.nesting += 1;
                loop {
                    match self.next() {
                        Some(c) if c.kind() == EventKind::ArrayClose => {
                            self.nesting -= 1;
                            return Ok(Spanned::new(start..span(&c).end, Value::Array(items)));
                        }
                        Some(s) if s.kind() == EventKind::ValueSep => {}
                        Some(v) => items.push(self.value(v)?),
                        None => return Err((span(&e), "unclosed array".to_string())),
                    }
                }
            }
            EventKind::InlineTableOpen => {
                let mut table = Table::default();
                self.nesting += 1;
                loop {
                    match self.next() {
                        Some(c) if c.kind() == EventKind::InlineTableClose => {
                            self.nesting -= 1;
                            return Ok(Spanned::new(start..span(&c).end, Value::Table(table)));
                        }
                        Some(s) if s.kind() == EventKind::ValueSep => {}
                        Some(k) if k.kind() == EventKind::SimpleKey => {
                            let (path, value) = self.key_value(k)?;
                            insert(&mut table, path.head, path.rest.into_iter(), value)?;
                        }
                        Some(other) => return Err(unexpected(&other)),
                        None => return Err((span(&e), "unclosed inline table".to_string())),
                    }
                }
            }
            _ => Err(unexpected(&e)),
        }
    }

    fn scalar(&mut self, e: &Event) -> Value<'i> {
        let Some(raw) = self.source.get(e) else {
            return Value::Other("value");
        };
        if let Some(s) = verbatim(raw.as_str(), e.encoding(), false) {
            return Value::String(Str::Borrowed(s));
        }
        let mut decoded = Str::Borrowed("");
        match raw.decode_scalar(&mut decoded, self.errors) {
            ScalarKind::String => Value::String(decoded),
            ScalarKind::Boolean(b) => Value::Boolean(b),
            ScalarKind::Integer(radix) => i64::from_str_radix(&decoded, radix.value())
                .map_or(Value::Other("integer out of range"), Value::Integer),
            ScalarKind::Float => Value::Other("floating point"),
            ScalarKind::DateTime => Value::Other("date-time"),
        }
    }
}

/// What `raw` decodes to when the decoder can neither change nor refuse it: a plain unquoted
/// key (`key`), or a basic string of no escapes and no control characters. By the decoders' own
/// rules (`unquoted-key`, `basic-unescaped` of the TOML grammar); anything else goes through
/// them. Most keys and values are such, and this spares a decoder pass over each.
fn verbatim(raw: &str, encoding: Option<Encoding>, key: bool) -> Option<&str> {
    match encoding {
        None if key => (!raw.is_empty()
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then_some(raw),
        Some(Encoding::BasicString) => {
            let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
            inner
                .bytes()
                .all(|b| matches!(b, b' ' | b'\t' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..))
                .then_some(inner)
        }
        _ => None,
    }
}

fn span(e: &Event) -> Range<usize> {
    e.span().start()..e.span().end()
}

fn unexpected(e: &Event) -> Error {
    (span(e), format!("unexpected {}", e.kind().description()))
}

fn duplicate(key: &Spanned<Str<'_>>) -> Error {
    (key.span(), format!("duplicate key `{}`", key.value))
}

/// The table `[[name]]` or `[name]` lines go into: the last element of an array of tables.
fn last_table<'v, 'i>(v: &'v mut Value<'i>) -> &'v mut Table<'i> {
    match v {
        Value::Array(items) => match items.last_mut().map(|i| &mut i.value) {
            Some(Value::Table(t)) => t,
            _ => unreachable!("array-of-tables entries always end in a table"),
        },
        Value::Table(t) => t,
        _ => unreachable!("header entries are tables or arrays of tables"),
    }
}

/// `key.rest = value` into `table`: intermediate dotted tables made or extended, a key given
/// twice refused as TOML refuses it.
fn insert<'i>(
    mut table: &mut Table<'i>,
    mut key: Spanned<Str<'i>>,
    mut rest: std::vec::IntoIter<Spanned<Str<'i>>>,
    value: Spanned<Value<'i>>,
) -> Result<(), Error> {
    loop {
        let existing = table.find(&key.value);
        let Some(next) = rest.next() else {
            if existing.is_some() {
                return Err(duplicate(&key));
            }
            table.push(key, value);
            return Ok(());
        };
        let n = match existing {
            Some(n) => match &table.entries[n].1.value {
                Value::Table(t) if t.dotted => n,
                _ => return Err(duplicate(&key)),
            },
            None => {
                let span = key.span();
                table.push(key, Spanned::new(span, Value::Table(Table::dotted())))
            }
        };
        table = match &mut table.entries[n].1.value {
            Value::Table(t) => t,
            _ => unreachable!("checked above"),
        };
        key = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shortcut past the decoders gives what they give, and leaves to them whatever they
    /// would change or refuse.
    #[test]
    fn verbatim_keys_and_strings_decode_as_the_decoders_do() {
        let samples = [
            "device",
            "a-b_C9",
            "",
            "a.b",
            "a b",
            "é",
            "\"0000:01:00.0\"",
            "\"\"",
            "\"a\\tb\"",
            "\"a\\\"",
            "\"a\tb é ~ [x]\"",
            "\"a\u{7f}\"",
            "\"a\u{1}\"",
            "\"",
            "\"a",
            "'lit'",
        ];
        for text in samples {
            let source = Source::new(text);
            for e in [EventKind::SimpleKey, EventKind::Scalar] {
                for encoding in [None, Some(Encoding::BasicString)] {
                    let event = Event::new_unchecked(
                        e,
                        encoding,
                        toml_parser::Span::new_unchecked(0, text.len()),
                    );
                    let key = e == EventKind::SimpleKey;
                    let Some(fast) = verbatim(text, encoding, key) else {
                        continue;
                    };
                    let raw = source.get(event).expect("in the text");
                    let mut decoded = Str::Borrowed("");
                    let mut errors: Vec<ParseError> = Vec::new();
                    if key {
                        raw.decode_key(&mut decoded, &mut errors);
                    } else {
                        let kind = raw.decode_scalar(&mut decoded, &mut errors);
                        assert!(matches!(kind, ScalarKind::String), "{text:?}");
                    }
                    assert!(errors.is_empty(), "{text:?} {encoding:?}: {errors:?}");
                    assert_eq!(fast, decoded, "{text:?} {encoding:?}");
                }
            }
        }
        assert_eq!(verbatim("device", None, true), Some("device"));
        assert_eq!(
            verbatim("\"vfio-pci\"", Some(Encoding::BasicString), false),
            Some("vfio-pci")
        );
        assert_eq!(
            verbatim("true", None, false),
            None,
            "unquoted values are decoded"
        );
        assert_eq!(
            verbatim("\"a\\tb\"", Some(Encoding::BasicString), false),
            None
        );
    }

    /// Reading in chunks changes nothing: each document of the fuzz corpus, and documents
    /// whose brackets, strings or errors span line ends, read the same (tree or error) with a
    /// chunk ending at every line end it may end at as in one piece.
    #[test]
    fn chunks_read_as_one_piece() {
        let corpus =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/policy_parse");
        let mut texts: Vec<String> = std::fs::read_dir(&corpus)
            .expect("the fuzz corpus")
            .map(|f| std::fs::read_to_string(f.expect("entry").path()).expect("UTF-8"))
            .collect();
        assert!(texts.len() > 30, "{}", corpus.display());
        for text in [
            "a = [\n1,\n[2],\n]\n[[reserve]]\ngroup = 1\n[[reserve]]\ngroup = 2\n",
            "x = {a = 1,\n[y]\nb = 2}\n",
            "a = \"\"\"\n[x]\n\"\"\"\n[y]\n",
            "a = '''\n[[x]]\n'''\n",
            "# [x\n[reserve]\n# ]\ngroup = 1\n",
            "a = ]\n[x]\nb = 1\n",
            "a = [1]]\n[[reserve]]\ngroup = 1\n",
            "a =\n[x]\n",
            "a = [1,\n[[reserve]]\ngroup = 1\n",
            "[[reserve]\ngroup = 1\n[[reserve]]\ngroup = 2\n",
            "[[reserve]]\ngroup = 1\ngroup = 2\n[[reserve]]\nx = \"\\q\"\n",
            "[[reserve]]\r\ngroup = 1\r\n\r\n[[reserve]]\r\n  device = \"0000:01:00.0\"\r\n",
            "\u{feff}[a]\nb.c = 1\nb.d = 2\n[e]\n",
            "[a]\nb = 1\n[a]\nc = 2\n",
            "a.b = 1\na.c = 2\na = 3\n",
            "\n\n\n",
            "",
        ] {
            texts.push(text.to_string());
        }
        for text in &texts {
            let whole = render(&read_in_chunks(text, usize::MAX));
            assert_eq!(render(&read_in_chunks(text, 1)), whole, "{text:?}");
            assert_eq!(render(&read(text)), whole, "{text:?}");
        }
    }

    /// A read tree as text, with every span (its key index left out: the same keys).
    fn render(r: &Result<Table<'_>, Error>) -> String {
        fn table(t: &Table<'_>, out: &mut String) {
            out.push_str(if t.dotted { "{." } else { "{" });
            for (k, v) in &t.entries {
                out.push_str(&format!("{:?}@{:?}=", k.value, k.span));
                value(v, out);
                out.push(',');
            }
            out.push('}');
        }
        fn value(v: &Spanned<Value<'_>>, out: &mut String) {
            match &v.value {
                Value::Array(items) => {
                    out.push('[');
                    for i in items {
                        value(i, out);
                        out.push(',');
                    }
                    out.push(']');
                }
                Value::Table(t) => table(t, out),
                other => out.push_str(&format!("{other:?}")),
            }
            out.push_str(&format!("@{:?}", v.span));
        }
        match r {
            Ok(t) => {
                let mut out = String::new();
                table(t, &mut out);
                out
            }
            Err(e) => format!("error {e:?}"),
        }
    }

    /// A table of many keys finds them in its index as it did by scanning.
    /// The tree is dropped recursively: depth from dotted keys and nesting is bounded as a
    /// whole, with an error at the key (a 10,000-part key overflowed the stack).
    #[test]
    fn deep_dotted_keys_are_an_error_not_a_stack_overflow() {
        let long: Vec<String> = (0..10_000).map(|i| format!("k{i}")).collect();
        let err = read(&format!("{} = 1\n", long.join("."))).expect_err("too deep");
        assert!(err.1.contains("nested deeper than 80"), "{err:?}");
        assert_eq!(err.0.start, 0);
        // Within an inline table inside arrays: nesting and key parts add up.
        let key: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
        let text = format!(
            "a = {}{{ {} = 1 }}{}\n",
            "[".repeat(30),
            key.join("."),
            "]".repeat(30)
        );
        let err = read(&text).expect_err("too deep");
        assert!(err.1.contains("nested deeper than 80"), "{err:?}");
        // Just under the bound reads.
        let key: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
        read(&format!(
            "a = {}{{ {} = 1 }}{}\n",
            "[".repeat(30),
            key.join("."),
            "]".repeat(30)
        ))
        .expect("79 levels");
    }

    #[test]
    fn large_tables_keep_every_key_and_refuse_duplicates() {
        let text: String = (0..100).map(|i| format!("k{i} = {i}\n")).collect();
        let root = read(&text).expect("valid");
        assert_eq!(root.entries.len(), 100);
        assert_eq!(root.find("k57"), Some(57));
        let again = format!("{text}k42 = 1\n");
        let (span, message) = read(&again).expect_err("duplicate");
        assert_eq!(message, "duplicate key `k42`");
        assert_eq!(&again[span], "k42");
        let dotted: String = (0..100).map(|i| format!("t.k{i} = {i}\n")).collect();
        let root = read(&format!("{dotted}t.k99.x = 1\n")).expect_err("k99 is an integer");
        assert_eq!(root.1, "duplicate key `k99`");
    }
}
