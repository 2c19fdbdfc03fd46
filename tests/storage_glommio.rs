//! The storage engine on the real glommio disk (`DmaFile`, `O_DIRECT`): put, durable
//! put, group commit across tasks, close, reopen, get. The executor registers only 1 MiB
//! of `io_memory`, because `RLIMIT_MEMLOCK` is 8 MiB on the development machines.

use std::rc::Rc;

use dynakv::runtime::disk::{device_has_poll_queues, GlommioDisk};
use dynakv::storage::{Durability, Namespace, RecordKind, Store, StoreConfig};
use glommio::{LocalExecutorBuilder, Placement};

fn run_on_glommio<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(f)
        .expect("spawn executor")
        .join()
        .expect("executor thread");
}

fn config() -> StoreConfig {
    StoreConfig {
        segment_size_bytes: 4 << 20,
        write_buffer_bytes: 64 << 10,
        ..StoreConfig::default()
    }
}

#[test]
fn glommio_disk_put_durable_put_reopen_get() {
    // O_DIRECT needs a real file system (tmpfs refuses it), so use the target dir.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let path = dir.path().to_path_buf();
    run_on_glommio(move || async move {
        let disk = GlommioDisk::new(&path).expect("disk");
        let (store, report) = Store::open(disk.clone(), config()).await.expect("open");
        assert_eq!(report.keys, 0);
        store
            .put(
                Namespace::Data,
                1,
                b"buffered",
                RecordKind::Value,
                bytes::Bytes::copy_from_slice(b"b1"),
                Durability::Buffered,
            )
            .await
            .expect("buffered put");
        store
            .put(
                Namespace::Data,
                1,
                b"durable",
                RecordKind::Value,
                bytes::Bytes::copy_from_slice(b"d1"),
                Durability::Durable,
            )
            .await
            .expect("durable put");
        // Group commit: 32 tasks doing durable puts at once share fdatasyncs.
        let store = Rc::new(store);
        let mut tasks = Vec::new();
        for i in 0..32u32 {
            let store = store.clone();
            tasks.push(glommio::spawn_local(async move {
                let key = format!("task-{i}");
                store
                    .put(
                        Namespace::Data,
                        2,
                        key.as_bytes(),
                        RecordKind::Value,
                        bytes::Bytes::copy_from_slice(&[i as u8; 700]),
                        Durability::Durable,
                    )
                    .await
            }));
        }
        for t in tasks {
            t.await.expect("durable put in task");
        }
        let syncs = store.stats().syncs;
        assert!(syncs < 2 + 32, "group commit: {syncs} syncs");
        // Reads from the write buffer and from the segment.
        let got = store
            .get(Namespace::Data, 1, b"durable")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got.payload[..], b"d1");
        store.flush().await.unwrap();
        let got = store
            .get(Namespace::Data, 1, b"buffered")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got.payload[..], b"b1");
        let store = Rc::try_unwrap(store).ok().expect("sole owner");
        store.close().await.expect("close");

        let (store, report) = Store::open(disk.clone(), config()).await.expect("reopen");
        assert_eq!(report.keys, 34);
        assert!(report.used_hint_files);
        assert!(report.corrupt.is_empty());
        let got = store
            .get(Namespace::Data, 1, b"durable")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got.payload[..], b"d1");
        let got = store
            .get(Namespace::Data, 1, b"buffered")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got.payload[..], b"b1");
        for i in 0..32u32 {
            let key = format!("task-{i}");
            let got = store
                .get(Namespace::Data, 2, key.as_bytes())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&got.payload[..], &[i as u8; 700][..]);
        }
        drop(store);

        // Without hint files the segments (preallocated, so mostly zeros) are scanned.
        for entry in std::fs::read_dir(disk.dir()).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|x| x == "hint") {
                std::fs::remove_file(p).unwrap();
            }
        }
        let (store, report) = Store::open(disk, config())
            .await
            .expect("reopen by scanning");
        assert_eq!(report.keys, 34);
        assert!(!report.used_hint_files);
        assert!(report.corrupt.is_empty());
        assert_eq!(
            report.truncated_tail_bytes, 0,
            "zeros are padding, not a torn tail"
        );
        let got = store
            .get(Namespace::Data, 2, b"task-31")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got.payload[..], &[31u8; 700][..]);
    });
}

/// Write-behind flushes on the real disk (docs/storage.md §4): with a 64 KiB buffer and no
/// read cache, puts keep starting flushes that are not waited for; every record reads
/// back (from the buffer, from a write in flight or from disk) while that goes on, and
/// after a rotation, close and reopen.
#[test]
fn glommio_disk_reads_every_record_while_flushes_are_in_flight() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let path = dir.path().to_path_buf();
    run_on_glommio(move || async move {
        let config = StoreConfig {
            read_cache_bytes: 0,
            ..config()
        };
        let disk = GlommioDisk::new(&path).expect("disk");
        let (store, _) = Store::open(disk.clone(), config.clone())
            .await
            .expect("open");
        let value = |i: u32| vec![(i % 251) as u8; 3000 + (i % 7) as usize * 100];
        let key = |i: u32| format!("key-{i:06}");
        let n = 3000u32; // about 10 MiB: several flushes and two rotations
        for i in 0..n {
            store
                .put(
                    Namespace::Data,
                    i % 8,
                    key(i).as_bytes(),
                    RecordKind::Value,
                    bytes::Bytes::copy_from_slice(&value(i)),
                    Durability::Buffered,
                )
                .await
                .expect("put");
            for j in [i, i.saturating_sub(5), i.saturating_sub(40), i / 2] {
                let got = store
                    .get(Namespace::Data, j % 8, key(j).as_bytes())
                    .await
                    .expect("get")
                    .expect("present");
                assert_eq!(got.payload[..], value(j)[..], "key {j} after put {i}");
            }
        }
        assert!(store.stats().segments >= 3, "the store rotated");
        store.close().await.expect("close");
        let (store, report) = Store::open(disk, config).await.expect("reopen");
        assert!(report.corrupt.is_empty());
        assert_eq!(report.keys, n as u64);
        for i in 0..n {
            let got = store
                .get(Namespace::Data, i % 8, key(i).as_bytes())
                .await
                .expect("get")
                .expect("present");
            assert_eq!(got.payload[..], value(i)[..], "key {i} after reopen");
        }
    });
}

/// `GlommioDisk` keeps file I/O off glommio's IOPOLL ring unless the block device has
/// poll queues (src/runtime/disk.rs, module header): on a device without them the poll
/// ring reports a completion only when the executor polls it, so the executor spins
/// through every write and a write's completion waits for a polling pass (3.6 ms at
/// p50 for a durable round's flush on the development VM, 0.1 ms on the main ring).
#[test]
fn glommio_disk_uses_the_poll_ring_only_where_the_device_polls() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let path = dir.path().to_path_buf();
    run_on_glommio(move || async move {
        let device_polls = device_has_poll_queues(&path);
        let disk = GlommioDisk::new(&path).expect("disk");
        let (poll_writes, main_writes) = durable_puts_by_ring(disk).await;
        if device_polls {
            assert!(
                poll_writes > 0,
                "a polling device keeps glommio's poll ring"
            );
        } else {
            assert_eq!(
                poll_writes, 0,
                "no write on the poll ring ({main_writes} on the main ring)"
            );
            assert!(
                main_writes >= 1,
                "the durable puts were written through the main ring"
            );
        }
    });
}

/// `disk_poll_always`: the disk leaves the ring to glommio's own probe, so
/// its writes take the ring a bare glommio `DmaFile` in the same directory
/// takes on a fresh executor thread (glommio probes once per device and
/// thread).
#[test]
fn poll_always_leaves_the_ring_to_glommio() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let bare = dir.path().join("bare");
    let store_dir = dir.path().join("store");
    std::fs::create_dir_all(&store_dir).expect("store dir");
    let (tx, rx) = std::sync::mpsc::channel();
    run_on_glommio(move || async move {
        let _ = glommio::executor().io_stats();
        // Readable, as the store's files are: glommio's probe is a read.
        let file = glommio::io::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .dma_open(&bare)
            .await
            .expect("create");
        let mut buffer = file.alloc_dma_buffer(4096);
        buffer.as_bytes_mut().fill(9);
        file.write_at(buffer, 0).await.expect("write");
        file.close().await.expect("close");
        let stats = glommio::executor().io_stats();
        tx.send(stats.poll_ring.file_writes().0 > 0).expect("send");
    });
    let glommio_polls = rx.recv().expect("glommio's choice");
    run_on_glommio(move || async move {
        let disk = GlommioDisk::new(&store_dir)
            .expect("disk")
            .poll_always(true);
        let (poll_writes, main_writes) = durable_puts_by_ring(disk).await;
        if glommio_polls {
            assert!(poll_writes > 0, "glommio polls here, and so does the disk");
        } else {
            assert_eq!(poll_writes, 0, "{main_writes} writes on the main ring");
        }
    });
}

/// 64 durable puts through a store on `disk`; the file writes glommio
/// counted on its poll ring and on its main ring meanwhile.
async fn durable_puts_by_ring(disk: GlommioDisk) -> (u64, u64) {
    {
        let (store, _) = Store::open(disk, config()).await.expect("open");
        // glommio hands out its I/O counters and resets them; start from zero here.
        let _ = glommio::executor().io_stats();
        for i in 0..64u32 {
            store
                .put(
                    Namespace::Data,
                    i % 8,
                    format!("k{i}").as_bytes(),
                    RecordKind::Value,
                    bytes::Bytes::from(vec![7u8; 300]),
                    Durability::Durable,
                )
                .await
                .expect("durable put");
        }
        let stats = glommio::executor().io_stats();
        let (poll_writes, _) = stats.poll_ring.file_writes();
        let (main_writes, _) = stats.main_ring.file_writes();
        store.close().await.expect("close");
        (poll_writes, main_writes)
    }
}

/// Compaction on the real disk: segments whose records were all overwritten are
/// closed and removed (`Disk::remove_file`, which `GlommioDisk` runs on glommio's
/// blocking-task thread, so that freeing a segment's blocks does not stall the
/// shard), the directory is synced, and every key reads back its last value, before
/// and after a reopen. Removing a file that does not exist is a clear `NotFound`
/// from that thread.
#[test]
fn glommio_disk_compaction_removes_dead_segments_and_keeps_every_key() {
    use dynakv::storage::Disk;

    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let path = dir.path().to_path_buf();
    let config = || StoreConfig {
        max_value_bytes: 16 << 10,
        segment_size_bytes: 1 << 20,
        write_buffer_bytes: 64 << 10,
        read_cache_bytes: 0,
        ..StoreConfig::default()
    };
    const KEYS: u32 = 50;
    const ROUNDS: u32 = 40;
    let value = |key: u32, round: u32| vec![(key * 7 + round) as u8; 2000];
    let segments = |disk: &GlommioDisk| {
        std::fs::read_dir(disk.dir())
            .unwrap()
            .filter(|e| {
                let p = e.as_ref().unwrap().path();
                p.extension().is_some_and(|x| x == "log")
            })
            .count()
    };
    run_on_glommio(move || async move {
        let disk = GlommioDisk::new(&path).expect("disk");
        let (store, _) = Store::open(disk.clone(), config()).await.expect("open");
        // 50 keys of 2,000 bytes, 40 times over: about 4 MiB through 1 MiB
        // segments, all but the last round dead.
        for round in 0..ROUNDS {
            for key in 0..KEYS {
                store
                    .put(
                        Namespace::Data,
                        key % 4,
                        format!("k{key}").as_bytes(),
                        RecordKind::Value,
                        bytes::Bytes::from(value(key, round)),
                        Durability::Buffered,
                    )
                    .await
                    .expect("put");
            }
        }
        store.flush().await.expect("flush");
        let before = segments(&disk);
        assert!(before >= 4, "{before} segments");
        let mut removed = 0;
        loop {
            let progress = store.compact_step(1 << 20).await.expect("compact");
            removed += progress.segments_removed;
            if !progress.more {
                break;
            }
        }
        assert!(removed >= 2, "{removed} segments compacted");
        assert_eq!(store.stats().segments_compacted, u64::from(removed));
        // The next segment, prepared ahead, may come and go; the compacted ones are gone.
        let after = segments(&disk);
        assert!(
            after + removed as usize <= before + 1,
            "{before} -> {after}"
        );
        let check = |store: Rc<Store<GlommioDisk>>| async move {
            for key in 0..KEYS {
                let got = store
                    .get(Namespace::Data, key % 4, format!("k{key}").as_bytes())
                    .await
                    .expect("get")
                    .expect("present");
                assert_eq!(&got.payload[..], &value(key, ROUNDS - 1)[..], "k{key}");
            }
        };
        let store = Rc::new(store);
        check(store.clone()).await;
        let store = Rc::try_unwrap(store).ok().expect("sole owner");
        store.close().await.expect("close");
        let (store, report) = Store::open(disk.clone(), config()).await.expect("reopen");
        assert_eq!(report.keys, u64::from(KEYS));
        assert!(report.corrupt.is_empty());
        check(Rc::new(store)).await;
        let missing = disk.remove_file("seg-9999999999.log").await;
        assert_eq!(
            missing.expect_err("no such file").kind(),
            std::io::ErrorKind::NotFound
        );
    });
}
