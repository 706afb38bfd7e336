//! Label selectors in Prometheus syntax: `{service_name="api", env=~"prod|stage", pod!=""}`.

use regex::Regex;

use super::Labels;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectorError {
    #[error("label selector {input:?}: {reason} at byte {position}")]
    Syntax {
        input: String,
        position: usize,
        reason: String,
    },
    #[error("label selector: invalid regular expression {pattern:?}: {reason}")]
    Regex { pattern: String, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    RegexMatch,
    RegexNoMatch,
}

/// One `name op "value"` condition.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    regex: Option<Regex>,
}

impl Matcher {
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Self, SelectorError> {
        let regex = match op {
            MatchOp::RegexMatch | MatchOp::RegexNoMatch => Some(
                // Prometheus anchors regexes at both ends.
                Regex::new(&format!("^(?:{value})$")).map_err(|err| SelectorError::Regex {
                    pattern: value.to_string(),
                    reason: err.to_string(),
                })?,
            ),
            _ => None,
        };
        Ok(Self {
            name: name.to_string(),
            op,
            value: value.to_string(),
            regex,
        })
    }

    /// Whether a label value (absent = "") satisfies this matcher.
    pub fn matches(&self, value: Option<&str>) -> bool {
        let value = value.unwrap_or("");
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => value == self.value,
            (MatchOp::NotEqual, _) => value != self.value,
            (MatchOp::RegexMatch, Some(regex)) => regex.is_match(value),
            (MatchOp::RegexNoMatch, Some(regex)) => !regex.is_match(value),
            _ => unreachable!("regex matchers always carry a compiled regex"),
        }
    }
}

/// A conjunction of matchers; the empty selector `{}` matches everything.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    pub matchers: Vec<Matcher>,
}

impl Selector {
    /// Parses `{...}`; an empty or all-blank input is the empty selector.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        Parser {
            input,
            bytes: input.as_bytes(),
            position: 0,
        }
        .parse()
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.matchers
            .iter()
            .all(|matcher| matcher.matches(labels.get(&matcher.name)))
    }

    /// The value required by an `=` matcher on `name`, if any.
    pub fn equal_value(&self, name: &str) -> Option<&str> {
        self.matchers
            .iter()
            .find(|matcher| matcher.name == name && matcher.op == MatchOp::Equal)
            .map(|matcher| matcher.value.as_str())
    }

    pub fn with(mut self, matcher: Matcher) -> Self {
        self.matchers.push(matcher);
        self
    }
}

struct Parser<'a> {
    input: &'a str,
    bytes: &'a [u8],
    position: usize,
}

impl Parser<'_> {
    fn error(&self, reason: &str) -> SelectorError {
        SelectorError::Syntax {
            input: self.input.to_string(),
            position: self.position,
            reason: reason.to_string(),
        }
    }

    fn skip_blank(&mut self) {
        while self.position < self.bytes.len() && self.bytes[self.position].is_ascii_whitespace() {
            self.position += 1;
        }
    }

    fn eat(&mut self, token: &str) -> bool {
        if self.input[self.position..].starts_with(token) {
            self.position += token.len();
            true
        } else {
            false
        }
    }

    fn parse(mut self) -> Result<Selector, SelectorError> {
        self.skip_blank();
        if self.position == self.bytes.len() {
            return Ok(Selector::default());
        }
        if !self.eat("{") {
            return Err(self.error("expected '{'"));
        }
        let mut matchers = Vec::new();
        loop {
            self.skip_blank();
            if self.eat("}") {
                break;
            }
            if !matchers.is_empty() {
                if !self.eat(",") {
                    return Err(self.error("expected ',' or '}'"));
                }
                self.skip_blank();
                if self.eat("}") {
                    break;
                }
            }
            let name = self.name()?;
            self.skip_blank();
            let op = if self.eat("=~") {
                MatchOp::RegexMatch
            } else if self.eat("!~") {
                MatchOp::RegexNoMatch
            } else if self.eat("!=") {
                MatchOp::NotEqual
            } else if self.eat("=") {
                MatchOp::Equal
            } else {
                return Err(self.error("expected one of = != =~ !~"));
            };
            self.skip_blank();
            let value = self.quoted()?;
            matchers.push(Matcher::new(&name, op, &value)?);
            // A selector of thousands of regexes takes a while to compile: stop at the query's
            // deadline (the API then answers 504).
            if matchers.len() % 64 == 0 && super::Deadline::expired() {
                return Err(self.error("the query's deadline passed while parsing its selector"));
            }
        }
        self.skip_blank();
        if self.position != self.bytes.len() {
            return Err(self.error("unexpected text after '}'"));
        }
        Ok(Selector { matchers })
    }

    fn name(&mut self) -> Result<String, SelectorError> {
        if self.bytes.get(self.position) == Some(&b'"') {
            // UTF-8 label names may be quoted, as in Prometheus 3.
            return self.quoted();
        }
        let start = self.position;
        while let Some(&byte) = self.bytes.get(self.position) {
            if is_name_byte(byte) {
                self.position += 1;
            } else {
                break;
            }
        }
        if start == self.position || self.bytes[start].is_ascii_digit() {
            return Err(self.error("expected a label name"));
        }
        Ok(self.input[start..self.position].to_string())
    }

    fn quoted(&mut self) -> Result<String, SelectorError> {
        let quote = match self.bytes.get(self.position) {
            Some(&q @ (b'"' | b'\'' | b'`')) => q as char,
            _ => return Err(self.error("expected a quoted string")),
        };
        self.position += 1;
        let mut value = String::new();
        let mut chars = self.input[self.position..].char_indices();
        while let Some((offset, c)) = chars.next() {
            if c == quote {
                self.position += offset + 1;
                return Ok(value);
            }
            if c == '\\' && quote != '`' {
                let Some((_, escaped)) = chars.next() else { break };
                value.push(match escaped {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    other => other,
                });
            } else {
                value.push(c);
            }
        }
        self.position = self.bytes.len();
        Err(self.error("unterminated string"))
    }
}

/// The selector in the syntax [`Selector::parse`] reads back to the same matchers.
impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        f.write_char('{')?;
        for (index, matcher) in self.matchers.iter().enumerate() {
            if index > 0 {
                f.write_char(',')?;
            }
            let op = match matcher.op {
                MatchOp::Equal => "=",
                MatchOp::NotEqual => "!=",
                MatchOp::RegexMatch => "=~",
                MatchOp::RegexNoMatch => "!~",
            };
            // A name the bare syntax cannot hold (a UTF-8 name, one starting with a digit) is
            // quoted, as it was written.
            if is_bare_name(&matcher.name) {
                f.write_str(&matcher.name)?;
            } else {
                write_quoted(f, &matcher.name)?;
            }
            f.write_str(op)?;
            write_quoted(f, &matcher.value)?;
        }
        f.write_char('}')
    }
}

/// A byte of an unquoted label name.
fn is_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'.'
}

/// Whether `name` reads back unquoted: what the parser's bare names are.
fn is_bare_name(name: &str) -> bool {
    name.bytes().next().is_some_and(|first| !first.is_ascii_digit()) && name.bytes().all(is_name_byte)
}

/// `text` as a double-quoted string the parser reads back.
fn write_quoted(f: &mut std::fmt::Formatter<'_>, text: &str) -> std::fmt::Result {
    use std::fmt::Write;
    f.write_char('"')?;
    for c in text.chars() {
        match c {
            '\\' => f.write_str("\\\\")?,
            '"' => f.write_str("\\\"")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            '\r' => f.write_str("\\r")?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_reads_back_to_the_same_selector() {
        let text = "{service_name=\"a\\\"b\", env=~\"prod|st.*\", pod!=\"x\\ny\", zone!~\"eu-\\\\d\"}";
        let selector = Selector::parse(text).unwrap();
        let again = Selector::parse(&selector.to_string()).unwrap();
        assert_eq!(again.to_string(), selector.to_string());
        for (a, b) in selector.matchers.iter().zip(&again.matchers) {
            assert_eq!((&a.name, a.op, &a.value), (&b.name, b.op, &b.value));
        }
        assert_eq!(Selector::parse("{}").unwrap().to_string(), "{}");
    }

    /// Quoted (UTF-8) label names print quoted when the bare syntax cannot hold them: the
    /// fuzzer's `selector` target found both of these printing to text that did not parse.
    #[test]
    fn quoted_names_read_back_quoted() {
        for (text, printed) in [
            (r#"{ a = "1" ,"1"!= "2" , }"#, r#"{a="1","1"!="2"}"#),
            (r#"{ " , b1a = " != "2" , }"#, r#"{" , b1a = "!="2"}"#),
            (r#"{"service.name"="a", "é"=~"x"}"#, r#"{service.name="a","é"=~"x"}"#),
            (r#"{"a\"b"="c"}"#, r#"{"a\"b"="c"}"#),
        ] {
            let selector = Selector::parse(text).unwrap();
            assert_eq!(selector.to_string(), printed, "{text}");
            let again = Selector::parse(printed).unwrap();
            for (a, b) in selector.matchers.iter().zip(&again.matchers) {
                assert_eq!((&a.name, a.op, &a.value), (&b.name, b.op, &b.value), "{text}");
            }
            assert_eq!(again.matchers.len(), selector.matchers.len());
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
    }

    #[test]
    fn all_operators() {
        let selector = Selector::parse(r#"{service_name="api", env=~"prod|stage", pod!="x", zone!~"eu.*"}"#).unwrap();
        assert!(selector.matches(&labels(&[("service_name", "api"), ("env", "prod"), ("zone", "us-1")])));
        assert!(!selector.matches(&labels(&[("service_name", "api"), ("env", "production")])));
        assert!(!selector.matches(&labels(&[("service_name", "api"), ("env", "prod"), ("pod", "x")])));
        assert!(!selector.matches(&labels(&[("service_name", "api"), ("env", "prod"), ("zone", "eu-2")])));
    }

    #[test]
    fn empty_and_errors() {
        assert!(Selector::parse("{}").unwrap().matchers.is_empty());
        assert!(Selector::parse("").unwrap().matchers.is_empty());
        assert!(Selector::parse(r#"{a="b",}"#).is_ok());
        for bad in [
            r#"{a="b""#,
            r#"{a=b}"#,
            r#"{="b"}"#,
            r#"{a~"b"}"#,
            r#"a="b""#,
            r#"{a="b"} x"#,
        ] {
            assert!(
                matches!(Selector::parse(bad), Err(SelectorError::Syntax { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            Selector::parse(r#"{a=~"("}"#),
            Err(SelectorError::Regex { .. })
        ));
    }

    #[test]
    fn escapes() {
        let selector = Selector::parse(r#"{a="x\"y"}"#).unwrap();
        assert_eq!(selector.matchers[0].value, "x\"y");
    }
}
