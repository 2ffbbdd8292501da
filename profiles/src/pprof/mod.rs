//! Profiles as pprof (`profile.proto`), gzipped as backends expect them, and the
//! checks Pyroscope applies on ingestion.

pub mod proto;

use std::collections::HashMap;

use prost::Message as _;

use crate::{profile::Profile, symbolize::MappingInfo};

/// Pyroscope's ingestion limits (`validation.go`: max samples, max profile size).
pub const MAX_SAMPLES: usize = 16_000;
pub const MAX_BYTES: usize = 4 << 20;

/// Interns strings; index 0 is always "".
#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Strings {
        let mut s = Strings::default();
        s.get("");
        s
    }

    fn get(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

/// Encodes a profile: sample type and period type `cpu`/`nanoseconds`, one
/// value per sample (count × period), labels `pid` and `thread_name`.
pub fn encode(profile: &Profile) -> proto::Profile {
    let mut strings = Strings::new();
    let cpu = strings.get("cpu");
    let nanoseconds = strings.get("nanoseconds");
    let value_type = proto::ValueType {
        r#type: cpu,
        unit: nanoseconds,
    };
    let (pid_key, thread_key) = (strings.get("pid"), strings.get("thread_name"));
    let span_key = strings.get("span_id");

    let mut mappings: Vec<proto::Mapping> = Vec::new();
    let mut mapping_ids: HashMap<&MappingInfo, u64> = HashMap::new();
    let mut locations: Vec<proto::Location> = Vec::new();
    let mut location_ids: HashMap<(u64, u64, i64), u64> = HashMap::new();
    let mut functions: Vec<proto::Function> = Vec::new();
    let mut function_ids: HashMap<(i64, i64), u64> = HashMap::new();
    let mut samples = Vec::with_capacity(profile.samples.len());

    for sample in &profile.samples {
        let mut location_id = Vec::with_capacity(sample.frames.len());
        for frame in &sample.frames {
            let mapping = &*frame.mapping;
            let mapping_id = match mapping_ids.get(mapping) {
                Some(&id) => id,
                None => {
                    let id = mappings.len() as u64 + 1;
                    mappings.push(proto::Mapping {
                        id,
                        memory_start: mapping.start,
                        memory_limit: mapping.limit,
                        file_offset: mapping.offset,
                        filename: strings.get(&mapping.file),
                        build_id: strings.get(&mapping.build_id),
                        // Cleared below if any location of it has no function.
                        has_functions: true,
                        has_filenames: false,
                        has_line_numbers: false,
                        has_inline_frames: false,
                    });
                    mapping_ids.insert(mapping, id);
                    id
                }
            };
            // Pseudo frames (address 0) are told apart by their function.
            let pseudo = match (frame.address, frame.lines.first()) {
                (0, Some(line)) => strings.get(&line.function),
                _ => 0,
            };
            let key = (mapping_id, frame.address, pseudo);
            let id = match location_ids.get(&key) {
                Some(&id) => id,
                None => {
                    let id = locations.len() as u64 + 1;
                    let m = &mut mappings[(mapping_id - 1) as usize];
                    if frame.lines.is_empty() {
                        m.has_functions = false;
                    }
                    let mut line = Vec::with_capacity(frame.lines.len());
                    for l in frame.lines.iter() {
                        let name = strings.get(&l.function);
                        let file = l.file.as_deref().map_or(0, |f| strings.get(f));
                        m.has_filenames |= file != 0;
                        m.has_line_numbers |= l.line != 0;
                        let function_id = *function_ids.entry((name, file)).or_insert_with(|| {
                            let id = functions.len() as u64 + 1;
                            functions.push(proto::Function {
                                id,
                                name,
                                system_name: name,
                                filename: file,
                                start_line: 0,
                            });
                            id
                        });
                        line.push(proto::Line {
                            function_id,
                            line: i64::from(l.line),
                            column: 0,
                        });
                    }
                    m.has_inline_frames |= line.len() > 1;
                    locations.push(proto::Location {
                        id,
                        mapping_id,
                        address: frame.address,
                        line,
                        is_folded: false,
                    });
                    location_ids.insert(key, id);
                    id
                }
            };
            location_id.push(id);
        }
        let mut label = Vec::with_capacity(3);
        // Pyroscope's span profiles: `span_id`, 16 hex digits, costs no series.
        if let Some(link) = &sample.link {
            label.push(proto::Label {
                key: span_key,
                str: strings.get(&link.span_hex()),
                ..Default::default()
            });
        }
        if sample.pid != 0 {
            label.push(proto::Label {
                key: pid_key,
                num: i64::from(sample.pid),
                ..Default::default()
            });
        }
        if !sample.thread.is_empty() {
            label.push(proto::Label {
                key: thread_key,
                str: strings.get(&sample.thread),
                ..Default::default()
            });
        }
        samples.push(proto::Sample {
            location_id,
            value: vec![
                i64::try_from(sample.count.saturating_mul(profile.period_ns)).unwrap_or(i64::MAX),
            ],
            label,
        });
    }
    proto::Profile {
        sample_type: vec![value_type],
        sample: samples,
        mapping: mappings,
        location: locations,
        function: functions,
        string_table: strings.table,
        time_nanos: i64::try_from(profile.start_unix_ns).unwrap_or(0),
        duration_nanos: i64::try_from(profile.duration_ns).unwrap_or(0),
        period_type: Some(value_type),
        period: i64::try_from(profile.period_ns).unwrap_or(0),
        ..Default::default()
    }
}

/// Serialized and gzipped, the form `.pb.gz` files and Pyroscope take.
pub fn gzip(profile: &proto::Profile) -> Vec<u8> {
    crate::gzip_bytes(&profile.encode_to_vec())
}

/// Encodes within Pyroscope's limits: folds the lightest samples while the
/// profile has too many samples or is too large. Returns the gzipped bytes, the
/// decoded form, and how many samples were folded.
pub fn encode_within_limits(profile: &Profile) -> (Vec<u8>, proto::Profile, usize) {
    let mut profile = profile.clone();
    let mut folded = profile.limit_samples(MAX_SAMPLES);
    loop {
        let encoded = encode(&profile);
        let bytes = gzip(&encoded);
        // Pyroscope checks the uncompressed size.
        if encoded.encoded_len() <= MAX_BYTES || profile.samples.len() <= 1 {
            return (bytes, encoded, folded);
        }
        let max = profile.samples.len() / 2;
        folded += profile.limit_samples(max);
    }
}

/// Pyroscope's validation of an ingested pprof (its `pprof/validate` rules):
/// `string_table[0] == ""`, ids non-zero and in range, one value per sample type,
/// limits on samples and size, valid UTF-8 (guaranteed by `String`).
pub fn validate(profile: &proto::Profile) -> Result<(), String> {
    let strings = profile.string_table.len() as i64;
    if profile.string_table.first().map(String::as_str) != Some("") {
        return Err("string_table[0] must be \"\"".into());
    }
    let string_ok = |i: i64| (0..strings).contains(&i);
    if profile.sample.len() > MAX_SAMPLES {
        return Err(format!("{} samples > {MAX_SAMPLES}", profile.sample.len()));
    }
    let size = prost::Message::encoded_len(profile);
    if size > MAX_BYTES {
        return Err(format!("{size} bytes > {MAX_BYTES}"));
    }
    if profile.sample_type.is_empty() {
        return Err("no sample type".into());
    }
    for vt in profile.sample_type.iter().chain(profile.period_type.iter()) {
        if !string_ok(vt.r#type) || !string_ok(vt.unit) {
            return Err("value type string out of range".into());
        }
    }
    let check_ids = |what: &str, ids: Vec<u64>| -> Result<(), String> {
        for (i, id) in ids.iter().enumerate() {
            if *id == 0 {
                return Err(format!("{what} id 0"));
            }
            if *id != i as u64 + 1 {
                return Err(format!("{what} ids not dense"));
            }
        }
        Ok(())
    };
    check_ids("mapping", profile.mapping.iter().map(|m| m.id).collect())?;
    check_ids("location", profile.location.iter().map(|l| l.id).collect())?;
    check_ids("function", profile.function.iter().map(|f| f.id).collect())?;
    let (mappings, locations, functions) = (
        profile.mapping.len() as u64,
        profile.location.len() as u64,
        profile.function.len() as u64,
    );
    for s in &profile.sample {
        if s.value.len() != profile.sample_type.len() {
            return Err("sample value count != sample type count".into());
        }
        if s.location_id.iter().any(|&id| id == 0 || id > locations) {
            return Err("sample refers to a missing location".into());
        }
        if s.label
            .iter()
            .any(|l| !string_ok(l.key) || !string_ok(l.str))
        {
            return Err("label string out of range".into());
        }
    }
    for l in &profile.location {
        if l.mapping_id > mappings {
            return Err("location refers to a missing mapping".into());
        }
        if l.line
            .iter()
            .any(|line| line.function_id == 0 || line.function_id > functions)
        {
            return Err("line refers to a missing function".into());
        }
    }
    for f in &profile.function {
        if !string_ok(f.name) || !string_ok(f.system_name) || !string_ok(f.filename) {
            return Err("function string out of range".into());
        }
    }
    for m in &profile.mapping {
        if !string_ok(m.filename) || !string_ok(m.build_id) {
            return Err("mapping string out of range".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::testing;

    #[test]
    fn encodes_a_valid_cpu_profile() {
        let profile = testing::profile();
        let encoded = encode(&profile);
        validate(&encoded).expect("valid");
        let decoded = proto::Profile::decode(encoded.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, encoded);
        let s = |i: i64| decoded.string_table[i as usize].as_str();
        assert_eq!(s(0), "");
        assert_eq!(
            (
                s(decoded.sample_type[0].r#type),
                s(decoded.sample_type[0].unit)
            ),
            ("cpu", "nanoseconds")
        );
        assert_eq!(decoded.period, 52_631_578);
        assert_eq!(decoded.sample.len(), 3);
        assert_eq!(decoded.sample[0].value, vec![3 * 52_631_578]);
        let labels: Vec<(&str, i64, &str)> = decoded.sample[0]
            .label
            .iter()
            .map(|l| (s(l.key), l.num, s(l.str)))
            .collect();
        assert_eq!(
            labels,
            vec![
                ("span_id", 0, "0a0b0c0d01020304"),
                ("pid", 42, ""),
                ("thread_name", 0, "app-worker")
            ]
        );
        assert!(
            decoded.sample[1..]
                .iter()
                .all(|x| x.label.iter().all(|l| s(l.key) != "span_id")),
            "only the linked sample has a span"
        );
        // main and work are shared: 3 + 1 + 1 + 2 distinct locations.
        assert_eq!(decoded.location.len(), 5);
        let inlined = &decoded.location[decoded.sample[1].location_id[0] as usize - 1];
        let names: Vec<&str> = inlined
            .line
            .iter()
            .map(|l| s(decoded.function[l.function_id as usize - 1].name))
            .collect();
        assert_eq!(names, ["helper", "cold"], "innermost first");
        let exe = &decoded.mapping[0];
        assert_eq!(
            (s(exe.filename), s(exe.build_id)),
            ("/usr/bin/app", "abcd1234")
        );
        assert!(exe.has_functions && exe.has_line_numbers && exe.has_inline_frames);
        let lib = &decoded.mapping[1];
        assert_eq!(s(lib.filename), "/usr/lib/libz.so");
        assert!(!lib.has_functions, "an unsymbolized frame");
    }

    #[test]
    fn validation_rejects_what_pyroscope_rejects() {
        let good = encode(&testing::profile());
        let mut p = good.clone();
        p.string_table[0] = "x".into();
        assert!(validate(&p).is_err());
        let mut p = good.clone();
        p.location[0].id = 0;
        assert!(validate(&p).is_err());
        let mut p = good.clone();
        p.sample[0].location_id.push(999);
        assert!(validate(&p).is_err());
        let mut p = good.clone();
        p.sample[0].value.push(1);
        assert!(validate(&p).is_err());
        let mut p = good.clone();
        p.function[0].name = 10_000;
        assert!(validate(&p).is_err());
        let mut p = good;
        p.sample = vec![p.sample[0].clone(); MAX_SAMPLES + 1];
        assert!(validate(&p).is_err());
    }

    #[test]
    fn too_many_stacks_fold_into_other_keeping_the_total() {
        let mut profile = testing::profile();
        let template = profile.samples[0].clone();
        profile.samples = (0..MAX_SAMPLES as u64 + 500)
            .map(|i| {
                let mut s = template.clone();
                s.frames[0].address = 0x1000 + i;
                s.count = 1 + i % 7;
                s
            })
            .collect();
        let total = profile.total_samples();
        let (gz, encoded, folded) = encode_within_limits(&profile);
        validate(&encoded).expect("within limits");
        assert_eq!(encoded.sample.len(), MAX_SAMPLES);
        assert_eq!(folded, 501);
        let sum: i64 = encoded.sample.iter().map(|s| s.value[0]).sum();
        assert_eq!(sum as u64, total * profile.period_ns);
        assert!(!gz.is_empty());
    }
}
