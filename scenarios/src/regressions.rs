//! The regression file: seeds that once failed, replayed before anything else.
//!
//! The format is text, one seed per line:
//!
//! ```text
//! # seeds the nightly campaign found
//! sqlite-power-cut 0x000000000000002a
//! object-cluster 0x3a6301eb41568e3a # invariant: lost an acknowledged write
//! ```
//!
//! Each line is `<scenario> <seed-hex> [# comment]`: the scenario's name, the seed as `0x` followed by 1 to 16
//! hex digits, and an optional comment (the note). Blank lines and lines that start with `#` are skipped.
//! [`parse`] reports the first bad line with its number and what was expected; [`render`] writes the
//! canonical form, which parses back to the same list. The scenario names are not checked here: the
//! replayer does that against the registry.
//!
//! This module compiles in the plain build too: it names no simulation-only type.

use std::fmt;

use dosim_sim::Seed;

/// One line of a regression file: a scenario and a seed, with an optional note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Regression {
    /// The scenario's name, as `dosim list` prints it.
    pub scenario: String,
    /// The seed.
    pub seed: Seed,
    /// The comment after `#` on the line, trimmed; `None` when there was none.
    pub note: Option<String>,
}

/// A line of a regression file that is not `<scenario> <seed-hex> [# comment]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegressionError {
    /// The line's number, from 1.
    pub line: usize,
    /// The line as it was.
    pub text: String,
    /// What was wrong, naming what was expected.
    pub problem: String,
}

impl fmt::Display for RegressionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "regression file, line {}: {} (expected `<scenario> <seed-hex> [# comment]`, e.g. \
             `sqlite-power-cut 0x000000000000002a # lost a transfer`), found {:?}",
            self.line, self.problem, self.text
        )
    }
}

impl std::error::Error for RegressionError {}

/// Parses a regression file; the first bad line is an error.
pub fn parse(text: &str) -> Result<Vec<Regression>, RegressionError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let err = |problem: String| RegressionError { line: i + 1, text: raw.to_string(), problem };
        let (body, note) = match raw.split_once('#') {
            Some((body, comment)) => (body, Some(comment.trim())),
            None => (raw, None),
        };
        let mut words = body.split_whitespace();
        let Some(scenario) = words.next() else {
            // A blank line, or a comment alone.
            continue;
        };
        let Some(seed) = words.next() else {
            return Err(err(format!("no seed after the scenario {scenario:?}")));
        };
        if let Some(extra) = words.next() {
            return Err(err(format!("unexpected {extra:?} after the seed (a comment starts with #)")));
        }
        let seed = parse_seed_hex(seed).ok_or_else(|| {
            err(format!("invalid seed {seed:?}: expected 0x followed by 1 to 16 hex digits"))
        })?;
        let note = note.filter(|n| !n.is_empty()).map(str::to_string);
        out.push(Regression { scenario: scenario.to_string(), seed, note });
    }
    Ok(out)
}

fn parse_seed_hex(s: &str) -> Option<Seed> {
    let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    if digits.is_empty() || digits.len() > 16 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, 16).ok().map(Seed)
}

/// Writes regressions in the canonical form, one line each (`<scenario> <seed> # <note>`); a note's line
/// breaks become spaces, so the text parses back to the same list.
pub fn render(regressions: &[Regression]) -> String {
    let mut out = String::new();
    for r in regressions {
        out.push_str(&r.scenario);
        out.push(' ');
        out.push_str(&r.seed.to_string());
        if let Some(note) = &r.note {
            let note: String = note.split_whitespace().collect::<Vec<_>>().join(" ");
            if !note.is_empty() {
                out.push_str(" # ");
                out.push_str(&note);
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_comments_and_blanks_parse() {
        let text = "# found by the nightly campaign\n\nsqlite-power-cut 0x2a\n  object-cluster   0x3A6301EB41568E3A   # lost\n\
                    replicated-counter 0x0000000000000001 #\n";
        let r = parse(text).unwrap();
        assert_eq!(
            r,
            vec![
                Regression { scenario: "sqlite-power-cut".into(), seed: Seed(0x2a), note: None },
                Regression {
                    scenario: "object-cluster".into(),
                    seed: Seed(0x3a63_01eb_4156_8e3a),
                    note: Some("lost".into())
                },
                Regression { scenario: "replicated-counter".into(), seed: Seed(1), note: None },
            ]
        );
    }

    #[test]
    fn render_parses_back_to_the_same_list() {
        let list = vec![
            Regression { scenario: "a".into(), seed: Seed(u64::MAX), note: Some("two\nlines".into()) },
            Regression { scenario: "b".into(), seed: Seed(0), note: None },
        ];
        let text = render(&list);
        assert_eq!(text, "a 0xffffffffffffffff # two lines\nb 0x0000000000000000\n");
        let back = parse(&text).unwrap();
        assert_eq!(back[0].note.as_deref(), Some("two lines"));
        assert_eq!(back[1], list[1]);
    }

    #[test]
    fn bad_lines_name_their_number_and_what_was_expected() {
        let cases = [
            ("ok 0x1\nsqlite-power-cut\n", 2, "no seed after the scenario"),
            ("sqlite-power-cut 42\n", 1, "invalid seed \"42\""),
            ("x 0x\n", 1, "invalid seed"),
            ("x 0x12345678123456789\n", 1, "invalid seed"),
            ("# c\n\nx 0x1 extra\n", 3, "unexpected \"extra\""),
        ];
        for (text, line, problem) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.problem.contains(problem), "{text:?}: {e}");
            let shown = e.to_string();
            assert!(shown.contains(&format!("line {line}:")), "{shown}");
            assert!(shown.contains("expected `<scenario> <seed-hex> [# comment]`"), "{shown}");
        }
    }
}
