//! Profiles on local disk, for hosts without a backend: each interval replaces
//! `<service>.pb.gz` (open with `go tool pprof` or upload anywhere) and
//! `<service>.svg` (open in a browser) in the profiles directory.

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
    Ok(vec![pb, svg])
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
    fn service_names_make_safe_file_names() {
        assert_eq!(file_stem("checkout"), "checkout");
        assert_eq!(file_stem("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(file_stem("a b/c"), "a_b_c");
        assert_eq!(file_stem(""), "unknown");
        assert_eq!(file_stem(".."), "unknown");
    }
}
