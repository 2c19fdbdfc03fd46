//! Forwarding between the shards of one node, for requests that arrive on the
//! node-level port but belong to another shard's partition.
//!
//! A thin client that knows no ring connects to the node port; every shard
//! accepts there (`SO_REUSEPORT`), and a request for a partition owned by
//! another shard crosses exactly once over glommio's channel mesh as raw frame
//! bytes, is handled by the owner, and its encoded reply comes back the same
//! way. Cluster-aware clients never take this path (zero hop).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ahash::AHashMap;
use glommio::channels::channel_mesh::{Full, MeshBuilder, Senders};
use glommio::channels::local_channel::{self, LocalSender};

/// Messages on the mesh; frames are owned bytes so they can cross threads.
pub(crate) enum MeshMsg {
    /// A request frame for the receiving shard; the reply goes back to peer `from`.
    Forward {
        from: usize,
        token: u64,
        frame: Vec<u8>,
    },
    /// The encoded reply to the forward with this token.
    Reply { token: u64, frame: Vec<u8> },
}

/// Capacity of each shard-to-shard channel before senders wait.
const MESH_CHANNEL_CAPACITY: usize = 1024;

/// What every shard of a node needs to join the mesh; cloned into each executor.
#[derive(Clone)]
pub(crate) struct Mesh {
    /// `None` for a single-shard node: nothing is ever forwarded.
    builder: Option<MeshBuilder<MeshMsg, Full>>,
    /// Mesh peer id of each shard index, filled in as shards join (join order is arbitrary).
    peers: Arc<Mutex<Vec<Option<usize>>>>,
}

impl Mesh {
    pub(crate) fn new(shards: usize) -> Mesh {
        Mesh {
            builder: (shards > 1).then(|| MeshBuilder::full(shards, MESH_CHANNEL_CAPACITY)),
            peers: Arc::new(Mutex::new(vec![None; shards])),
        }
    }
}

/// A future returning the encoded reply to an encoded request.
pub(crate) type Handler = Rc<dyn Fn(Vec<u8>) -> Pin<Box<dyn Future<Output = Vec<u8>>>>>;

/// One shard's end of the mesh.
pub(crate) struct Forwarder {
    senders: Option<Senders<MeshMsg>>,
    /// Mesh peer id of each shard index.
    peer_of_shard: Vec<usize>,
    /// Replies we are waiting for, by token.
    pending: RefCell<AHashMap<u64, LocalSender<Vec<u8>>>>,
    next_token: Cell<u64>,
}

impl Forwarder {
    /// Joins the mesh and starts one receiving task per peer. Returns once
    /// every shard of the node has joined.
    pub(crate) async fn join(
        mesh: Mesh,
        shard: usize,
        handler: Handler,
    ) -> Result<Rc<Forwarder>, String> {
        let Some(builder) = mesh.builder else {
            return Ok(Rc::new(Forwarder {
                senders: None,
                peer_of_shard: vec![0],
                pending: Default::default(),
                next_token: Cell::new(0),
            }));
        };
        let (senders, mut receivers) = builder
            .join()
            .await
            .map_err(|_| "cannot join the shard mesh".to_string())?;
        mesh.peers.lock().map_err(|_| "mesh table poisoned")?[shard] = Some(senders.peer_id());
        let mut waited_ms = 0;
        let peer_of_shard = loop {
            let table = mesh
                .peers
                .lock()
                .map_err(|_| "mesh table poisoned")?
                .clone();
            if table.iter().all(Option::is_some) {
                break table.into_iter().flatten().collect::<Vec<_>>();
            }
            if waited_ms > 30_000 {
                return Err("other shards did not join the mesh within 30 s".into());
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
            waited_ms += 1;
        };
        let forwarder = Rc::new(Forwarder {
            senders: Some(senders),
            peer_of_shard,
            pending: Default::default(),
            next_token: Cell::new(1),
        });
        for (_, receiver) in receivers.streams() {
            let (forwarder, handler) = (forwarder.clone(), handler.clone());
            glommio::spawn_local(async move {
                while let Some(message) = receiver.recv().await {
                    match message {
                        MeshMsg::Forward { from, token, frame } => {
                            let (forwarder, handler) = (forwarder.clone(), handler.clone());
                            glommio::spawn_local(async move {
                                let reply = handler(frame).await;
                                if let Some(senders) = &forwarder.senders {
                                    let _ = senders
                                        .send_to(
                                            from,
                                            MeshMsg::Reply {
                                                token,
                                                frame: reply,
                                            },
                                        )
                                        .await;
                                }
                            })
                            .detach();
                        }
                        MeshMsg::Reply { token, frame } => {
                            if let Some(waiter) = forwarder.pending.borrow_mut().remove(&token) {
                                let _ = waiter.try_send(frame);
                            }
                        }
                    }
                }
            })
            .detach();
        }
        Ok(forwarder)
    }

    /// Sends an encoded request to shard `target` and waits for its encoded
    /// reply. `None` if the mesh is closed (the node is shutting down).
    pub(crate) async fn forward(&self, target: usize, frame: Vec<u8>) -> Option<Vec<u8>> {
        let senders = self.senders.as_ref()?;
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        let (tx, rx) = local_channel::new_bounded(1);
        self.pending.borrow_mut().insert(token, tx);
        let message = MeshMsg::Forward {
            from: senders.peer_id(),
            token,
            frame,
        };
        if senders
            .send_to(self.peer_of_shard[target], message)
            .await
            .is_err()
        {
            self.pending.borrow_mut().remove(&token);
            return None;
        }
        rx.recv().await
    }
}
