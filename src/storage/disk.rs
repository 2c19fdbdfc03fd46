//! The I/O boundary of the storage engine: a directory of files with positioned,
//! aligned writes, `fdatasync` and directory sync. `runtime::disk::GlommioDisk`
//! implements it with glommio's `DmaFile`; `MemDisk` implements it in memory with
//! fault injection.
//!
//! Contract the engine relies on: `write_at` positions and lengths are multiples of
//! `alignment_bytes()`; a completed `sync_data` makes every completed write of that file
//! durable; `sync_dir` makes file creations, renames and removals durable; `read_at` may
//! be unaligned and returns fewer bytes only at the end of the file. The store may keep
//! a clone of a buffer it passed to `write_at` (to serve reads while the write is in
//! flight) but never writes to it again.

use std::io;
use std::rc::Rc;

/// A buffer suitable for direct I/O on a particular disk (aligned memory for `O_DIRECT`).
pub trait IoBuffer: 'static {
    /// The buffer's bytes.
    fn as_bytes(&self) -> &[u8];
    /// The buffer's bytes, writable.
    fn as_bytes_mut(&mut self) -> &mut [u8];
    /// Shortens the buffer to its first `len_bytes` bytes (a multiple of the alignment),
    /// so that a write of it writes only those: the write buffer's last piece is
    /// written only as far as it is filled.
    fn trim_to(&mut self, len_bytes: usize);
}

/// A directory of files, as the engine sees it.
pub trait Disk: Clone + 'static {
    /// An open file of this disk.
    type File: DiskFile<Buffer = Self::Buffer>;
    /// The direct-I/O buffer type of this disk.
    type Buffer: IoBuffer;

    /// Alignment (bytes) of write positions, write lengths and buffers.
    fn alignment_bytes(&self) -> usize;
    /// A buffer of exactly `len_bytes` (a multiple of the alignment); its initial
    /// contents are unspecified, so the engine writes every byte before using it.
    fn alloc_buffer(&self, len_bytes: usize) -> Self::Buffer;
    /// Opens `name` for reading and writing, creating it when missing.
    async fn open_file(&self, name: &str) -> io::Result<Self::File>;
    /// The names of all files in the directory.
    async fn list_files(&self) -> io::Result<Vec<String>>;
    /// Removes a file (durable only after `sync_dir`). Removing the last name of a
    /// closed file frees its blocks, which waits for the file system's journal: an
    /// implementation on a thread-per-core runtime does it off the core's thread.
    async fn remove_file(&self, name: &str) -> io::Result<()>;
    /// Renames a file, replacing any target (durable only after `sync_dir`).
    async fn rename_file(&self, from: &str, to: &str) -> io::Result<()>;
    /// Makes creations, renames and removals durable (fsync of the directory).
    async fn sync_dir(&self) -> io::Result<()>;
    /// Lets the runtime hand I/O that futures polled so far have queued to the kernel,
    /// then resumes. The store calls it after starting a flush it does not wait for, so
    /// the write runs while the caller fills the buffer again (glommio submits queued
    /// requests only when its executor polls for I/O). The default does nothing: a disk
    /// whose futures complete when first polled (`MemDisk`) has nothing queued.
    async fn submit_queued(&self) {}
}

/// One open file.
pub trait DiskFile: 'static {
    /// The direct-I/O buffer type accepted by `write_at`.
    type Buffer: IoBuffer;
    /// The bytes returned by a read.
    type ReadBuf: AsRef<[u8]>;

    /// Reads up to `len` bytes at `pos` (short only at end of file).
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Self::ReadBuf>;
    /// Writes the whole buffer at `pos`; position and length are aligned.
    async fn write_at(&self, buffer: Rc<Self::Buffer>, pos: u64) -> io::Result<()>;
    /// `fdatasync`: makes completed writes durable.
    async fn sync_data(&self) -> io::Result<()>;
    /// The file's current length in bytes.
    async fn len_bytes(&self) -> io::Result<u64>;
    /// Sets the file's length.
    async fn truncate(&self, len_bytes: u64) -> io::Result<()>;
    /// Reserves space for `len_bytes` (the file's length becomes at least that, the new
    /// bytes read as zeros). Direct writes inside the file's length avoid the slow
    /// size-extending path of the file system.
    async fn preallocate(&self, len_bytes: u64) -> io::Result<()>;
    /// Closes the file. The store closes a segment before it removes its name, so
    /// that the close frees nothing and the removal (`Disk::remove_file`) frees the
    /// file's blocks: the last close of a removed file frees them in the closing
    /// thread.
    async fn close(self) -> io::Result<()>;
}
