//! Per-file analysis: parse with tree-sitter (bounded by a timeout), then
//! extract symbol definitions, syntax-aware chunks and the identifiers each
//! chunk uses. Files without a grammar, and files whose parse timed out, get
//! line-window chunks.

use std::cell::RefCell;
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::ControlFlow;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tree_sitter::{Node, ParseOptions, ParseState, Parser, Tree};

use crate::chunk::{ChunkConfig, LineIndex, line_windows, merge_units, truncate_at_char};
use crate::code_tokenizer::{MAX_TOKEN_BYTES, identifiers};
use crate::languages::{ALL_LANGUAGES, DefRule, Language, NameRule, SymbolKind};

/// Settings for [`analyze`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParseConfig {
    /// Chunk bounds.
    pub chunk: ChunkConfig,
    /// A parse running longer than this is abandoned and the file gets line windows.
    pub timeout: Duration,
    /// Type-like definitions show at most this many lines of their body.
    pub max_definition_lines: usize,
    /// Definition snippets are cut at this many bytes.
    pub max_definition_bytes: usize,
}

impl Default for ParseConfig {
    fn default() -> Self {
        ParseConfig {
            chunk: ChunkConfig::default(),
            timeout: Duration::from_secs(2),
            max_definition_lines: 30,
            max_definition_bytes: 1500,
        }
    }
}

/// A symbol definition found in a file. Lines are 1-based and inclusive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Symbol {
    /// The defined name (`parse_request`, `Server`).
    pub name: String,
    /// What the definition introduces.
    pub kind: SymbolKind,
    /// First line of the definition.
    pub start_line: u32,
    /// Last line of the definition.
    pub end_line: u32,
    /// The definition's header on one line (`fn parse(input: &str) -> Result<Ast>`).
    pub signature: String,
    /// Enclosing scopes, outermost first, joined by `::` (`Server::Builder`); empty at top level.
    pub scope: String,
    /// What to show a model for this definition: the header of a function,
    /// the first lines of a type.
    pub snippet: String,
    /// Last line of `snippet`.
    pub snippet_end_line: u32,
}

/// A chunk of a file. Lines are 1-based and inclusive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// First line.
    pub start_line: u32,
    /// Last line.
    pub end_line: u32,
    /// The chunk's text.
    pub text: String,
    /// Distinct identifiers used in the chunk, in order of first use.
    pub identifiers: Vec<String>,
    /// Names of the symbols whose definition starts in this chunk.
    pub defines: Vec<String>,
    /// The innermost definition enclosing the whole chunk (`impl Server`, `fn run`), if any.
    pub scope: String,
}

/// The result of analysing one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Analysis {
    /// Symbol definitions, in source order.
    pub symbols: Vec<Symbol>,
    /// Chunks, in source order, non-overlapping.
    pub chunks: Vec<Chunk>,
    /// The parse was abandoned after [`ParseConfig::timeout`]; chunks are line windows.
    pub timed_out: bool,
    /// The syntax tree contains errors (the file was still indexed).
    pub has_syntax_errors: bool,
}

/// Per-grammar lookup tables indexed by node kind id.
struct LangTables {
    defs: Vec<Option<DefRule>>,
    /// Kinds whose `body` holds code, not definitions worth indexing
    /// (functions, methods, lambdas): the walk does not enter it.
    skip_body: Vec<bool>,
}

fn tables(lang: Language) -> Option<&'static LangTables> {
    static TABLES: [OnceLock<Option<LangTables>>; ALL_LANGUAGES.len()] =
        [const { OnceLock::new() }; ALL_LANGUAGES.len()];
    let slot = ALL_LANGUAGES.iter().position(|&l| l == lang)?;
    TABLES[slot]
        .get_or_init(|| {
            let grammar = lang.grammar()?;
            let count = grammar.node_kind_count();
            let mut defs = Vec::with_capacity(count);
            let mut skip_body = Vec::with_capacity(count);
            for id in 0..count {
                let id = u16::try_from(id).unwrap_or(u16::MAX);
                let name = grammar.node_kind_for_id(id).unwrap_or("");
                let named = grammar.node_kind_is_named(id);
                let def = if named { lang.definition(name) } else { None };
                let function_like = ["function", "method", "lambda", "closure", "arrow"]
                    .iter()
                    .any(|w| name.contains(w));
                let code_body = def
                    .is_some_and(|d| matches!(d.kind, SymbolKind::Function | SymbolKind::Method));
                defs.push(def);
                skip_body.push(named && (function_like || code_body));
            }
            Some(LangTables { defs, skip_body })
        })
        .as_ref()
}

thread_local! {
    static PARSERS: RefCell<Vec<Option<Parser>>> = const { RefCell::new(Vec::new()) };
}

/// Parses `text` with a parser cached for this thread; `None` on timeout.
fn parse_tree(lang: Language, text: &str, timeout: Duration) -> Option<Tree> {
    let slot = ALL_LANGUAGES.iter().position(|&l| l == lang)?;
    PARSERS.with(|cell| {
        let mut parsers = cell.borrow_mut();
        if parsers.len() < ALL_LANGUAGES.len() {
            parsers.resize_with(ALL_LANGUAGES.len(), || None);
        }
        if parsers[slot].is_none() {
            let mut parser = Parser::new();
            parser.set_language(&lang.grammar()?).ok()?;
            parsers[slot] = Some(parser);
        }
        let parser = parsers[slot].as_mut()?;
        let deadline = Instant::now() + timeout;
        let mut on_progress = |_: &ParseState| {
            if Instant::now() >= deadline {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        let bytes = text.as_bytes();
        let mut read = |offset: usize, _| bytes.get(offset..).unwrap_or(&[]);
        let options = ParseOptions::new().progress_callback(&mut on_progress);
        let tree = parser.parse_with_options(&mut read, None, Some(options));
        if tree.is_none() {
            parser.reset();
        }
        tree
    })
}

/// Analyses one file's text as `lang`.
pub fn analyze(text: &str, lang: Language, cfg: &ParseConfig) -> Analysis {
    let lines = LineIndex::new(text);
    if lines.line_count() == 0 {
        return Analysis::default();
    }
    let tables = tables(lang);
    let tree = match tables {
        Some(_) => parse_tree(lang, text, cfg.timeout),
        None => None,
    };
    match (tables, tree) {
        (Some(tables), Some(tree)) => analyze_tree(text, lang, &lines, tables, &tree, cfg),
        (Some(_), None) => {
            let mut analysis = text_analysis(text, &lines, cfg);
            analysis.timed_out = true;
            analysis
        }
        (None, _) => text_analysis(text, &lines, cfg),
    }
}

/// Line-window chunks with identifiers found by scanning the text.
fn text_analysis(text: &str, lines: &LineIndex, cfg: &ParseConfig) -> Analysis {
    let mut ranges = Vec::new();
    line_windows(
        0,
        lines.line_count() - 1,
        cfg.chunk.text_window_lines,
        lines,
        cfg.chunk.max_bytes,
        &mut ranges,
    );
    let chunks = ranges
        .into_iter()
        .map(|(s, e)| {
            let body = lines.text(text, s, e, cfg.chunk.max_bytes * 2);
            Chunk {
                start_line: line_no(s),
                end_line: line_no(e),
                text: body.to_string(),
                identifiers: chunk_identifiers(body),
                defines: Vec::new(),
                scope: String::new(),
            }
        })
        .collect();
    Analysis {
        chunks,
        ..Analysis::default()
    }
}

fn line_no(row: usize) -> u32 {
    u32::try_from(row + 1).unwrap_or(u32::MAX)
}

/// Inclusive rows of a node; a node ending at column 0 ends on the previous row.
fn rows(node: &Node) -> (usize, usize) {
    let s = node.start_position().row;
    let end = node.end_position();
    let e = if end.column == 0 && end.row > s {
        end.row - 1
    } else {
        end.row
    };
    (s, e.max(s))
}

struct RawSymbol {
    sym: Symbol,
    start_row: usize,
    end_row: usize,
}

fn analyze_tree(
    text: &str,
    lang: Language,
    lines: &LineIndex,
    tables: &LangTables,
    tree: &Tree,
    cfg: &ParseConfig,
) -> Analysis {
    let root = tree.root_node();
    let mut symbols: Vec<RawSymbol> = Vec::new();
    // (depth, scope name) of enclosing scope-defining symbols.
    let mut scopes: Vec<(usize, String)> = Vec::new();
    // Byte ranges of function bodies: the walk does not enter them, so it
    // visits declarations, not every node of the file.
    let mut skip: Option<(usize, usize)> = None;
    let mut cursor = root.walk();
    let mut depth = 0usize;
    'walk: loop {
        let node = cursor.node();
        while scopes.last().is_some_and(|(d, _)| *d >= depth) {
            scopes.pop();
        }
        let id = usize::from(node.kind_id());
        let mut enter = node.child_count() > 0;
        if skip == Some((node.start_byte(), node.end_byte())) && node.is_named() {
            enter = false;
        } else if enter {
            if tables.skip_body.get(id).copied().unwrap_or(false) {
                skip = node
                    .child_by_field_name("body")
                    .map(|b| (b.start_byte(), b.end_byte()));
            }
            if let Some(rule) = tables.defs.get(id).copied().flatten()
                && let Some((name, extra_scope)) = definition_name(&node, rule, text)
            {
                let mut scope: Vec<&str> = scopes.iter().map(|(_, s)| s.as_str()).collect();
                if let Some(extra) = extra_scope.as_deref() {
                    scope.push(extra);
                }
                let scope = scope.join("::");
                let sym = build_symbol(&node, &name, rule.kind, scope, lang, text, lines, cfg);
                let (start_row, end_row) = rows(&node);
                if rule.kind.is_scope() {
                    scopes.push((depth, name.clone()));
                }
                symbols.push(RawSymbol {
                    sym,
                    start_row,
                    end_row,
                });
            }
        }
        if enter && cursor.goto_first_child() {
            depth += 1;
            continue;
        }
        loop {
            if cursor.goto_next_sibling() {
                continue 'walk;
            }
            if !cursor.goto_parent() {
                break 'walk;
            }
            depth = depth.saturating_sub(1);
        }
    }

    let ranges = syntax_ranges(root, lines, &cfg.chunk);
    let chunks = assemble_chunks(text, lines, &ranges, &symbols, cfg);
    Analysis {
        symbols: symbols.into_iter().map(|r| r.sym).collect(),
        chunks,
        timed_out: false,
        has_syntax_errors: root.has_error(),
    }
}

/// The last segment of a qualified name, without generic arguments.
fn simple_name(raw: &str) -> &str {
    let base = raw.split(['<', '(', '[']).next().unwrap_or(raw);
    let last = base.rsplit("::").next().unwrap_or(base);
    let last = last.rsplit('.').next().unwrap_or(last);
    last.trim()
}

/// The name of a definition node and, for qualified C++ names or Go
/// receivers, an extra scope (`Foo` for `Foo::bar`).
fn definition_name(node: &Node, rule: DefRule, text: &str) -> Option<(String, Option<String>)> {
    let node_text = |n: Node| text.get(n.byte_range());
    let (name_node, extra) = match rule.name {
        NameRule::Field(field) => (node.child_by_field_name(field)?, None),
        NameRule::FieldWithBody => {
            node.child_by_field_name("body")?;
            (node.child_by_field_name("name")?, None)
        }
        NameRule::FunctionValue => {
            let value = node.child_by_field_name("value")?;
            match value.kind() {
                "arrow_function" | "function_expression" | "function" | "generator_function" => {}
                _ => return None,
            }
            (node.child_by_field_name("name")?, None)
        }
        NameRule::Declarator => {
            let mut cur = node.child_by_field_name("declarator")?;
            let mut steps = 0;
            loop {
                steps += 1;
                if steps > 32 {
                    return None;
                }
                match cur.kind() {
                    "identifier" | "field_identifier" | "type_identifier" | "destructor_name"
                    | "operator_name" | "primitive_type" => break (cur, None),
                    "qualified_identifier" => {
                        let full = node_text(cur)?;
                        let qualifier = full
                            .rsplit_once("::")
                            .map(|(q, _)| simple_name(q).to_string())
                            .filter(|q| !q.is_empty());
                        break (cur, qualifier);
                    }
                    _ => cur = cur.child_by_field_name("declarator")?,
                }
            }
        }
    };
    let raw = node_text(name_node)?;
    let name = simple_name(raw);
    if name.is_empty() || name.len() > 200 {
        return None;
    }
    let mut extra = extra;
    if node.kind() == "method_declaration" && extra.is_none() {
        // Go: the receiver type scopes the method.
        if let Some(receiver) = node.child_by_field_name("receiver") {
            extra = node_text(receiver)
                .and_then(|r| identifiers(r).last())
                .map(str::to_string);
        }
    }
    Some((name.to_string(), extra))
}

/// Collapses runs of whitespace to single spaces, cut at `cap` bytes.
fn one_line(s: &str, cap: usize) -> String {
    let mut out = String::with_capacity(s.len().min(cap));
    for word in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
        if out.len() >= cap {
            break;
        }
    }
    truncate_at_char(&out, cap).to_string()
}

#[allow(clippy::too_many_arguments)]
fn build_symbol(
    node: &Node,
    name: &str,
    kind: SymbolKind,
    scope: String,
    lang: Language,
    text: &str,
    lines: &LineIndex,
    cfg: &ParseConfig,
) -> Symbol {
    let (start_row, end_row) = rows(node);
    let body = node.child_by_field_name("body");
    let header_end_byte = body.map_or(node.end_byte(), |b| b.start_byte());
    let header = text.get(node.start_byte()..header_end_byte).unwrap_or("");
    let header = if body.is_none() {
        header.lines().next().unwrap_or("")
    } else {
        header
    };
    let signature = one_line(header.trim_end_matches(['{', ':', ' ']), 240);
    let snippet_end_row = if kind.shows_body() {
        end_row.min(start_row + cfg.max_definition_lines.saturating_sub(1))
    } else {
        let body_row = body.map_or(start_row, |b| b.start_position().row);
        let braceless = matches!(lang, Language::Python | Language::Ruby);
        let header_end = if braceless && body_row > start_row {
            body_row - 1
        } else {
            body_row
        };
        header_end.clamp(start_row, start_row + 5).min(end_row)
    };
    let snippet = lines
        .text(text, start_row, snippet_end_row, cfg.max_definition_bytes)
        .to_string();
    Symbol {
        name: name.to_string(),
        kind,
        start_line: line_no(start_row),
        end_line: line_no(end_row),
        signature,
        scope,
        snippet,
        snippet_end_line: line_no(snippet_end_row),
    }
}

/// Syntax units (inclusive row ranges) of the tree that fit the chunk
/// bounds: nodes that are too large are opened up, leaves that are too
/// large are cut into line windows. Iterative, so deep trees cannot
/// overflow the stack.
fn syntax_ranges(root: Node, lines: &LineIndex, cfg: &ChunkConfig) -> Vec<(usize, usize)> {
    let fits = |s: usize, e: usize| {
        s == e || (e - s < cfg.max_lines && lines.bytes(s, e) <= cfg.max_bytes)
    };
    let mut units = Vec::new();
    let mut stack = vec![root];
    while let Some(node) = stack.pop() {
        let mut cursor = node.walk();
        for child in node.children(&mut cursor) {
            let (s, e) = rows(&child);
            if fits(s, e) {
                units.push((s, e));
            } else if child.child_count() > 0 {
                stack.push(child);
            } else {
                line_windows(s, e, cfg.max_lines, lines, cfg.max_bytes, &mut units);
            }
        }
    }
    if units.is_empty() && lines.line_count() > 0 {
        line_windows(
            0,
            lines.line_count() - 1,
            cfg.text_window_lines,
            lines,
            cfg.max_bytes,
            &mut units,
        );
    }
    merge_units(units, lines, cfg)
}

fn assemble_chunks(
    text: &str,
    lines: &LineIndex,
    ranges: &[(usize, usize)],
    symbols: &[RawSymbol],
    cfg: &ParseConfig,
) -> Vec<Chunk> {
    let mut chunks = Vec::with_capacity(ranges.len());
    for &(s, e) in ranges {
        let body = lines.text(text, s, e, cfg.chunk.max_bytes * 2);
        let defines = symbols
            .iter()
            .filter(|r| r.start_row >= s && r.start_row <= e)
            .map(|r| r.sym.name.clone())
            .collect();
        let scope = symbols
            .iter()
            .filter(|r| r.start_row <= s && r.end_row >= e && (r.start_row < s || r.end_row > e))
            .min_by_key(|r| r.end_row - r.start_row)
            .map(|r| {
                if r.sym.scope.is_empty() {
                    format!("{} {}", r.sym.kind.name(), r.sym.name)
                } else {
                    format!("{} {}::{}", r.sym.kind.name(), r.sym.scope, r.sym.name)
                }
            })
            .unwrap_or_default();
        chunks.push(Chunk {
            start_line: line_no(s),
            end_line: line_no(e),
            text: body.to_string(),
            identifiers: chunk_identifiers(body),
            defines,
            scope,
        });
    }
    chunks
}

/// A small, fast, non-cryptographic hasher for short keys (identifiers).
#[derive(Default)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Distinct identifiers of a chunk's text, in order of first use (one-letter
/// names and overlong runs left out).
pub(crate) fn chunk_identifiers(text: &str) -> Vec<String> {
    let mut seen: HashSet<&str, BuildHasherDefault<FxHasher>> = HashSet::default();
    identifiers(text)
        .filter(|id| id.len() > 1 && id.len() <= MAX_TOKEN_BYTES && seen.insert(id))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(a: &Analysis) -> Vec<(String, SymbolKind, String)> {
        a.symbols
            .iter()
            .map(|s| (s.name.clone(), s.kind, s.scope.clone()))
            .collect()
    }

    #[test]
    fn rust_symbols_and_scopes() {
        let src = "use std::fmt;\n\npub struct Server {\n    port: u16,\n}\n\nimpl Server {\n    pub fn start(&self, port: u16) -> bool {\n        let x = helper(port);\n        x\n    }\n}\n\nfn helper(p: u16) -> bool { p > 0 }\n";
        let a = analyze(src, Language::Rust, &ParseConfig::default());
        assert!(!a.timed_out);
        let n = names(&a);
        assert!(n.contains(&("Server".into(), SymbolKind::Struct, String::new())));
        assert!(n.contains(&("Server".into(), SymbolKind::Impl, String::new())));
        assert!(n.contains(&("start".into(), SymbolKind::Function, "Server".into())));
        assert!(n.contains(&("helper".into(), SymbolKind::Function, String::new())));
        let start = a.symbols.iter().find(|s| s.name == "start");
        let start = start.map(|s| (s.start_line, s.end_line, s.signature.clone()));
        assert_eq!(
            start,
            Some((8, 11, "pub fn start(&self, port: u16) -> bool".to_string()))
        );
        let all_idents: Vec<&String> = a.chunks.iter().flat_map(|c| &c.identifiers).collect();
        assert!(all_idents.iter().any(|i| *i == "helper"));
        assert!(all_idents.iter().any(|i| *i == "port"));
        // Chunks cover the file in order without overlap.
        for w in a.chunks.windows(2) {
            assert!(w[0].end_line < w[1].start_line);
        }
    }

    #[test]
    fn python_class_and_methods() {
        let src = "import os\n\nclass Greeter:\n    \"\"\"Greets.\"\"\"\n    def greet(self, name):\n        return 'hi ' + name\n\ndef main():\n    Greeter().greet('x')\n";
        let a = analyze(src, Language::Python, &ParseConfig::default());
        let n = names(&a);
        assert!(n.contains(&("Greeter".into(), SymbolKind::Class, String::new())));
        assert!(n.contains(&("greet".into(), SymbolKind::Function, "Greeter".into())));
        assert!(n.contains(&("main".into(), SymbolKind::Function, String::new())));
        let greet = a.symbols.iter().find(|s| s.name == "greet");
        assert_eq!(
            greet.map(|s| s.snippet.as_str()),
            Some("    def greet(self, name):")
        );
    }

    #[test]
    fn c_cpp_go_java_js_ts_ruby_bash_symbols() {
        let cases: &[(Language, &str, &str)] = &[
            (
                Language::C,
                "static int *make_thing(int n) {\n  return 0;\n}\nstruct point { int x; };\n#define MAX(a,b) ((a)>(b)?(a):(b))\n",
                "make_thing point MAX",
            ),
            (
                Language::Cpp,
                "namespace ns {\nclass Widget {\n public:\n  void draw();\n};\nvoid Widget::draw() {}\n}\n",
                "ns Widget draw",
            ),
            (
                Language::Go,
                "package main\n\ntype Server struct{}\n\nfunc (s *Server) Run() error { return nil }\n\nfunc main() {}\n",
                "Server Run main",
            ),
            (
                Language::Java,
                "class Account {\n  Account() {}\n  int balance() { return 0; }\n}\n",
                "Account balance",
            ),
            (
                Language::JavaScript,
                "function add(a, b) { return a + b; }\nconst mul = (a, b) => a * b;\nclass K { m() {} }\n",
                "add mul K m",
            ),
            (
                Language::TypeScript,
                "interface Shape { area(): number }\ntype Id = string;\nenum Color { Red }\nexport function f(x: number): number { return x }\n",
                "Shape area Id Color f",
            ),
            (
                Language::Tsx,
                "export function App(): JSX.Element { return <div/>; }\n",
                "App",
            ),
            (
                Language::Ruby,
                "module Util\n  class Parser\n    def parse(s)\n      s\n    end\n  end\nend\n",
                "Util Parser parse",
            ),
            (
                Language::Bash,
                "#!/bin/bash\nsetup() {\n  echo hi\n}\n",
                "setup",
            ),
        ];
        for (lang, src, expected) in cases {
            let a = analyze(src, *lang, &ParseConfig::default());
            let got: Vec<&str> = a.symbols.iter().map(|s| s.name.as_str()).collect();
            for want in expected.split(' ') {
                assert!(got.contains(&want), "{lang:?}: {want} not in {got:?}");
            }
        }
        let cpp = analyze(cases[1].1, Language::Cpp, &ParseConfig::default());
        let out_of_class = cpp
            .symbols
            .iter()
            .find(|s| s.name == "draw" && s.start_line == 6);
        assert_eq!(out_of_class.map(|s| s.scope.as_str()), Some("ns::Widget"));
    }

    #[test]
    fn large_function_is_split_within_bounds() {
        let mut src = String::from("fn big() {\n");
        for i in 0..500 {
            src.push_str(&format!("    let v{i} = compute_{i}(v{});\n", i.max(1) - 1));
        }
        src.push_str("}\n");
        let cfg = ParseConfig::default();
        let a = analyze(&src, Language::Rust, &cfg);
        assert!(a.chunks.len() > 5);
        for c in &a.chunks {
            assert!((c.end_line - c.start_line) as usize <= cfg.chunk.max_lines);
            assert!(c.text.len() <= cfg.chunk.max_bytes);
            assert_eq!(c.scope, "function big");
        }
        assert_eq!(a.chunks.first().map(|c| c.start_line), Some(1));
        assert_eq!(a.chunks.last().map(|c| c.end_line), Some(502));
    }

    #[test]
    fn text_files_get_windows() {
        let src: String = (0..95).map(|i| format!("word{i} other\n")).collect();
        let a = analyze(&src, Language::Text, &ParseConfig::default());
        assert_eq!(a.chunks.len(), 3);
        assert!(a.symbols.is_empty());
        assert!(a.chunks[0].identifiers.contains(&"word0".to_string()));
    }

    #[test]
    fn timeout_falls_back_to_windows() {
        let mut src = String::new();
        for i in 0..20_000 {
            src.push_str(&format!("fn f{i}(a: u32) -> u32 {{ a + {i} }}\n"));
        }
        let cfg = ParseConfig {
            timeout: Duration::from_micros(1),
            ..ParseConfig::default()
        };
        let a = analyze(&src, Language::Rust, &cfg);
        assert!(a.timed_out);
        assert!(a.symbols.is_empty());
        assert!(!a.chunks.is_empty());
        // The parser is reusable after an abandoned parse.
        let b = analyze("fn ok() {}\n", Language::Rust, &ParseConfig::default());
        assert_eq!(b.symbols.len(), 1);
    }

    #[test]
    fn deeply_nested_input_does_not_overflow() {
        let depth = 50_000;
        let src = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let a = analyze(&src, Language::Json, &ParseConfig::default());
        assert!(!a.chunks.is_empty());
    }
}
