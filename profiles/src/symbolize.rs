//! Addresses to function names, files and lines.
//!
//! User addresses are translated to file offsets through the process snapshot
//! and symbolized per module with `blazesym` (ELF symbols, DWARF with inlined
//! functions and lines, demangled Rust and C++); kernel addresses through
//! kallsyms ([`crate::kallsyms`]); addresses in anonymous memory through the
//! process's JIT perf map.
//!
//! Bounds: results are cached per (module, offset) in an LRU; blazesym's parsed
//! files are evicted when more than [`SymbolizerLimits::resident_modules`]
//! modules were used in an interval, and all of them at its end
//! ([`Symbolizer::end_interval`]); DWARF is skipped for files larger than
//! [`SymbolizerLimits::max_debug_file_bytes`] (ELF symbols still name them).

use std::{num::NonZeroUsize, path::PathBuf, sync::Arc};

use blazesym::symbolize::{
    Input, Symbolized, Symbolizer as Blaze,
    source::{Elf, Source},
};
use lru::LruCache;

use crate::{
    module::Module,
    process::{Mapping, Process},
};

/// One function of a frame: a frame has several when calls were inlined.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Line {
    pub function: Arc<str>,
    pub file: Option<Arc<str>>,
    /// 0 when unknown.
    pub line: u32,
}

/// The binary (or pseudo-binary) a frame is in, as profiles describe it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MappingInfo {
    pub start: u64,
    pub limit: u64,
    pub offset: u64,
    /// Path, `[kernel.kallsyms]`, `[jit]`, `[vdso]`, or `[unknown]`.
    pub file: Arc<str>,
    /// GNU build id in hex, empty if none.
    pub build_id: Arc<str>,
}

/// A symbolized frame.
#[derive(Clone, Debug)]
pub struct Frame {
    /// The sampled address.
    pub address: u64,
    pub mapping: Arc<MappingInfo>,
    /// Innermost function first, the function the address is in last. Empty
    /// when the address could not be named: the mapping and address remain, so
    /// a backend with debug files can still symbolize it.
    pub lines: Arc<[Line]>,
}

impl Frame {
    /// `module+0xOFFSET`, the name of a frame without symbols.
    pub fn fallback_name(&self) -> String {
        let module = self.mapping.file.rsplit('/').next().unwrap_or("");
        let offset = self.address.wrapping_sub(self.mapping.start) + self.mapping.offset;
        format!("{module}+{offset:#x}")
    }
}

/// Bounds of the symbolizer's memory and time.
#[derive(Clone, Copy, Debug)]
pub struct SymbolizerLimits {
    /// Cached (module, offset) results.
    pub cached_frames: usize,
    /// Modules whose parsed symbols blazesym keeps at once.
    pub resident_modules: usize,
    /// Files larger than this are symbolized from ELF symbols only.
    pub max_debug_file_bytes: u64,
}

impl Default for SymbolizerLimits {
    fn default() -> Self {
        SymbolizerLimits {
            cached_frames: 65_536,
            resident_modules: 8,
            max_debug_file_bytes: 64 << 20,
        }
    }
}

/// Counters of what could not be named.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SymbolizeStats {
    pub frames: u64,
    pub unsymbolized: u64,
}

pub struct Symbolizer {
    blaze: Blaze,
    limits: SymbolizerLimits,
    /// Results by (module cache key, file offset); the kernel is key 0.
    cache: LruCache<(u64, u64), Arc<[Line]>>,
    /// Modules blazesym currently caches, by id, with the path it knows them
    /// by. A `/proc/self/fd/N` path cannot come to mean another file while
    /// cached: modules are only closed between intervals (exits, execs), and
    /// [`Symbolizer::end_interval`] empties blazesym's caches before the next.
    resident: LruCache<u64, PathBuf>,
    kernel: crate::kallsyms::KernelSymbols,
    kernel_mapping: Arc<MappingInfo>,
    unknown_mapping: Arc<MappingInfo>,
    pub stats: SymbolizeStats,
}

/// Kernel module id in the frame cache.
const KERNEL: u64 = 0;

impl Symbolizer {
    pub fn new(limits: SymbolizerLimits) -> Symbolizer {
        let pseudo = |file: &str, start: u64, limit: u64| {
            Arc::new(MappingInfo {
                start,
                limit,
                offset: 0,
                file: Arc::from(file),
                build_id: Arc::from(""),
            })
        };
        Symbolizer {
            blaze: new_blaze(),
            limits,
            cache: LruCache::new(
                NonZeroUsize::new(limits.cached_frames).unwrap_or(NonZeroUsize::MIN),
            ),
            resident: LruCache::new(
                NonZeroUsize::new(limits.resident_modules).unwrap_or(NonZeroUsize::MIN),
            ),
            kernel: Default::default(),
            kernel_mapping: pseudo("[kernel.kallsyms]", 0xffff_8000_0000_0000, u64::MAX),
            unknown_mapping: pseudo("[unknown]", 0, 0),
            stats: SymbolizeStats::default(),
        }
    }

    /// Symbolizes a user stack (leaf first) of `process`.
    pub fn user_stack(&mut self, process: Option<&Process>, stack: &[u64]) -> Vec<Frame> {
        let mut frames = Vec::with_capacity(stack.len());
        for (i, &address) in stack.iter().enumerate() {
            // Callers' addresses are return addresses: look up the call itself.
            let lookup = if i == 0 {
                address
            } else {
                address.saturating_sub(1)
            };
            let frame = match process.and_then(|p| p.mapping(address).map(|m| (p, m))) {
                Some((process, mapping)) => self.in_mapping(process, mapping, address, lookup),
                None => Frame {
                    address,
                    mapping: Arc::clone(&self.unknown_mapping),
                    lines: Arc::from([]),
                },
            };
            self.count(&frame);
            frames.push(frame);
        }
        frames
    }

    fn in_mapping(
        &mut self,
        process: &Process,
        mapping: &Mapping,
        address: u64,
        lookup: u64,
    ) -> Frame {
        let info = |build_id: &str| {
            Arc::new(MappingInfo {
                start: mapping.start,
                limit: mapping.end,
                offset: mapping.offset,
                file: if mapping.name.is_empty() {
                    Arc::from("[jit]")
                } else {
                    Arc::clone(&mapping.name)
                },
                build_id: Arc::from(build_id),
            })
        };
        let lines = match &mapping.module {
            Some(module) => self.in_module(module, mapping.file_offset(lookup)),
            None => match process.jit_symbol(lookup) {
                Some(name) => Arc::from([Line {
                    function: Arc::clone(name),
                    file: None,
                    line: 0,
                }]),
                None => Arc::from([]),
            },
        };
        let build_id = mapping.module.as_ref().map_or("", |m| m.build_id.as_str());
        Frame {
            address,
            mapping: info(build_id),
            lines,
        }
    }

    fn in_module(&mut self, module: &Module, offset: u64) -> Arc<[Line]> {
        // Names are shared by build id; "no name" is per file, so a stripped
        // copy (same build id) never hides the names its twin has.
        if let Some(lines) = self.cache.get(&(module.cache_key, offset)) {
            return Arc::clone(lines);
        }
        if let Some(lines) = self.cache.get(&(module.id, offset)) {
            return Arc::clone(lines);
        }
        let Some(path) = module.symbol_path() else {
            return Arc::from([]);
        };
        self.make_resident(module.id, &path);
        let src = Source::Elf(Elf {
            debug_syms: module.size <= self.limits.max_debug_file_bytes,
            ..Elf::new(&path)
        });
        let lines = match self.blaze.symbolize(&src, Input::FileOffset(&[offset])) {
            Ok(mut results) => results.pop().map_or_else(|| Arc::from([]), lines_of),
            Err(error) => {
                tracing::debug!(module = %module.path, %error, "symbolization failed");
                Arc::from([])
            }
        };
        let key = if lines.is_empty() {
            module.id
        } else {
            module.cache_key
        };
        self.cache.put((key, offset), Arc::clone(&lines));
        lines
    }

    /// Tracks which modules blazesym holds, evicting the least recently used.
    fn make_resident(&mut self, id: u64, path: &PathBuf) {
        if self.resident.get(&id).is_none()
            && let Some((_, old)) = self.resident.push(id, path.clone())
            && old != *path
        {
            let _ = self
                .blaze
                .evict(&blazesym::symbolize::evict::Elf::new(old).into());
        }
    }

    /// Called after each interval: drops blazesym's parsed files (symbol
    /// tables, DWARF indexes: ~10 MiB for a libc with debug info). The frame
    /// cache keeps every answer, so the next interval re-parses a file only for
    /// addresses it has never seen; memory between intervals stays flat.
    pub fn end_interval(&mut self) {
        self.blaze = new_blaze();
        self.resident.clear();
    }

    /// Symbolizes a kernel stack (leaf first).
    pub fn kernel_stack(&mut self, stack: &[u64]) -> Vec<Frame> {
        let missing: Vec<u64> = stack
            .iter()
            .copied()
            .filter(|a| !self.cache.contains(&(KERNEL, *a)))
            .collect();
        if !missing.is_empty() {
            let names = self.kernel.resolve_running(&missing);
            for (addr, name) in missing.iter().zip(names) {
                let lines: Arc<[Line]> = match name {
                    Some(name) => Arc::from([Line {
                        function: Arc::from(name.as_str()),
                        file: None,
                        line: 0,
                    }]),
                    None => Arc::from([]),
                };
                self.cache.put((KERNEL, *addr), lines);
            }
        }
        let mut frames = Vec::with_capacity(stack.len());
        for &address in stack {
            let lines = self
                .cache
                .get(&(KERNEL, address))
                .cloned()
                .unwrap_or_else(|| Arc::from([]));
            let frame = Frame {
                address,
                mapping: Arc::clone(&self.kernel_mapping),
                lines,
            };
            self.count(&frame);
            frames.push(frame);
        }
        frames
    }

    fn count(&mut self, frame: &Frame) {
        self.stats.frames += 1;
        if frame.lines.is_empty() {
            self.stats.unsymbolized += 1;
        }
    }
}

fn new_blaze() -> Blaze {
    Blaze::builder()
        .enable_code_info(true)
        .enable_inlined_fns(true)
        .enable_demangling(true)
        .build()
}

/// pprof's order: inlined functions innermost first, the real function last.
fn lines_of(result: Symbolized<'_>) -> Arc<[Line]> {
    let Symbolized::Sym(sym) = result else {
        return Arc::from([]);
    };
    let file_of = |info: Option<&blazesym::symbolize::CodeInfo<'_>>| {
        info.map(|c| Arc::<str>::from(c.to_path().to_string_lossy().as_ref()))
    };
    let line_of =
        |info: Option<&blazesym::symbolize::CodeInfo<'_>>| info.and_then(|c| c.line).unwrap_or(0);
    let mut lines: Vec<Line> = sym
        .inlined
        .iter()
        .rev()
        .map(|f| Line {
            function: Arc::from(f.name.as_ref()),
            file: file_of(f.code_info.as_ref()),
            line: line_of(f.code_info.as_ref()),
        })
        .collect();
    lines.push(Line {
        function: Arc::from(sym.name.as_ref()),
        file: file_of(sym.code_info.as_deref()),
        line: line_of(sym.code_info.as_deref()),
    });
    Arc::from(lines)
}
