//! Regression files: seeds that once failed, replayed before anything else.
//!
//! The format is text, one seed per line:
//!
//! ```text
//! # seeds the nightly campaign found
//! sqlite-power-cut 0x000000000000002a
//! object-cluster 0x3a6301eb41568e3a # invariant: lost an acknowledged write
//! testing::planted::write_behind_is_found 0x1f keep=ops:0:3,4/1:-;faults:- # shrunk
//! ```
//!
//! Each line is `<name> <seed-hex> [keep=<mask>] [# comment]`: a name (a campaign's scenario, or a test's path
//! as libtest filters it), the seed as `0x` followed by 1 to 16 hex digits, an optional plan mask (which part
//! of the seed's plan to keep: a shrunk run, see `dosim_scenarios::testing::shrink`; this module keeps it as
//! text), and an optional comment (the note). Blank lines and lines that start with `#` are skipped.
//! [`parse`] reports the first bad line with its number and what was expected; [`render`] writes the
//! canonical form, which parses back to the same list. The names are not checked here: the replayer does
//! that (the CLI against its registry; `sim_test!` runs the lines naming its test, see [`FILE_NAME`]).
//!
//! This module compiles in the plain build too: it names no simulation-only type.

use std::fmt;

use crate::Seed;

/// The regression file of a test crate, next to its `Cargo.toml`: `sim_test!` replays the lines naming its
/// test before any new seed.
pub const FILE_NAME: &str = "dosim-regressions.txt";

/// The prefix of a line's plan mask.
pub const KEEP_PREFIX: &str = "keep=";

/// One line of a regression file: a scenario (or test) and a seed, with an optional plan mask and note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Regression {
    /// The scenario's name, as `dosim list` prints it, or the test's path as libtest filters it.
    pub scenario: String,
    /// The seed.
    pub seed: Seed,
    /// The plan mask after `keep=` (the part of the seed's plan the failing run kept), if any.
    pub keep: Option<String>,
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
             `sqlite-power-cut 0x000000000000002a # lost a transfer`; a test's line may add \
             `keep=<mask>` after the seed), found {:?}",
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
        let seed = parse_seed_hex(seed).ok_or_else(|| {
            err(format!("invalid seed {seed:?}: expected 0x followed by 1 to 16 hex digits"))
        })?;
        let keep = match words.next() {
            None => None,
            Some(word) => match word.strip_prefix(KEEP_PREFIX) {
                Some("") => return Err(err("an empty plan mask after keep=".to_string())),
                Some(mask) => Some(mask.to_string()),
                None => {
                    return Err(err(format!(
                        "unexpected {word:?} after the seed (a plan mask starts with keep=, a comment with #)"
                    )))
                }
            },
        };
        if let Some(extra) = words.next() {
            return Err(err(format!("unexpected {extra:?} after the plan mask (a comment starts with #)")));
        }
        let note = note.filter(|n| !n.is_empty()).map(str::to_string);
        out.push(Regression { scenario: scenario.to_string(), seed, keep, note });
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

/// Writes regressions in the canonical form, one line each (`<scenario> <seed> [keep=<mask>] # <note>`); a
/// note's line breaks become spaces, so the text parses back to the same list.
pub fn render(regressions: &[Regression]) -> String {
    let mut out = String::new();
    for r in regressions {
        out.push_str(&r.scenario);
        out.push(' ');
        out.push_str(&r.seed.to_string());
        if let Some(keep) = &r.keep {
            out.push(' ');
            out.push_str(KEEP_PREFIX);
            out.push_str(keep);
        }
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
                Regression { scenario: "sqlite-power-cut".into(), seed: Seed(0x2a), keep: None, note: None },
                Regression {
                    scenario: "object-cluster".into(),
                    seed: Seed(0x3a63_01eb_4156_8e3a),
                    keep: None,
                    note: Some("lost".into())
                },
                Regression { scenario: "replicated-counter".into(), seed: Seed(1), keep: None, note: None },
            ]
        );
    }

    #[test]
    fn render_parses_back_to_the_same_list() {
        let list = vec![
            Regression {
                scenario: "a".into(),
                seed: Seed(u64::MAX),
                keep: None,
                note: Some("two\nlines".into()),
            },
            Regression {
                scenario: "b".into(),
                seed: Seed(0),
                keep: Some("ops:0:1,2/1:-".into()),
                note: None,
            },
        ];
        let text = render(&list);
        assert_eq!(text, "a 0xffffffffffffffff # two lines\nb 0x0000000000000000 keep=ops:0:1,2/1:-\n");
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
            ("# c\n\nx 0x1 extra\n", 3, "unexpected \"extra\" after the seed"),
            ("x 0x1 keep=\n", 1, "an empty plan mask"),
            ("x 0x1 keep=faults:- more # c\n", 1, "unexpected \"more\" after the plan mask"),
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
