//! Function names: the 255-byte limit and the characters a name may use.

use core::fmt;

/// Longest function (target) name, in bytes: the ABI's limit on the target of
/// a call, also the most a name may take in a composition and on the wire.
pub const MAX_NAME_LEN: usize = 255;

/// Checks a function name: 1 to [`MAX_NAME_LEN`] bytes of ASCII letters,
/// digits, `-`, `_` and `.`, not starting with `.`. Names that pass are safe
/// in file paths (never hidden, never `.` or `..`), Redis keys and log lines,
/// so every place that accepts a name uses this rule.
///
/// ```
/// use cwasi_abi::{validate_name, NameProblem};
///
/// assert!(validate_name("normalize.v2_1-a").is_ok());
/// let e = validate_name("a/b").unwrap_err();
/// assert_eq!(e.problem(), NameProblem::BadByte { index: 1, byte: b'/' });
/// assert_eq!(
///     e.to_string(),
///     "invalid function name 'a/b': use 1-255 letters, digits, '-', '_' or '.', \
///      not starting with '.'"
/// );
/// ```
pub fn validate_name(name: &str) -> Result<(), NameError<'_>> {
    let problem = if name.is_empty() {
        NameProblem::Empty
    } else if name.len() > MAX_NAME_LEN {
        NameProblem::TooLong { len: name.len() }
    } else if name.starts_with('.') {
        NameProblem::LeadingDot
    } else if let Some((index, &byte)) = name
        .as_bytes()
        .iter()
        .enumerate()
        .find(|(_, &b)| !is_name_byte(b))
    {
        NameProblem::BadByte { index, byte }
    } else {
        return Ok(());
    };
    Err(NameError { name, problem })
}

/// Whether `b` may appear in a function name.
const fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

/// Why [`validate_name`] rejected a name, for code that reacts to the reason
/// rather than showing the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameProblem {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The name starts with `.` (a hidden file, `.` or `..` in a path).
    LeadingDot,
    /// The name contains a byte other than an ASCII letter, digit, `-`, `_`
    /// or `.` (the first such byte is reported).
    BadByte {
        /// Its offset in the name.
        index: usize,
        /// The byte (for non-ASCII text, the first byte of its UTF-8 form).
        byte: u8,
    },
}

/// The rule a name must follow, in the words of every rejection message.
const RULE: &str = "use 1-255 letters, digits, '-', '_' or '.', not starting with '.'";

/// A rejected function name. It borrows the name, so the crate needs no
/// allocator; its `Display` is the message the host prints:
/// `invalid function name '{name}': use 1-255 letters, digits, '-', '_' or
/// '.', not starting with '.'`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameError<'a> {
    name: &'a str,
    problem: NameProblem,
}

impl<'a> NameError<'a> {
    /// The rejected name.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// Why it was rejected.
    pub fn problem(&self) -> NameProblem {
        self.problem
    }

    /// The rule the name broke, for messages about other kinds of names
    /// (namespaces) that follow the same rule.
    pub fn rule(&self) -> &'static str {
        RULE
    }
}

impl fmt::Display for NameError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid function name '{}': {RULE}", self.name)
    }
}

impl core::error::Error for NameError<'_> {}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::string::{String, ToString};

    #[test]
    fn accepts_the_allowed_alphabet() {
        for name in [
            "a",
            "Z",
            "0",
            "-",
            "_",
            "a.",
            "hello",
            "ns.fn-1_x",
            "v1.2.3",
        ] {
            assert_eq!(validate_name(name), Ok(()), "{name}");
        }
        let longest = "a".repeat(MAX_NAME_LEN);
        assert_eq!(validate_name(&longest), Ok(()));
    }

    #[test]
    fn rejects_with_the_reason() {
        assert_eq!(validate_name("").unwrap_err().problem(), NameProblem::Empty);
        let long = "a".repeat(MAX_NAME_LEN + 1);
        assert_eq!(
            validate_name(&long).unwrap_err().problem(),
            NameProblem::TooLong { len: 256 }
        );
        let cases: [(&str, usize, u8); 6] = [
            ("a b", 1, b' '),
            ("a/b", 1, b'/'),
            ("x:", 1, b':'),
            ("héllo", 1, 0xC3),
            ("tab\t", 3, b'\t'),
            ("\0", 0, 0),
        ];
        for (name, index, byte) in cases {
            let e = validate_name(name).unwrap_err();
            assert_eq!(e.name(), name);
            assert_eq!(
                e.problem(),
                NameProblem::BadByte { index, byte },
                "{name:?}"
            );
        }
    }

    #[test]
    fn a_leading_dot_is_refused() {
        for name in [".", "..", ".hidden", "..x", "./x"] {
            assert_eq!(
                validate_name(name).unwrap_err().problem(),
                NameProblem::LeadingDot,
                "{name}"
            );
        }
    }

    #[test]
    fn the_rule_states_the_length_limit() {
        let e = validate_name("").unwrap_err();
        assert!(e.rule().contains(&std::format!("1-{MAX_NAME_LEN} ")));
    }

    #[test]
    fn too_long_is_checked_before_bad_bytes() {
        let long: String = core::iter::repeat_n('/', MAX_NAME_LEN + 1).collect();
        assert_eq!(
            validate_name(&long).unwrap_err().problem(),
            NameProblem::TooLong { len: 256 }
        );
    }

    #[test]
    fn message_states_the_rule() {
        assert_eq!(
            validate_name("bad name").unwrap_err().to_string(),
            "invalid function name 'bad name': use 1-255 letters, digits, '-', '_' or '.', \
             not starting with '.'"
        );
        assert_eq!(
            validate_name("").unwrap_err().to_string(),
            "invalid function name '': use 1-255 letters, digits, '-', '_' or '.', \
             not starting with '.'"
        );
    }
}
