//! A Sigma `condition`: identifiers of the detection's searches joined by
//! `and`, `or`, `not`, parentheses, and the quantifiers `1 of selection_*`,
//! `all of them`, `N of …`. Precedence, highest first: `not`, `and`, `or`.

/// A parsed condition over the names of the detection's searches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    Search(String),
    Not(Box<Condition>),
    And(Vec<Condition>),
    Or(Vec<Condition>),
    /// at least `n` of the searches (`all` is `n` = their number)
    AtLeast(usize, Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Open,
    Close,
}

fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<Token>| {
        if !word.is_empty() {
            out.push(Token::Word(std::mem::take(word)));
        }
    };
    for c in text.chars() {
        match c {
            '(' | ')' => {
                flush(&mut word, &mut out);
                out.push(if c == '(' { Token::Open } else { Token::Close });
            }
            c if c.is_whitespace() => flush(&mut word, &mut out),
            '|' => {
                return Err(
                    "`|` aggregations (Sigma 1) are not converted: write a correlation rule".into(),
                );
            }
            c if c.is_alphanumeric() || matches!(c, '_' | '*' | '-' | '.') => word.push(c),
            c => return Err(format!("unexpected character {c:?} in the condition")),
        }
    }
    flush(&mut word, &mut out);
    Ok(out)
}

struct Parser<'a> {
    tokens: Vec<Token>,
    at: usize,
    /// the detection's search names, in the file's order
    searches: &'a [String],
}

fn is_keyword(word: &str, keyword: &str) -> bool {
    word.eq_ignore_ascii_case(keyword)
}

impl Parser<'_> {
    fn peek_word(&self) -> Option<&str> {
        match self.tokens.get(self.at) {
            Some(Token::Word(w)) => Some(w),
            _ => None,
        }
    }

    fn or(&mut self) -> Result<Condition, String> {
        let mut terms = vec![self.and()?];
        while self.peek_word().is_some_and(|w| is_keyword(w, "or")) {
            self.at += 1;
            terms.push(self.and()?);
        }
        Ok(one_or(terms, Condition::Or))
    }

    fn and(&mut self) -> Result<Condition, String> {
        let mut terms = vec![self.not()?];
        while self.peek_word().is_some_and(|w| is_keyword(w, "and")) {
            self.at += 1;
            terms.push(self.not()?);
        }
        Ok(one_or(terms, Condition::And))
    }

    fn not(&mut self) -> Result<Condition, String> {
        if self.peek_word().is_some_and(|w| is_keyword(w, "not")) {
            self.at += 1;
            return Ok(Condition::Not(Box::new(self.not()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Condition, String> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        match token {
            Some(Token::Open) => {
                let inner = self.or()?;
                match self.tokens.get(self.at) {
                    Some(Token::Close) => {
                        self.at += 1;
                        Ok(inner)
                    }
                    _ => Err("a `(` is not closed".into()),
                }
            }
            Some(Token::Close) => Err("a `)` closes nothing".into()),
            None => Err("the condition ends too early".into()),
            Some(Token::Word(w)) => {
                if self.peek_word().is_some_and(|next| is_keyword(next, "of")) {
                    self.at += 1;
                    let pattern = match self.tokens.get(self.at) {
                        Some(Token::Word(p)) => p.clone(),
                        _ => return Err(format!("`{w} of` names no searches")),
                    };
                    self.at += 1;
                    return self.quantified(&w, &pattern);
                }
                if ["and", "or", "of"].iter().any(|k| is_keyword(&w, k)) {
                    return Err(format!("`{w}` where a search name was expected"));
                }
                if !self.searches.contains(&w) {
                    return Err(format!(
                        "the condition names `{w}`, which the detection lacks"
                    ));
                }
                Ok(Condition::Search(w))
            }
        }
    }

    fn quantified(&self, count: &str, pattern: &str) -> Result<Condition, String> {
        let names: Vec<String> = self
            .searches
            .iter()
            .filter(|s| match pattern {
                // `them`: every search except those whose names begin with `_`
                "them" => !s.starts_with('_'),
                p => glob(p, s),
            })
            .cloned()
            .collect();
        if names.is_empty() {
            return Err(format!("`{count} of {pattern}` matches no search"));
        }
        let n = if is_keyword(count, "all") {
            names.len()
        } else if is_keyword(count, "any") {
            1
        } else {
            count
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("`{count} of`: a count, `any` or `all` was expected"))?
        };
        Ok(Condition::AtLeast(n, names))
    }
}

fn one_or(mut terms: Vec<Condition>, many: fn(Vec<Condition>) -> Condition) -> Condition {
    if terms.len() == 1 {
        terms.remove(0)
    } else {
        many(terms)
    }
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters.
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            let Some(tail) = name.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len())
                .filter(|i| tail.is_char_boundary(*i))
                .any(|i| glob(rest, &tail[i..]))
        }
    }
}

/// Parses `text` against the detection's search names.
pub fn parse(text: &str, searches: &[String]) -> Result<Condition, String> {
    let mut p = Parser {
        tokens: tokens(text)?,
        at: 0,
        searches,
    };
    let c = p.or()?;
    if p.at < p.tokens.len() {
        return Err(format!(
            "unexpected {:?} after a complete condition",
            p.tokens[p.at]
        ));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn precedence_is_not_then_and_then_or() {
        let s = names(&["a", "b", "c"]);
        assert_eq!(
            parse("a or b and not c", &s).unwrap(),
            Condition::Or(vec![
                Condition::Search("a".into()),
                Condition::And(vec![
                    Condition::Search("b".into()),
                    Condition::Not(Box::new(Condition::Search("c".into()))),
                ]),
            ])
        );
        assert_eq!(
            parse("(a or b) and c", &s).unwrap(),
            Condition::And(vec![
                Condition::Or(vec![
                    Condition::Search("a".into()),
                    Condition::Search("b".into())
                ]),
                Condition::Search("c".into()),
            ])
        );
    }

    #[test]
    fn quantifiers_expand_over_the_searches() {
        let s = names(&["selection_a", "selection_b", "filter", "_helper"]);
        assert_eq!(
            parse("1 of selection_* and not filter", &s).unwrap(),
            Condition::And(vec![
                Condition::AtLeast(1, names(&["selection_a", "selection_b"])),
                Condition::Not(Box::new(Condition::Search("filter".into()))),
            ])
        );
        assert_eq!(
            parse("all of them", &s).unwrap(),
            Condition::AtLeast(3, names(&["selection_a", "selection_b", "filter"]))
        );
    }

    #[test]
    fn mistakes_are_named() {
        let s = names(&["a"]);
        assert!(parse("a and b", &s).unwrap_err().contains("`b`"));
        assert!(parse("(a", &s).unwrap_err().contains("not closed"));
        assert!(parse("a b", &s).unwrap_err().contains("after a complete"));
        assert!(
            parse("1 of x*", &s)
                .unwrap_err()
                .contains("matches no search")
        );
        assert!(
            parse("a | count() > 5", &s)
                .unwrap_err()
                .contains("correlation")
        );
        assert!(parse("", &s).unwrap_err().contains("too early"));
    }
}
