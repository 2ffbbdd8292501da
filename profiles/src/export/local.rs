//! Profiles on local disk, for hosts without a backend: each interval replaces
//! `<service>.pb.gz` (open with `go tool pprof` or upload anywhere) and
//! `<service>.svg` (open in a browser) in the profiles directory, and
//! `<service>.spans/<span_id>.svg`: the flamegraph of one request's samples,
//! for the requests that burned the most CPU (the span's
//! `pyroscope.profile.id` names its file).

use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use crate::{flamegraph, profile::Profile};

/// A file name for a service name: letters, digits, `-`, `_`, `.` kept, the rest `_`.
pub fn file_stem(service: &str) -> String {
    let stem: String = service
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match stem.trim_start_matches('.') {
        "" => "unknown".into(),
        s => s.to_string(),
    }
}

/// Writes the profile's pprof (already gzipped) and flamegraph, each through a
/// temporary file renamed over the old one, so readers never see half a file.
pub fn write(dir: &Path, profile: &Profile, pprof_gz: &[u8]) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let stem = file_stem(&profile.target.service_name);
    let pb = dir.join(format!("{stem}.pb.gz"));
    replace(&pb, pprof_gz)?;
    let svg = dir.join(format!("{stem}.svg"));
    replace(&svg, &flamegraph::svg(profile)?)?;
    let mut written = vec![pb, svg];
    written.extend(write_spans(&dir.join(format!("{stem}.spans")), profile)?);
    Ok(written)
}

/// Span flamegraphs kept per service and interval (the heaviest spans).
const MAX_SPAN_GRAPHS: usize = 32;

/// One flamegraph per span with samples, replacing the last interval's.
fn write_spans(dir: &Path, profile: &Profile) -> std::io::Result<Vec<PathBuf>> {
    let mut by_span: std::collections::HashMap<String, Vec<crate::profile::Sample>> =
        Default::default();
    for sample in &profile.samples {
        if let Some(link) = &sample.link {
            by_span
                .entry(link.span_hex())
                .or_default()
                .push(sample.clone());
        }
    }
    if let Ok(old) = std::fs::read_dir(dir) {
        for entry in old.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if by_span.is_empty() {
        let _ = std::fs::remove_dir(dir);
        return Ok(Vec::new());
    }
    let mut spans: Vec<(String, Vec<crate::profile::Sample>)> = by_span.into_iter().collect();
    let weight = |samples: &[crate::profile::Sample]| samples.iter().map(|s| s.count).sum::<u64>();
    spans.sort_by_key(|(id, samples)| (std::cmp::Reverse(weight(samples)), id.clone()));
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (id, samples) in spans.into_iter().take(MAX_SPAN_GRAPHS) {
        let one = Profile {
            samples,
            ..profile.clone()
        };
        let path = dir.join(format!("{id}.svg"));
        replace(&path, &flamegraph::svg(&one)?)?;
        written.push(path);
    }
    Ok(written)
}

fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_sampled_span_gets_its_own_flamegraph() {
        let dir = std::env::temp_dir().join(format!("profiles-local-{}", std::process::id()));
        let profile = crate::testing::profile();
        let written = write(&dir, &profile, b"pprof").expect("written");
        let span = dir.join("app.spans/0a0b0c0d01020304.svg");
        assert!(written.contains(&span), "{written:?}");
        let svg = std::fs::read_to_string(&span).expect("span svg");
        assert!(svg.contains("hot"), "the span's own stack");
        assert!(!svg.contains("cold"), "not the others");
        // Next interval without linked samples: last interval's graphs go.
        let mut unlinked = profile.clone();
        unlinked.samples[0].link = None;
        write(&dir, &unlinked, b"pprof").expect("written");
        assert!(!span.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn service_names_make_safe_file_names() {
        assert_eq!(file_stem("checkout"), "checkout");
        assert_eq!(file_stem("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(file_stem("a b/c"), "a_b_c");
        assert_eq!(file_stem(""), "unknown");
        assert_eq!(file_stem(".."), "unknown");
    }
}
