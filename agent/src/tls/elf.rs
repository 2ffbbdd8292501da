//! Where to put uprobes in an ELF file: the file offsets of a function's entry
//! and of every instruction through which it leaves.
//!
//! Why exits rather than uretprobes: a uretprobe rewrites the return address on
//! the stack, which corrupts Go's movable goroutine stacks, and on 6.11+ kernels
//! its trampoline makes a syscall that seccomp filters kill (systemd#34615).
//! Instead, a plain uprobe goes on each `RET` of the function, found here by
//! decoding the function's machine code. A function can also leave without a
//! `RET` of its own: through a jump to another function (a tail call) or an
//! indirect jump. Those are reported separately, not guessed at, so that the
//! caller can decide (skip the function, probe the callee, count the loss).
//!
//! Everything here is pure and bounded: the file is read once into memory
//! (uprobes attach to an inode, so a copy is as good as a mapping, and a copy
//! cannot fault if the file is truncated under us), functions over
//! [`MAX_FUNCTION_SIZE`] are refused, and malformed input (this reads arbitrary
//! binaries of other processes) gives an error value, never a panic.

use std::{
    collections::HashMap,
    fs::OpenOptions,
    io::Read,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction};
use object::{
    Endianness, elf,
    read::elf::{FileHeader, ProgramHeader, SectionHeader, SectionTable, Sym, SymbolTable},
};

/// Largest function body decoded: libssl's `SSL_*` functions are under 1 KiB and
/// Go's `crypto/tls` methods a few KiB, so anything near this is a bogus size.
pub const MAX_FUNCTION_SIZE: u64 = 1 << 20;

/// Largest file read. Go binaries reach 100+ MB; a file larger than this is not
/// something we would attach to, and reading it would cost that much memory.
pub const MAX_FILE_SIZE: u64 = 1 << 30;

/// Longest Go version string accepted from `.go.buildinfo` (real ones are ~10-40).
const MAX_GO_VERSION_LEN: u64 = 256;

/// Alignment the ELF structures are read at: the parser reads them in place and
/// needs the buffer aligned like the 64-bit fields inside.
const ALIGN: usize = 8;

/// `.go.buildinfo` starts with this magic (Go's `debug/buildinfo`).
const GO_BUILDINFO_MAGIC: &[u8; 14] = b"\xff Go buildinf:";
/// Go's linker aligns the magic to this; `debug/buildinfo` searches at these steps.
const GO_BUILDINFO_ALIGN: usize = 16;
/// How far into the section `debug/buildinfo` looks for the magic.
const GO_BUILDINFO_SEARCH: usize = 64 * 1024;
/// Flag bit: the header's pointers are big-endian (pre-1.18 layout only).
const GO_FLAG_BIG_ENDIAN: u8 = 0x1;
/// Flag bit (Go ≥ 1.18): version and module info are inline, varint-prefixed,
/// from offset 32, rather than behind pointers at offset 16.
const GO_FLAG_INLINE: u8 = 0x2;

/// The linker-initialised Go string holding the toolchain version; a second
/// way to tell a Go binary (and its version) when `.go.buildinfo` is missing.
const GO_BUILD_VERSION_SYMBOL: &[u8] = b"runtime.buildVersion";

/// A function found in the file, with everything needed to probe its entry and exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    /// The symbol name as asked for.
    pub name: String,
    /// Virtual address from the symbol table (before any load bias).
    pub vaddr: u64,
    /// File offset of the first instruction: where an entry uprobe attaches.
    pub file_offset: u64,
    /// Size in bytes from the symbol table.
    pub size: u64,
    /// File offsets of every return instruction (`RET`, `RET imm16`, and
    /// prefixed forms such as `rep ret` / `bnd ret`, at the prefix): each is a
    /// place for a "return" uprobe, which sees the return value in RAX.
    pub exits: Vec<u64>,
    /// File offsets of direct jumps, unconditional or conditional, whose target
    /// lies outside `[vaddr, vaddr + size)`: the function leaves through another
    /// function's `RET`, which the probes at [`Function::exits`] do not see.
    pub tail_jumps: Vec<u64>,
    /// File offsets of indirect jumps (`jmp reg/mem`). Their target is unknown
    /// statically: a switch jump table stays inside, an indirect tail call
    /// leaves. Reported so that the caller knows the exits may be incomplete.
    pub indirect_jumps: Vec<u64>,
}

impl Function {
    /// Whether [`Function::exits`] cover every way out of the function (as far
    /// as decoding can tell): no tail jump and no indirect jump.
    pub fn exits_complete(&self) -> bool {
        self.tail_jumps.is_empty() && self.indirect_jumps.is_empty()
    }
}

/// What marks the file as a Go program, and which Go built it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoBuild {
    /// The toolchain version, e.g. `go1.19.8`, when it could be read.
    pub version: Option<String>,
}

impl GoBuild {
    /// `(major, minor)` from [`GoBuild::version`] (`go1.19.8` → `(1, 19)`,
    /// `go1.21rc2` → `(1, 21)`, `devel go1.22-abc` → `(1, 22)`).
    pub fn version_number(&self) -> Option<(u32, u32)> {
        let version = self.version.as_deref()?;
        let version = version.strip_prefix("devel ").unwrap_or(version);
        let rest = version.strip_prefix("go")?;
        let (major, rest) = leading_number(rest)?;
        let minor = match rest.strip_prefix('.') {
            Some(rest) => leading_number(rest)?.0,
            None => 0,
        };
        Some((major, minor))
    }

    /// Whether functions take their arguments in registers (Go ≥ 1.17 on
    /// amd64), which the `crypto/tls` probes read; `None` if the version is unknown.
    pub fn has_register_abi(&self) -> Option<bool> {
        self.version_number().map(|v| v >= (1, 17))
    }
}

/// The digits at the start of `s` as a number, and what follows them.
fn leading_number(s: &str) -> Option<(u32, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let number = s.get(..end)?.parse().ok()?;
    Some((number, s.get(end..)?))
}

/// What one pass over an ELF file found.
#[derive(Debug)]
pub struct Binary {
    /// `Some` if this is a Go binary (it has `.go.buildinfo`, `.note.go.buildid`
    /// or a `runtime.buildVersion` symbol).
    pub go: Option<GoBuild>,
    /// Whether the file has a `.symtab`. Without one (a stripped binary) only
    /// `.dynsym` was searched, which holds no Go functions and only the exported
    /// functions of C libraries: a `None` below then means "stripped", not "absent".
    pub has_symtab: bool,
    /// One entry per name asked for, in the same order: `Ok(None)` if no symbol
    /// has that name, an error if it has one that cannot be probed.
    pub functions: Vec<Result<Option<Function>, FunctionError>>,
}

impl Binary {
    /// The function found under `name`, if any.
    pub fn function(&self, name: &str) -> Option<&Function> {
        self.functions
            .iter()
            .filter_map(|f| f.as_ref().ok().and_then(Option::as_ref))
            .find(|f| f.name == name)
    }
}

/// Why a file could not be examined at all.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a regular file", path.display())]
    NotRegularFile { path: PathBuf },
    #[error("{} is {size} bytes, over the {MAX_FILE_SIZE}-byte limit", path.display())]
    FileTooLarge { path: PathBuf, size: u64 },
    #[error("not an ELF file")]
    NotElf,
    #[error("malformed ELF file: {0}")]
    Malformed(#[from] object::read::Error),
    #[error("unsupported architecture {0}: exits can only be decoded in x86-64 code")]
    UnsupportedArchitecture(String),
    #[error("ELF type {0} is neither an executable nor a shared object")]
    NotLoadable(u16),
}

/// Why one function that is in the symbol table cannot be probed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FunctionError {
    #[error("{name} has size 0, so its exits cannot be found")]
    Empty { name: String },
    #[error("{name} is {size} bytes, over the {MAX_FUNCTION_SIZE}-byte limit")]
    TooLarge { name: String, size: u64 },
    #[error(
        "{name} ({vaddr:#x}, {size} bytes) is not in the file bytes of an executable PT_LOAD segment"
    )]
    NotMapped { name: String, vaddr: u64, size: u64 },
    #[error("{name} is an IFUNC: its symbol is the resolver, not the function that runs")]
    Ifunc { name: String },
    #[error("{name}: undecodable instruction at file offset {offset:#x}")]
    Undecodable { name: String, offset: u64 },
}

/// Reads the ELF file at `path` once and looks up every one of `names` (exact
/// symbol names, e.g. `SSL_read` or `crypto/tls.(*Conn).Read`), plus whether it
/// is a Go binary.
///
/// `path` may be a `/proc/PID/root/...` or `/proc/PID/map_files/...` path. It is
/// opened non-blocking and must be a regular file, so that a FIFO or device in
/// another process's namespace cannot hang or flood the agent.
pub fn find_functions(path: &Path, names: &[&str]) -> Result<Binary, ElfError> {
    let io = |source| ElfError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(ElfError::NotRegularFile {
            path: path.to_owned(),
        });
    }
    let too_large = || ElfError::FileTooLarge {
        path: path.to_owned(),
        size: meta.len(),
    };
    if meta.len() > MAX_FILE_SIZE {
        return Err(too_large());
    }
    let len = usize::try_from(meta.len()).map_err(|_| too_large())?;
    let mut buf = AlignedBuf::zeroed(len);
    // A file that shrank since the stat fails here (UnexpectedEof); one that grew
    // is read up to the stat'ed length, which is still a consistent prefix to
    // reject or accept.
    file.read_exact(buf.bytes_mut()).map_err(io)?;
    analyze(buf.bytes(), names)
}

/// [`find_functions`] on bytes already in memory (and the fuzzing entry point).
/// Unaligned input is copied once into an aligned buffer.
pub fn find_functions_in(data: &[u8], names: &[&str]) -> Result<Binary, ElfError> {
    if data.as_ptr().align_offset(ALIGN) == 0 {
        return analyze(data, names);
    }
    let mut buf = AlignedBuf::zeroed(data.len());
    buf.bytes_mut().copy_from_slice(data);
    analyze(buf.bytes(), names)
}

/// A byte buffer whose contents start at an [`ALIGN`]-aligned address, made
/// without `unsafe` by over-allocating and skipping to the first aligned byte.
struct AlignedBuf {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn zeroed(len: usize) -> Self {
        let buf = vec![0; len.saturating_add(ALIGN - 1)];
        // Always < ALIGN at run time for a byte pointer; if not, start at 0 and
        // let the parser report the misalignment as an error.
        let start = match buf.as_ptr().align_offset(ALIGN) {
            n if n < ALIGN => n,
            _ => 0,
        };
        Self { buf, start, len }
    }

    fn bytes(&self) -> &[u8] {
        self.buf
            .get(self.start..self.start + self.len)
            .unwrap_or(&[])
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        let (start, len) = (self.start, self.len);
        self.buf.get_mut(start..start + len).unwrap_or(&mut [])
    }
}

type Header = elf::FileHeader64<Endianness>;
type Segment = elf::ProgramHeader64<Endianness>;

/// The best symbol so far for one asked-for name.
#[derive(Clone, Copy)]
struct Candidate {
    vaddr: u64,
    size: u64,
    ifunc: bool,
    /// Lower is better: see [`rank`].
    rank: (bool, bool, bool, u8),
}

/// Which of several same-named symbols to use, best first: a real function over
/// an IFUNC resolver; the default version (`name@@V`, or no version) over an
/// old one (`name@V`, hidden in `.gnu.version`), since new links bind to the
/// default; global or weak over local (a `static` function that happens to
/// share the name); `.dynsym` (what the dynamic linker and aya resolve) over
/// `.symtab`.
fn rank(ifunc: bool, hidden: bool, local: bool, table: u8) -> (bool, bool, bool, u8) {
    (ifunc, hidden, local, table)
}

fn analyze(data: &[u8], names: &[&str]) -> Result<Binary, ElfError> {
    // e_ident: the magic, then the class byte (32- or 64-bit).
    match data.get(..5) {
        Some([0x7f, b'E', b'L', b'F', class]) => {
            if *class == elf::ELFCLASS32 {
                return Err(ElfError::UnsupportedArchitecture(
                    "32-bit ELF (i386 or x32)".into(),
                ));
            }
        }
        _ => return Err(ElfError::NotElf),
    }
    let header = Header::parse(data)?;
    let endian = header.endian()?;
    let machine = header.e_machine(endian);
    if machine != elf::EM_X86_64 {
        return Err(ElfError::UnsupportedArchitecture(machine_name(machine)));
    }
    let e_type = header.e_type(endian);
    if e_type != elf::ET_EXEC && e_type != elf::ET_DYN {
        return Err(ElfError::NotLoadable(e_type));
    }
    let segments = header.program_headers(endian, data)?;
    let sections = header.sections(endian, data)?;
    let dynsym = sections.symbols(endian, data, elf::SHT_DYNSYM)?;
    let symtab = sections.symbols(endian, data, elf::SHT_SYMTAB)?;
    let has_symtab = sections
        .iter()
        .any(|s| s.sh_type(endian) == elf::SHT_SYMTAB);

    // Versions apply to the symbol table `.gnu.version` is linked to (.dynsym).
    let versions = match sections.gnu_versym(endian, data)? {
        Some((_, link)) if link == dynsym.section() => sections.versions(endian, data)?,
        _ => None,
    };

    let mut wanted: HashMap<&[u8], Vec<usize>> = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        wanted.entry(name.as_bytes()).or_default().push(i);
    }
    let mut best: Vec<Option<Candidate>> = vec![None; names.len()];
    let mut build_version: Option<u64> = None;

    for (table_rank, table) in [(0u8, &dynsym), (1, &symtab)] {
        scan_symbols(endian, table, |index, sym, name| {
            let st_type = sym.st_type();
            if st_type == elf::STT_OBJECT && name == GO_BUILD_VERSION_SYMBOL {
                build_version.get_or_insert(sym.st_value(endian));
                return;
            }
            let ifunc = st_type == elf::STT_GNU_IFUNC;
            if st_type != elf::STT_FUNC && !ifunc {
                return;
            }
            // `.dynsym` names carry no version (it is in `.gnu.version`), but a
            // `.symtab` written by some tools spells it out as `name@@V`/`name@V`.
            let (indices, spelled_hidden) = match wanted.get(name) {
                Some(indices) => (indices, false),
                None => {
                    let Some(at) = name.iter().position(|&b| b == b'@') else {
                        return;
                    };
                    let Some(indices) = wanted.get(&name[..at]) else {
                        return;
                    };
                    (indices, name.get(at + 1) != Some(&b'@'))
                }
            };
            let hidden = spelled_hidden
                || (table_rank == 0
                    && versions
                        .as_ref()
                        .is_some_and(|v| v.version_index(endian, index).is_hidden()));
            let candidate = Candidate {
                vaddr: sym.st_value(endian),
                size: sym.st_size(endian),
                ifunc,
                rank: rank(ifunc, hidden, sym.st_bind() == elf::STB_LOCAL, table_rank),
            };
            for &i in indices {
                if best[i].is_none_or(|b| candidate.rank < b.rank) {
                    best[i] = Some(candidate);
                }
            }
        })?;
    }

    let functions = names
        .iter()
        .zip(&best)
        .map(|(name, candidate)| {
            candidate
                .map(|c| function(data, endian, segments, name, c))
                .transpose()
        })
        .collect();
    let go = go_build(data, endian, segments, &sections, build_version);
    Ok(Binary {
        go,
        has_symtab,
        functions,
    })
}

/// Calls `f` with every defined symbol of `table` and its name.
fn scan_symbols<'data>(
    endian: Endianness,
    table: &SymbolTable<'data, Header, &'data [u8]>,
    mut f: impl FnMut(object::SymbolIndex, &elf::Sym64<Endianness>, &[u8]),
) -> Result<(), ElfError> {
    for (index, sym) in table.enumerate() {
        if sym.is_undefined(endian) {
            continue;
        }
        let st_type = sym.st_type();
        if st_type != elf::STT_FUNC && st_type != elf::STT_GNU_IFUNC && st_type != elf::STT_OBJECT {
            continue;
        }
        let name = table.symbol_name(endian, sym)?;
        f(index, sym, name);
    }
    Ok(())
}

/// The chosen symbol of `name`, located in the file and decoded.
fn function(
    data: &[u8],
    endian: Endianness,
    segments: &[Segment],
    name: &str,
    candidate: Candidate,
) -> Result<Function, FunctionError> {
    let Candidate {
        vaddr, size, ifunc, ..
    } = candidate;
    let name = name.to_owned();
    if ifunc {
        return Err(FunctionError::Ifunc { name });
    }
    if size == 0 {
        return Err(FunctionError::Empty { name });
    }
    if size > MAX_FUNCTION_SIZE {
        return Err(FunctionError::TooLarge { name, size });
    }
    let located = file_range(data, endian, segments, vaddr, size, true);
    let Some((file_offset, code)) = located else {
        return Err(FunctionError::NotMapped { name, vaddr, size });
    };
    let exits =
        decode(vaddr, size, file_offset, code).map_err(|offset| FunctionError::Undecodable {
            name: name.clone(),
            offset,
        })?;
    Ok(Function {
        name,
        vaddr,
        file_offset,
        size,
        exits: exits.returns,
        tail_jumps: exits.tail_jumps,
        indirect_jumps: exits.indirect_jumps,
    })
}

/// The file offset and bytes of `[vaddr, vaddr + len)`, through the PT_LOAD
/// segment holding it in its file part (`offset = vaddr - p_vaddr + p_offset`),
/// which is what the kernel maps and so what a uprobe's file offset names.
/// With `exec`, only executable segments count: a "function" elsewhere is bogus.
fn file_range<'data>(
    data: &'data [u8],
    endian: Endianness,
    segments: &[Segment],
    vaddr: u64,
    len: u64,
    exec: bool,
) -> Option<(u64, &'data [u8])> {
    let end = vaddr.checked_add(len)?;
    segments.iter().find_map(|ph| {
        if ph.p_type(endian) != elf::PT_LOAD || (exec && ph.p_flags(endian) & elf::PF_X == 0) {
            return None;
        }
        let start = ph.p_vaddr(endian);
        let seg_end = start.checked_add(ph.p_filesz(endian))?;
        if vaddr < start || end > seg_end {
            return None;
        }
        let offset = ph.p_offset(endian).checked_add(vaddr - start)?;
        let from = usize::try_from(offset).ok()?;
        let to = from.checked_add(usize::try_from(len).ok()?)?;
        Some((offset, data.get(from..to)?))
    })
}

/// The ways out of one function, as file offsets.
struct Exits {
    returns: Vec<u64>,
    tail_jumps: Vec<u64>,
    indirect_jumps: Vec<u64>,
}

/// Decodes `code` (the function at `vaddr`, `size` bytes, at `file_offset`)
/// instruction by instruction from the start. A linear sweep is exact here:
/// x86-64 compilers keep jump tables and constants out of `.text` function
/// bodies, and an instruction that does not decode (data, or a symbol size that
/// cuts an instruction) is an error (its file offset) rather than a skip, since
/// the exits after it would be missed.
fn decode(vaddr: u64, size: u64, file_offset: u64, code: &[u8]) -> Result<Exits, u64> {
    let end = vaddr.saturating_add(size);
    let mut exits = Exits {
        returns: Vec::new(),
        tail_jumps: Vec::new(),
        indirect_jumps: Vec::new(),
    };
    let mut decoder = Decoder::with_ip(64, code, vaddr, DecoderOptions::NONE);
    let mut instruction = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut instruction);
        // ip is in [vaddr, end) by construction of the decoder input.
        let offset = file_offset + (instruction.ip() - vaddr);
        if instruction.is_invalid() {
            return Err(offset);
        }
        match instruction.flow_control() {
            FlowControl::Return => exits.returns.push(offset),
            FlowControl::UnconditionalBranch | FlowControl::ConditionalBranch => {
                let target = instruction.near_branch_target();
                if !(vaddr..end).contains(&target) {
                    exits.tail_jumps.push(offset);
                }
            }
            FlowControl::IndirectBranch => exits.indirect_jumps.push(offset),
            _ => {}
        }
    }
    Ok(exits)
}

/// Whether this is a Go binary, and its version if cheaply readable.
fn go_build<'data>(
    data: &'data [u8],
    endian: Endianness,
    segments: &[Segment],
    sections: &SectionTable<'data, Header, &'data [u8]>,
    build_version: Option<u64>,
) -> Option<GoBuild> {
    let buildinfo = sections.section_by_name(endian, b".go.buildinfo");
    let is_go = buildinfo.is_some()
        || build_version.is_some()
        || sections
            .section_by_name(endian, b".note.go.buildid")
            .is_some();
    if !is_go {
        return None;
    }
    let from_buildinfo = buildinfo
        .and_then(|(_, section)| section.data(endian, data).ok())
        .and_then(|bytes| {
            buildinfo_version(bytes, |vaddr, ptr_size, big_endian| {
                go_string(data, endian, segments, vaddr, ptr_size, big_endian)
            })
        });
    // `runtime.buildVersion` is a little-endian 8-byte-pointer string on x86-64.
    let version = from_buildinfo.or_else(|| {
        build_version.and_then(|vaddr| go_string(data, endian, segments, vaddr, 8, false))
    });
    Some(GoBuild { version })
}

/// The Go version in the contents of `.go.buildinfo`. Layout (Go's
/// `debug/buildinfo`): the 14-byte magic at a 16-byte boundary, a pointer size
/// byte, a flags byte; with [`GO_FLAG_INLINE`] (Go ≥ 1.18) a uvarint length and
/// the version string at offset 32; before that, at offset 16, the address of a
/// Go string header `{data, len}` holding it, read through `string_at`.
fn buildinfo_version(
    section: &[u8],
    string_at: impl Fn(u64, u8, bool) -> Option<String>,
) -> Option<String> {
    let search = section.get(..section.len().min(GO_BUILDINFO_SEARCH))?;
    let start = (0..search.len())
        .step_by(GO_BUILDINFO_ALIGN)
        .find(|&i| search[i..].starts_with(GO_BUILDINFO_MAGIC))?;
    let info = section.get(start..)?;
    let ptr_size = *info.get(14)?;
    let flags = *info.get(15)?;
    if flags & GO_FLAG_INLINE != 0 {
        let (len, used) = uvarint(info.get(32..)?)?;
        if len == 0 || len > MAX_GO_VERSION_LEN {
            return None;
        }
        let from = 32 + used;
        let bytes = info.get(from..from + usize::try_from(len).ok()?)?;
        return go_version_string(bytes);
    }
    let pointer = read_uint(info.get(16..)?, ptr_size, flags & GO_FLAG_BIG_ENDIAN != 0)?;
    string_at(pointer, ptr_size, flags & GO_FLAG_BIG_ENDIAN != 0)
}

/// The Go string whose header `{data *byte, len int}` is at `vaddr`.
fn go_string(
    data: &[u8],
    endian: Endianness,
    segments: &[Segment],
    vaddr: u64,
    ptr_size: u8,
    big_endian: bool,
) -> Option<String> {
    let width = u64::from(ptr_size);
    let (_, header) = file_range(data, endian, segments, vaddr, 2 * width, false)?;
    let pointer = read_uint(header, ptr_size, big_endian)?;
    let len = read_uint(header.get(usize::from(ptr_size)..)?, ptr_size, big_endian)?;
    if len == 0 || len > MAX_GO_VERSION_LEN {
        return None;
    }
    let (_, bytes) = file_range(data, endian, segments, pointer, len, false)?;
    go_version_string(bytes)
}

/// `bytes` as a version string, if it looks like one (`go1.x…` or `devel …`).
fn go_version_string(bytes: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(bytes).ok()?;
    (s.starts_with("go") || s.starts_with("devel")).then(|| s.to_owned())
}

/// An unsigned integer of 4 or 8 bytes at the start of `bytes`.
fn read_uint(bytes: &[u8], size: u8, big_endian: bool) -> Option<u64> {
    match size {
        4 => {
            let b: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
            Some(u64::from(if big_endian {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }))
        }
        8 => {
            let b: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
            Some(if big_endian {
                u64::from_be_bytes(b)
            } else {
                u64::from_le_bytes(b)
            })
        }
        _ => None,
    }
}

/// Go's `binary.Uvarint`: the value and how many bytes it took (at most 10).
fn uvarint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().take(10).enumerate() {
        let bits = u64::from(b & 0x7f);
        let shift = 7 * u32::try_from(i).ok()?;
        if i == 9 && b > 1 {
            return None; // overflows 64 bits
        }
        value |= bits << shift;
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// A readable name for an ELF machine, for the unsupported-architecture error.
fn machine_name(machine: u16) -> String {
    let name = match machine {
        elf::EM_386 => "i386",
        elf::EM_ARM => "arm",
        elf::EM_AARCH64 => "aarch64",
        elf::EM_RISCV => "riscv",
        elf::EM_PPC64 => "ppc64",
        elf::EM_S390 => "s390",
        elf::EM_MIPS => "mips",
        elf::EM_LOONGARCH => "loongarch",
        _ => return format!("e_machine {machine}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    //! Against real binaries: the system's libssl, C programs and Go programs
    //! built here, and damaged copies of them.

    use std::{
        fs,
        process::Command,
        sync::atomic::{AtomicU32, Ordering},
    };

    use object::{Object, ObjectSection, ObjectSymbol, read::elf::ElfFile64};

    use super::*;

    const LIBSSL: &str = "/usr/lib/x86_64-linux-gnu/libssl.so.3";
    const SSL_FUNCTIONS: [&str; 5] = [
        "SSL_read",
        "SSL_write",
        "SSL_read_ex",
        "SSL_write_ex",
        "SSL_free",
    ];

    /// A fresh directory, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir()
                .join(format!("agent-tls-elf-{tag}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).expect("create the temp dir");
            Self(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Whether `tool` runs at all.
    fn have(tool: &str, version_arg: &str) -> bool {
        Command::new(tool)
            .arg(version_arg)
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// The entry for `name` in a result asked with `names`; it must be found.
    fn found<'a>(binary: &'a Binary, names: &[&str], name: &str) -> &'a Function {
        let i = names
            .iter()
            .position(|n| *n == name)
            .expect("the name was asked for");
        match &binary.functions[i] {
            Ok(Some(f)) => f,
            other => panic!("{name}: expected a function, got {other:?}"),
        }
    }

    /// Every exit is inside the function and is a return instruction in the file.
    fn check_exits(file: &[u8], f: &Function) {
        let range = f.file_offset..f.file_offset + f.size;
        for &offset in f.exits.iter().chain(&f.tail_jumps).chain(&f.indirect_jumps) {
            assert!(
                range.contains(&offset),
                "{}: {offset:#x} outside {range:x?}",
                f.name
            );
        }
        for &offset in &f.exits {
            let at = usize::try_from(offset).expect("offset fits usize");
            let bytes = &file[at..];
            // Skip rep/bnd prefixes (`F3 C3`, `F2 C3`).
            let start = bytes
                .iter()
                .take_while(|&&b| b == 0xf3 || b == 0xf2)
                .count();
            assert!(start <= 1, "{}: {offset:#x}: {:02x?}", f.name, &bytes[..4]);
            assert!(
                matches!(bytes[start], 0xc3 | 0xc2),
                "{}: no RET at {offset:#x}: {:02x?}",
                f.name,
                &bytes[..4]
            );
        }
    }

    /// File offset of the symbol `name` computed the other way round: from its
    /// section header (`vaddr - sh_addr + sh_offset`) with object's unified API,
    /// and the section's bytes there.
    fn via_section<'a>(file: &'a [u8], name: &str) -> (u64, u64, &'a [u8]) {
        let elf = ElfFile64::<Endianness>::parse(file).expect("parse with object");
        let sym = elf
            .dynamic_symbols()
            .chain(elf.symbols())
            .find(|s| s.name() == Ok(name) && s.kind() == object::SymbolKind::Text)
            .unwrap_or_else(|| panic!("{name} in a symbol table"));
        let section = elf
            .section_by_index(sym.section_index().expect("defined in a section"))
            .expect("the symbol's section");
        let (sh_offset, _) = section.file_range().expect("section has file bytes");
        let offset = sym.address() - section.address() + sh_offset;
        let data = section.data().expect("section data");
        let at = usize::try_from(sym.address() - section.address()).expect("fits");
        let size = usize::try_from(sym.size()).expect("fits");
        (sym.address(), offset, &data[at..at + size])
    }

    fn record(what: &str, f: &Function) {
        println!(
            "RECORD {what} {}: vaddr {:#x} file_offset {:#x} size {} rets {} tail_jumps {} indirect_jumps {}",
            f.name,
            f.vaddr,
            f.file_offset,
            f.size,
            f.exits.len(),
            f.tail_jumps.len(),
            f.indirect_jumps.len()
        );
    }

    #[test]
    fn libssl_functions() {
        let path = Path::new(LIBSSL);
        if !path.exists() {
            println!("SKIPPED libssl_functions: {LIBSSL} absent");
            return;
        }
        let file = fs::read(path).expect("read libssl");
        let mut names = SSL_FUNCTIONS.to_vec();
        names.push("SSL_do_handshake");
        names.push("SSL_no_such_function");
        let binary = find_functions(path, &names).expect("libssl parses");
        assert!(binary.go.is_none());
        assert!(matches!(binary.functions.last(), Some(Ok(None))));
        for name in SSL_FUNCTIONS {
            let f = found(&binary, &names, name);
            assert!(f.size > 0, "{name}");
            assert!(!f.exits.is_empty(), "{name} has no RET");
            check_exits(&file, f);
            let (vaddr, offset, bytes) = via_section(&file, name);
            assert_eq!((f.vaddr, f.file_offset), (vaddr, offset), "{name}");
            let at = usize::try_from(f.file_offset).expect("fits");
            assert_eq!(&file[at..at + bytes.len()], bytes, "{name}");
            record("libssl", f);
        }
        // Not asserted (depends on the build): the handshake's exits, for the record.
        record("libssl", found(&binary, &names, "SSL_do_handshake"));
        println!("RECORD libssl has_symtab {}", binary.has_symtab);
    }

    const C_SOURCE: &str = r#"
#include <stdlib.h>

volatile long sink;

__attribute__((noinline)) long two_returns(const long *p, long n) {
    if (p == NULL) {
        return -1;
    }
    long s = 0;
    for (long i = 0; i < n; i++) {
        s += p[i] * 3;
        sink = s;
    }
    return s;
}

__attribute__((noinline)) long callee(long x) {
    sink = x;
    return x * 7 + sink;
}

/* -O2 turns the call into `jmp callee`. */
__attribute__((noinline)) long tail_caller(long x) {
    sink = x;
    return callee(x + 1);
}

/* A dense switch with distinct work per case: a jump table, `jmp *%rax`. */
__attribute__((noinline)) long dispatch(long op, long x) {
    switch (op) {
    case 0: sink = x; return callee(x);
    case 1: sink = x + 1; return two_returns(&x, 1);
    case 2: sink = x * 3; break;
    case 3: sink = x - 9; return tail_caller(x);
    case 4: sink = x ^ 5; break;
    case 5: sink = x << 2; return callee(x + 3);
    case 6: sink = x / 7; break;
    case 7: sink = -x; return tail_caller(x * 2);
    default: sink = 0; break;
    }
    return sink;
}

int main(int argc, char **argv) {
    long v = argc;
    long r = two_returns(argc > 5 ? NULL : &v, argc);
    r += tail_caller(r);
    r += dispatch(argc, r);
    return (int)(r & 0x7f) + (argv[0] == NULL);
}
"#;

    const C_FUNCTIONS: [&str; 6] = [
        "two_returns",
        "callee",
        "tail_caller",
        "dispatch",
        "main",
        "absent_function",
    ];

    /// Compiles [`C_SOURCE`] with `cc -O2` and `args` into `dir/out`.
    fn compile_c(dir: &TempDir, out: &str, args: &[&str]) -> PathBuf {
        let src = dir.0.join("t.c");
        fs::write(&src, C_SOURCE).expect("write the C source");
        let bin = dir.0.join(out);
        let status = Command::new("cc")
            .args(["-O2", "-o"])
            .arg(&bin)
            .args(args)
            .arg(&src)
            .status()
            .expect("run cc");
        assert!(status.success(), "cc {args:?} failed");
        bin
    }

    /// The addresses `nm` gives the defined text symbols.
    fn nm_addresses(bin: &Path) -> Option<HashMap<String, u64>> {
        let out = Command::new("nm").arg(bin).output().ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        Some(
            text.lines()
                .filter_map(|line| {
                    let mut parts = line.split_whitespace();
                    let addr = u64::from_str_radix(parts.next()?, 16).ok()?;
                    let kind = parts.next()?;
                    let name = parts.next()?;
                    matches!(kind, "T" | "t").then(|| (name.to_owned(), addr))
                })
                .collect(),
        )
    }

    /// The target of the direct `jmp` at `offset` (of `f`), decoded by hand from
    /// the file bytes so that the check does not depend on the decoder.
    fn jmp_target(file: &[u8], f: &Function, offset: u64) -> u64 {
        let at = usize::try_from(offset).expect("fits");
        let ip = f.vaddr + (offset - f.file_offset);
        match file[at] {
            0xe9 => {
                let rel = i32::from_le_bytes(file[at + 1..at + 5].try_into().expect("4 bytes"));
                (ip + 5).wrapping_add_signed(i64::from(rel))
            }
            0xeb => (ip + 2).wrapping_add_signed(i64::from(file[at + 1] as i8)),
            other => panic!("not a direct jmp at {offset:#x}: {other:#04x}"),
        }
    }

    fn check_c_binary(bin: &Path, pie: bool) {
        let file = fs::read(bin).expect("read the binary");
        let binary = find_functions(bin, &C_FUNCTIONS).expect("parses");
        assert!(binary.go.is_none());
        assert!(binary.has_symtab);
        assert!(matches!(binary.functions[5], Ok(None)), "absent_function");

        let header = Header::parse(&*file).expect("header");
        let e_type = header.e_type(header.endian().expect("endian"));
        assert_eq!(e_type, if pie { elf::ET_DYN } else { elf::ET_EXEC });

        let nm = nm_addresses(bin);
        for name in &C_FUNCTIONS[..5] {
            let f = found(&binary, &C_FUNCTIONS, name);
            check_exits(&file, f);
            let (vaddr, offset, bytes) = via_section(&file, name);
            assert_eq!((f.vaddr, f.file_offset), (vaddr, offset), "{name}");
            let at = usize::try_from(f.file_offset).expect("fits");
            assert_eq!(&file[at..at + bytes.len()], bytes, "{name}");
            if let Some(nm) = &nm {
                assert_eq!(nm.get(*name), Some(&f.vaddr), "{name}: nm disagrees");
            }
            if !pie {
                // Non-PIE text is linked at 0x400000+: the translation matters.
                assert_ne!(f.vaddr, f.file_offset, "{name}");
            }
            record(if pie { "c-pie" } else { "c-nopie" }, f);
        }

        let two = found(&binary, &C_FUNCTIONS, "two_returns");
        assert!(two.exits.len() >= 2, "early return: {two:?}");
        assert!(two.exits_complete(), "{two:?}");

        let callee = found(&binary, &C_FUNCTIONS, "callee");
        let tail = found(&binary, &C_FUNCTIONS, "tail_caller");
        assert_eq!(tail.tail_jumps.len(), 1, "{tail:?}");
        assert!(tail.exits.is_empty(), "{tail:?}");
        assert_eq!(jmp_target(&file, tail, tail.tail_jumps[0]), callee.vaddr);

        let dispatch = found(&binary, &C_FUNCTIONS, "dispatch");
        assert!(!dispatch.exits.is_empty());
        assert!(dispatch.tail_jumps.is_empty(), "{dispatch:?}");
        assert_eq!(dispatch.indirect_jumps.len(), 1, "{dispatch:?}");
        // `jmp r/m64`: optional notrack (3E) / REX prefix, FF /4.
        let at = usize::try_from(dispatch.indirect_jumps[0]).expect("fits");
        let opcode = file[at..]
            .iter()
            .position(|&b| !(b == 0x3e || (0x40..=0x4f).contains(&b)))
            .expect("an opcode");
        assert_eq!(file[at + opcode], 0xff);
        assert_eq!((file[at + opcode + 1] >> 3) & 7, 4);
    }

    #[test]
    fn c_program_exits_and_offsets() {
        if !have("cc", "--version") {
            println!("SKIPPED c_program_exits_and_offsets: cc not installed");
            return;
        }
        let dir = TempDir::new("c");
        let pie = compile_c(&dir, "pie", &["-fPIE", "-pie"]);
        check_c_binary(&pie, true);
        let nopie = compile_c(&dir, "nopie", &["-fno-pie", "-no-pie"]);
        check_c_binary(&nopie, false);

        // Stripped executable: nothing in .dynsym, so not found, without error.
        let stripped = compile_c(&dir, "stripped", &["-s"]);
        let binary = find_functions(&stripped, &C_FUNCTIONS).expect("parses");
        assert!(!binary.has_symtab);
        assert!(binary.functions.iter().all(|f| matches!(f, Ok(None))));
    }

    #[test]
    fn versioned_symbols_pick_the_default_version() {
        if !have("cc", "--version") {
            println!("SKIPPED versioned_symbols_pick_the_default_version: cc not installed");
            return;
        }
        let dir = TempDir::new("ver");
        let src = dir.0.join("v.c");
        fs::write(
            &src,
            r#"
__asm__(".symver old_impl,vfn@V1");
__asm__(".symver new_impl,vfn@@V2");
__attribute__((noinline)) long old_impl(long x) { return x + 1; }
__attribute__((noinline)) long new_impl(long x) { return x * 3 + 2; }
"#,
        )
        .expect("write the source");
        let map = dir.0.join("v.map");
        fs::write(
            &map,
            "V1 { global: vfn; local: *; };\nV2 { global: vfn; } V1;\n",
        )
        .expect("write the version script");
        let lib = dir.0.join("libv.so");
        let status = Command::new("cc")
            .args(["-O2", "-shared", "-fPIC", "-o"])
            .arg(&lib)
            .arg(format!("-Wl,--version-script={}", map.display()))
            .arg(&src)
            .status()
            .expect("run cc");
        assert!(status.success());
        let file = fs::read(&lib).expect("read");
        let names = ["vfn", "new_impl", "old_impl"];
        let binary = find_functions(&lib, &names).expect("parses");
        let vfn = found(&binary, &names, "vfn");
        let new = found(&binary, &names, "new_impl");
        let old = found(&binary, &names, "old_impl");
        assert_ne!(new.vaddr, old.vaddr);
        assert_eq!(vfn.vaddr, new.vaddr, "vfn must resolve to vfn@@V2");
        check_exits(&file, vfn);

        // Stripped of .symtab, the versions in .gnu.version alone decide.
        let stripped = dir.0.join("libv-stripped.so");
        let status = Command::new("cc")
            .args(["-O2", "-shared", "-fPIC", "-s", "-o"])
            .arg(&stripped)
            .arg(format!("-Wl,--version-script={}", map.display()))
            .arg(&src)
            .status()
            .expect("run cc");
        assert!(status.success());
        let binary = find_functions(&stripped, &names).expect("parses");
        assert!(!binary.has_symtab);
        assert_eq!(found(&binary, &names, "vfn").vaddr, new.vaddr);
        assert!(matches!(binary.functions[1], Ok(None)), "new_impl is local");
    }

    const GO_FUNCTIONS: [&str; 2] = ["crypto/tls.(*Conn).Read", "crypto/tls.(*Conn).Write"];

    const GO_MAIN: &str = r#"package main

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
)

func main() {
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{}}}
	if len(os.Args) > 1 {
		resp, err := client.Get(os.Args[1])
		fmt.Println(resp, err)
	}
}
"#;

    /// `go build` in `dir` with `ldflags` into `dir/out`, offline, with every
    /// Go directory inside `dir`.
    fn go_build(dir: &TempDir, out: &str, ldflags: Option<&str>) -> PathBuf {
        let bin = dir.0.join(out);
        let mut cmd = Command::new("go");
        cmd.arg("build").arg("-o").arg(&bin);
        if let Some(ldflags) = ldflags {
            cmd.arg(format!("-ldflags={ldflags}"));
        }
        let status = go_env(&mut cmd, dir)
            .arg(".")
            .current_dir(&dir.0)
            .status()
            .expect("run go build");
        assert!(status.success(), "go build {ldflags:?} failed");
        bin
    }

    fn go_env<'a>(cmd: &'a mut Command, dir: &TempDir) -> &'a mut Command {
        cmd.env("GOPATH", dir.0.join("gopath"))
            .env("GOCACHE", dir.0.join("gocache"))
            .env("GOFLAGS", "-mod=mod")
            .env("GOPROXY", "off")
            .env("GOTOOLCHAIN", "local")
            .env("GOTELEMETRY", "off")
            .env("GO111MODULE", "on")
            .env("CGO_ENABLED", "0")
    }

    /// The offset of section `name`'s bytes in `file`.
    fn section_offset(file: &[u8], name: &str) -> u64 {
        let elf = ElfFile64::<Endianness>::parse(file).expect("parse");
        let section = elf.section_by_name(name).expect("the section");
        section.file_range().expect("file bytes").0
    }

    #[test]
    fn go_crypto_tls() {
        if !have("go", "version") {
            println!("SKIPPED go_crypto_tls: go not installed");
            return;
        }
        let dir = TempDir::new("go");
        fs::write(dir.0.join("main.go"), GO_MAIN).expect("write main.go");
        fs::write(dir.0.join("go.mod"), "module tlsprobe\n\ngo 1.17\n").expect("write go.mod");
        let out = go_env(Command::new("go").args(["env", "GOVERSION"]), &dir)
            .output()
            .expect("go env");
        let go_version = String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_owned();
        println!("RECORD go toolchain {go_version}");

        let bin = go_build(&dir, "tlsprobe", None);
        let file = fs::read(&bin).expect("read the Go binary");
        let binary = find_functions(&bin, &GO_FUNCTIONS).expect("parses");
        let go = binary.go.as_ref().expect("detected as Go");
        assert_eq!(go.version.as_deref(), Some(go_version.as_str()));
        assert!(go.version_number().is_some_and(|v| v.0 == 1));
        println!(
            "RECORD go version {:?} number {:?} register_abi {:?}",
            go.version,
            go.version_number(),
            go.has_register_abi()
        );
        assert!(binary.has_symtab);
        for name in GO_FUNCTIONS {
            let f = found(&binary, &GO_FUNCTIONS, name);
            assert!(!f.exits.is_empty(), "{name} has no RET");
            check_exits(&file, f);
            let (vaddr, offset, _) = via_section(&file, name);
            assert_eq!((f.vaddr, f.file_offset), (vaddr, offset), "{name}");
            record("go", f);
        }

        // Stripped: no .symtab, so not found, without error; still Go.
        let stripped = go_build(&dir, "tlsprobe-stripped", Some("-s -w"));
        let binary = find_functions(&stripped, &GO_FUNCTIONS).expect("parses");
        assert!(!binary.has_symtab);
        assert!(binary.functions.iter().all(|f| matches!(f, Ok(None))));
        let go = binary
            .go
            .as_ref()
            .expect("stripped is still detected as Go");
        assert_eq!(go.version.as_deref(), Some(go_version.as_str()));

        // The pre-1.18 .go.buildinfo layout (pointer to a string header at
        // offset 16), made from this binary: point it at runtime.buildVersion,
        // the string header older linkers pointed it at.
        let elf = ElfFile64::<Endianness>::parse(&*file).expect("parse");
        let build_version = elf
            .symbols()
            .find(|s| s.name() == Ok("runtime.buildVersion"))
            .expect("runtime.buildVersion")
            .address();
        let info = usize::try_from(section_offset(&file, ".go.buildinfo")).expect("fits");
        let mut old = file.clone();
        old[info + 15] &= !GO_FLAG_INLINE;
        old[info + 16..info + 24].copy_from_slice(&build_version.to_le_bytes());
        old[info + 24..info + 32].fill(0);
        let binary = find_functions_in(&old, &[]).expect("parses");
        let version = binary.go.and_then(|g| g.version);
        assert_eq!(version.as_deref(), Some(go_version.as_str()));

        // No Go sections at all (renamed): the runtime.buildVersion symbol
        // alone marks it as Go and gives the version.
        let mut renamed = file.clone();
        for (from, to) in [
            (&b".go.buildinfo\0"[..], &b".xx.buildinfo\0"[..]),
            (b".note.go.buildid\0", b".note.xx.buildid\0"),
        ] {
            let at = renamed
                .windows(from.len())
                .position(|w| w == from)
                .expect("the section name");
            renamed[at..at + to.len()].copy_from_slice(to);
        }
        let binary = find_functions_in(&renamed, &GO_FUNCTIONS).expect("parses");
        let version = binary.go.and_then(|g| g.version);
        assert_eq!(version.as_deref(), Some(go_version.as_str()));
    }

    #[test]
    fn go_version_numbers() {
        let v = |s: &str| {
            GoBuild {
                version: Some(s.to_owned()),
            }
            .version_number()
        };
        assert_eq!(v("go1.19.8"), Some((1, 19)));
        assert_eq!(v("go1.21rc2"), Some((1, 21)));
        assert_eq!(v("devel go1.22-abcdef Tue"), Some((1, 22)));
        assert_eq!(v("go1"), Some((1, 0)));
        assert_eq!(v("garbage"), None);
        let abi = |s: &str| {
            GoBuild {
                version: Some(s.to_owned()),
            }
            .has_register_abi()
        };
        assert_eq!(abi("go1.16.15"), Some(false));
        assert_eq!(abi("go1.17"), Some(true));
        assert_eq!(GoBuild { version: None }.has_register_abi(), None);
        assert_eq!(uvarint(&[0x08]), Some((8, 1)));
        assert_eq!(uvarint(&[0x80, 0x01]), Some((128, 2)));
        assert_eq!(uvarint(&[0x80; 11]), None);
        assert_eq!(uvarint(&[]), None);
    }

    /// A deterministic xorshift generator, so that failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).expect("fits")
        }
    }

    /// Results that parse must still be within the file.
    fn check_invariants(data: &[u8], result: &Result<Binary, ElfError>) {
        let Ok(binary) = result else { return };
        for f in binary
            .functions
            .iter()
            .filter_map(|f| f.as_ref().ok().and_then(Option::as_ref))
        {
            assert!(f.size > 0 && f.size <= MAX_FUNCTION_SIZE);
            assert!(f.file_offset + f.size <= data.len() as u64);
            let range = f.file_offset..f.file_offset + f.size;
            for &offset in f.exits.iter().chain(&f.tail_jumps).chain(&f.indirect_jumps) {
                assert!(range.contains(&offset));
            }
        }
    }

    /// Offset of the section header of the first section of type `sh_type`.
    fn section_header_offset(file: &[u8], sh_type: u32) -> usize {
        let header = Header::parse(file).expect("header");
        let endian = header.endian().expect("endian");
        let shoff = usize::try_from(header.e_shoff(endian)).expect("fits");
        let sections = header.sections(endian, file).expect("sections");
        let (index, _) = sections
            .enumerate()
            .find(|(_, s)| s.sh_type(endian) == sh_type)
            .expect("the section");
        shoff + index.0 * size_of::<elf::SectionHeader64<Endianness>>()
    }

    /// Offset of the `.symtab` entry of `name`.
    fn symtab_entry_offset(file: &[u8], name: &str) -> usize {
        let header = Header::parse(file).expect("header");
        let endian = header.endian().expect("endian");
        let sections = header.sections(endian, file).expect("sections");
        let symtab = sections
            .symbols(endian, file, elf::SHT_SYMTAB)
            .expect("symtab");
        let section = sections.section(symtab.section()).expect("symtab section");
        let (index, _) = symtab
            .enumerate()
            .find(|(_, s)| symtab.symbol_name(endian, s) == Ok(name.as_bytes()))
            .expect("the symbol");
        usize::try_from(section.sh_offset(endian)).expect("fits")
            + index.0 * size_of::<elf::Sym64<Endianness>>()
    }

    #[test]
    fn malformed_input_gives_errors() {
        if !have("cc", "--version") {
            println!("SKIPPED malformed_input_gives_errors: cc not installed");
            return;
        }
        let dir = TempDir::new("bad");
        let bin = compile_c(&dir, "pie", &["-fPIE", "-pie"]);
        let file = fs::read(&bin).expect("read");
        let names = &C_FUNCTIONS;
        let n = file.len();
        assert!(find_functions_in(&file, names).is_ok());

        // Truncations (the section header table is at the end of the file).
        for len in [
            0,
            1,
            4,
            5,
            16,
            63,
            64,
            65,
            100,
            1000,
            n / 4,
            n / 2,
            n - 64,
            n - 1,
        ] {
            let result = find_functions_in(&file[..len], names);
            assert!(result.is_err(), "truncated to {len}: {result:?}");
        }
        let truncated = dir.0.join("truncated");
        fs::write(&truncated, &file[..n / 2]).expect("write");
        assert!(matches!(
            find_functions(&truncated, names),
            Err(ElfError::Malformed(_))
        ));

        // Random bytes, then a real ELF header followed by random bytes.
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..200 {
            let len = rng.below(70_000);
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            assert!(matches!(
                find_functions_in(&bytes, names),
                Err(ElfError::NotElf)
            ));
            let mut with_header = file[..64].to_vec();
            with_header.extend_from_slice(&bytes);
            let result = find_functions_in(&with_header, names);
            check_invariants(&with_header, &result);
        }

        // Mutations of the real file, aimed at the headers and tables: any
        // result, never a panic, and what parses stays within the file.
        for _ in 0..3000 {
            let mut bytes = file.clone();
            for _ in 0..1 + rng.below(8) {
                let at = if rng.next().is_multiple_of(2) {
                    rng.below(2048)
                } else {
                    n - 1 - rng.below(4096)
                };
                bytes[at] = rng.next() as u8;
            }
            let result = find_functions_in(&bytes, names);
            check_invariants(&bytes, &result);
        }

        let patched = |at: usize, value: &[u8]| {
            let mut bytes = file.clone();
            bytes[at..at + value.len()].copy_from_slice(value);
            find_functions_in(&bytes, names)
        };
        // Absurd header fields: e_phoff, e_shoff, e_phentsize, e_phnum,
        // e_shentsize, e_shnum, e_shstrndx.
        for (at, value) in [
            (32, &u64::MAX.to_le_bytes()[..]),
            (40, &(u64::MAX - 8).to_le_bytes()),
            (54, &1u16.to_le_bytes()),
            (56, &0xfffeu16.to_le_bytes()),
            (58, &1u16.to_le_bytes()),
            (60, &0xffffu16.to_le_bytes()),
            (62, &0xfffeu16.to_le_bytes()),
        ] {
            let result = patched(at, value);
            assert!(
                matches!(result, Err(ElfError::Malformed(_))),
                "field at {at}: {result:?}"
            );
        }
        // A symbol table claiming to be huge, or to start past the end.
        let symtab = section_header_offset(&file, elf::SHT_SYMTAB);
        let result = patched(symtab + 32, &(u64::MAX / 2).to_le_bytes());
        assert!(matches!(result, Err(ElfError::Malformed(_))), "{result:?}");
        let result = patched(symtab + 24, &(n as u64 + 10).to_le_bytes());
        assert!(matches!(result, Err(ElfError::Malformed(_))), "{result:?}");

        // Other machines, 32-bit, and object files.
        assert!(matches!(
            patched(18, &elf::EM_AARCH64.to_le_bytes()),
            Err(ElfError::UnsupportedArchitecture(m)) if m == "aarch64"
        ));
        assert!(matches!(
            patched(4, &[elf::ELFCLASS32]),
            Err(ElfError::UnsupportedArchitecture(_))
        ));
        assert!(matches!(
            patched(16, &elf::ET_REL.to_le_bytes()),
            Err(ElfError::NotLoadable(elf::ET_REL))
        ));

        // One bad function symbol spoils only that function.
        let entry = symtab_entry_offset(&file, "two_returns");
        let only = |result: Result<Binary, ElfError>| {
            let binary = result.expect("the file still parses");
            assert!(binary.functions[1].as_ref().is_ok_and(Option::is_some));
            binary.functions[0].clone()
        };
        assert!(matches!(
            only(patched(entry + 16, &0u64.to_le_bytes())),
            Err(FunctionError::Empty { .. })
        ));
        assert!(matches!(
            only(patched(entry + 16, &(2 * MAX_FUNCTION_SIZE).to_le_bytes())),
            Err(FunctionError::TooLarge { .. })
        ));
        assert!(matches!(
            only(patched(entry + 8, &0xdead_0000u64.to_le_bytes())),
            Err(FunctionError::NotMapped { .. })
        ));
        // Pointed at the middle of the ELF header's segment (not executable).
        assert!(matches!(
            only(patched(entry + 8, &8u64.to_le_bytes())),
            Err(FunctionError::NotMapped { .. })
        ));
    }

    #[test]
    fn odd_files_and_unaligned_bytes() {
        let dir = TempDir::new("odd");
        assert!(matches!(
            find_functions(&dir.0.join("missing"), &["f"]),
            Err(ElfError::Io { .. })
        ));
        assert!(matches!(
            find_functions(&dir.0, &["f"]),
            Err(ElfError::NotRegularFile { .. })
        ));
        // A FIFO must not block the open (no writer ever comes).
        let fifo = dir.0.join("fifo");
        if Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(matches!(
                find_functions(&fifo, &["f"]),
                Err(ElfError::NotRegularFile { .. })
            ));
        }
        let empty = dir.0.join("empty");
        fs::write(&empty, b"").expect("write");
        assert!(matches!(
            find_functions(&empty, &["f"]),
            Err(ElfError::NotElf)
        ));

        if !Path::new(LIBSSL).exists() {
            println!("SKIPPED odd_files_and_unaligned_bytes (unaligned part): {LIBSSL} absent");
            return;
        }
        let file = fs::read(LIBSSL).expect("read libssl");
        let aligned = find_functions(Path::new(LIBSSL), &SSL_FUNCTIONS).expect("parses");
        // Copy the file to an odd address.
        let mut shifted = vec![0u8; file.len() + 1];
        let start = usize::from(shifted.as_ptr().align_offset(2) == 0);
        shifted[start..start + file.len()].copy_from_slice(&file);
        let unaligned = find_functions_in(&shifted[start..start + file.len()], &SSL_FUNCTIONS)
            .expect("unaligned input parses");
        assert_eq!(aligned.functions, unaligned.functions);
    }
}
