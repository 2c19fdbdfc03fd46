//! `MemDisk`: an in-memory, deterministic, fault-injecting `Disk` for tests and the
//! cluster simulator.
//!
//! It models what a crash can do to a file system: every file has a durable image (as of
//! its last `sync_data`) and a list of writes since then; the directory has a durable set
//! of names (as of the last `sync_dir`). `crash` throws away everything not durable, or
//! keeps a torn prefix of the last write. Faults: bit flips, a capacity limit (`ENOSPC`),
//! failing `sync_data`, failing `preallocate`. Every operation completes immediately, so
//! `storage::block_on` can drive a store on it; only with `set_write_delay_polls` does a write stay in
//! flight (pending, waking itself) for a number of polls before it takes effect, as a
//! real disk's does while the store goes on appending, and with `hold_writes` until the
//! test completes or fails each held write, in any order. With `hold_syncs` a
//! `sync_data` stays in flight the same way; it covers the writes that completed before
//! it was called, not those that complete while it is held (as `fdatasync` on Linux,
//! which may miss a direct write still in flight), and the disk counts how many run at
//! once on one file (`sync_data_in_flight_peak`).
//!
//! For crash-point enumeration (`tests/storage_crash_points.rs`) it can also record a
//! trace of every mutating operation (`start_trace`, `take_trace`, `DiskOp`) and be built
//! from an arbitrary set of durable files (`from_durable_files`).
//!
//! Invariants: writes must be aligned (512 bytes), as with `O_DIRECT`; nothing here uses
//! randomness or clocks, so a test replays exactly.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;

use super::disk::{Disk, DiskFile, IoBuffer};
use super::sync::yield_now;

/// The alignment `MemDisk` enforces, the same as `DmaFile` reports on the dev machines.
pub const MEM_DISK_ALIGNMENT_BYTES: usize = 512;

/// How a crash treats writes that were not yet synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Every unsynced write and every unsynced directory change is lost.
    LoseUnsynced,
    /// Like `LoseUnsynced`, except that the file of the most recent unsynced write keeps
    /// its earlier unsynced writes and the part of the last write that lies before the
    /// last `boundary_bytes` boundary it crosses (a torn write at 512 B or 4 KiB).
    TearLastWrite { boundary_bytes: u64 },
}

/// One mutating operation of a `MemDisk`, in the order the engine issued it. Files are
/// named by inode, since a handle keeps writing to its inode after a rename.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskOp {
    /// `open_file` created `name` as a new inode.
    Create { inode: u64, name: String },
    /// A completed `write_at`.
    Write {
        inode: u64,
        pos: u64,
        bytes: Vec<u8>,
    },
    /// A successful `sync_data`: the inode's earlier writes are durable.
    Sync { inode: u64 },
    /// A `truncate` (durable at once in this model, see `DiskFile::truncate` below).
    Truncate { inode: u64, len: u64 },
    /// A `rename_file`.
    Rename { from: String, to: String },
    /// A `remove_file`.
    Remove { name: String },
    /// A `sync_dir`: creations, renames and removals so far are durable.
    SyncDir,
    /// A point the test marked (`MemDisk::mark`), e.g. "write 17 acknowledged".
    Mark(u64),
}

#[derive(Debug, Default, Clone)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Writes since the last sync: (global write number, position, bytes).
    unsynced: Vec<(u64, u64, Vec<u8>)>,
}

/// What the test chose for a held write: nothing yet, complete, or fail with an errno.
type HeldOutcome = Option<Result<(), i32>>;

#[derive(Debug, Default)]
struct State {
    inodes: BTreeMap<u64, Inode>,
    names: BTreeMap<String, u64>,
    durable_names: BTreeMap<String, u64>,
    next_inode: u64,
    write_counter: u64,
    capacity_bytes: Option<u64>,
    /// The error every `preallocate` fails with (`fail_preallocate`).
    preallocate_errno: Option<i32>,
    /// The error every `remove_file` fails with (`fail_remove`).
    remove_errno: Option<i32>,
    fail_sync: bool,
    /// `sync_data` calls so far (failed ones included) and the first one to fail.
    sync_calls: u64,
    fail_sync_from: Option<u64>,
    trace: Option<Vec<DiskOp>>,
    write_delay_polls: u32,
    /// Later writes wait until the test releases or fails them (`hold_writes`).
    hold_writes: bool,
    next_ticket: u64,
    /// Held writes by ticket: (position, length, the outcome once the test chose it).
    held: BTreeMap<u64, (u64, usize, HeldOutcome)>,
    syncs: u64,
    bytes_written: u64,
    bytes_read: u64,
    /// Buffers handed out by `alloc_buffer` (a write path that reuses its DMA buffers
    /// stops asking for new ones).
    buffers_allocated: u64,
    /// Later `sync_data` calls wait until the test releases or fails them.
    hold_syncs: bool,
    next_sync_ticket: u64,
    /// Held syncs by ticket: the outcome once the test chose it.
    held_syncs: BTreeMap<u64, HeldOutcome>,
    /// `sync_data` calls in flight per inode, and the most seen at once on one inode.
    syncs_in_flight: BTreeMap<u64, u32>,
    syncs_in_flight_peak: u32,
}

impl State {
    fn record(&mut self, op: DiskOp) {
        if let Some(trace) = self.trace.as_mut() {
            trace.push(op);
        }
    }

    fn used_bytes(&self) -> u64 {
        let mut seen = std::collections::BTreeSet::new();
        let mut used = 0u64;
        for ino in self.names.values() {
            if seen.insert(*ino) {
                used += self.inodes.get(ino).map_or(0, |i| i.data.len() as u64);
            }
        }
        used
    }
}

/// The in-memory disk. Cloning shares the same disk (an `Rc` inside).
#[derive(Debug, Clone, Default)]
pub struct MemDisk {
    state: Rc<RefCell<State>>,
}

/// An open `MemDisk` file. It names an inode, so it keeps working after a rename and
/// reads the old bytes after a removal, like a Unix file descriptor.
#[derive(Debug)]
pub struct MemFile {
    disk: MemDisk,
    inode: u64,
}

/// A `MemDisk` I/O buffer (plain memory; alignment is checked on positions and lengths).
#[derive(Debug)]
pub struct MemBuffer(Vec<u8>);

impl IoBuffer for MemBuffer {
    fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    fn as_bytes_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
    fn trim_to(&mut self, len_bytes: usize) {
        assert!(len_bytes <= self.0.len());
        self.0.truncate(len_bytes);
    }
}

fn err(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

impl MemDisk {
    /// An empty disk with unlimited space.
    pub fn new() -> MemDisk {
        MemDisk::default()
    }

    /// A disk holding exactly `files`, all durable (names and contents): a crash state
    /// built by a test.
    pub fn from_durable_files(files: impl IntoIterator<Item = (String, Vec<u8>)>) -> MemDisk {
        let disk = MemDisk::new();
        {
            let mut st = disk.state.borrow_mut();
            for (name, data) in files {
                let ino = st.next_inode;
                st.next_inode += 1;
                st.inodes.insert(
                    ino,
                    Inode {
                        durable: data.clone(),
                        data,
                        unsynced: Vec::new(),
                    },
                );
                st.names.insert(name, ino);
            }
            st.durable_names = st.names.clone();
        }
        disk
    }

    /// Starts recording every mutating operation (see `DiskOp`), discarding any trace.
    pub fn start_trace(&self) {
        self.state.borrow_mut().trace = Some(Vec::new());
    }

    /// Stops recording and returns the trace.
    pub fn take_trace(&self) -> Vec<DiskOp> {
        self.state.borrow_mut().trace.take().unwrap_or_default()
    }

    /// Appends `DiskOp::Mark(label)` to the trace (when recording).
    pub fn mark(&self, label: u64) {
        self.state.borrow_mut().record(DiskOp::Mark(label));
    }

    /// Makes the `ordinal`-th `sync_data` call from now (1 = the next one) and every
    /// later one fail with `EIO`; `None` clears it.
    pub fn fail_syncs_from(&self, ordinal: Option<u64>) {
        let mut st = self.state.borrow_mut();
        let base = st.sync_calls;
        st.fail_sync_from = ordinal.map(|n| base + n.max(1));
    }

    /// Simulates power loss: see `CrashMode`. Handles opened before the crash must not
    /// be used afterwards (drop the store first).
    pub fn crash(&self, mode: CrashMode) {
        let mut st = self.state.borrow_mut();
        let last = st
            .inodes
            .iter()
            .flat_map(|(ino, i)| i.unsynced.last().map(|w| (w.0, *ino)))
            .max();
        let names = st.durable_names.clone();
        st.names = names;
        for (ino, inode) in st.inodes.iter_mut() {
            let mut data = inode.durable.clone();
            if let (CrashMode::TearLastWrite { boundary_bytes }, Some((_, last_ino))) = (mode, last)
            {
                if last_ino == *ino {
                    let n = inode.unsynced.len();
                    for (i, (_, pos, bytes)) in inode.unsynced.iter().enumerate() {
                        let keep = if i + 1 == n {
                            let end = pos + bytes.len() as u64;
                            let cut = (end - 1) / boundary_bytes * boundary_bytes;
                            cut.saturating_sub(*pos) as usize
                        } else {
                            bytes.len()
                        };
                        apply_write(&mut data, *pos, &bytes[..keep]);
                    }
                }
            }
            inode.data = data.clone();
            inode.durable = data;
            inode.unsynced.clear();
        }
        let live: std::collections::BTreeSet<u64> = st.names.values().copied().collect();
        st.inodes.retain(|ino, _| live.contains(ino));
        st.fail_sync = false;
        st.fail_sync_from = None;
    }

    /// Flips one bit of a file, in memory and in its durable image (media corruption).
    pub fn flip_bit(&self, name: &str, offset: u64, bit: u8) {
        let mut st = self.state.borrow_mut();
        let ino = *st.names.get(name).expect("flip_bit: no such file");
        let inode = st.inodes.get_mut(&ino).expect("inode of a name");
        let mask = 1u8 << (bit % 8);
        inode.data[offset as usize] ^= mask;
        if (offset as usize) < inode.durable.len() {
            inode.durable[offset as usize] ^= mask;
        }
    }

    /// Limits the total size of all files; a write that would grow past it fails with
    /// `ENOSPC` and changes nothing. `None` removes the limit.
    pub fn set_capacity_bytes(&self, capacity_bytes: Option<u64>) {
        self.state.borrow_mut().capacity_bytes = capacity_bytes;
    }

    /// Fails every later `preallocate` with `errno` (as `fallocate` fails with `ENOSPC`
    /// on a disk too full for a new segment); `None` lets them succeed again. The file
    /// stays as it was (created, if the store just opened it).
    pub fn fail_preallocate(&self, errno: Option<i32>) {
        self.state.borrow_mut().preallocate_errno = errno;
    }

    /// Fails every later `remove_file` with `errno` (the name stays); `None` lets them
    /// succeed again.
    pub fn fail_remove(&self, errno: Option<i32>) {
        self.state.borrow_mut().remove_errno = errno;
    }

    /// Keeps every later write in flight for `polls` polls before it takes effect (0, the
    /// default: writes complete when first polled). A crash loses a write still in flight.
    pub fn set_write_delay_polls(&self, polls: u32) {
        self.state.borrow_mut().write_delay_polls = polls;
    }

    /// Keeps every later write in flight (pending, waking itself) until the test
    /// completes it with `release_write` or fails it with `fail_write`, in any order;
    /// `false` stops holding new writes (those held stay held).
    pub fn hold_writes(&self, hold: bool) {
        self.state.borrow_mut().hold_writes = hold;
    }

    /// The held writes not yet released or failed, oldest first: (ticket, position,
    /// length). A write is listed from its first poll.
    pub fn held_writes(&self) -> Vec<(u64, u64, usize)> {
        let st = self.state.borrow();
        st.held
            .iter()
            .filter(|(_, h)| h.2.is_none())
            .map(|(t, h)| (*t, h.0, h.1))
            .collect()
    }

    /// Lets a held write take effect at its next poll (it can still fail with
    /// `ENOSPC` against the capacity then).
    pub fn release_write(&self, ticket: u64) {
        let mut st = self.state.borrow_mut();
        st.held.get_mut(&ticket).expect("a held write").2 = Some(Ok(()));
    }

    /// Makes a held write fail with `errno` at its next poll, changing nothing.
    pub fn fail_write(&self, ticket: u64, errno: i32) {
        let mut st = self.state.borrow_mut();
        st.held.get_mut(&ticket).expect("a held write").2 = Some(Err(errno));
    }

    /// Makes every `sync_data` fail with `EIO` (until `set_fail_sync(false)` or a crash).
    pub fn set_fail_sync(&self, fail: bool) {
        self.state.borrow_mut().fail_sync = fail;
    }

    /// Keeps every later `sync_data` in flight (pending, waking itself) until the test
    /// completes it with `release_sync` or fails it with `fail_held_sync`; `false` stops
    /// holding new ones (those held stay held).
    pub fn hold_syncs(&self, hold: bool) {
        self.state.borrow_mut().hold_syncs = hold;
    }

    /// The tickets of the held syncs not yet released or failed, oldest first. A sync
    /// is listed from its first poll.
    pub fn held_syncs(&self) -> Vec<u64> {
        let st = self.state.borrow();
        st.held_syncs
            .iter()
            .filter(|(_, h)| h.is_none())
            .map(|(t, _)| *t)
            .collect()
    }

    /// Lets a held sync take effect at its next poll.
    pub fn release_sync(&self, ticket: u64) {
        let mut st = self.state.borrow_mut();
        *st.held_syncs.get_mut(&ticket).expect("a held sync") = Some(Ok(()));
    }

    /// Makes a held sync fail with `errno` at its next poll, making nothing durable.
    pub fn fail_held_sync(&self, ticket: u64, errno: i32) {
        let mut st = self.state.borrow_mut();
        *st.held_syncs.get_mut(&ticket).expect("a held sync") = Some(Err(errno));
    }

    /// The most `sync_data` calls that were in flight at once on one file.
    pub fn sync_data_in_flight_peak(&self) -> u32 {
        self.state.borrow().syncs_in_flight_peak
    }

    /// The durable image of a file (what a crash keeps of it), if it exists.
    pub fn durable_file_bytes(&self, name: &str) -> Option<Vec<u8>> {
        let st = self.state.borrow();
        let ino = st.names.get(name)?;
        st.inodes.get(ino).map(|i| i.durable.clone())
    }

    /// Names of the files in the directory, sorted.
    pub fn file_names(&self) -> Vec<String> {
        self.state.borrow().names.keys().cloned().collect()
    }

    /// The current bytes of a file, if it exists.
    pub fn file_bytes(&self, name: &str) -> Option<Vec<u8>> {
        let st = self.state.borrow();
        let ino = st.names.get(name)?;
        st.inodes.get(ino).map(|i| i.data.clone())
    }

    /// Total bytes of all files.
    pub fn used_bytes(&self) -> u64 {
        self.state.borrow().used_bytes()
    }

    /// Number of successful `sync_data` calls.
    pub fn sync_count(&self) -> u64 {
        self.state.borrow().syncs
    }

    /// Total bytes passed to successful writes.
    pub fn bytes_written(&self) -> u64 {
        self.state.borrow().bytes_written
    }

    /// Total bytes returned by reads.
    pub fn bytes_read(&self) -> u64 {
        self.state.borrow().bytes_read
    }

    /// How many buffers `alloc_buffer` has handed out.
    pub fn buffers_allocated(&self) -> u64 {
        self.state.borrow().buffers_allocated
    }
}

fn apply_write(data: &mut Vec<u8>, pos: u64, bytes: &[u8]) {
    let end = pos as usize + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[pos as usize..end].copy_from_slice(bytes);
}

impl Disk for MemDisk {
    type File = MemFile;
    type Buffer = MemBuffer;

    fn alignment_bytes(&self) -> usize {
        MEM_DISK_ALIGNMENT_BYTES
    }

    fn alloc_buffer(&self, len_bytes: usize) -> MemBuffer {
        assert_eq!(len_bytes % MEM_DISK_ALIGNMENT_BYTES, 0);
        self.state.borrow_mut().buffers_allocated += 1;
        MemBuffer(vec![0; len_bytes])
    }

    async fn open_file(&self, name: &str) -> io::Result<MemFile> {
        let mut st = self.state.borrow_mut();
        let inode = match st.names.get(name) {
            Some(ino) => *ino,
            None => {
                let ino = st.next_inode;
                st.next_inode += 1;
                st.inodes.insert(ino, Inode::default());
                st.names.insert(name.to_string(), ino);
                st.record(DiskOp::Create {
                    inode: ino,
                    name: name.to_string(),
                });
                ino
            }
        };
        Ok(MemFile {
            disk: self.clone(),
            inode,
        })
    }

    async fn list_files(&self) -> io::Result<Vec<String>> {
        Ok(self.file_names())
    }

    async fn remove_file(&self, name: &str) -> io::Result<()> {
        let mut st = self.state.borrow_mut();
        if let Some(errno) = st.remove_errno {
            return Err(err(errno));
        }
        st.names.remove(name).ok_or_else(|| err(libc::ENOENT))?;
        st.record(DiskOp::Remove {
            name: name.to_string(),
        });
        Ok(())
    }

    async fn rename_file(&self, from: &str, to: &str) -> io::Result<()> {
        let mut st = self.state.borrow_mut();
        let ino = st.names.remove(from).ok_or_else(|| err(libc::ENOENT))?;
        st.names.insert(to.to_string(), ino);
        st.record(DiskOp::Rename {
            from: from.to_string(),
            to: to.to_string(),
        });
        Ok(())
    }

    async fn sync_dir(&self) -> io::Result<()> {
        let mut st = self.state.borrow_mut();
        st.durable_names = st.names.clone();
        st.record(DiskOp::SyncDir);
        Ok(())
    }
}

impl DiskFile for MemFile {
    type Buffer = MemBuffer;
    type ReadBuf = Vec<u8>;

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut st = self.disk.state.borrow_mut();
        let inode = st.inodes.get(&self.inode).ok_or_else(|| err(libc::EBADF))?;
        let start = (pos as usize).min(inode.data.len());
        let end = (pos as usize + len).min(inode.data.len());
        let bytes = inode.data[start..end].to_vec();
        st.bytes_read += bytes.len() as u64;
        Ok(bytes)
    }

    async fn write_at(&self, buffer: Rc<MemBuffer>, pos: u64) -> io::Result<()> {
        let delay = self.disk.state.borrow().write_delay_polls;
        for _ in 0..delay {
            yield_now().await;
        }
        let ticket = {
            let mut st = self.disk.state.borrow_mut();
            st.hold_writes.then(|| {
                let t = st.next_ticket;
                st.next_ticket += 1;
                st.held.insert(t, (pos, buffer.as_bytes().len(), None));
                t
            })
        };
        if let Some(ticket) = ticket {
            loop {
                let outcome = {
                    let mut st = self.disk.state.borrow_mut();
                    let outcome = st.held[&ticket].2;
                    if outcome.is_some() {
                        st.held.remove(&ticket);
                    }
                    outcome
                };
                match outcome {
                    Some(Ok(())) => break,
                    Some(Err(errno)) => return Err(err(errno)),
                    None => yield_now().await,
                }
            }
        }
        let bytes = buffer.as_bytes();
        let align = MEM_DISK_ALIGNMENT_BYTES as u64;
        if pos % align != 0 || bytes.len() as u64 % align != 0 {
            return Err(err(libc::EINVAL));
        }
        let mut st = self.disk.state.borrow_mut();
        let used = st.used_bytes();
        let inode = st.inodes.get(&self.inode).ok_or_else(|| err(libc::EBADF))?;
        let growth = (pos + bytes.len() as u64).saturating_sub(inode.data.len() as u64);
        if let Some(cap) = st.capacity_bytes {
            if used + growth > cap {
                return Err(err(libc::ENOSPC));
            }
        }
        st.write_counter += 1;
        st.bytes_written += bytes.len() as u64;
        let n = st.write_counter;
        let inode = st.inodes.get_mut(&self.inode).expect("checked above");
        apply_write(&mut inode.data, pos, bytes);
        inode.unsynced.push((n, pos, bytes.to_vec()));
        let inode = self.inode;
        st.record(DiskOp::Write {
            inode,
            pos,
            bytes: bytes.to_vec(),
        });
        Ok(())
    }

    async fn sync_data(&self) -> io::Result<()> {
        let (covered, ticket) = {
            let mut st = self.disk.state.borrow_mut();
            let n = st.syncs_in_flight.entry(self.inode).or_insert(0);
            *n += 1;
            let n = *n;
            st.syncs_in_flight_peak = st.syncs_in_flight_peak.max(n);
            let ticket = st.hold_syncs.then(|| {
                let t = st.next_sync_ticket;
                st.next_sync_ticket += 1;
                st.held_syncs.insert(t, None);
                t
            });
            (st.write_counter, ticket)
        };
        // Counts this call out of the in-flight syncs however it ends (also if dropped).
        struct InFlight<'a>(&'a MemFile);
        impl Drop for InFlight<'_> {
            fn drop(&mut self) {
                let mut st = self.0.disk.state.borrow_mut();
                *st.syncs_in_flight.get_mut(&self.0.inode).expect("counted") -= 1;
            }
        }
        let _in_flight = InFlight(self);
        if let Some(ticket) = ticket {
            loop {
                let outcome = {
                    let mut st = self.disk.state.borrow_mut();
                    let outcome = st.held_syncs[&ticket];
                    if outcome.is_some() {
                        st.held_syncs.remove(&ticket);
                    }
                    outcome
                };
                match outcome {
                    Some(Ok(())) => break,
                    Some(Err(errno)) => return Err(err(errno)),
                    None => yield_now().await,
                }
            }
        }
        let mut st = self.disk.state.borrow_mut();
        st.sync_calls += 1;
        if st.fail_sync || st.fail_sync_from.is_some_and(|from| st.sync_calls >= from) {
            return Err(err(libc::EIO));
        }
        st.syncs += 1;
        let inode = st
            .inodes
            .get_mut(&self.inode)
            .ok_or_else(|| err(libc::EBADF))?;
        // Replay the pending writes it covers onto the durable image (cheaper than
        // copying the whole file on every sync); writes that completed while it was
        // held stay pending.
        let pending = std::mem::take(&mut inode.unsynced);
        let (done, later): (Vec<_>, Vec<_>) =
            pending.into_iter().partition(|(n, _, _)| *n <= covered);
        for (_, pos, bytes) in &done {
            apply_write(&mut inode.durable, *pos, bytes);
        }
        inode.unsynced = later;
        if inode.unsynced.is_empty() {
            let len = inode.data.len();
            inode.durable.resize(len, 0);
            debug_assert!(inode.durable == inode.data, "durable image diverged");
        }
        let inode = self.inode;
        st.record(DiskOp::Sync { inode });
        Ok(())
    }

    async fn len_bytes(&self) -> io::Result<u64> {
        let st = self.disk.state.borrow();
        let inode = st.inodes.get(&self.inode).ok_or_else(|| err(libc::EBADF))?;
        Ok(inode.data.len() as u64)
    }

    async fn preallocate(&self, _len_bytes: u64) -> io::Result<()> {
        if let Some(errno) = self.disk.state.borrow().preallocate_errno {
            return Err(err(errno));
        }
        // The space is not modelled: the engine treats trailing zeros exactly like a
        // shorter file, and keeping files short keeps the tests' byte-level checks simple.
        Ok(())
    }

    async fn truncate(&self, len_bytes: u64) -> io::Result<()> {
        // Simplification: a shrinking truncate is durable at once (the engine truncates
        // only garbage tails at open and freshly written hint files before syncing them).
        let mut st = self.disk.state.borrow_mut();
        let inode = st
            .inodes
            .get_mut(&self.inode)
            .ok_or_else(|| err(libc::EBADF))?;
        let len = len_bytes as usize;
        inode.data.resize(len, 0);
        inode.durable.truncate(len);
        for (_, pos, bytes) in inode.unsynced.iter_mut() {
            bytes.truncate(len.saturating_sub(*pos as usize));
        }
        let inode = self.inode;
        st.record(DiskOp::Truncate {
            inode,
            len: len_bytes,
        });
        Ok(())
    }

    async fn close(self) -> io::Result<()> {
        // Nothing to release: an inode lives while a name or a crash image needs it.
        Ok(())
    }
}
