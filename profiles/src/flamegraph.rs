//! Flamegraphs with `inferno`, from the same profiles the backends receive.

use std::fmt::Write as _;

use crate::profile::Profile;

/// Folded stacks (`root;caller;leaf count`), one line per distinct stack, the
/// input format of flamegraph tools. Inlined functions are frames of their own;
/// frames without a name show `module+0xoffset`.
pub fn collapsed(profile: &Profile) -> Vec<String> {
    let mut lines: std::collections::BTreeMap<String, u64> = Default::default();
    for sample in &profile.samples {
        let mut stack = String::new();
        for frame in sample.frames.iter().rev() {
            if frame.lines.is_empty() {
                push_frame(&mut stack, &frame.fallback_name());
            }
            for line in frame.lines.iter().rev() {
                push_frame(&mut stack, &line.function);
            }
        }
        *lines.entry(stack).or_default() += sample.count;
    }
    lines
        .into_iter()
        .map(|(stack, count)| {
            let mut line = stack;
            let _ = write!(line, " {count}");
            line
        })
        .collect()
}

fn push_frame(stack: &mut String, name: &str) {
    if !stack.is_empty() {
        stack.push(';');
    }
    // `;` separates frames and a trailing number is the count: keep names clean.
    stack.extend(name.chars().map(|c| match c {
        ';' => ':',
        '\n' | '\r' => ' ',
        c => c,
    }));
}

/// An SVG flamegraph of the profile (values in samples).
pub fn svg(profile: &Profile) -> std::io::Result<Vec<u8>> {
    let lines = collapsed(profile);
    let mut options = inferno::flamegraph::Options::default();
    options.title = format!("{} — CPU", profile.target.service_name);
    options.count_name = "samples".into();
    let mut out = Vec::new();
    inferno::flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    #[test]
    fn folded_stacks_go_root_to_leaf_with_inlined_frames() {
        let lines = collapsed(&testing::profile());
        assert_eq!(
            lines,
            [
                "main;work;cold;helper 1",
                "main;work;hot 3",
                "main;work;libz.so+0x1345 2",
            ]
        );
        let svg = String::from_utf8(svg(&testing::profile()).unwrap()).unwrap();
        assert!(svg.contains("hot") && svg.contains("app"));
    }
}
