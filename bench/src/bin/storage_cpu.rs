//! storage_cpu: the storage engine's own CPU per put, on the in-memory `MemDisk`, for
//! instruction counts under callgrind. On the shared development VM wall and CPU times
//! swing by 2x between runs and there are no hardware counters; callgrind's count is
//! the same on every run. (glommio does not run under valgrind, so this drives the
//! store with `block_on` instead of `storage_bench`'s `GlommioDisk`.)
//!
//! Usage: `storage_cpu ingest N` (N buffered puts of 4 KiB values, then `sync`) or
//! `storage_cpu put N` (100-byte values); keys and partitions as in `storage_bench`,
//! `StoreConfig::default()`, a fresh `Bytes` per put (as the server builds per request).
//! The counts include `MemDisk`'s own copies of every written byte, the same for any
//! engine version. BENCHMARKS.md §1 has the commands.

use dynakv::storage::{block_on, Durability, MemDisk, Namespace, RecordKind, Store, StoreConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: storage_cpu ingest|put N";
    let mode = args.next().expect(usage);
    let n: u64 = args.next().expect(usage).parse().expect(usage);
    let len = match mode.as_str() {
        "ingest" => 4096,
        "put" => 100,
        _ => panic!("{usage}"),
    };
    let (store, _) = block_on(Store::open(MemDisk::new(), StoreConfig::default())).expect("open");
    let value = vec![0xa5u8; len];
    for i in 0..n {
        let key = format!("key-{i:010}");
        block_on(store.put(
            Namespace::Data,
            (i % 256) as u32,
            key.as_bytes(),
            RecordKind::Value,
            bytes::Bytes::copy_from_slice(&value),
            Durability::Buffered,
        ))
        .expect("put");
    }
    block_on(store.sync()).expect("sync");
    println!("{n} puts of {len} B, {} flushes", store.stats().flushes);
}
