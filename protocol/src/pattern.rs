//! Account name patterns (protocol §E8): `*` matches any run of characters, `?` one
//! character, and `\` takes the character after it literally; a pattern matches a whole name,
//! case-sensitively.

/// The longest pattern, in bytes of UTF-8.
pub const MAX_PATTERN_LEN: usize = 255;

/// Why a pattern cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("the pattern is {0} bytes, more than 255")]
    TooLong(usize),
    #[error("the pattern ends in an escape with nothing after it")]
    TrailingEscape,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    AnyRun,
    AnyOne,
    Literal(char),
}

/// A parsed pattern, and the text it was given as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePattern {
    text: String,
    tokens: Vec<Token>,
}

impl NamePattern {
    /// Reads `text`; runs of `*` count as one.
    pub fn parse(text: &str) -> Result<NamePattern, PatternError> {
        if text.len() > MAX_PATTERN_LEN {
            return Err(PatternError::TooLong(text.len()));
        }
        let mut tokens = Vec::with_capacity(text.len());
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            let token = match c {
                '*' if tokens.last() == Some(&Token::AnyRun) => continue,
                '*' => Token::AnyRun,
                '?' => Token::AnyOne,
                '\\' => Token::Literal(chars.next().ok_or(PatternError::TrailingEscape)?),
                c => Token::Literal(c),
            };
            tokens.push(token);
        }
        Ok(NamePattern {
            text: text.to_owned(),
            tokens,
        })
    }

    /// The pattern as given.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether the whole of `name` matches. Backtracks to the last `*` only, which is enough
    /// for wildcards and bounds the work by pattern length × name length.
    pub fn matches(&self, name: &str) -> bool {
        let (mut token, mut at) = (0, 0);
        // The last `*` seen, and where in the name its run would end if extended once more.
        let mut star: Option<(usize, usize)> = None;
        while let Some(c) = name[at..].chars().next() {
            match self.tokens.get(token) {
                Some(Token::AnyRun) => {
                    star = Some((token, at));
                    token += 1;
                    continue;
                }
                Some(Token::AnyOne) => {
                    token += 1;
                    at += c.len_utf8();
                    continue;
                }
                Some(Token::Literal(literal)) if *literal == c => {
                    token += 1;
                    at += c.len_utf8();
                    continue;
                }
                _ => {}
            }
            let Some((star_token, star_at)) = star else {
                return false;
            };
            // The `*` takes one more character, and matching resumes after it.
            let taken = name[star_at..].chars().next().map_or(1, char::len_utf8);
            star = Some((star_token, star_at + taken));
            token = star_token + 1;
            at = star_at + taken;
        }
        self.tokens[token..]
            .iter()
            .all(|&left| left == Token::AnyRun)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, name: &str) -> bool {
        NamePattern::parse(pattern).expect("pattern").matches(name)
    }

    #[test]
    fn wildcards_match_runs_and_single_characters_of_the_whole_name() {
        assert!(matches("*", ""));
        assert!(matches("*", "anything at all"));
        assert!(matches("al*", "alice"));
        assert!(!matches("al*", "Alice"), "case-sensitive");
        assert!(matches("*ce", "alice"));
        assert!(!matches("li", "alice"), "the whole name");
        assert!(matches("*li*", "alice"));
        assert!(matches("a?ice", "alice"));
        assert!(!matches("a?ice", "aice"));
        assert!(matches("a**e", "alice"));
        assert!(matches("*a*b*c", "xxaxxbxxbc"));
        assert!(!matches("*a*b*c", "xxaxxbxxbcd"));
        assert!(matches("?*?", "ab"));
        assert!(!matches("?*?", "a"));
        assert!(matches("", ""));
        assert!(!matches("", "a"));
        assert!(matches("é?", "éa"), "characters, not bytes");
    }

    #[test]
    fn an_escape_takes_the_next_character_literally() {
        assert!(matches(r"a\*", "a*"));
        assert!(!matches(r"a\*", "ab"));
        assert!(matches(r"\?", "?"));
        assert!(!matches(r"\?", "x"));
        assert!(matches(r"\\*", r"\ and more"));
        assert!(matches(r"\a", "a"));
        assert_eq!(NamePattern::parse(r"a\"), Err(PatternError::TrailingEscape));
    }

    #[test]
    fn a_pattern_is_at_most_255_bytes() {
        assert!(NamePattern::parse(&"*".repeat(MAX_PATTERN_LEN)).is_ok());
        assert_eq!(
            NamePattern::parse(&"a".repeat(256)),
            Err(PatternError::TooLong(256))
        );
        assert_eq!(NamePattern::parse("a*").expect("pattern").text(), "a*");
    }
}
