//! Fuzz target: storage recovery from arbitrary segment and hint-file bytes.
//! The input is split into a sealed segment, its hint file and an active
//! segment, written to a `MemDisk` (padded to the disk's alignment) and
//! synced; then the store opens. Properties: no panic; an open that
//! succeeds yields a store whose invariants hold and whose every indexed
//! key reads back (or reports `Corrupt`); opening a second time gives the
//! same keys and values; the recovered store accepts a durable write.
#![no_main]

use std::collections::BTreeMap;
use std::rc::Rc;

use dynakv::storage::{
    block_on, Disk, DiskFile, Durability, IoBuffer, MemDisk, Namespace, RecordKind, Store,
    StoreConfig, MEM_DISK_ALIGNMENT_BYTES,
};
use libfuzzer_sys::fuzz_target;

type Dump = BTreeMap<(Namespace, u32, Vec<u8>), Option<Vec<u8>>>;

fn config() -> StoreConfig {
    StoreConfig {
        max_key_bytes: 64,
        max_value_bytes: 4096,
        segment_size_bytes: 64 * 1024,
        write_buffer_bytes: 4096,
        read_cache_bytes: 0,
        ..StoreConfig::default()
    }
}

fn write_file(disk: &MemDisk, name: &str, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let align = MEM_DISK_ALIGNMENT_BYTES;
    let len = bytes.len().div_ceil(align) * align;
    let mut buffer = disk.alloc_buffer(len);
    buffer.as_bytes_mut().fill(0);
    buffer.as_bytes_mut()[..bytes.len()].copy_from_slice(bytes);
    block_on(async {
        let file = disk.open_file(name).await.expect("open");
        file.write_at(Rc::new(buffer), 0).await.expect("write");
        file.truncate(bytes.len() as u64).await.expect("truncate");
        file.sync_data().await.expect("sync");
    });
}

fn dump(store: &Store<MemDisk>) -> Dump {
    let mut out = Dump::new();
    for ns in [Namespace::Data, Namespace::Hint] {
        for partition in store.partitions(ns) {
            for key in store.keys(ns, partition) {
                let value = match block_on(store.get(ns, partition, &key)) {
                    Ok(Some(record)) => Some(record.payload.to_vec()),
                    Ok(None) => panic!("an indexed key reads as absent"),
                    // A damaged record is reported, never returned.
                    Err(_) => None,
                };
                out.insert((ns, partition, key.to_vec()), value);
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let split = |data: &[u8]| -> (usize, usize) {
        if data.len() < 4 {
            return (data.len(), data.len());
        }
        let a = u16::from_le_bytes([data[0], data[1]]) as usize % (data.len() - 3);
        let b = u16::from_le_bytes([data[2], data[3]]) as usize % (data.len() - 3);
        (4 + a.min(b), 4 + a.max(b))
    };
    let (a, b) = split(data);
    let disk = MemDisk::new();
    write_file(&disk, "seg-0000000001.log", &data[a.min(4).max(0)..a]);
    write_file(&disk, "seg-0000000001.hint", &data[a..b]);
    write_file(&disk, "seg-0000000002.log", &data[b..]);
    block_on(disk.sync_dir()).expect("sync_dir");

    let Ok((store, _report)) = block_on(Store::open(disk.clone(), config())) else {
        return;
    };
    store.check_invariants();
    let first = dump(&store);
    drop(store);
    let (store, _) = block_on(Store::open(disk.clone(), config())).expect("a recovered store reopens");
    assert_eq!(dump(&store), first, "recovering twice changed the state");
    block_on(store.put(Namespace::Data, 1, b"after", RecordKind::Value, bytes::Bytes::from_static(b"v"), Durability::Durable))
        .expect("a recovered store accepts writes");
    store.check_invariants();
});
