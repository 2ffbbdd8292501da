//! The severity a log line states, as an OpenTelemetry `SeverityNumber`.
//!
//! Lines come from any program, so this reads the few places loggers put the
//! level and nothing else: a `level`-like field of a JSON line, a `level=`
//! logfmt key, or a level word at the start of the line (after a timestamp,
//! a thread or logger name). A level word further into the text is prose
//! ("retrying after error"), not the line's severity, so it does not count.

use serde::Deserialize;
use serde_json::Value;

/// An OpenTelemetry severity: `number` is the `SeverityNumber` of the range's
/// first value, `text` its canonical name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Severity {
    pub number: i32,
    pub text: &'static str,
}

impl Severity {
    pub const TRACE: Severity = Severity {
        number: 1,
        text: "TRACE",
    };
    pub const DEBUG: Severity = Severity {
        number: 5,
        text: "DEBUG",
    };
    pub const INFO: Severity = Severity {
        number: 9,
        text: "INFO",
    };
    pub const WARN: Severity = Severity {
        number: 13,
        text: "WARN",
    };
    pub const ERROR: Severity = Severity {
        number: 17,
        text: "ERROR",
    };
    pub const FATAL: Severity = Severity {
        number: 21,
        text: "FATAL",
    };
}

/// JSON lines longer than this are not parsed (only scanned for the key):
/// the level is near the start and the parse would cost the whole line.
const MAX_JSON: usize = 64 * 1024;

/// Level words are looked for among this many tokens that contain a letter;
/// tokens without one (dates, times, pids, `-`) are skipped over.
const MAX_WORDS: usize = 3;

/// Tokens looked at in all, for a `level=` key as well.
const MAX_TOKENS: usize = 8;

/// The severity `line` states, if it states one.
pub fn severity(line: &str) -> Option<Severity> {
    let line = line.trim_start();
    if line.starts_with('{') {
        if line.len() <= MAX_JSON
            && let Ok(fields) = serde_json::from_str::<LevelFields>(line)
        {
            // A JSON line says its level in a field or not at all: its text
            // is field names and values, not words at the start of a line.
            return fields.severity();
        }
        // Not JSON after all, or cut short (truncated lines are common for
        // JSON with stack traces): look for the key itself.
        if let Some(s) = json_key_scan(line) {
            return Some(s);
        }
    }
    syslog_prefix(line)
        .or_else(|| klog(line))
        .or_else(|| tokens(line))
}

/// The top-level fields of a JSON line loggers put the level in (pino,
/// bunyan, zap, logrus, slog, winston: `level`; Google Cloud: `severity`;
/// Elastic Common Schema: `log.level`). Other fields are skipped unparsed.
#[derive(Deserialize)]
struct LevelFields {
    level: Option<Value>,
    severity: Option<Value>,
    lvl: Option<Value>,
    #[serde(rename = "log.level")]
    log_level: Option<Value>,
}

impl LevelFields {
    fn severity(&self) -> Option<Severity> {
        let level = self.level.as_ref().and_then(|value| match value {
            Value::String(s) => named(s.trim()),
            Value::Number(n) => n.as_u64().and_then(pino),
            _ => None,
        });
        // Numbers only in `level` (pino, bunyan): elsewhere a number could be
        // a syslog or an OTel severity, and there is no telling which.
        level.or_else(|| {
            [&self.severity, &self.lvl, &self.log_level]
                .into_iter()
                .flatten()
                .find_map(|value| value.as_str().and_then(|s| named(s.trim())))
        })
    }
}

/// pino's and bunyan's numeric levels.
fn pino(level: u64) -> Option<Severity> {
    Some(match level {
        10 => Severity::TRACE,
        20 => Severity::DEBUG,
        30 => Severity::INFO,
        40 => Severity::WARN,
        50 => Severity::ERROR,
        60 => Severity::FATAL,
        _ => return None,
    })
}

/// `"level": "warn"` (or `"level": 40`) anywhere in a line that does not parse.
fn json_key_scan(line: &str) -> Option<Severity> {
    for key in ["\"level\"", "\"severity\"", "\"lvl\"", "\"log.level\""] {
        for (at, _) in line.match_indices(key) {
            let Some(value) = line[at + key.len()..].trim_start().strip_prefix(':') else {
                continue;
            };
            let value = value.trim_start();
            let found = if let Some(quoted) = value.strip_prefix('"') {
                // Only a closed string: a cut one may be a longer word's start.
                quoted
                    .split_once('"')
                    .and_then(|(word, _)| named(word.trim()))
            } else if key == "\"level\"" {
                let end = value
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(value.len());
                let closed = value[end..].starts_with([',', '}', ' ', '\t']);
                value[..end].parse().ok().filter(|_| closed).and_then(pino)
            } else {
                None
            };
            if found.is_some() {
                return found;
            }
        }
    }
    None
}

/// The `<N>` prefix of sd-daemon(3) (what journald reads on stdout/stderr):
/// a syslog severity from 0 (emerg) to 7 (debug).
fn syslog_prefix(line: &str) -> Option<Severity> {
    match line.as_bytes() {
        [b'<', digit @ b'0'..=b'7', b'>', ..] => Some(match digit {
            b'0'..=b'2' => Severity::FATAL,
            b'3' => Severity::ERROR,
            b'4' => Severity::WARN,
            b'5' | b'6' => Severity::INFO,
            _ => Severity::DEBUG,
        }),
        _ => None,
    }
}

/// Kubernetes components' klog header: `E1201 10:00:00.123456 1 file.go:42] ...`,
/// the level letter glued to the month and day.
fn klog(line: &str) -> Option<Severity> {
    let mut tokens = line.split_ascii_whitespace();
    let (head, time) = (tokens.next()?, tokens.next()?);
    let [level, rest @ ..] = head.as_bytes() else {
        return None;
    };
    let time_like = time.starts_with(|c: char| c.is_ascii_digit()) && time.contains(':');
    if rest.len() != 4 || !rest.iter().all(u8::is_ascii_digit) || !time_like {
        return None;
    }
    match level {
        b'I' => Some(Severity::INFO),
        b'W' => Some(Severity::WARN),
        b'E' => Some(Severity::ERROR),
        b'F' => Some(Severity::FATAL),
        _ => None,
    }
}

/// Where a level word sits in plain-text lines: `ERROR x`, `[WARN] x`,
/// `2026-12-01T10:00:00Z info x`, `ERROR: x`, `WARNING:root:x` (Python),
/// `WARN[0000] x` (logrus), `level=error msg=...` (logfmt).
fn tokens(line: &str) -> Option<Severity> {
    let mut words = 0;
    for token in line.split_ascii_whitespace().take(MAX_TOKENS) {
        if let Some((key, value)) = token.split_once('=') {
            let key = key.trim_matches(['"', '\'']);
            if LEVEL_KEYS.iter().any(|k| key.eq_ignore_ascii_case(k))
                && let Some(s) = leading_word(value)
            {
                return Some(s);
            }
            // `err=nil` and the like are fields, not level words.
            words += 1;
            continue;
        }
        if words < MAX_WORDS && token.bytes().any(|b| b.is_ascii_alphabetic()) {
            if let Some(s) = leading_word(token) {
                return Some(s);
            }
            words += 1;
        }
    }
    None
}

const LEVEL_KEYS: &[&str] = &["level", "lvl", "severity", "log.level"];

/// The level named by the letters at the start of `token`, after opening
/// brackets or quotes. The letters must end the token or be followed by
/// punctuation that closes or separates (`]`, `:`, ...): `errors`, `error42`
/// or `info.example.com` name no level.
fn leading_word(token: &str) -> Option<Severity> {
    let token = token.trim_start_matches(['[', '(', '<', '{', '"', '\'']);
    let end = token
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(token.len());
    let (word, rest) = token.split_at(end);
    let closed = rest.is_empty()
        || rest.starts_with([']', ')', '>', '}', ':', ';', ',', '"', '\'', '[', '|']);
    if closed { named(word) } else { None }
}

/// Level names and the aliases loggers use for them, lower case.
const NAMES: &[(&str, Severity)] = &[
    ("trace", Severity::TRACE),
    ("trc", Severity::TRACE),
    ("debug", Severity::DEBUG),
    ("dbg", Severity::DEBUG),
    ("info", Severity::INFO),
    ("information", Severity::INFO),
    ("informational", Severity::INFO),
    ("notice", Severity::INFO),
    ("warn", Severity::WARN),
    ("warning", Severity::WARN),
    ("error", Severity::ERROR),
    ("err", Severity::ERROR),
    // java.util.logging's highest level.
    ("severe", Severity::ERROR),
    ("fatal", Severity::FATAL),
    ("critical", Severity::FATAL),
    ("crit", Severity::FATAL),
    ("panic", Severity::FATAL),
    ("alert", Severity::FATAL),
    ("emerg", Severity::FATAL),
    ("emergency", Severity::FATAL),
];

/// The level `word` names, in any case.
fn named(word: &str) -> Option<Severity> {
    NAMES
        .iter()
        .find(|(name, _)| word.eq_ignore_ascii_case(name))
        .map(|&(_, s)| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sev(line: &str) -> Option<&'static str> {
        severity(line).map(|s| s.text)
    }

    #[test]
    fn numbers_are_otel_severity_numbers() {
        let all = [
            Severity::TRACE,
            Severity::DEBUG,
            Severity::INFO,
            Severity::WARN,
            Severity::ERROR,
            Severity::FATAL,
        ];
        let numbers: Vec<_> = all.iter().map(|s| (s.number, s.text)).collect();
        assert_eq!(
            numbers,
            [
                (1, "TRACE"),
                (5, "DEBUG"),
                (9, "INFO"),
                (13, "WARN"),
                (17, "ERROR"),
                (21, "FATAL")
            ]
        );
        assert_eq!(severity("ERROR x"), Some(Severity::ERROR));
    }

    #[test]
    fn json_string_fields() {
        assert_eq!(sev(r#"{"level":"error","msg":"x"}"#), Some("ERROR"));
        assert_eq!(sev(r#"  {"msg":"x","level":"WARNING"}"#), Some("WARN"));
        assert_eq!(sev(r#"{"severity":"Info","message":"x"}"#), Some("INFO"));
        assert_eq!(sev(r#"{"lvl":"dbg"}"#), Some("DEBUG"));
        assert_eq!(
            sev(r#"{"@timestamp":"t","log.level":"crit"}"#),
            Some("FATAL")
        );
        assert_eq!(sev(r#"{"level":" info "}"#), Some("INFO"));
    }

    #[test]
    fn json_level_wins_over_other_fields() {
        assert_eq!(
            sev(r#"{"severity":"error","level":"debug"}"#),
            Some("DEBUG")
        );
        // An unknown level leaves the next field to say.
        assert_eq!(
            sev(r#"{"level":"verbose","severity":"warn"}"#),
            Some("WARN")
        );
    }

    #[test]
    fn json_numeric_levels() {
        for (n, text) in [
            (10, "TRACE"),
            (20, "DEBUG"),
            (30, "INFO"),
            (40, "WARN"),
            (50, "ERROR"),
            (60, "FATAL"),
        ] {
            assert_eq!(sev(&format!(r#"{{"level":{n},"msg":"x"}}"#)), Some(text));
        }
        assert_eq!(sev(r#"{"level":35}"#), None);
        assert_eq!(sev(r#"{"level":-10}"#), None);
        assert_eq!(sev(r#"{"level":30.5}"#), None);
        // Only `level` is pino's.
        assert_eq!(sev(r#"{"severity":50}"#), None);
    }

    #[test]
    fn json_without_a_level_field() {
        assert_eq!(sev(r#"{"msg":"ERROR disk full"}"#), None);
        assert_eq!(sev(r#"{"log":{"level":"error"}}"#), None);
        assert_eq!(sev(r#"{"level":null}"#), None);
        assert_eq!(sev(r#"{"level":["error"]}"#), None);
        assert_eq!(sev("{}"), None);
    }

    #[test]
    fn truncated_json_is_scanned_for_the_key() {
        assert_eq!(
            sev(r#"{"ts":1,"level":"error","stack":"at foo.bar(Foo.java:1"#),
            Some("ERROR")
        );
        assert_eq!(sev(r#"{"level" : 50, "msg":"very long"#), Some("ERROR"));
        // A cut value may be a longer word's start: not taken.
        assert_eq!(sev(r#"{"msg":"x","level":"err"#), None);
        assert_eq!(sev(r#"{"msg":"x","level":5"#), None);
        // Escaped quotes: the key as text inside a string value.
        assert_eq!(sev(r#"{"msg":"set \"level\":\"debug\" on"#), None);
    }

    #[test]
    fn oversized_json_is_scanned_not_parsed() {
        let line = format!(r#"{{"level":"warn","msg":"{}"}}"#, "x".repeat(MAX_JSON));
        assert_eq!(sev(&line), Some("WARN"));
    }

    #[test]
    fn brace_lines_that_are_not_json() {
        assert_eq!(sev("{worker-1} ERROR lost connection"), Some("ERROR"));
        assert_eq!(sev("{not json"), None);
    }

    #[test]
    fn plain_words() {
        assert_eq!(sev("ERROR something broke"), Some("ERROR"));
        assert_eq!(sev("info: started"), Some("INFO"));
        assert_eq!(sev("[WARN] x"), Some("WARN"));
        assert_eq!(sev("ERROR: x"), Some("ERROR"));
        assert_eq!(sev("<debug> x"), Some("DEBUG"));
        assert_eq!(sev("(trace) x"), Some("TRACE"));
        assert_eq!(
            sev("panic: runtime error: index out of range"),
            Some("FATAL")
        );
        assert_eq!(sev("Error: unknown flag --x"), Some("ERROR"));
    }

    #[test]
    fn aliases() {
        for (word, text) in [
            ("warning", "WARN"),
            ("err", "ERROR"),
            ("critical", "FATAL"),
            ("crit", "FATAL"),
            ("panic", "FATAL"),
            ("alert", "FATAL"),
            ("emerg", "FATAL"),
            ("emergency", "FATAL"),
            ("notice", "INFO"),
            ("information", "INFO"),
            ("dbg", "DEBUG"),
            ("trc", "TRACE"),
            ("fatal", "FATAL"),
            ("SEVERE", "ERROR"),
        ] {
            assert_eq!(sev(&format!("[{word}] x")), Some(text), "{word}");
            assert_eq!(
                sev(&format!("{}: x", word.to_uppercase())),
                Some(text),
                "{word}"
            );
        }
    }

    #[test]
    fn after_timestamps_and_names() {
        assert_eq!(sev("2026-12-01T10:00:00Z ERROR something"), Some("ERROR"));
        assert_eq!(
            sev("2026-12-01T10:00:00.123+01:00 [main] warn x"),
            Some("WARN")
        );
        // Tokens without letters (date, time, separators) do not count.
        assert_eq!(
            sev("2026-12-01 10:00:00,123 [main] ERROR com.example.Foo - x"),
            Some("ERROR")
        );
        assert_eq!(
            sev("2026-12-01 10:00:00,123 - app - WARNING - x"),
            Some("WARN")
        );
        assert_eq!(
            sev("2026/12/01 10:00:00 [error] 12#0: *3 open() failed"),
            Some("ERROR")
        );
        assert_eq!(sev("2026/12/01 10:00:00 INFO starting"), Some("INFO"));
    }

    #[test]
    fn python_and_logrus_shapes() {
        assert_eq!(sev("WARNING:root:disk almost full"), Some("WARN"));
        assert_eq!(sev("ERROR:app.db:timeout"), Some("ERROR"));
        assert_eq!(sev("WARN[0000] config file not found"), Some("WARN"));
    }

    #[test]
    fn logfmt_keys() {
        assert_eq!(sev("level=error msg=\"boom\""), Some("ERROR"));
        assert_eq!(
            sev("ts=2026-12-01T10:00:00Z caller=main.go:10 level=info msg=x"),
            Some("INFO")
        );
        assert_eq!(
            sev(r#"time="2026-12-01 10:00:00" level="warning" msg=x"#),
            Some("WARN")
        );
        assert_eq!(sev("a=1 b=2 c=3 d=4 LVL=DEBUG"), Some("DEBUG"));
        assert_eq!(sev("severity=crit x"), Some("FATAL"));
        // Other keys named like levels are fields.
        assert_eq!(sev("error=nil status=200"), None);
        assert_eq!(sev("err=\"EOF\" op=read"), None);
    }

    #[test]
    fn level_words_in_prose_do_not_count() {
        assert_eq!(sev("connected to the database, information follows"), None);
        assert_eq!(sev("request failed with error 500"), None);
        assert_eq!(sev("GET /api/users 200 12ms warning=none"), None);
        assert_eq!(sev(r#"ts=1 caller=x msg="retrying after error""#), None);
    }

    #[test]
    fn words_that_only_start_like_levels() {
        assert_eq!(sev("errors: 0"), None);
        assert_eq!(sev("error42 x"), None);
        assert_eq!(sev("info.example.com sshd[1]: accepted"), None);
        assert_eq!(sev("informed the user"), None);
        assert_eq!(sev("debugger attached"), None);
        assert_eq!(sev("in for a penny"), None);
    }

    #[test]
    fn syslog_prefix_from_sd_daemon() {
        assert_eq!(sev("<3>failed to bind"), Some("ERROR"));
        assert_eq!(sev("<4>low memory"), Some("WARN"));
        assert_eq!(sev("<0>x"), Some("FATAL"));
        assert_eq!(sev("<6>x"), Some("INFO"));
        assert_eq!(sev("<7>x"), Some("DEBUG"));
        assert_eq!(sev("<8>x"), None);
        assert_eq!(sev("<34>x"), None);
    }

    #[test]
    fn klog_header() {
        assert_eq!(
            sev("E1201 10:00:00.123456       1 reflector.go:42] watch failed"),
            Some("ERROR")
        );
        assert_eq!(
            sev("I1201 10:00:00.123456       1 main.go:10] started"),
            Some("INFO")
        );
        assert_eq!(sev("W1201 10:00:00.000000 7 x.go:1] x"), Some("WARN"));
        assert_eq!(sev("F1201 10:00:00.000000 7 x.go:1] x"), Some("FATAL"));
        assert_eq!(sev("E1201 processed"), None);
        assert_eq!(sev("A1201 10:00:00.000000 x"), None);
    }

    #[test]
    fn nothing_stated() {
        assert_eq!(sev(""), None);
        assert_eq!(sev("   "), None);
        assert_eq!(sev("hello world"), None);
        assert_eq!(sev("12345 67890"), None);
        assert_eq!(sev("[]:<>"), None);
    }

    #[test]
    fn never_panics_on_odd_input() {
        for line in [
            "{",
            "{\"level\"",
            "{\"level\":",
            "{\"level\":\"",
            "{\"level\":9999999999999999999999999}",
            "{\"level\":\"\u{fffd}\"}",
            "\u{fffd}\u{fffd} ERROR",
            "= = =",
            "<",
            "<3",
            "E",
            "E1201",
            "[\u{e9}rror]",
        ] {
            let _ = severity(line);
        }
        let deep = "[".repeat(10_000);
        assert_eq!(sev(&format!("{{\"a\":{deep}")), None);
    }
}
