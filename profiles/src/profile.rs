//! From drained kernel counts to symbolized profiles, one per service.

use std::{collections::HashMap, sync::Arc};

use crate::{
    process::{ProcessTable, Target},
    symbolize::{Frame, Line, MappingInfo, SymbolizeStats, Symbolizer, SymbolizerLimits},
};

/// The span a sample was taken in (the thread was serving that request).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Link {
    /// Unknown when the span's trace was no longer remembered.
    pub trace_id: Option<[u8; 16]>,
    pub span_id: [u8; 8],
}

impl Link {
    /// 16 lowercase hex digits, Pyroscope's `span_id` label.
    pub fn span_hex(&self) -> String {
        self.span_id.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// One distinct stack with its count, as drained from the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawSample {
    pub tgid: u32,
    /// Thread name of the sampled thread.
    pub comm: String,
    /// Instruction pointers, leaf first; empty when there was no such stack.
    pub user: Vec<u64>,
    pub kernel: Vec<u64>,
    /// The user stack existed but could not be stored (stack map collision).
    pub user_lost: bool,
    pub kernel_lost: bool,
    pub count: u64,
    pub link: Option<Link>,
}

/// A symbolized stack with its labels and sample count.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Leaf first: kernel frames, then user frames.
    pub frames: Vec<Frame>,
    pub pid: u32,
    pub thread: Arc<str>,
    pub count: u64,
    pub link: Option<Link>,
}

/// One service's CPU profile over one interval.
#[derive(Clone, Debug)]
pub struct Profile {
    pub target: Arc<Target>,
    pub start_unix_ns: u64,
    pub duration_ns: u64,
    /// Nanoseconds of CPU time one sample stands for (1e9 / frequency).
    pub period_ns: u64,
    pub samples: Vec<Sample>,
}

impl Profile {
    pub fn total_samples(&self) -> u64 {
        self.samples.iter().map(|s| s.count).sum()
    }

    /// Keeps the `max` heaviest samples and folds the rest into one sample
    /// named `[other stacks]`, so totals stay right under backend limits.
    /// Returns how many samples were folded.
    pub fn limit_samples(&mut self, max: usize) -> usize {
        if self.samples.len() <= max || max == 0 {
            return 0;
        }
        self.samples.sort_by_key(|s| std::cmp::Reverse(s.count));
        let rest = self.samples.split_off(max - 1);
        let folded = rest.len();
        let count = rest.iter().map(|s| s.count).sum();
        self.samples.push(Sample {
            frames: vec![pseudo_frame("[other stacks]")],
            pid: 0,
            thread: Arc::from(""),
            count,
            link: None,
        });
        folded
    }
}

/// Time window of a drain.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub start_unix_ns: u64,
    pub duration_ns: u64,
    pub period_ns: u64,
}

/// A frame that stands for missing data (no address, no mapping).
pub fn pseudo_frame(name: &str) -> Frame {
    Frame {
        address: 0,
        mapping: Arc::new(MappingInfo {
            start: 0,
            limit: 0,
            offset: 0,
            file: Arc::from("[unknown]"),
            build_id: Arc::from(""),
        }),
        lines: Arc::from([Line {
            function: Arc::from(name),
            file: None,
            line: 0,
        }]),
    }
}

/// Bounds of the collector.
#[derive(Clone, Copy, Debug)]
pub struct CollectorLimits {
    pub processes: usize,
    pub modules: usize,
    pub symbolizer: SymbolizerLimits,
}

impl Default for CollectorLimits {
    fn default() -> Self {
        CollectorLimits {
            processes: 4096,
            modules: 512,
            symbolizer: SymbolizerLimits::default(),
        }
    }
}

/// Keeps process snapshots and the symbolizer between intervals.
pub struct Collector {
    processes: ProcessTable,
    symbolizer: Symbolizer,
}

impl Collector {
    pub fn new(proc_root: &str, limits: CollectorLimits) -> Collector {
        Collector {
            processes: ProcessTable::new(proc_root, limits.processes, limits.modules),
            symbolizer: Symbolizer::new(limits.symbolizer),
        }
    }

    /// A process had its first sample: read its memory map now, while it lives.
    pub fn announce(&mut self, tgid: u32, target: Arc<Target>) -> bool {
        self.processes.snapshot(tgid, target)
    }

    pub fn stats(&self) -> SymbolizeStats {
        self.symbolizer.stats
    }

    /// Snapshots held (processes, modules).
    pub fn cached(&self) -> (usize, usize) {
        (self.processes.len(), self.processes.modules())
    }

    /// Symbolizes one interval's samples into one profile per service.
    /// `target_of` describes processes that were not announced (still alive,
    /// or already gone: then only their name is known).
    pub fn collect(
        &mut self,
        raw: Vec<RawSample>,
        window: Window,
        mut target_of: impl FnMut(u32, &str) -> Arc<Target>,
    ) -> Vec<Profile> {
        let mut by_process: HashMap<u32, Vec<RawSample>> = HashMap::new();
        for sample in raw {
            by_process.entry(sample.tgid).or_default().push(sample);
        }
        let mut by_target: HashMap<Arc<Target>, Vec<Sample>> = HashMap::new();
        for (tgid, samples) in by_process {
            let comm = samples.first().map(|s| s.comm.clone()).unwrap_or_default();
            if !self.processes.contains(tgid) {
                self.processes.snapshot(tgid, target_of(tgid, &comm));
            }
            let addrs: Vec<u64> = samples
                .iter()
                .flat_map(|s| s.user.iter().copied())
                .collect();
            self.processes.refresh(tgid, &addrs);
            let target = match self.processes.get(tgid) {
                Some(p) => Arc::clone(&p.target),
                None => target_of(tgid, &comm),
            };
            let out = by_target.entry(target).or_default();
            for raw in samples {
                out.push(self.symbolize(&raw));
            }
        }
        self.processes.forget_exited();
        self.symbolizer.end_interval();
        by_target
            .into_iter()
            .map(|(target, samples)| Profile {
                target,
                start_unix_ns: window.start_unix_ns,
                duration_ns: window.duration_ns,
                period_ns: window.period_ns,
                samples,
            })
            .collect()
    }

    fn symbolize(&mut self, raw: &RawSample) -> Sample {
        let mut frames = self.symbolizer.kernel_stack(&raw.kernel);
        if raw.kernel_lost {
            frames.push(pseudo_frame("[lost kernel stack]"));
        }
        let process = self.processes.get(raw.tgid);
        frames.extend(self.symbolizer.user_stack(process, &raw.user));
        if raw.user_lost {
            frames.push(pseudo_frame("[lost user stack]"));
        }
        if frames.is_empty() {
            frames.push(pseudo_frame("[no stack]"));
        }
        Sample {
            frames,
            pid: raw.tgid,
            thread: Arc::from(raw.comm.as_str()),
            count: raw.count,
            link: raw.link,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn marker_function_for_symbolization() -> u64 {
        std::hint::black_box(7)
    }

    fn window() -> Window {
        Window {
            start_unix_ns: 1,
            duration_ns: 2,
            period_ns: 1_000_000,
        }
    }

    /// This test binary's own frame at `addr`, symbolized with these limits.
    fn own_frame(limits: SymbolizerLimits) -> (Collector, Vec<Frame>) {
        let mut collector = Collector::new(
            "/proc",
            CollectorLimits {
                symbolizer: limits,
                ..CollectorLimits::default()
            },
        );
        let me = std::process::id();
        assert!(collector.announce(me, Arc::new(Target::default())));
        let addr = marker_function_for_symbolization as *const () as u64;
        let raw = RawSample {
            tgid: me,
            comm: "unit".into(),
            user: vec![addr + 1],
            kernel: Vec::new(),
            user_lost: false,
            kernel_lost: false,
            count: 1,
            link: None,
        };
        let mut profiles = collector.collect(vec![raw], window(), |_, _| unreachable!());
        let frames = profiles.remove(0).samples.remove(0).frames;
        (collector, frames)
    }

    #[test]
    fn large_files_are_named_from_elf_symbols_without_dwarf() {
        let (_, frames) = own_frame(SymbolizerLimits {
            max_debug_file_bytes: 0,
            ..SymbolizerLimits::default()
        });
        let leaf = &frames[0];
        assert!(
            leaf.lines[0]
                .function
                .contains("marker_function_for_symbolization")
        );
        assert!(leaf.lines.iter().all(|l| l.line == 0), "no DWARF: {leaf:?}");
        let (collector, frames) = own_frame(SymbolizerLimits {
            max_debug_file_bytes: u64::MAX,
            ..SymbolizerLimits::default()
        });
        assert!(frames[0].lines.iter().any(|l| l.line > 0), "DWARF lines");
        assert_eq!(collector.stats().unsymbolized, 0);
    }

    #[test]
    fn symbolizes_this_process_from_its_snapshot() {
        let mut collector = Collector::new(
            "/proc",
            CollectorLimits {
                symbolizer: SymbolizerLimits {
                    max_debug_file_bytes: u64::MAX,
                    ..SymbolizerLimits::default()
                },
                ..CollectorLimits::default()
            },
        );
        let me = std::process::id();
        let target = Arc::new(Target {
            service_name: "unit".into(),
            attributes: Vec::new(),
        });
        assert!(collector.announce(me, Arc::clone(&target)));
        marker_function_for_symbolization();
        let addr = marker_function_for_symbolization as *const () as u64;
        let raw = RawSample {
            tgid: me,
            comm: "unit".into(),
            // A leaf inside the function and a bogus caller.
            user: vec![addr + 1, 0x10],
            kernel: Vec::new(),
            user_lost: false,
            kernel_lost: true,
            count: 5,
            link: None,
        };
        let profiles = collector.collect(vec![raw], window(), |_, _| unreachable!());
        assert_eq!(profiles.len(), 1);
        let p = &profiles[0];
        assert_eq!(p.target, target);
        assert_eq!(p.total_samples(), 5);
        let frames = &p.samples[0].frames;
        assert_eq!(frames[0].lines[0].function.as_ref(), "[lost kernel stack]");
        let leaf = &frames[1];
        assert!(
            leaf.lines
                .iter()
                .any(|l| l.function.contains("marker_function_for_symbolization")),
            "{leaf:?}"
        );
        assert!(leaf.lines.iter().any(|l| l.line > 0), "DWARF lines");
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert_eq!(&*leaf.mapping.file, exe.to_string_lossy());
        // An address outside every mapping keeps its address, unnamed.
        assert!(frames[2].lines.is_empty());
        assert_eq!(&*frames[2].mapping.file, "[unknown]");
        assert!(collector.stats().unsymbolized >= 1);
    }

    #[test]
    fn gone_processes_are_named_by_the_caller() {
        let mut collector = Collector::new("/proc", CollectorLimits::default());
        let raw = RawSample {
            tgid: u32::MAX - 3,
            comm: "ghost".into(),
            user: vec![0x1234],
            kernel: Vec::new(),
            user_lost: false,
            kernel_lost: false,
            count: 1,
            link: None,
        };
        let profiles = collector.collect(vec![raw], window(), |_, comm| {
            Arc::new(Target {
                service_name: comm.to_string(),
                attributes: Vec::new(),
            })
        });
        assert_eq!(profiles[0].target.service_name, "ghost");
        assert_eq!(
            profiles[0].samples[0].frames[0].fallback_name(),
            "[unknown]+0x1234"
        );
    }
}
