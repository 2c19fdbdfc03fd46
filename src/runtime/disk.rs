//! `GlommioDisk`: the storage engine's `Disk` on glommio's `DmaFile` (`O_DIRECT`,
//! io_uring). One value per store directory; it must be used on a glommio executor.
//!
//! Directory listing, rename and remove use blocking `std::fs` calls: they happen at
//! open, at segment rotation and after compaction (rare, metadata only), and glommio 0.9
//! has no async equivalent by path. Directory fsync uses glommio's `Directory::sync`.
//!
//! Reads: on the development VM (kernel 6.18, virtio disk) every `DmaFile` read failed
//! with `EOPNOTSUPP` while the reads went through glommio's IOPOLL ring (see "Rings"
//! below); on the main ring they work. Where direct reads fail, the first read that
//! fails so switches the disk to reading through a glommio `BufferedFile` on the same path
//! (still io_uring, through the page cache; Linux invalidates cached pages on direct
//! writes, so the two views stay coherent). `GlommioDisk::dma_reads_supported` tells.
//!
//! Rings: glommio sends a `DmaFile`'s reads and writes to its IOPOLL ring when a probe
//! read through that ring succeeds, and it succeeds on devices without poll queues too
//! (virtio-blk and most cloud disks; sysfs `queue/io_poll` is 0). The kernel then
//! completes each request by interrupt, but io_uring reports it only when the ring is
//! polled, so the executor never parks while a write is in flight: it goes round its
//! loop, re-arming its preemption timers each time, and a completion waits for a
//! polling pass that finds it. Measured on the development VM (BENCHMARKS.md §1): flush
//! writes of a durable round took 3.6 ms at p50 on the poll ring and 0.1 ms on the main
//! ring, and ingest used 1.6 to 3.6 times the CPU per MiB. So unless the device says it
//! has poll queues, `GlommioDisk` keeps disk I/O off the poll ring (`avoid_poll_ring`),
//! unless the operator sets `disk_poll_always` (`GlommioDisk::poll_always`).
//! The price: on an idle machine ingest's wall clock was 10-25% lower on the main ring,
//! where the executor parks and is woken for each flush's completion instead of
//! spinning until it arrives.

use std::cell::{Cell, RefCell};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use glommio::io::{BufferedFile, DmaBuffer, DmaFile, OpenOptions, ReadResult};

use crate::storage::{Disk, DiskFile, IoBuffer};

/// The alignment assumed for buffers before a file is open; `DmaFile::alignment` is
/// 512 on the development machines, and a larger value would only cost padding.
const ALIGNMENT_BYTES: usize = 512;

/// A store directory on a real file system.
#[derive(Debug, Clone)]
pub struct GlommioDisk {
    dir: Rc<PathBuf>,
    /// Cleared when a direct read fails with `EOPNOTSUPP` (see the module header).
    dma_reads: Rc<Cell<bool>>,
    /// Set at the first `open_file`, which runs `avoid_poll_ring` before opening
    /// anything (the store opens its files one at a time, so no other open of this
    /// directory can overtake it).
    rings_chosen: Rc<Cell<bool>>,
    /// Leave the ring to glommio's own probe (`disk_poll_always`).
    poll_always: bool,
}

impl GlommioDisk {
    /// Uses (and creates, if missing) the directory `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<GlommioDisk> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        // glommio opens paths relative to no directory (a relative path fails with
        // EBADF), so keep an absolute one.
        let dir = std::fs::canonicalize(&dir)?;
        Ok(GlommioDisk {
            dir: Rc::new(dir),
            dma_reads: Rc::new(Cell::new(true)),
            rings_chosen: Rc::new(Cell::new(false)),
            poll_always: false,
        })
    }

    /// With `true`, glommio's own probe picks the ring, as before
    /// `avoid_poll_ring` existed: the IOPOLL ring on any device whose probe
    /// read succeeds, poll queues or not (the `disk_poll_always` option;
    /// call before the first file is opened).
    pub fn poll_always(mut self, poll_always: bool) -> GlommioDisk {
        self.poll_always = poll_always;
        self
    }

    /// Makes glommio send this directory's file I/O to its main ring, unless the block
    /// device has poll queues (see the module header). glommio decides per device and
    /// per thread, at the first `DmaFile` opened there, by reading through its IOPOLL
    /// ring, and any failed read means "no polling"; so this opens an unnamed
    /// write-only file in the directory (`O_TMPFILE`), whose probe read fails, and
    /// closes it. glommio logs that failure through the `log` crate, which dynakv does
    /// not route anywhere. If the open fails (a file system without `O_TMPFILE`),
    /// glommio's own probe decides, as before.
    async fn avoid_poll_ring(&self) {
        if self.poll_always || device_has_poll_queues(&self.dir) {
            return;
        }
        if let Ok(file) = OpenOptions::new()
            .write(true)
            .tmpfile(true)
            .dma_open(self.dir.as_path())
            .await
        {
            let _ = file.close().await;
        }
    }

    /// Whether reads still use direct I/O (false after the fallback described above).
    pub fn dma_reads_supported(&self) -> bool {
        self.dma_reads.get()
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Whether the block device holding `dir` has poll queues (sysfs `queue/io_poll` is
/// 1, on the device or, for a partition, its parent). False when sysfs does not say
/// (no such entry, device-mapper without it, no sysfs): the main ring is correct on
/// every device, the poll ring only pays off where the device really polls.
pub fn device_has_poll_queues(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(dir) else {
        return false;
    };
    let dev = meta.dev();
    let base = format!("/sys/dev/block/{}:{}", libc::major(dev), libc::minor(dev));
    ["queue/io_poll", "../queue/io_poll"].iter().any(|rel| {
        std::fs::read_to_string(Path::new(&base).join(rel)).is_ok_and(|v| v.trim() == "1")
    })
}

/// A glommio DMA buffer (aligned memory, registered with io_uring when it fits in the
/// executor's `io_memory`). Shared with glommio while a write of it is in flight, so
/// the store can still read it; it is written only before the first write.
pub struct GlommioBuffer(Rc<DmaBuffer>);

impl IoBuffer for GlommioBuffer {
    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
    fn as_bytes_mut(&mut self) -> &mut [u8] {
        Rc::get_mut(&mut self.0)
            .expect("a DMA buffer is not written while glommio holds it")
            .as_bytes_mut()
    }
    fn trim_to(&mut self, len_bytes: usize) {
        Rc::get_mut(&mut self.0)
            .expect("a DMA buffer is not trimmed while glommio holds it")
            .trim_to_size(len_bytes);
    }
}

/// An open segment or hint file.
pub struct GlommioFile {
    dma: DmaFile,
    path: PathBuf,
    dma_reads: Rc<Cell<bool>>,
    /// Opened on the first read after direct reads turned out unsupported.
    buffered: RefCell<Option<Rc<BufferedFile>>>,
}

/// Bytes returned by a DMA read (a slice of a DMA buffer, no copy).
pub struct GlommioRead(Option<ReadResult>);

impl AsRef<[u8]> for GlommioRead {
    fn as_ref(&self) -> &[u8] {
        match &self.0 {
            Some(r) => r,
            None => &[],
        }
    }
}

impl Disk for GlommioDisk {
    type File = GlommioFile;
    type Buffer = GlommioBuffer;

    fn alignment_bytes(&self) -> usize {
        ALIGNMENT_BYTES
    }

    fn alloc_buffer(&self, len_bytes: usize) -> GlommioBuffer {
        // Not zeroed: the engine writes every byte it hands to `write_at` (records, then
        // zero padding), and a 1 MiB memset per flush is measurable on the ingest path.
        GlommioBuffer(Rc::new(glommio::allocate_dma_buffer(len_bytes)))
    }

    async fn open_file(&self, name: &str) -> io::Result<GlommioFile> {
        if !self.rings_chosen.replace(true) {
            self.avoid_poll_ring().await;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .dma_open(self.dir.join(name))
            .await?;
        // Buffers are allocated before a file exists, so the alignment is fixed; a file
        // that needs more would reject every write, so refuse it here.
        if file.alignment() as usize > ALIGNMENT_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "device alignment {} above {ALIGNMENT_BYTES}",
                    file.alignment()
                ),
            ));
        }
        Ok(GlommioFile {
            dma: file,
            path: self.dir.join(name),
            dma_reads: self.dma_reads.clone(),
            buffered: RefCell::new(None),
        })
    }

    async fn list_files(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&*self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    async fn remove_file(&self, name: &str) -> io::Result<()> {
        // On glommio's blocking-task thread: unlinking a closed 64 MiB segment frees
        // its extents, which waits for ext4's journal (14-27 ms while a commit is in
        // progress), and on the shard's thread every request of the shard waited
        // with it (BENCHMARKS.md §2zh).
        let path = self.dir.join(name);
        glommio::executor()
            .spawn_blocking(move || std::fs::remove_file(path))
            .await
    }

    async fn rename_file(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.dir.join(from), self.dir.join(to))
    }

    async fn sync_dir(&self) -> io::Result<()> {
        let dir = glommio::io::Directory::open(&*self.dir).await?;
        dir.sync().await?;
        dir.close().await?;
        Ok(())
    }

    async fn submit_queued(&self) {
        // glommio hands queued requests to io_uring when its executor polls for I/O,
        // which it does once no task is runnable; a short timer makes this task
        // not runnable for that one pass.
        glommio::timer::sleep(Duration::from_micros(1)).await;
    }
}

impl DiskFile for GlommioFile {
    type Buffer = GlommioBuffer;
    type ReadBuf = GlommioRead;

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<GlommioRead> {
        if len == 0 {
            return Ok(GlommioRead(None));
        }
        if self.dma_reads.get() {
            match self.dma.read_at(pos, len).await {
                Ok(r) => return Ok(GlommioRead(Some(r))),
                Err(e) => {
                    let e = io::Error::from(e);
                    if e.kind() != io::ErrorKind::Unsupported {
                        return Err(e);
                    }
                    self.dma_reads.set(false);
                }
            }
        }
        let existing = self.buffered.borrow().clone();
        let reader = match existing {
            Some(r) => r,
            None => {
                let r = Rc::new(BufferedFile::open(&self.path).await?);
                *self.buffered.borrow_mut() = Some(r.clone());
                r
            }
        };
        Ok(GlommioRead(Some(reader.read_at(pos, len).await?)))
    }

    async fn write_at(&self, buffer: Rc<GlommioBuffer>, pos: u64) -> io::Result<()> {
        let len = buffer.0.len();
        // No copy: glommio holds a reference to the same DMA memory during the write.
        let written = self.dma.write_rc_at(buffer.0.clone(), pos).await?;
        if written != len {
            // A short direct-I/O write means the device filled up mid-write.
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(())
    }

    async fn sync_data(&self) -> io::Result<()> {
        self.dma.fdatasync().await?;
        Ok(())
    }

    async fn len_bytes(&self) -> io::Result<u64> {
        Ok(self.dma.file_size().await?)
    }

    async fn preallocate(&self, len_bytes: u64) -> io::Result<()> {
        // fallocate without KEEP_SIZE: the file's length covers the whole segment, so
        // every direct write lands inside it.
        self.dma.pre_allocate(len_bytes, false).await?;
        Ok(())
    }

    async fn truncate(&self, len_bytes: u64) -> io::Result<()> {
        self.dma.truncate(len_bytes).await?;
        Ok(())
    }

    async fn close(self) -> io::Result<()> {
        // Both descriptors are closed whatever the first close gives.
        let mut buffered_closed = Ok(());
        if let Some(buffered) = self.buffered.into_inner() {
            if let Ok(buffered) = Rc::try_unwrap(buffered) {
                buffered_closed = buffered.close().await;
            }
        }
        self.dma.close().await?;
        Ok(buffered_closed?)
    }
}
