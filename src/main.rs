use glommio::{io::DmaFile, LocalExecutorBuilder, Placement};
fn main() {
    let h = LocalExecutorBuilder::new(Placement::Fixed(0))
        .io_memory(1 << 20)
        .spawn(|| async move {
            let f = glommio::io::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .dma_open("/tmp/gtest.dat")
                .await
                .unwrap();
            let mut b = f.alloc_dma_buffer(4096);
            b.as_bytes_mut().fill(7);
            let n = f.write_at(b, 0).await.unwrap();
            f.fdatasync().await.unwrap();
            println!("wrote {n} align {}", f.alignment());
            let r = f.read_at(0, 100).await.unwrap();
            println!("read {}", r.len());
            f.close().await.unwrap();
        })
        .unwrap();
    h.join().unwrap();
}
