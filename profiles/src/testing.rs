//! Profiles built by hand for unit tests.

use std::sync::Arc;

use crate::{
    process::Target,
    profile::{Link, Profile, Sample},
    symbolize::{Frame, Line, MappingInfo},
};

pub fn mapping(file: &str, build_id: &str) -> Arc<MappingInfo> {
    Arc::new(MappingInfo {
        start: 0x1000,
        limit: 0x9000,
        offset: 0,
        file: Arc::from(file),
        build_id: Arc::from(build_id),
    })
}

pub fn frame(mapping: &Arc<MappingInfo>, address: u64, functions: &[&str]) -> Frame {
    Frame {
        address,
        mapping: Arc::clone(mapping),
        lines: functions
            .iter()
            .enumerate()
            .map(|(i, f)| Line {
                function: Arc::from(*f),
                file: Some(Arc::from("src/main.rs")),
                line: 10 + i as u32,
            })
            .collect(),
    }
}

/// `main → work → {hot ×3, (inlined helper in) cold ×1}`, plus an unnamed frame.
pub fn profile() -> Profile {
    let exe = mapping("/usr/bin/app", "abcd1234");
    let lib = mapping("/usr/lib/libz.so", "");
    let main = frame(&exe, 0x1100, &["main"]);
    let work = frame(&exe, 0x1200, &["work"]);
    let sample = |frames: Vec<Frame>, count| Sample {
        frames,
        pid: 42,
        thread: Arc::from("app-worker"),
        count,
        link: None,
    };
    let mut profile = Profile {
        target: Arc::new(Target {
            service_name: "app".into(),
            attributes: vec![("host.name".into(), "node-1".into())],
        }),
        start_unix_ns: 1_700_000_000_000_000_000,
        duration_ns: 15_000_000_000,
        period_ns: 52_631_578,
        samples: vec![
            sample(
                vec![frame(&exe, 0x1300, &["hot"]), work.clone(), main.clone()],
                3,
            ),
            sample(
                vec![
                    frame(&exe, 0x1400, &["helper", "cold"]),
                    work.clone(),
                    main.clone(),
                ],
                1,
            ),
            sample(vec![frame(&lib, 0x2345, &[]), work, main], 2),
        ],
    };
    // The hottest stack was taken while the thread served a request.
    profile.samples[0].link = Some(LINK);
    profile
}

/// The span the fixture's hottest sample belongs to.
pub const LINK: Link = Link {
    trace_id: Some([0x11; 16]),
    span_id: [0x0a, 0x0b, 0x0c, 0x0d, 0x01, 0x02, 0x03, 0x04],
};
