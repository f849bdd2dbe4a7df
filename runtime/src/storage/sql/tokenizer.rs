//! A small SQL tokenizer: where a statement ends, and the rename target the authorizer checks.

/// A token of SQL text, as far as [`rename_target`] needs one.
#[derive(Debug, PartialEq)]
pub(super) enum Token<'a> {
    /// A bare word: a keyword or an unquoted identifier.
    Word(&'a str),
    /// A quoted identifier or string literal, unquoted.
    Quoted(String),
    /// Anything else, one character at a time.
    Punct(char),
}

impl Token<'_> {
    pub(super) fn is_keyword(&self, keyword: &str) -> bool {
        matches!(self, Token::Word(w) if w.eq_ignore_ascii_case(keyword))
    }

    pub(super) fn into_name(self) -> Option<String> {
        match self {
            Token::Word(w) => Some(w.to_owned()),
            Token::Quoted(q) => Some(q),
            Token::Punct(_) => None,
        }
    }
}

/// SQLite's tokens, skipping white space and comments, up to the end of the first statement.
pub(super) struct Tokens<'a> {
    pub(super) rest: &'a str,
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        loop {
            self.rest = self.rest.trim_start_matches(|c: char| c.is_ascii_whitespace());
            if let Some(comment) = self.rest.strip_prefix("--") {
                self.rest = comment.find('\n').map_or("", |end| &comment[end..]);
            } else if let Some(comment) = self.rest.strip_prefix("/*") {
                self.rest = comment.find("*/").map_or("", |end| &comment[end + 2..]);
            } else {
                break;
            }
        }
        let first = self.rest.chars().next()?;
        let close = match first {
            '"' | '\'' | '`' => Some(first),
            '[' => Some(']'),
            _ => None,
        };
        if let Some(close) = close {
            let mut text = String::new();
            let mut chars = self.rest[1..].char_indices();
            while let Some((i, c)) = chars.next() {
                if c != close {
                    text.push(c);
                } else if close != ']' && self.rest[1 + i + 1..].starts_with(close) {
                    text.push(c);
                    chars.next();
                } else {
                    self.rest = &self.rest[1 + i + 1..];
                    return Some(Token::Quoted(text));
                }
            }
            self.rest = "";
            return Some(Token::Quoted(text));
        }
        let word_len =
            self.rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$' || !c.is_ascii()));
        match word_len {
            Some(0) if first == ';' => None,
            Some(0) => {
                self.rest = &self.rest[first.len_utf8()..];
                Some(Token::Punct(first))
            }
            _ => {
                let len = word_len.unwrap_or(self.rest.len());
                let (word, rest) = self.rest.split_at(len);
                self.rest = rest;
                Some(Token::Word(word))
            }
        }
    }
}

/// The white space workerd skips after a statement to decide whether another one follows.
pub(super) fn is_statement_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}
