//! The write buffer of the active segment: records are encoded straight into DMA
//! buffers ("pieces") from the disk, so a flush hands the filled pieces to `write_at`
//! without copying them (docs/storage.md §4).
//!
//! Invariants:
//! * The buffer holds `len_bytes` bytes: every piece is `piece_bytes` long and
//!   `pieces.len() == len_bytes.div_ceil(piece_bytes)`, so only the last piece is
//!   partly filled and no piece is empty.
//! * A piece is written to only while it is here; `take_padded` gives the pieces away
//!   (to the flush) and leaves the buffer empty, `take_prefix` gives away those of a
//!   prefix and keeps the rest.

use std::rc::Rc;

use super::disk::{Disk, IoBuffer};

/// The default size of a piece (`StoreConfig::write_piece_bytes`): small enough that
/// glommio serves it from its registered `io_memory` (no page pinning per write, no
/// fresh pages to fault in), large enough to keep per-write costs small. A flush
/// writes its pieces together.
pub(crate) const PIECE_BYTES_DEFAULT: usize = 256 << 10;

pub(crate) struct WriteBuffer<D: Disk> {
    /// Allocates the pieces.
    disk: D,
    /// Consecutive pieces from the buffer's first byte.
    pieces: Vec<D::Buffer>,
    /// The length of every piece (a multiple of the disk's alignment).
    piece_bytes: usize,
    /// Bytes appended since the buffer was last emptied.
    len_bytes: usize,
    /// Reused for a record that straddles two pieces (encoded here, then copied).
    scratch: Vec<u8>,
    /// Whole pieces back from completed flushes, reused before allocating: a fresh
    /// piece that glommio could not place in its registered memory is a fresh `mmap`,
    /// and faulting in and zeroing its pages showed in the ingest profile.
    spare: Vec<D::Buffer>,
    /// Bound on `spare` (the pieces of the writes that can be in flight at once).
    spare_pieces_max: usize,
}

impl<D: Disk> WriteBuffer<D> {
    /// An empty buffer of `piece_bytes` pieces keeping at most `spare_pieces_max` of
    /// them for reuse.
    pub(crate) fn new(disk: D, piece_bytes: usize, spare_pieces_max: usize) -> Self {
        assert!(piece_bytes > 0, "a piece holds bytes");
        WriteBuffer {
            disk,
            pieces: Vec::new(),
            piece_bytes,
            len_bytes: 0,
            scratch: Vec::new(),
            spare: Vec::new(),
            spare_pieces_max,
        }
    }

    fn new_piece(&mut self) -> D::Buffer {
        match self.spare.pop() {
            Some(piece) => piece,
            None => self.disk.alloc_buffer(self.piece_bytes),
        }
    }

    /// Takes back the pieces of a completed write for reuse: those no one else holds
    /// any more and that are whole (a shortened last piece cannot grow again).
    pub(crate) fn recycle(&mut self, pieces: Vec<Rc<D::Buffer>>) {
        for piece in pieces {
            if self.spare.len() >= self.spare_pieces_max {
                return;
            }
            if let Ok(piece) = Rc::try_unwrap(piece) {
                if piece.as_bytes().len() == self.piece_bytes {
                    self.spare.push(piece);
                }
            }
        }
    }

    pub(crate) fn len_bytes(&self) -> usize {
        self.len_bytes
    }

    /// Appends exactly `len` bytes, which `fill` writes into the slice it is given
    /// (in place in a piece when the bytes fit in one, else through `scratch`).
    pub(crate) fn append(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) {
        assert!(len > 0, "a record has a header");
        let at = self.len_bytes % self.piece_bytes;
        if at + len <= self.piece_bytes {
            if at == 0 {
                let piece = self.new_piece();
                self.pieces.push(piece);
            }
            let piece = self.pieces.last_mut().expect("a piece to append to");
            fill(&mut piece.as_bytes_mut()[at..at + len]);
            self.len_bytes += len;
        } else {
            let mut scratch = std::mem::take(&mut self.scratch);
            scratch.clear();
            scratch.resize(len, 0);
            fill(&mut scratch);
            self.extend_from_slice(&scratch);
            self.scratch = scratch;
        }
        debug_assert_eq!(self.pieces.len(), self.len_bytes.div_ceil(self.piece_bytes));
    }

    /// Appends a copy of `data`.
    pub(crate) fn extend_from_slice(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let at = self.len_bytes % self.piece_bytes;
            if at == 0 {
                let piece = self.new_piece();
                self.pieces.push(piece);
            }
            let n = (self.piece_bytes - at).min(data.len());
            let piece = self.pieces.last_mut().expect("a piece to append to");
            piece.as_bytes_mut()[at..at + n].copy_from_slice(&data[..n]);
            self.len_bytes += n;
            data = &data[n..];
        }
    }

    /// Calls `f` with the bytes `[from, from + len)` of the buffer: a slice of one
    /// piece, or a copy when the range straddles two.
    pub(crate) fn with_range<R>(&self, from: usize, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        assert!(from + len <= self.len_bytes, "range inside the buffer");
        let at = from % self.piece_bytes;
        if at + len <= self.piece_bytes {
            return f(&self.pieces[from / self.piece_bytes].as_bytes()[at..at + len]);
        }
        let mut copy = Vec::with_capacity(len);
        self.copy_range(from, from + len, &mut copy);
        f(&copy)
    }

    /// Appends the bytes `[from, to)` of the buffer to `out`.
    pub(crate) fn copy_range(&self, from: usize, to: usize, out: &mut Vec<u8>) {
        assert!(
            from <= to && to <= self.len_bytes,
            "range inside the buffer"
        );
        let mut pos = from;
        while pos < to {
            let piece = self.pieces[pos / self.piece_bytes].as_bytes();
            let at = pos % self.piece_bytes;
            let n = (self.piece_bytes - at).min(to - pos);
            out.extend_from_slice(&piece[at..at + n]);
            pos += n;
        }
    }

    /// Gives the pieces away for a write: the bytes, then zeros up to the next multiple
    /// of `align_bytes`, the last piece shortened to that length. The buffer is empty
    /// afterwards.
    pub(crate) fn take_padded(&mut self, align_bytes: usize) -> Vec<D::Buffer> {
        assert!(self.piece_bytes % align_bytes == 0);
        let used = self.len_bytes;
        let padded = used.div_ceil(align_bytes) * align_bytes;
        let mut pieces = std::mem::take(&mut self.pieces);
        self.len_bytes = 0;
        if let Some(last) = pieces.last_mut() {
            let last_start = (pieces_len_before_last(used, self.piece_bytes)) * self.piece_bytes;
            let bytes = last.as_bytes_mut();
            bytes[used - last_start..padded - last_start].fill(0);
            if padded - last_start < self.piece_bytes {
                last.trim_to(padded - last_start);
            }
        }
        pieces
    }

    /// How many bytes from the start a write of whole blocks can take (`take_prefix`):
    /// every whole piece when the buffer fills one (the partly filled last piece stays,
    /// so nothing is copied or shortened), else the whole `align_bytes` blocks; 0 when
    /// the buffer holds less than a block.
    pub(crate) fn whole_prefix_bytes(&self, align_bytes: usize) -> usize {
        if self.len_bytes >= self.piece_bytes {
            self.len_bytes / self.piece_bytes * self.piece_bytes
        } else {
            self.len_bytes / align_bytes * align_bytes
        }
    }

    /// Gives away the pieces holding the first `len` bytes (`0 < len <= len_bytes`, a
    /// multiple of the alignment) for a write, the last of them shortened to end at
    /// `len`; the bytes after `len` stay in the buffer (in the same pieces when `len`
    /// is a multiple of `piece_bytes`, else copied into a fresh one).
    pub(crate) fn take_prefix(&mut self, len: usize) -> Vec<D::Buffer> {
        assert!(len > 0 && len <= self.len_bytes, "a prefix of the buffer");
        if len % self.piece_bytes == 0 {
            let pieces: Vec<D::Buffer> = self.pieces.drain(..len / self.piece_bytes).collect();
            self.len_bytes -= len;
            return pieces;
        }
        let used = self.len_bytes;
        let mut tail = std::mem::take(&mut self.scratch);
        tail.clear();
        self.copy_range(len, used, &mut tail);
        let mut pieces = std::mem::take(&mut self.pieces);
        let n = len.div_ceil(self.piece_bytes);
        let rest = pieces.split_off(n);
        let last = pieces.last_mut().expect("a piece holds the prefix");
        last.trim_to(len - (n - 1) * self.piece_bytes);
        self.len_bytes = 0;
        self.recycle(rest.into_iter().map(Rc::new).collect());
        self.extend_from_slice(&tail);
        self.scratch = tail;
        pieces
    }

    /// Forgets every byte (the pieces are kept for reuse, up to the bound).
    pub(crate) fn clear(&mut self) {
        let pieces = std::mem::take(&mut self.pieces);
        self.recycle(pieces.into_iter().map(Rc::new).collect());
        self.len_bytes = 0;
    }

    /// Checks the invariants in the module header (for `Store::check_invariants`).
    pub(crate) fn check_invariants(&self) {
        assert_eq!(self.pieces.len(), self.len_bytes.div_ceil(self.piece_bytes));
        assert!(self
            .pieces
            .iter()
            .all(|p| p.as_bytes().len() == self.piece_bytes));
    }
}

/// How many full pieces of `piece_bytes` come before the last one of a buffer of
/// `used` bytes.
fn pieces_len_before_last(used: usize, piece_bytes: usize) -> usize {
    used.div_ceil(piece_bytes).saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemDisk;

    const PIECE_BYTES: usize = PIECE_BYTES_DEFAULT;

    #[test]
    fn records_straddling_pieces_read_back_and_pad_to_the_alignment() {
        let mut buf = WriteBuffer::new(MemDisk::new(), PIECE_BYTES, 4);
        let mut expected = Vec::new();
        // Lengths that are not divisors of the piece size, so records straddle pieces.
        let mut i = 0u32;
        while expected.len() < 2 * PIECE_BYTES + 1000 {
            let len = 1 + (i as usize * 7919) % 9000;
            let byte = (i % 251) as u8;
            buf.append(len, |out| out.fill(byte));
            let from = expected.len();
            expected.resize(from + len, byte);
            buf.with_range(from, len, |b| assert!(b.iter().all(|&x| x == byte)));
            i += 1;
        }
        buf.check_invariants();
        let mut copy = Vec::new();
        buf.copy_range(0, buf.len_bytes(), &mut copy);
        assert_eq!(copy, expected);
        let used = buf.len_bytes();
        let pieces = buf.take_padded(512);
        assert_eq!(buf.len_bytes(), 0);
        buf.check_invariants();
        let written: Vec<u8> = pieces.iter().flat_map(|p| p.as_bytes().to_vec()).collect();
        assert_eq!(written.len(), used.div_ceil(512) * 512);
        assert_eq!(&written[..used], &expected[..]);
        assert!(written[used..].iter().all(|&b| b == 0), "zero padding");
    }

    #[test]
    fn a_buffer_ending_on_a_piece_boundary_keeps_full_pieces() {
        let mut buf = WriteBuffer::new(MemDisk::new(), PIECE_BYTES, 4);
        buf.extend_from_slice(&vec![7u8; PIECE_BYTES]);
        buf.check_invariants();
        let pieces = buf.take_padded(512);
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0].as_bytes().len(), PIECE_BYTES);
        // An empty buffer gives no pieces.
        assert!(buf.take_padded(512).is_empty());
        // A whole piece no one else holds is reused; a shared one is not.
        let pieces: Vec<Rc<_>> = pieces.into_iter().map(Rc::new).collect();
        let held = pieces[0].clone();
        buf.recycle(pieces);
        assert!(
            buf.spare.is_empty(),
            "a piece still held elsewhere is not reused"
        );
        buf.recycle(vec![held]);
        assert_eq!(buf.spare.len(), 1);
        buf.append(100, |out| out.fill(1));
        assert!(buf.spare.is_empty(), "the spare piece was used");
        buf.with_range(0, 100, |b| assert!(b.iter().all(|&x| x == 1)));
    }
}
