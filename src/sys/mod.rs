//! Syscall-level code: the only place in the crate with `unsafe`.
//!
//! Nothing here depends on tokio. The async layer (`spawn.rs`, `stdio.rs`)
//! wraps these calls in `AsyncFd`; a blocking layer can drive the same fds
//! with `poll(2)`.

pub(crate) mod ahead;
pub(crate) mod env;
pub(crate) mod forward;
pub(crate) mod ipc;
mod process;
pub(crate) mod tokio_fd;

pub(crate) use process::*;

use std::ffi::CStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// Turn a C-style `-1 + errno` return into `io::Result`.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Retry a call that failed with `EINTR`.
fn cvt_r(mut f: impl FnMut() -> libc::c_int) -> io::Result<libc::c_int> {
    loop {
        match cvt(f()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// `ESRCH` (the process or group is gone) is not an error for a signal.
fn ignore_esrch(ret: io::Result<libc::c_int>) -> io::Result<()> {
    match ret {
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        Err(e) => Err(e),
        Ok(_) => Ok(()),
    }
}

/// A child's environment: this process's own array, or one built for it.
pub(crate) enum Envp {
    /// `environ` as it is (see [`env`]).
    Inherited(env::Inherited),
    Built(CStrArray),
}

/// A null-terminated array of C strings (`argv`, `envp`) packed into one
/// buffer: one allocation for the strings however many there are (an
/// environment is copied when the child's differs from ours, or when ours
/// cannot be passed as is: see [`env`]).
///
/// The two buffers go back to a per-thread spare list when the array is
/// dropped, and the next array built on that thread reuses them. A spawn
/// builds two arrays; allocating them anew each time made glibc's `malloc`
/// sort and merge its free lists on every spawn (a request over 1 KiB
/// consolidates the small chunks the environment copy just freed), which
/// cost more than the copy itself.
pub(crate) struct CStrArray {
    buf: Vec<u8>,
    ptrs: Vec<*const libc::c_char>,
}

// SAFETY: the raw pointers point into `buf`, which the array owns and never
// mutates or reallocates after construction.
unsafe impl Send for CStrArray {}
// SAFETY: as above, the array is immutable once built.
unsafe impl Sync for CStrArray {}

/// Spare buffers per thread: at most two pairs (a spawn's `argv` and
/// `envp`), none larger than [`SPARE_MAX`].
type Spare = (Vec<u8>, Vec<*const libc::c_char>);
const SPARE_MAX: usize = 256 * 1024;

thread_local! {
    static SPARE: std::cell::RefCell<Vec<Spare>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A [`CStrArray`] under construction, string by string.
pub(crate) struct CStrArrayBuilder {
    buf: Vec<u8>,
    /// Each string's offset in `buf` (as an address without provenance)
    /// until `finish` turns them into pointers.
    ptrs: Vec<*const libc::c_char>,
}

impl CStrArrayBuilder {
    /// Add one string: the concatenation of `parts` plus a NUL; the caller
    /// has checked that no part holds a NUL byte.
    pub(crate) fn push<'a>(&mut self, parts: impl IntoIterator<Item = &'a [u8]>) {
        self.ptrs.push(ptr::without_provenance(self.buf.len()));
        for part in parts {
            self.buf.extend_from_slice(part);
        }
        self.buf.push(0);
    }

    pub(crate) fn finish(mut self) -> CStrArray {
        // `buf` is complete: its address no longer changes.
        let base = self.buf.as_ptr();
        for p in &mut self.ptrs {
            *p = base.wrapping_add(p.addr()).cast();
        }
        self.ptrs.push(ptr::null());
        CStrArray {
            buf: self.buf,
            ptrs: self.ptrs,
        }
    }
}

impl CStrArray {
    /// An empty builder, on spare buffers of this thread when there are.
    pub(crate) fn builder() -> CStrArrayBuilder {
        let (buf, ptrs) = SPARE
            .try_with(|s| s.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_default();
        CStrArrayBuilder { buf, ptrs }
    }

    /// Each item is the concatenation of its parts plus a NUL; the caller
    /// has checked that no part holds a NUL byte.
    pub(crate) fn new<'a, I, P>(items: I) -> CStrArray
    where
        I: IntoIterator<Item = P>,
        P: IntoIterator<Item = &'a [u8]>,
    {
        let mut array = CStrArray::builder();
        for parts in items {
            array.push(parts);
        }
        array.finish()
    }

    /// The longest string, with its index and length (without the NUL).
    pub(crate) fn longest(&self) -> Option<(usize, usize)> {
        let mut best: Option<(usize, usize)> = None;
        let mut start = 0;
        for (i, end) in memchr::memchr_iter(0, &self.buf).enumerate() {
            let len = end - start;
            if best.is_none_or(|(_, l)| len > l) {
                best = Some((i, len));
            }
            start = end + 1;
        }
        best
    }

    /// The string at `index`, as bytes.
    pub(crate) fn get(&self, index: usize) -> &[u8] {
        self.buf.split(|&b| b == 0).nth(index).unwrap_or_default()
    }

    /// The size `execve` counts for it: the strings and the pointers.
    pub(crate) fn total_bytes(&self) -> usize {
        self.buf.len() + self.ptrs.len() * std::mem::size_of::<usize>()
    }
}

#[cfg(test)]
impl CStrArray {
    /// The strings as `posix_spawn` sees them: through the pointer array.
    pub(crate) fn strings(&self) -> Vec<Vec<u8>> {
        self.ptrs
            .iter()
            .take_while(|p| !p.is_null())
            // SAFETY: every non-null pointer points at a NUL-terminated
            // string inside `buf`, which lives as long as `self`.
            .map(|&p| unsafe { CStr::from_ptr(p) }.to_bytes().to_vec())
            .collect()
    }
}

impl Drop for CStrArray {
    fn drop(&mut self) {
        if self.buf.capacity() > SPARE_MAX {
            return;
        }
        let mut buf = std::mem::take(&mut self.buf);
        let mut ptrs = std::mem::take(&mut self.ptrs);
        buf.clear();
        ptrs.clear();
        // A thread being torn down has no spare list any more.
        let _ = SPARE.try_with(|s| {
            let mut spare = s.borrow_mut();
            if spare.len() < 2 {
                spare.push((buf, ptrs));
            }
        });
    }
}

/// Everything `posix_spawn` needs, already converted to C types.
pub(crate) struct SpawnPlan<'a> {
    /// The program's path (already resolved against `PATH`).
    pub path: &'a CStr,
    pub argv: &'a CStrArray,
    pub envp: &'a Envp,
    pub cwd: Option<&'a CStr>,
    /// `(source, target)`: the child gets `source` at fd number `target`.
    /// Every source is `>= close_from`, so no dup2 clobbers a later source
    /// and `dup2(fd, fd)` (which would keep CLOEXEC) never happens.
    pub fds: &'a [(BorrowedFd<'a>, RawFd)],
    /// The child closes every fd from here up before `exec`.
    pub close_from: RawFd,
    /// `setpgid(0, pgid)` in the child: `Some(0)` for a group of its own
    /// (named after it), `Some(pgid)` to join the group of an earlier
    /// process (a pipeline's stages).
    pub process_group: Option<libc::pid_t>,
    /// `setsid()` in the child: its own session (and group).
    pub new_session: bool,
}

/// `posix_spawn_file_actions_t`, destroyed on drop. On the stack, not
/// boxed: glibc's object holds a pointer to its own heap array and nothing
/// that points into itself, so it may move (two fewer allocations a spawn).
struct FileActions(libc::posix_spawn_file_actions_t);

impl FileActions {
    fn new() -> io::Result<Self> {
        // SAFETY: posix_spawn_file_actions_t is a plain C struct; zeroed memory
        // is a valid place for `init` to write into.
        let mut actions = FileActions(unsafe { std::mem::zeroed() });
        // SAFETY: `actions.0` is valid, writable memory for the object.
        errno(unsafe { libc::posix_spawn_file_actions_init(&mut actions.0) })?;
        Ok(actions)
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: the object was initialised by `new` and is destroyed once.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

/// `posix_spawnattr_t`, destroyed on drop. Plain values (flags, sets, a
/// group id), so it may move like [`FileActions`].
struct SpawnAttr(libc::posix_spawnattr_t);

impl SpawnAttr {
    fn new() -> io::Result<Self> {
        // SAFETY: a plain C struct; zeroed memory is a valid place for `init`.
        let mut attr = SpawnAttr(unsafe { std::mem::zeroed() });
        // SAFETY: `attr.0` is valid, writable memory for the object.
        errno(unsafe { libc::posix_spawnattr_init(&mut attr.0) })?;
        Ok(attr)
    }
}

impl Drop for SpawnAttr {
    fn drop(&mut self) {
        // SAFETY: the object was initialised by `new` and is destroyed once.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

/// posix_spawn-family calls return the error number instead of setting errno.
fn errno(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(ret))
    }
}

/// Start a process with `posix_spawn`.
///
/// glibc implements it with `clone(CLONE_VM | CLONE_VFORK)`, so the cost does
/// not grow with the parent's memory (a `fork()` from a parent with 1 GiB
/// resident is ~18× slower), and it reports a failed `chdir` or `execve` in
/// the child as its return value.
pub(crate) fn spawn(plan: &SpawnPlan<'_>) -> io::Result<libc::pid_t> {
    let mut actions = FileActions::new()?;
    for (source, target) in plan.fds {
        debug_assert!(source.as_raw_fd() >= plan.close_from);
        // SAFETY: `actions` is initialised; both fds are plain integers here,
        // the source stays open (borrowed) until posix_spawn returns.
        errno(unsafe {
            libc::posix_spawn_file_actions_adddup2(&mut actions.0, source.as_raw_fd(), *target)
        })?;
    }
    if let Some(cwd) = plan.cwd {
        // SAFETY: `actions` is initialised; glibc copies the path string.
        errno(unsafe { libc::posix_spawn_file_actions_addchdir_np(&mut actions.0, cwd.as_ptr()) })?;
    }
    // Like Python's close_fds=True: an fd some other library opened without
    // CLOEXEC never leaks into our children. glibc runs one close_range(2).
    // SAFETY: `actions` is initialised.
    errno(unsafe {
        libc::posix_spawn_file_actions_addclosefrom_np(&mut actions.0, plan.close_from)
    })?;

    let mut attr = SpawnAttr::new()?;
    let mut flags = (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short;
    if plan.new_session {
        flags |= libc::POSIX_SPAWN_SETSID;
    } else if let Some(pgid) = plan.process_group {
        flags |= libc::POSIX_SPAWN_SETPGROUP as libc::c_short;
        // SAFETY: `attr` is initialised; 0 means "a group named after the
        // child", another pid the group of that (living) process.
        errno(unsafe { libc::posix_spawnattr_setpgroup(&mut attr.0, pgid) })?;
    }
    // The child starts with an empty signal mask and every signal at its
    // default disposition, whatever the parent blocked or ignored (Rust
    // ignores SIGPIPE; `yes | head -1` must still end). glibc's child already
    // walks every signal to drop handlers, so a full SETSIGDEF set costs no
    // extra syscalls.
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set it is given.
    unsafe { libc::sigemptyset(set.as_mut_ptr()) };
    // SAFETY: initialised just above.
    let empty = unsafe { set.assume_init() };
    // SAFETY: `attr` is initialised; the set is copied.
    errno(unsafe { libc::posix_spawnattr_setsigmask(&mut attr.0, &empty) })?;
    // Not sigfillset: glibc leaves out its two internal signals (SIGCANCEL,
    // SIGSETXID: 32 and 33), and its spawn child then sets them to SIG_IGN,
    // which survives exec (std's children start with SigIgn 0x180000000;
    // Node's and Python's with none). Every bit set makes them SIG_DFL too.
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigset_t is a plain array of integers on glibc; any bit pattern
    // is a valid value, and all-ones is "every signal".
    unsafe { set.as_mut_ptr().write_bytes(0xff, 1) };
    // SAFETY: initialised just above.
    let full = unsafe { set.assume_init() };
    // SAFETY: `attr` is initialised; the set is copied.
    errno(unsafe { libc::posix_spawnattr_setsigdefault(&mut attr.0, &full) })?;
    // SAFETY: `attr` is initialised; the flags are valid POSIX_SPAWN_* bits.
    errno(unsafe { libc::posix_spawnattr_setflags(&mut attr.0, flags) })?;

    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is valid for the call: the path is a C string, argv
    // and a built envp are null-terminated arrays of C strings that outlive
    // the call, an inherited envp is the initial `environ` array, which is
    // never freed and only changed in place (see `env`), and actions/attr
    // were initialised above.
    errno(unsafe {
        libc::posix_spawn(
            &mut pid,
            plan.path.as_ptr(),
            &actions.0,
            &attr.0,
            plan.argv.ptrs.as_ptr() as *const *mut libc::c_char,
            match plan.envp {
                Envp::Inherited(env) => env.as_ptr(),
                Envp::Built(array) => array.ptrs.as_ptr() as *const *mut libc::c_char,
            },
        )
    })?;
    Ok(pid)
}

/// A pipe, both ends CLOEXEC: `(read, write)`.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((r, w))
}

/// A connected `AF_UNIX`/`SOCK_STREAM` pair, both ends CLOEXEC: the IPC
/// channel of `fork`, as libuv's `uv_socketpair(SOCK_STREAM)`.
pub(crate) fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    Ok(socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    set_nonblocking_to(fd, true)
}

/// `ioctl(FIONBIO)`: one syscall, where `fcntl` needs `F_GETFL` and
/// `F_SETFL` (std sets pipes non-blocking the same way).
fn set_nonblocking_to(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let mut on = libc::c_int::from(on);
    // SAFETY: FIONBIO reads one int from the pointer we pass; the fd is
    // borrowed for the call.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONBIO, &mut on) })?;
    Ok(())
}

/// A CLOEXEC duplicate of `fd` numbered at least `min`.
pub(crate) fn dup_at_least(fd: BorrowedFd<'_>, min: RawFd) -> io::Result<OwnedFd> {
    use nix::fcntl::{fcntl, FcntlArg};
    let new = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(min))?;
    // SAFETY: fcntl just created this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Grow a pipe's kernel buffer (`F_SETPIPE_SZ`). Best effort: an
/// unprivileged process is capped by `/proc/sys/fs/pipe-max-size`.
pub(crate) fn set_pipe_size(fd: BorrowedFd<'_>, size: usize) -> io::Result<usize> {
    let size = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    // SAFETY: fcntl with F_SETPIPE_SZ takes an int; the fd is borrowed.
    let ret = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, size) })?;
    Ok(ret as usize)
}

/// One `read(2)` into the spare capacity of `buf`, at most `max` bytes,
/// without zeroing it first: large captures are bound by page faults, and
/// zeroing would touch every page twice.
pub(crate) fn read_to_spare(
    fd: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let len = spare.len().min(max);
    let n = read_uninit(fd, &mut spare[..len])?.len();
    // SAFETY: read_uninit initialised the first `n` bytes of the spare
    // capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// One `read(2)` into memory that need not be initialised; what it read,
/// now initialised.
pub(crate) fn read_uninit<'a>(
    fd: BorrowedFd<'_>,
    buf: &'a mut [std::mem::MaybeUninit<u8>],
) -> io::Result<&'a [u8]> {
    // SAFETY: `buf` is writable memory of `buf.len()` bytes; read(2) writes
    // at most that many into it.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: read(2) initialised the first `n` bytes (n <= buf.len()).
    Ok(unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n as usize) })
}

/// One `read(2)` into `buf`.
pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    Ok(nix::unistd::read(fd, buf)?)
}

/// One `write(2)` from `buf`.
pub(crate) fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    Ok(nix::unistd::write(fd, buf)?)
}

static NO_POPULATE: AtomicBool = AtomicBool::new(false);

/// The page size ranges are rounded to. On a kernel with larger pages
/// (some arm64 ones) the ranges are not aligned to them and `madvise`
/// refuses them (`EINVAL`): faulting in ahead is then off, and nothing is
/// given back.
pub(crate) const PAGE: usize = 4096;

/// The whole pages inside the addresses `[start, end)`, if any.
fn whole_pages(start: usize, end: usize) -> Option<(usize, usize)> {
    let start = (start + PAGE - 1) & !(PAGE - 1);
    let stop = end & !(PAGE - 1);
    (stop > start).then_some((start, stop))
}

/// Fault in `len` bytes of `buf`'s spare capacity from `offset` on, in one
/// `madvise(MADV_POPULATE_WRITE)` (Linux ≥ 5.14) instead of one page fault
/// per 4 KiB page as `read(2)` copies into it. Best effort; `false` once the
/// kernel said it cannot.
///
/// Transparent huge pages (`MADV_HUGEPAGE`) were measured first: with the
/// kernel's `defrag = madvise` every huge-page fault compacts memory, and a
/// 256 MiB capture took 3× as long as with plain pages.
pub(crate) fn populate(buf: &mut Vec<u8>, offset: usize, len: usize) -> bool {
    let end = (offset + len).min(buf.capacity());
    let base = buf.as_mut_ptr() as usize;
    // SAFETY: [base + offset, base + end) is spare capacity of `buf`, which
    // the `&mut` keeps in place for the call.
    unsafe { populate_range(base + offset, end.saturating_sub(offset)) }
}

/// [`populate`] on the whole pages inside `[start, start + len)`, an
/// address range rather than a borrow: a helper thread faults in the
/// buffer another thread reads into ([`ahead`]). The pages' contents are
/// left alone (a page present is skipped), so bytes other threads read or
/// write meanwhile are not touched.
///
/// # Safety
///
/// The range lies inside the spare capacity of a `Vec` (private anonymous
/// or heap memory, no file behind it) that nothing frees or moves until
/// this returns. Elsewhere it could fault in (and, on a shared file
/// mapping, dirty or allocate file blocks for) memory nobody meant to.
pub(crate) unsafe fn populate_range(start: usize, len: usize) -> bool {
    if NO_POPULATE.load(Ordering::Relaxed) {
        return false;
    }
    let Some((start, stop)) = whole_pages(start, start + len) else {
        return true;
    };
    // SAFETY: [start, stop) is spare capacity of a `Vec` that stays in
    // place for the call (the caller's promise); MADV_POPULATE_WRITE only
    // faults its pages in (writing nothing), as a read(2) into them would.
    let ret = unsafe {
        libc::madvise(
            start as *mut libc::c_void,
            stop - start,
            libc::MADV_POPULATE_WRITE,
        )
    };
    if ret != 0 {
        // A kernel before 5.14 does not know the advice: never again.
        // Other errors (a signal) are for this call only.
        if io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
            NO_POPULATE.store(true, Ordering::Relaxed);
        }
        return false;
    }
    true
}

/// Gives back the pages of `buf`'s spare capacity up to `past` bytes past
/// its length (whole pages only) with `madvise(MADV_DONTNEED)`: pages
/// faulted in ahead of reads that never came are not kept resident by the
/// result. Best effort.
pub(crate) fn discard_spare(buf: &mut Vec<u8>, past: usize) {
    let base = buf.as_mut_ptr() as usize;
    let end = buf.len().saturating_add(past).min(buf.capacity());
    let Some((start, stop)) = whole_pages(base + buf.len(), base + end) else {
        return;
    };
    // SAFETY: [start, stop) holds whole pages of `buf`'s spare capacity,
    // which no initialised byte lives in and nothing else owns (the
    // allocator keeps its headers outside the capacity it handed out); the
    // `&mut` keeps it in place. MADV_DONTNEED only drops those pages; the
    // next touch gets zeroed ones.
    unsafe {
        libc::madvise(
            start as *mut libc::c_void,
            stop - start,
            libc::MADV_DONTNEED,
        );
    }
}

/// `/dev/null`, opened once for the life of the process and shared by every
/// child whose stdio is `Stdio::null()`: one `open` saved per spawn.
pub(crate) fn dev_null() -> io::Result<BorrowedFd<'static>> {
    use std::os::fd::AsFd;
    static DEV_NULL: OnceLock<OwnedFd> = OnceLock::new();
    if let Some(fd) = DEV_NULL.get() {
        return Ok(fd.as_fd());
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    let fd = OwnedFd::from(file);
    Ok(DEV_NULL.get_or_init(|| fd).as_fd())
}

/// `poll(2)` over `fds`; `None` waits forever. `EINTR` counts as "nothing
/// ready" so the caller re-checks its deadlines.
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let ms = match timeout {
        None => -1,
        // Round up so a 0.5 ms deadline does not spin with timeout 0.
        Some(t) => {
            libc::c_int::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(libc::c_int::MAX)
        }
    };
    // SAFETY: `fds` is a valid, writable array of `fds.len()` pollfd structs.
    match cvt(unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) }) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}

/// Whether `fd` would take a write now (`poll` with `POLLOUT` and no wait):
/// for a pipe, at least a page free, so a write of `PIPE_BUF` bytes does
/// not block. An error (a closed fd) counts as ready: the write says why.
pub(crate) fn writable_now(fd: RawFd) -> bool {
    let mut fds = [libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    }];
    poll(&mut fds, Some(Duration::ZERO)).map_or(true, |n| n > 0)
}

/// Whether `fd` is a regular file or a block device, whose writes never
/// wait for a reader.
pub(crate) fn is_regular_file(fd: BorrowedFd<'_>) -> bool {
    let mut stat = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes one `struct stat` into valid memory.
    if unsafe { libc::fstat(fd.as_raw_fd(), stat.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: fstat succeeded, so it filled `stat`.
    let mode = unsafe { stat.assume_init() }.st_mode & libc::S_IFMT;
    matches!(mode, libc::S_IFREG | libc::S_IFBLK)
}

/// An eventfd, CLOEXEC and non-blocking, to wake a thread blocked in poll.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes an initial value and flags and returns a new fd.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    // SAFETY: the kernel just gave us this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn eventfd_signal(fd: BorrowedFd<'_>) {
    // EAGAIN means the counter is already non-zero: the reader wakes anyway.
    let _ = write(fd, &1u64.to_ne_bytes());
}

pub(crate) fn eventfd_drain(fd: BorrowedFd<'_>) {
    let mut buf = [0u8; 8];
    let _ = read(fd, &mut buf);
}

/// The longest single argument or environment string `execve` accepts,
/// with its NUL: `MAX_ARG_STRLEN`, 32 pages (include/uapi/linux/binfmts.h).
pub(crate) const MAX_ARG_STRLEN: usize = 32 * 4096;

/// The largest argument-plus-environment size `execve` accepts.
pub(crate) fn arg_max() -> usize {
    // SAFETY: sysconf takes an integer name.
    let n = unsafe { libc::sysconf(libc::_SC_ARG_MAX) };
    if n > 0 {
        n as usize
    } else {
        128 * 1024
    }
}

pub(crate) fn set_blocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    set_nonblocking_to(fd, false)
}

/// The soft limit on open fds (`RLIMIT_NOFILE`), or 1024 if it cannot be read.
pub(crate) fn nofile_limit() -> u64 {
    // SAFETY: rlimit is a plain C struct; all-zero is a valid value.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: getrlimit writes one `struct rlimit` into a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        1024
    }
}

/// How many bytes a pipe or socket holds, ready to read (`FIONREAD`).
pub(crate) fn bytes_available(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer; the fd is borrowed.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) })?;
    Ok(n.max(0) as usize)
}

/// What a child may get as a stdio fd when `fd` is what the caller gave:
/// `Ok(None)` to use it as it is, `Ok(Some(new))` to use a replacement.
///
/// `O_NONBLOCK` belongs to the open file description, which the child's
/// copy shares: a non-blocking pipe end (one still registered with a
/// runtime, handed over with `try_clone` instead of `into_owned_fd`) would
/// make the child's reads fail with `EAGAIN` (`head: read error: Resource
/// temporarily unavailable`). A pipe is opened again through
/// `/proc/self/fd`, which gives a description of its own that can be made
/// blocking without touching the caller's; a regular file ignores the flag;
/// anything else non-blocking (a socket, a terminal) is refused with the
/// reason.
pub(crate) fn blocking_stdio(fd: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    // SAFETY: F_GETFL takes no argument and returns the flags or -1.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    if flags & libc::O_NONBLOCK == 0 {
        return Ok(None);
    }
    let mut stat = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes one `struct stat` into valid memory.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), stat.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, so it filled `stat`.
    let mode = unsafe { stat.assume_init() }.st_mode & libc::S_IFMT;
    match mode {
        libc::S_IFREG | libc::S_IFDIR | libc::S_IFBLK => Ok(None),
        libc::S_IFIFO => {
            let path = std::ffi::CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .expect("no NUL in a path of digits");
            // Opening a pipe's other end with O_NONBLOCK never waits for a
            // peer; the flag is cleared below.
            let access = flags & libc::O_ACCMODE;
            // SAFETY: open takes a C string and flags and returns a new fd.
            let new = cvt(unsafe {
                libc::open(path.as_ptr(), access | libc::O_NONBLOCK | libc::O_CLOEXEC)
            })
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENXIO) => io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "it is the write end of a pipe nobody reads",
                ),
                _ => e,
            })?;
            // SAFETY: the kernel just gave us this fd; nothing else owns it.
            let new = unsafe { OwnedFd::from_raw_fd(new) };
            set_blocking(std::os::fd::AsFd::as_fd(&new))?;
            Ok(Some(new))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is non-blocking (O_NONBLOCK), so the child would fail with EAGAIN; \
             pass a blocking fd (ChildStdout::into_owned_fd gives one)",
        )),
    }
}

/// Write all of `bytes` to `fd`, one of this process's own (1 or 2), which
/// may be non-blocking (a terminal shared with a runtime): on `EAGAIN`, wait
/// until it takes more. Stops at the first other error.
pub(crate) fn write_all_blocking(fd: RawFd, mut bytes: &[u8]) -> io::Result<()> {
    let borrowed = own_fd(fd);
    while !bytes.is_empty() {
        match write(borrowed, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut fds = [libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                }];
                poll(&mut fds, None)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// This process's own stdin, stdout or stderr (`n` is 0, 1 or 2).
pub(crate) fn own_fd(n: RawFd) -> BorrowedFd<'static> {
    assert!((0..=2).contains(&n), "only the standard streams");
    // SAFETY: fds 0-2 are this process's standard streams, which std and
    // the runtime never close: the borrow cannot outlive the fd.
    unsafe { BorrowedFd::borrow_raw(n) }
}
