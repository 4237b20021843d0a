//! Language detection and per-language syntax tables.
//!
//! A [`Language`] is detected from a file's path (extension or well-known
//! file name) and, for extension-less scripts, from the shebang line. Each
//! language with a tree-sitter grammar has a table of the node kinds that
//! define symbols; everything else is indexed as plain text.

use serde::{Deserialize, Serialize};

/// A language the indexer knows about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// Rust (`.rs`).
    Rust,
    /// Python (`.py`, `.pyi`).
    Python,
    /// JavaScript (`.js`, `.mjs`, `.cjs`, `.jsx`).
    JavaScript,
    /// TypeScript (`.ts`, `.mts`, `.cts`).
    TypeScript,
    /// TypeScript with JSX (`.tsx`).
    Tsx,
    /// Go (`.go`).
    Go,
    /// Java (`.java`).
    Java,
    /// C (`.c`, `.h`).
    C,
    /// C++ (`.cc`, `.cpp`, `.hpp`, ...).
    Cpp,
    /// Ruby (`.rb`).
    Ruby,
    /// Bash and POSIX shell (`.sh`, `.bash`).
    Bash,
    /// JSON (`.json`).
    Json,
    /// Any other text file: indexed with line-window chunks.
    Text,
}

/// Every language, in a stable order.
pub const ALL_LANGUAGES: [Language; 13] = [
    Language::Rust,
    Language::Python,
    Language::JavaScript,
    Language::TypeScript,
    Language::Tsx,
    Language::Go,
    Language::Java,
    Language::C,
    Language::Cpp,
    Language::Ruby,
    Language::Bash,
    Language::Json,
    Language::Text,
];

impl Language {
    /// The stable lowercase name stored in the index (`"rust"`, `"tsx"`, `"text"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::Python => "python",
            Language::JavaScript => "javascript",
            Language::TypeScript => "typescript",
            Language::Tsx => "tsx",
            Language::Go => "go",
            Language::Java => "java",
            Language::C => "c",
            Language::Cpp => "cpp",
            Language::Ruby => "ruby",
            Language::Bash => "bash",
            Language::Json => "json",
            Language::Text => "text",
        }
    }

    /// Parses a language name as stored in the index or given by an editor
    /// (accepts a few common aliases such as `"py"`, `"js"`, `"c++"`, `"shell"`).
    pub fn from_name(name: &str) -> Option<Language> {
        let lower = name.trim().to_ascii_lowercase();
        let lang = match lower.as_str() {
            "rust" | "rs" => Language::Rust,
            "python" | "py" => Language::Python,
            "javascript" | "js" | "javascriptreact" | "jsx" => Language::JavaScript,
            "typescript" | "ts" => Language::TypeScript,
            "tsx" | "typescriptreact" => Language::Tsx,
            "go" | "golang" => Language::Go,
            "java" => Language::Java,
            "c" => Language::C,
            "cpp" | "c++" | "cxx" => Language::Cpp,
            "ruby" | "rb" => Language::Ruby,
            "bash" | "sh" | "shell" | "shellscript" | "zsh" => Language::Bash,
            "json" | "jsonc" => Language::Json,
            "text" | "plaintext" => Language::Text,
            _ => return None,
        };
        Some(lang)
    }

    /// Detects the language of a repository-relative path from its file name
    /// alone. Returns `None` when the name says nothing (the caller may then
    /// look at a shebang with [`Language::from_shebang`] or fall back to text).
    pub fn from_path(path: &str) -> Option<Language> {
        let file_name = path.rsplit('/').next().unwrap_or(path);
        match file_name {
            "Rakefile" | "Gemfile" | "Guardfile" | "Vagrantfile" => return Some(Language::Ruby),
            ".bashrc" | ".bash_profile" | ".profile" | "PKGBUILD" => return Some(Language::Bash),
            _ => {}
        }
        let ext = file_name.rsplit_once('.')?.1.to_ascii_lowercase();
        let lang = match ext.as_str() {
            "rs" => Language::Rust,
            "py" | "pyi" | "pyw" => Language::Python,
            "js" | "mjs" | "cjs" | "jsx" => Language::JavaScript,
            "ts" | "mts" | "cts" => Language::TypeScript,
            "tsx" => Language::Tsx,
            "go" => Language::Go,
            "java" => Language::Java,
            "c" | "h" => Language::C,
            "cc" | "cpp" | "cxx" | "c++" | "hh" | "hpp" | "hxx" | "h++" | "ipp" | "inl" | "tpp" => {
                Language::Cpp
            }
            "rb" | "rake" | "gemspec" => Language::Ruby,
            "sh" | "bash" | "zsh" | "ksh" => Language::Bash,
            "json" => Language::Json,
            _ => return None,
        };
        Some(lang)
    }

    /// Detects a scripting language from a `#!` line at the start of `text`.
    pub fn from_shebang(text: &str) -> Option<Language> {
        let first = text.lines().next()?;
        let rest = first.strip_prefix("#!")?;
        let mut words = rest.split_whitespace();
        let mut program = words.next()?.rsplit('/').next()?;
        if program == "env" {
            program = words.find(|w| !w.starts_with('-'))?;
        }
        let program = program.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
        match program {
            "python" => Some(Language::Python),
            "bash" | "sh" | "zsh" | "ksh" | "dash" => Some(Language::Bash),
            "ruby" => Some(Language::Ruby),
            "node" | "nodejs" => Some(Language::JavaScript),
            _ => None,
        }
    }

    /// The tree-sitter grammar, or `None` for [`Language::Text`].
    pub fn grammar(self) -> Option<tree_sitter::Language> {
        let lang_fn = match self {
            Language::Rust => tree_sitter_rust::LANGUAGE,
            Language::Python => tree_sitter_python::LANGUAGE,
            Language::JavaScript => tree_sitter_javascript::LANGUAGE,
            Language::TypeScript => tree_sitter_typescript::LANGUAGE_TYPESCRIPT,
            Language::Tsx => tree_sitter_typescript::LANGUAGE_TSX,
            Language::Go => tree_sitter_go::LANGUAGE,
            Language::Java => tree_sitter_java::LANGUAGE,
            Language::C => tree_sitter_c::LANGUAGE,
            Language::Cpp => tree_sitter_cpp::LANGUAGE,
            Language::Ruby => tree_sitter_ruby::LANGUAGE,
            Language::Bash => tree_sitter_bash::LANGUAGE,
            Language::Json => tree_sitter_json::LANGUAGE,
            Language::Text => return None,
        };
        Some(lang_fn.into())
    }

    /// The symbol-defining node kind `kind`, if it defines one in this language.
    pub(crate) fn definition(self, kind: &str) -> Option<DefRule> {
        use DefRule as D;
        use SymbolKind as K;
        let rule = match self {
            Language::Rust => match kind {
                "function_item" | "function_signature_item" => D::named(K::Function),
                "struct_item" => D::named(K::Struct),
                "union_item" => D::named(K::Struct),
                "enum_item" => D::named(K::Enum),
                "trait_item" => D::named(K::Trait),
                "impl_item" => D::field(K::Impl, "type"),
                "mod_item" => D::named(K::Module),
                "type_item" => D::named(K::Type),
                "const_item" | "static_item" => D::named(K::Constant),
                "macro_definition" => D::named(K::Macro),
                _ => return None,
            },
            Language::Python => match kind {
                "function_definition" => D::named(K::Function),
                "class_definition" => D::named(K::Class),
                _ => return None,
            },
            Language::JavaScript | Language::TypeScript | Language::Tsx => match kind {
                "function_declaration"
                | "generator_function_declaration"
                | "function_signature" => D::named(K::Function),
                "method_definition" | "method_signature" | "abstract_method_signature" => {
                    D::named(K::Method)
                }
                "class_declaration" | "abstract_class_declaration" => D::named(K::Class),
                "interface_declaration" => D::named(K::Interface),
                "type_alias_declaration" => D::named(K::Type),
                "enum_declaration" => D::named(K::Enum),
                "internal_module" | "module" => D::named(K::Module),
                "variable_declarator" => D::function_value(K::Function),
                _ => return None,
            },
            Language::Go => match kind {
                "function_declaration" => D::named(K::Function),
                "method_declaration" => D::named(K::Method),
                "type_spec" | "type_alias" => D::named(K::Type),
                _ => return None,
            },
            Language::Java => match kind {
                "class_declaration" | "record_declaration" => D::named(K::Class),
                "interface_declaration" | "annotation_type_declaration" => D::named(K::Interface),
                "enum_declaration" => D::named(K::Enum),
                "method_declaration" | "constructor_declaration" => D::named(K::Method),
                _ => return None,
            },
            Language::C | Language::Cpp => match kind {
                "function_definition" => D::declarator(K::Function),
                "struct_specifier" | "union_specifier" => D::with_body(K::Struct),
                "enum_specifier" => D::with_body(K::Enum),
                "class_specifier" => D::with_body(K::Class),
                "type_definition" => D::declarator(K::Type),
                "alias_declaration" => D::named(K::Type),
                "preproc_def" | "preproc_function_def" => D::named(K::Macro),
                "namespace_definition" => D::named(K::Module),
                "concept_definition" => D::named(K::Type),
                _ => return None,
            },
            Language::Ruby => match kind {
                "method" | "singleton_method" => D::named(K::Method),
                "class" => D::named(K::Class),
                "module" => D::named(K::Module),
                _ => return None,
            },
            Language::Bash => match kind {
                "function_definition" => D::named(K::Function),
                _ => return None,
            },
            Language::Json | Language::Text => return None,
        };
        Some(rule)
    }

    /// Keywords and very common words that carry no retrieval signal.
    pub(crate) fn is_noise_word(self, word: &str) -> bool {
        const COMMON: &[&str] = &[
            "if",
            "else",
            "for",
            "while",
            "return",
            "in",
            "of",
            "and",
            "or",
            "not",
            "true",
            "false",
            "null",
            "nil",
            "None",
            "True",
            "False",
            "self",
            "this",
            "new",
            "let",
            "var",
            "const",
            "fn",
            "def",
            "function",
            "class",
            "struct",
            "enum",
            "impl",
            "pub",
            "use",
            "import",
            "from",
            "as",
            "mut",
            "static",
            "void",
            "int",
            "char",
            "unsigned",
            "long",
            "break",
            "continue",
            "match",
            "case",
            "switch",
            "default",
            "do",
            "try",
            "catch",
            "finally",
            "with",
            "is",
            "end",
            "then",
            "elif",
            "super",
            "Self",
            "type",
            "where",
            "async",
            "await",
            "yield",
            "lambda",
            "pass",
            "package",
            "public",
            "private",
            "protected",
            "final",
            "throws",
            "throw",
            "raise",
            "func",
            "go",
            "defer",
            "interface",
            "extends",
            "implements",
            "export",
            "module",
            "crate",
            "ref",
            "dyn",
            "unsafe",
            "to",
            "the",
            "a",
            "an",
            "be",
            "it",
            "on",
            "at",
            "by",
            "fi",
            "esac",
            "done",
            "local",
            "echo",
            "include",
            "define",
            "ifdef",
            "ifndef",
            "endif",
            "typedef",
            "sizeof",
            "auto",
            "bool",
            "str",
            "u8",
            "u32",
            "u64",
            "usize",
            "i32",
            "i64",
            "f32",
            "f64",
            "String",
            "Vec",
            "Option",
            "Some",
            "Ok",
            "Err",
            "Result",
            "undefined",
            "string",
            "number",
            "any",
            "object",
            "print",
            "len",
            "range",
        ];
        let _ = self;
        word.len() < 2 || COMMON.contains(&word)
    }
}

/// What kind of symbol a definition introduces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SymbolKind {
    /// A free function.
    Function,
    /// A method or constructor inside a class-like scope.
    Method,
    /// A class.
    Class,
    /// A struct or union.
    Struct,
    /// An enumeration.
    Enum,
    /// A trait.
    Trait,
    /// An interface or protocol.
    Interface,
    /// An implementation block (`impl Type`).
    Impl,
    /// A module or namespace.
    Module,
    /// A type alias or type definition.
    Type,
    /// A constant or static.
    Constant,
    /// A macro.
    Macro,
}

impl SymbolKind {
    /// The stable lowercase name stored in the index.
    pub fn name(self) -> &'static str {
        match self {
            SymbolKind::Function => "function",
            SymbolKind::Method => "method",
            SymbolKind::Class => "class",
            SymbolKind::Struct => "struct",
            SymbolKind::Enum => "enum",
            SymbolKind::Trait => "trait",
            SymbolKind::Interface => "interface",
            SymbolKind::Impl => "impl",
            SymbolKind::Module => "module",
            SymbolKind::Type => "type",
            SymbolKind::Constant => "constant",
            SymbolKind::Macro => "macro",
        }
    }

    /// Whether the definition's body is a list of members worth showing
    /// (types), as opposed to code (functions), whose signature is enough.
    pub(crate) fn shows_body(self) -> bool {
        matches!(
            self,
            SymbolKind::Class
                | SymbolKind::Struct
                | SymbolKind::Enum
                | SymbolKind::Trait
                | SymbolKind::Interface
                | SymbolKind::Type
                | SymbolKind::Constant
                | SymbolKind::Macro
        )
    }

    /// Whether this symbol's children are scoped by it (classes, impls, modules).
    pub(crate) fn is_scope(self) -> bool {
        matches!(
            self,
            SymbolKind::Class
                | SymbolKind::Struct
                | SymbolKind::Trait
                | SymbolKind::Interface
                | SymbolKind::Impl
                | SymbolKind::Module
                | SymbolKind::Enum
        )
    }
}

/// How to find the name of a symbol-defining node.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DefRule {
    /// The kind of symbol.
    pub kind: SymbolKind,
    /// Where the name is.
    pub name: NameRule,
}

/// Where the name of a definition node is found.
#[derive(Debug, Clone, Copy)]
pub(crate) enum NameRule {
    /// In the child field with this name.
    Field(&'static str),
    /// Follow `declarator` fields down to an identifier (C, C++).
    Declarator,
    /// In the `name` field, only when the node has a `body` (C struct/enum).
    FieldWithBody,
    /// A variable declarator whose value is a function or arrow function (JS/TS).
    FunctionValue,
}

impl DefRule {
    fn named(kind: SymbolKind) -> DefRule {
        DefRule {
            kind,
            name: NameRule::Field("name"),
        }
    }
    fn field(kind: SymbolKind, field: &'static str) -> DefRule {
        DefRule {
            kind,
            name: NameRule::Field(field),
        }
    }
    fn declarator(kind: SymbolKind) -> DefRule {
        DefRule {
            kind,
            name: NameRule::Declarator,
        }
    }
    fn with_body(kind: SymbolKind) -> DefRule {
        DefRule {
            kind,
            name: NameRule::FieldWithBody,
        }
    }
    fn function_value(kind: SymbolKind) -> DefRule {
        DefRule {
            kind,
            name: NameRule::FunctionValue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_by_extension_and_shebang() {
        assert_eq!(Language::from_path("src/main.rs"), Some(Language::Rust));
        assert_eq!(Language::from_path("a/b/c.TSX"), Some(Language::Tsx));
        assert_eq!(Language::from_path("inc/x.hpp"), Some(Language::Cpp));
        assert_eq!(Language::from_path("Makefile"), None);
        assert_eq!(Language::from_path("Rakefile"), Some(Language::Ruby));
        assert_eq!(
            Language::from_shebang("#!/usr/bin/env python3\nprint(1)"),
            Some(Language::Python)
        );
        assert_eq!(
            Language::from_shebang("#!/bin/bash\n"),
            Some(Language::Bash)
        );
        assert_eq!(Language::from_shebang("no shebang"), None);
    }

    #[test]
    fn every_grammar_loads() {
        for lang in ALL_LANGUAGES {
            if let Some(grammar) = lang.grammar() {
                let mut parser = tree_sitter::Parser::new();
                assert!(parser.set_language(&grammar).is_ok(), "{lang:?}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for lang in ALL_LANGUAGES {
            assert_eq!(Language::from_name(lang.name()), Some(lang));
        }
    }
}
