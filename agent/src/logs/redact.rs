//! Secrets masked in log lines before they leave the node.
//!
//! On by default, so it has to be cheap on the lines that hold nothing (one
//! pass of a [`RegexSet`] over the line, nothing allocated) and precise on the
//! rest: a masked order id or timestamp makes the logs worse without making
//! anything safer. Each kind of secret is its own pass, run only when the set
//! saw it; the order matters where they nest (see [`Redactor::new`]).

use std::{borrow::Cow, sync::LazyLock};

use regex::{Captures, Regex, RegexSet};

/// What a secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// `line` with secrets replaced by [`REDACTED`]; borrowed when there were none.
pub fn redact(line: &str) -> Cow<'_, str> {
    match &*REDACTOR {
        Some(r) => r.redact(line),
        // Cannot happen (the patterns are constants, compiled in the tests),
        // but if it did, fail closed rather than ship secrets.
        None => Cow::Borrowed(REDACTED),
    }
}

static REDACTOR: LazyLock<Option<Redactor>> = LazyLock::new(Redactor::new);

// All patterns use ASCII word boundaries, `(?-u:\b)`: the Unicode one makes the
// regex engine leave its DFA for a slower one on any non-ASCII line.

/// `Authorization:` / `Proxy-Authorization:` header (also `=`, JSON and
/// escaped-JSON quoting): the whole value, whatever the scheme, up to the end
/// of the line, a quote or a backslash (an escaped `\r\n` or `\"`).
const AUTHORIZATION: &str = r#"(?P<keep>(?i:(?-u:\b)(?:proxy-)?authorization)\\?["']?[ \t]*[:=][ \t]*\\?["']?)(?P<secret>[^"'\\\r\n]+)"#;

/// `Bearer <token>` and `Basic <credentials>` outside a header. Both are also
/// English words, so the token must look like one (see [`looks_like_token`]).
const SCHEME_TOKEN: &str =
    r"(?P<keep>(?i:(?-u:\b)(?:bearer|basic))[ \t]+)(?P<secret>[A-Za-z0-9._~+/-]{8,}=*)";

/// `password=x`, `token: x`, `"apiKey": "x"`, `DB_PASSWORD=x`, `\"secret\":\"x\"`:
/// a secret-named key (any prefix: `client_secret`, `accessToken`), `=` or `:`,
/// and its value; quoted values keep their quotes. The key must end at the
/// separator, so `max_tokens=` or `password_hash:` are left alone.
const KEY_VALUE: &str = concat!(
    r#"(?P<keep>(?-u:\b)(?i:[a-z0-9_.-]*?(?:password|passwd|passphrase|pwd|secret|token|api[_-]?key|secret[_-]?key|private[_-]?key))"#,
    r#"\\?["']?[ \t]*[:=][ \t]*)"#,
    r#"(?P<secret>"(?:[^"\\]|\\.)*"|'[^']*'|\\"(?:[^"\\]|\\[^"])*\\"|[^\s&,;"'\\]+)"#,
);

/// The password in a URL's user info: `postgres://app:s3cret@db:5432/x`.
const URL_PASSWORD: &str =
    r"(?P<keep>(?-u:\b)[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)(?P<secret>[^/\s@]+)@";

/// A JSON Web Token: base64url header (`{"` is `eyJ`), payload and signature.
const JWT: &str = r"(?-u:\b)eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*";

/// An e-mail address, whole. The domain needs a dot and a letters-only last
/// label, so `pkg@1.2.3` and `image@sha256:...` are not addresses.
const EMAIL: &str = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?-u:\b)";

/// Runs of digit groups (of 3 or more, so dates like `2026-12-01 10` do not
/// join up) separated by single spaces or dashes; [`redact_cards`] finds the
/// card numbers in them.
const DIGIT_GROUPS: &str = r"(?-u:\b)[0-9]{3,}(?:[ -][0-9]{3,})*(?-u:\b)";

/// What the set looks for before the card pass: 13 digits close together.
const CARD_HINT: &str = r"[0-9](?:[ -]?[0-9]){12}";

/// The replacement for a match, or `None` to leave it as it is.
type Replace = fn(&Captures<'_>) -> Option<String>;

/// How one kind of secret is found and replaced.
struct Pass {
    regex: Regex,
    replace: Replace,
}

struct Redactor {
    /// Which passes can match a line, in one scan; pattern `i` is pass `i`'s.
    set: RegexSet,
    passes: Vec<Pass>,
}

impl Redactor {
    /// The passes in order. The `Authorization` header goes first, as its
    /// value holds a scheme and a token; then scheme tokens, before key-value
    /// pairs cut `token=Bearer abc` at the space; then the URL password, before
    /// the e-mail pass takes `s3cret@db.example.com` for an address.
    fn new() -> Option<Redactor> {
        let keep_and_mask: Replace = |c| Some(mask_secret(c));
        let passes: [(&str, &str, Replace); 7] = [
            (AUTHORIZATION, AUTHORIZATION, keep_and_mask),
            (SCHEME_TOKEN, SCHEME_TOKEN, |c| {
                looks_like_token(c.name("secret")?.as_str()).then(|| mask_secret(c))
            }),
            (KEY_VALUE, KEY_VALUE, mask_quoted),
            (URL_PASSWORD, URL_PASSWORD, |c| {
                Some(format!("{}@", mask_secret(c)))
            }),
            (JWT, JWT, |_| Some(REDACTED.to_string())),
            (EMAIL, EMAIL, |_| Some(REDACTED.to_string())),
            (CARD_HINT, DIGIT_GROUPS, |c| {
                redact_cards(c.get(0)?.as_str())
            }),
        ];
        let set = RegexSet::new(passes.iter().map(|(hint, _, _)| hint)).ok()?;
        let passes = passes
            .into_iter()
            .map(|(_, pattern, replace)| {
                Some(Pass {
                    regex: Regex::new(pattern).ok()?,
                    replace,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Redactor { set, passes })
    }

    fn redact<'a>(&self, line: &'a str) -> Cow<'a, str> {
        let hits = self.set.matches(line);
        let mut text = Cow::Borrowed(line);
        for (i, pass) in self.passes.iter().enumerate() {
            // A pass only ever removes what later passes look for, so the
            // set's view of the original line stays a superset.
            if hits.matched(i) {
                text = replace(text, pass);
            }
        }
        text
    }
}

/// `text` with `pass` applied; `text` itself when no match was replaced (a
/// rejected candidate leaves the line borrowed).
fn replace<'a>(text: Cow<'a, str>, pass: &Pass) -> Cow<'a, str> {
    let mut out = String::new();
    let mut last = 0;
    let mut replaced = false;
    for caps in pass.regex.captures_iter(&text) {
        let (Some(m), Some(replacement)) = (caps.get(0), (pass.replace)(&caps)) else {
            continue;
        };
        out.push_str(&text[last..m.start()]);
        out.push_str(&replacement);
        last = m.end();
        replaced = true;
    }
    if !replaced {
        return text;
    }
    out.push_str(&text[last..]);
    Cow::Owned(out)
}

/// The `keep` group followed by [`REDACTED`].
fn mask_secret(c: &Captures<'_>) -> String {
    let keep = c.name("keep").map_or("", |m| m.as_str());
    format!("{keep}{REDACTED}")
}

/// As [`mask_secret`], keeping the quotes around a quoted value.
fn mask_quoted(c: &Captures<'_>) -> Option<String> {
    let keep = c.name("keep")?.as_str();
    let secret = c.name("secret")?.as_str();
    let quote = ["\\\"", "\"", "'"]
        .into_iter()
        .find(|q| secret.len() >= 2 * q.len() && secret.starts_with(q) && secret.ends_with(q))
        .unwrap_or("");
    Some(format!("{keep}{quote}{REDACTED}{quote}"))
}

/// Whether the word after `Bearer`/`Basic` is a credential rather than prose
/// ("basic settings", "Bearer Authentication"): tokens and base64 have a
/// digit or a symbol, or mixed case past the first letter.
fn looks_like_token(token: &str) -> bool {
    let bytes = token.as_bytes();
    let symbol = bytes
        .iter()
        .any(|b| b.is_ascii_digit() || b"._~+/=-".contains(b));
    let inner_upper = bytes.iter().skip(1).any(u8::is_ascii_uppercase);
    let lower = bytes.iter().any(u8::is_ascii_lowercase);
    symbol || (inner_upper && lower)
}

/// Card numbers inside a run of digit groups: the longest span of whole
/// groups, 13 to 19 digits, that passes [`is_card`]. `None` when there is none.
fn redact_cards(run: &str) -> Option<String> {
    let mut groups = Vec::new();
    let mut start = None;
    for (i, b) in run.bytes().enumerate() {
        match (b.is_ascii_digit(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                groups.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        groups.push((s, run.len()));
    }
    let mut out = String::new();
    let mut last = 0;
    let mut replaced = false;
    let mut i = 0;
    while let Some(&(first, _)) = groups.get(i) {
        // The last group that still fits in 19 digits, then back from it.
        let mut digits = 0;
        let mut end = i;
        for (j, &(s, e)) in groups.iter().enumerate().skip(i) {
            digits += e - s;
            if digits > 19 {
                break;
            }
            end = j;
        }
        let card = (i..=end).rev().find(|&j| {
            let span = &run[first..groups[j].1];
            is_card(span)
        });
        match card {
            Some(j) => {
                out.push_str(&run[last..first]);
                out.push_str(REDACTED);
                last = groups[j].1;
                replaced = true;
                i = j + 1;
            }
            None => i += 1,
        }
    }
    if !replaced {
        return None;
    }
    out.push_str(&run[last..]);
    Some(out)
}

/// A payment card number: 13 to 19 digits, a first digit that card networks
/// use (2 to 6: Mastercard, Amex, Visa, Discover, UnionPay...; epoch
/// timestamps in ms, µs or ns start with 1), and a valid Luhn check digit.
fn is_card(span: &str) -> bool {
    let digits: Vec<u32> = span.chars().filter_map(|c| c.to_digit(10)).collect();
    (13..=19).contains(&digits.len())
        && digits.first().is_some_and(|d| (2..=6).contains(d))
        && luhn(&digits)
}

/// The Luhn (mod 10) check: from the right, every second digit doubled (its
/// digits summed), and the total a multiple of 10.
fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| match (i % 2, d * 2) {
            (0, _) => d,
            (_, doubled) if doubled > 9 => doubled - 9,
            (_, doubled) => doubled,
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(line: &str) -> String {
        redact(line).into_owned()
    }

    fn untouched(line: &str) {
        let out = redact(line);
        assert!(matches!(out, Cow::Borrowed(_)), "{line:?} became {out:?}");
    }

    #[test]
    fn patterns_compile() {
        assert!(REDACTOR.is_some());
    }

    #[test]
    fn clean_lines_stay_borrowed() {
        for line in [
            "",
            "GET /api/users/42 200 12ms",
            "2026-12-01T10:00:00Z INFO listening on 0.0.0.0:8080",
            "{\"level\":\"info\",\"msg\":\"started\",\"pid\":1234}",
            "connecting to postgres://db:5432/app",
            "ünïcödé log line with — dashes",
        ] {
            untouched(line);
        }
    }

    #[test]
    fn emails() {
        assert_eq!(
            r("sent to alice.smith+tag@mail.example.co.uk."),
            "sent to [REDACTED]."
        );
        assert_eq!(
            r("from=bob@example.com to=<carol_1@sub.example.org>"),
            "from=[REDACTED] to=<[REDACTED]>"
        );
        assert_eq!(r("{\"email\":\"x@y.io\"}"), "{\"email\":\"[REDACTED]\"}");
        untouched("npm install @types/node@18.0.0");
        untouched("pulling nginx@sha256:0123abcd");
        untouched("user@localhost denied");
        untouched("a @ b.com");
    }

    #[test]
    fn authorization_header() {
        assert_eq!(
            r("Authorization: Bearer abc.def"),
            "Authorization: [REDACTED]"
        );
        assert_eq!(
            r("authorization:Basic dXNlcjpwYXNz"),
            "authorization:[REDACTED]"
        );
        assert_eq!(
            r("Proxy-Authorization: Negotiate YIIabc"),
            "Proxy-Authorization: [REDACTED]"
        );
        assert_eq!(r("AUTHORIZATION = token 123"), "AUTHORIZATION = [REDACTED]");
        assert_eq!(
            r(r#"{"headers":{"Authorization":"Digest username=x, response=y","Accept":"*/*"}}"#),
            r#"{"headers":{"Authorization":"[REDACTED]","Accept":"*/*"}}"#
        );
        assert_eq!(
            r(r#"{"log":"{\"Authorization\":\"Bearer xyz\"}"}"#),
            r#"{"log":"{\"Authorization\":\"[REDACTED]\"}"}"#
        );
        assert_eq!(
            r("curl -H 'Authorization: abc' http://x"),
            "curl -H 'Authorization: [REDACTED]' http://x"
        );
        untouched("Authorization failed for user 42");
        untouched("authorization header missing");
        untouched("reauthorization: x");
    }

    #[test]
    fn bearer_and_basic_tokens() {
        assert_eq!(
            r("calling with Bearer eyJhbGciOiJIUzI1NiJ9xx then"),
            "calling with Bearer [REDACTED] then"
        );
        assert_eq!(
            r("token_type=bearer value bearer 0123abcd4567"),
            "token_type=bearer value bearer [REDACTED]"
        );
        assert_eq!(r("using Basic dXNlcjpwYXNz"), "using Basic [REDACTED]");
        assert_eq!(r("using Basic YWRtaW46YWRtaW4="), "using Basic [REDACTED]");
        untouched("basic settings applied");
        untouched("Basic Authentication enabled");
        untouched("the bearer of bad news");
        untouched("Bearer short1");
        untouched("BASIC SETTINGS");
    }

    #[test]
    fn key_values() {
        assert_eq!(
            r("password=hunter2 user=bob"),
            "password=[REDACTED] user=bob"
        );
        assert_eq!(r("PASSWD: hunter2"), "PASSWD: [REDACTED]");
        assert_eq!(r("pwd=abc;next=1"), "pwd=[REDACTED];next=1");
        assert_eq!(r("secret=s"), "secret=[REDACTED]");
        assert_eq!(
            r("GET /cb?code=1&token=abc123&state=x"),
            "GET /cb?code=1&token=[REDACTED]&state=x"
        );
        assert_eq!(
            r("api_key=k1 apikey=k2 api-key=k3"),
            "api_key=[REDACTED] apikey=[REDACTED] api-key=[REDACTED]"
        );
        assert_eq!(
            r("access_token=a client_secret=b"),
            "access_token=[REDACTED] client_secret=[REDACTED]"
        );
        assert_eq!(
            r("DB_PASSWORD=p4ss REDIS_TOKEN=t"),
            "DB_PASSWORD=[REDACTED] REDIS_TOKEN=[REDACTED]"
        );
        assert_eq!(r("X-Api-Key: abc"), "X-Api-Key: [REDACTED]");
        assert_eq!(r("secret_key='s 1' ok"), "secret_key='[REDACTED]' ok");
    }

    #[test]
    fn json_key_values_keep_key_and_quotes() {
        assert_eq!(
            r(r#"{"password": "hunter2", "user": "bob"}"#),
            r#"{"password": "[REDACTED]", "user": "bob"}"#
        );
        assert_eq!(
            r(r#"{"Password":"a \"quoted\" one","n":1}"#),
            r#"{"Password":"[REDACTED]","n":1}"#
        );
        assert_eq!(
            r(r#"{"accessToken":"t","refreshToken":"u"}"#),
            r#"{"accessToken":"[REDACTED]","refreshToken":"[REDACTED]"}"#
        );
        assert_eq!(
            r(r#"{"apiKey": 12345, "n": 1}"#),
            r#"{"apiKey": [REDACTED], "n": 1}"#
        );
        assert_eq!(
            r(r#"{"msg":"{\"token\":\"abc\"}"}"#),
            r#"{"msg":"{\"token\":\"[REDACTED]\"}"}"#
        );
        assert_eq!(r(r#"{"secret": ""}"#), r#"{"secret": "[REDACTED]"}"#);
    }

    #[test]
    fn key_values_need_the_exact_key() {
        untouched("max_tokens=100 temperature=0.2");
        untouched("token_count=5");
        untouched("password_hash_algo=argon2");
        untouched("secretary: Bob");
        untouched("the password was changed");
        untouched("tokens: 512");
    }

    #[test]
    fn bearer_inside_a_key_value() {
        assert_eq!(
            r("access_token=Bearer abcdef123456"),
            "access_token=[REDACTED] [REDACTED]"
        );
        assert_eq!(
            r(r#"{"token": "Bearer abcdef123456"}"#),
            r#"{"token": "[REDACTED]"}"#
        );
    }

    #[test]
    fn url_passwords() {
        assert_eq!(
            r("connecting to postgres://app:s3cret@db:5432/x"),
            "connecting to postgres://app:[REDACTED]@db:5432/x"
        );
        assert_eq!(
            r("redis://:pw@cache.example.com/0"),
            "redis://:[REDACTED]@cache.example.com/0"
        );
        untouched("http://[::1]:8080/path");
        untouched("http://host:8080/a@b");
    }

    #[test]
    fn jwts() {
        let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_eq!(r(&format!("got {jwt} ok")), "got [REDACTED] ok");
        assert_eq!(r(&format!("id_token={jwt}")), "id_token=[REDACTED]");
        assert_eq!(
            r("unsigned eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0."),
            "unsigned [REDACTED]"
        );
        untouched("eyJhbGciOiJIUzI1NiJ9 alone");
        untouched("keyJabc.eyJdef.ghi");
    }

    #[test]
    fn card_numbers() {
        for card in [
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "4111111111111111",
        ] {
            assert_eq!(
                r(&format!("card {card} charged")),
                "card [REDACTED] charged",
                "{card}"
            );
        }
        // Mastercard, Amex (15, grouped 4-6-5), 13-digit and 19-digit Visa.
        assert_eq!(r("5555555555554444"), "[REDACTED]");
        assert_eq!(r("3782 822463 10005"), "[REDACTED]");
        assert_eq!(r("4222222222222"), "[REDACTED]");
        assert_eq!(r("4111111111111111110"), "[REDACTED]");
        assert_eq!(
            r("cards=4111111111111111,5555555555554444"),
            "cards=[REDACTED],[REDACTED]"
        );
    }

    #[test]
    fn card_inside_a_longer_run_of_groups() {
        assert_eq!(r("4111 1111 1111 1111 123"), "[REDACTED] 123");
        assert_eq!(r("ref 123 4111-1111-1111-1111"), "ref 123 [REDACTED]");
    }

    #[test]
    fn digits_that_are_not_cards() {
        // 16 digits failing Luhn: an order id.
        untouched("order 4111111111111112 shipped");
        untouched("order 4111 1111 1111 1112 shipped");
        // Passes Luhn but starts with 1: an epoch timestamp in µs.
        assert!(luhn(&[1, 7, 3, 3, 0, 4, 9, 6, 0, 0, 0, 0, 0, 0, 0, 3]));
        untouched("ts=1733049600000003");
        // Too long, too short, or glued to letters.
        untouched("id 41111111111111111111");
        untouched("id 411111111111");
        untouched("x4111111111111111");
        untouched("4111111111111111abc");
        // Groups of one or two digits do not join into a number.
        untouched("4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1");
        untouched("2026-12-01 10:00:00 4111 11");
    }

    #[test]
    fn luhn_check() {
        let digits = |s: &str| s.chars().filter_map(|c| c.to_digit(10)).collect::<Vec<_>>();
        assert!(luhn(&digits("4111111111111111")));
        assert!(luhn(&digits("79927398713")));
        assert!(!luhn(&digits("79927398710")));
        assert!(!luhn(&digits("4111111111111112")));
        assert!(luhn(&[]));
    }

    #[test]
    fn several_kinds_in_one_line() {
        assert_eq!(
            r("user=a@b.com password=x card=4111111111111111 Authorization: Bearer t"),
            "user=[REDACTED] password=[REDACTED] card=[REDACTED] Authorization: [REDACTED]"
        );
    }

    #[test]
    fn never_panics_on_odd_input() {
        for line in [
            "password=",
            "password=\"",
            "password=\"unterminated",
            "\\\"password\\\":\\\"",
            "Authorization:",
            "Bearer ",
            "eyJ..",
            "@.",
            "://:@",
            "4111 ",
            "\u{fffd}password=\u{fffd} \u{fffd}@\u{fffd}.com",
        ] {
            let _ = redact(line);
        }
    }
}
