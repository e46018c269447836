//! The policy's TOML, read in one pass over the event stream of `toml_parser` (the lexer and
//! grammar under the `toml` crate) into a small tree of spanned values. Why not serde: building
//! `toml`'s document tree and deserialising it cost over a second for 200,000 reservations;
//! this costs the lexer plus one walk. Linear: each table holds at most a handful of keys
//! (the schema has six), except the one array that `[[reserve]]` headers append to.
//!
//! Syntax errors take `toml`'s own message and span (see [`read`]), so they read as before.
use std::ops::Range;

use toml_parser::decoder::ScalarKind;
use toml_parser::parser::{Event, EventKind, RecursionGuard, ValidateWhitespace};
use toml_parser::{ParseError, Source};

/// Arrays and inline tables nested deeper than this are a syntax error (as in `toml`).
const MAX_DEPTH: u32 = 80;

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

/// One TOML value, as far as the policy needs to tell them apart.
#[derive(Debug)]
pub enum Value {
    String(String),
    Integer(i64),
    Boolean(bool),
    Array(Vec<Spanned<Value>>),
    Table(Table),
    /// A float, a date-time or an integer out of i64's range: never valid in a policy.
    Other(&'static str),
}

impl Value {
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
pub struct Table {
    pub entries: Vec<(Spanned<String>, Spanned<Value>)>,
    /// Made by a dotted key (`a.b = 1`): later dotted keys may add to it.
    dotted: bool,
}

/// An error: where, and the message.
pub type Error = (Range<usize>, String);

/// The document's root table. `[[name]]` headers append tables to the array `name`; `[name]`
/// makes the table `name`; deeper header paths are not part of any policy and are refused.
pub fn read(text: &str) -> Result<Table, Error> {
    let source = Source::new(text);
    let tokens = source.lex().into_vec();
    let mut events: Vec<Event> = Vec::with_capacity(tokens.len());
    let mut errors: Vec<ParseError> = Vec::new();
    {
        let mut ws = ValidateWhitespace::new(&mut events, source);
        let mut guard = RecursionGuard::new(&mut ws, MAX_DEPTH);
        toml_parser::parser::parse_document(&tokens, &mut guard, &mut errors);
    }
    drop(tokens);
    let walked = if errors.is_empty() {
        let mut w = Walker {
            source,
            events: &events,
            at: 0,
            errors: &mut errors,
        };
        w.document()
    } else {
        Ok(Table::default())
    };
    if let Some(first) = errors.first() {
        return Err(syntax_error(text, first));
    }
    walked
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

struct Walker<'a, 'i> {
    source: Source<'i>,
    events: &'a [Event],
    at: usize,
    errors: &'a mut Vec<ParseError>,
}

/// Where key/value lines go: the root, or the last table of the root entry `n` (a `[name]`
/// table or the last element of a `[[name]]` array).
#[derive(Clone, Copy)]
enum Target {
    Root,
    Entry(usize),
}

impl Walker<'_, '_> {
    /// The next event that is not whitespace, a comment or a newline.
    fn next(&mut self) -> Option<Event> {
        while let Some(e) = self.events.get(self.at) {
            self.at += 1;
            if !matches!(
                e.kind(),
                EventKind::Whitespace | EventKind::Comment | EventKind::Newline
            ) {
                return Some(*e);
            }
        }
        None
    }

    fn peek(&mut self) -> Option<Event> {
        let at = self.at;
        let e = self.next();
        self.at = at;
        e
    }

    fn document(&mut self) -> Result<Table, Error> {
        let mut root = Table::default();
        // Root entries made by `[[name]]` headers (only those may be appended to).
        let mut array_tables: Vec<usize> = Vec::new();
        let mut target = Target::Root;
        while let Some(e) = self.next() {
            match e.kind() {
                EventKind::StdTableOpen | EventKind::ArrayTableOpen => {
                    let array = e.kind() == EventKind::ArrayTableOpen;
                    let open = span(&e);
                    let first = self.next();
                    let path = self.key_path(first)?;
                    let close = self.next().map(|e| span(&e)).unwrap_or(open.clone());
                    let header = open.start..close.end;
                    let [name] = <[_; 1]>::try_from(path).map_err(|path| {
                        let names: Vec<&str> = path.iter().map(|k| k.get_ref().as_str()).collect();
                        (
                            path[1].span(),
                            format!("table {} is not part of the policy", names.join(".")),
                        )
                    })?;
                    let existing = root.entries.iter().position(|(k, _)| k.value == name.value);
                    target = match (array, existing) {
                        (true, Some(n)) if array_tables.contains(&n) => {
                            let (_, v) = &mut root.entries[n];
                            if let Value::Array(items) = &mut v.value {
                                items.push(Spanned::new(header, Value::Table(Table::default())));
                            }
                            Target::Entry(n)
                        }
                        (_, Some(_)) => return Err(duplicate(&name)),
                        (true, None) => {
                            array_tables.push(root.entries.len());
                            let first =
                                Spanned::new(header.clone(), Value::Table(Table::default()));
                            root.entries
                                .push((name, Spanned::new(header, Value::Array(vec![first]))));
                            Target::Entry(root.entries.len() - 1)
                        }
                        (false, None) => {
                            root.entries
                                .push((name, Spanned::new(header, Value::Table(Table::default()))));
                            Target::Entry(root.entries.len() - 1)
                        }
                    };
                }
                EventKind::SimpleKey => {
                    let (path, value) = self.key_value(e)?;
                    let table = match target {
                        Target::Root => &mut root,
                        Target::Entry(n) => last_table(&mut root.entries[n].1.value),
                    };
                    insert(table, path, value)?;
                }
                _ => return Err(unexpected(&e)),
            }
        }
        Ok(root)
    }

    /// `a.b.c` starting at `first`, decoded (quoted keys included).
    fn key_path(&mut self, first: Option<Event>) -> Result<Vec<Spanned<String>>, Error> {
        let mut path = Vec::new();
        let mut e = first;
        loop {
            let key = match e {
                Some(k) if k.kind() == EventKind::SimpleKey => k,
                Some(other) => return Err(unexpected(&other)),
                None => return Err((0..0, "a key is missing".to_string())),
            };
            let mut name = String::new();
            if let Some(raw) = self.source.get(key) {
                raw.decode_key(&mut name, self.errors);
            }
            path.push(Spanned::new(span(&key), name));
            if self.peek().map(|e| e.kind()) != Some(EventKind::KeySep) {
                return Ok(path);
            }
            self.next();
            e = self.next();
        }
    }

    /// `key = value` starting at the key event `first`.
    fn key_value(&mut self, first: Event) -> Result<(Vec<Spanned<String>>, Spanned<Value>), Error> {
        let path = self.key_path(Some(first))?;
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

    fn value(&mut self, e: Event) -> Result<Spanned<Value>, Error> {
        let start = span(&e).start;
        match e.kind() {
            EventKind::Scalar => Ok(Spanned::new(span(&e), self.scalar(&e))),
            EventKind::ArrayOpen => {
                let mut items = Vec::new();
                loop {
                    match self.next() {
                        Some(c) if c.kind() == EventKind::ArrayClose => {
                            return Ok(Spanned::new(start..span(&c).end, Value::Array(items)))
                        }
                        Some(s) if s.kind() == EventKind::ValueSep => {}
                        Some(v) => items.push(self.value(v)?),
                        None => return Err((span(&e), "unclosed array".to_string())),
                    }
                }
            }
            EventKind::InlineTableOpen => {
                let mut table = Table::default();
                loop {
                    match self.next() {
                        Some(c) if c.kind() == EventKind::InlineTableClose => {
                            return Ok(Spanned::new(start..span(&c).end, Value::Table(table)))
                        }
                        Some(s) if s.kind() == EventKind::ValueSep => {}
                        Some(k) if k.kind() == EventKind::SimpleKey => {
                            let (path, value) = self.key_value(k)?;
                            insert(&mut table, path, value)?;
                        }
                        Some(other) => return Err(unexpected(&other)),
                        None => return Err((span(&e), "unclosed inline table".to_string())),
                    }
                }
            }
            _ => Err(unexpected(&e)),
        }
    }

    fn scalar(&mut self, e: &Event) -> Value {
        let Some(raw) = self.source.get(e) else {
            return Value::Other("value");
        };
        let mut decoded = String::new();
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

fn span(e: &Event) -> Range<usize> {
    e.span().start()..e.span().end()
}

fn unexpected(e: &Event) -> Error {
    (span(e), format!("unexpected {}", e.kind().description()))
}

fn duplicate(key: &Spanned<String>) -> Error {
    (key.span(), format!("duplicate key `{}`", key.value))
}

/// The table `[[name]]` or `[name]` lines go into: the last element of an array of tables.
fn last_table(v: &mut Value) -> &mut Table {
    match v {
        Value::Array(items) => match items.last_mut().map(|i| &mut i.value) {
            Some(Value::Table(t)) => t,
            _ => unreachable!("array-of-tables entries always end in a table"),
        },
        Value::Table(t) => t,
        _ => unreachable!("header entries are tables or arrays of tables"),
    }
}

/// `a.b.c = value` into `table`: intermediate dotted tables made or extended, a key given
/// twice refused as TOML refuses it.
fn insert(
    table: &mut Table,
    mut path: Vec<Spanned<String>>,
    value: Spanned<Value>,
) -> Result<(), Error> {
    let key = path.remove(0);
    let existing = table.entries.iter().position(|(k, _)| k.value == key.value);
    if path.is_empty() {
        if existing.is_some() {
            return Err(duplicate(&key));
        }
        table.entries.push((key, value));
        return Ok(());
    }
    let n = match existing {
        Some(n) => match &table.entries[n].1.value {
            Value::Table(t) if t.dotted => n,
            _ => return Err(duplicate(&key)),
        },
        None => {
            let span = key.span();
            let sub = Table {
                entries: Vec::new(),
                dotted: true,
            };
            table
                .entries
                .push((key, Spanned::new(span, Value::Table(sub))));
            table.entries.len() - 1
        }
    };
    match &mut table.entries[n].1.value {
        Value::Table(t) => insert(t, path, value),
        _ => unreachable!("checked above"),
    }
}
