//! Cluster discovery for `dynakv://` targets.
//!
//! Job: fetch the routing table from the node named by `--target` and turn it
//! into the engine's endpoints and partition-to-endpoint map, so every request
//! goes straight to its coordinator shard (zero hop, Dynamo §6.4).
//! Invariants: the table is verified by the protocol module before use; every
//! partition maps to at least one endpoint; endpoints are distinct
//! `(address, shard port)` pairs, coordinators first, then the other replica
//! shards (the failover targets when a coordinator's connection fails).

use dynakv::protocol::{
    self, Encoder, FrameDecoder, Limits, Request, RequestFrame, Response, RoutingTable,
};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The endpoints and routing derived from a table.
#[derive(Debug, PartialEq, Eq)]
pub struct ClusterPlan {
    pub epoch: u64,
    pub partition_bits: u32,
    pub endpoints: Vec<SocketAddr>,
    /// Endpoint index of each partition's coordinator (its first replica).
    pub coordinator: Vec<u32>,
    /// Endpoint indexes of each partition's replicas, coordinator first.
    pub replicas: Vec<Vec<u32>>,
}

impl ClusterPlan {
    /// The plan without the endpoints in `down` (unreachable at start-up):
    /// each partition's requests go to its first remaining replica. Fails
    /// when a partition has no replica left.
    pub fn without(&self, down: &[SocketAddr]) -> Result<ClusterPlan, String> {
        let kept: Vec<SocketAddr> = self
            .endpoints
            .iter()
            .copied()
            .filter(|e| !down.contains(e))
            .collect();
        let index = |old: u32| {
            let addr = self.endpoints[old as usize];
            kept.iter().position(|e| *e == addr).map(|i| i as u32)
        };
        let mut replicas = Vec::with_capacity(self.replicas.len());
        for (p, list) in self.replicas.iter().enumerate() {
            let list: Vec<u32> = list.iter().filter_map(|&e| index(e)).collect();
            if list.is_empty() {
                return Err(format!("no replica of partition {p} is reachable"));
            }
            replicas.push(list);
        }
        Ok(ClusterPlan {
            epoch: self.epoch,
            partition_bits: self.partition_bits,
            coordinator: replicas.iter().map(|list| list[0]).collect(),
            endpoints: kept,
            replicas,
        })
    }
}

/// Asks one node for the routing table, over a blocking socket, before the
/// run starts. The connect and the exchange each have `timeout` in all: a
/// node that accepts and never answers, or answers a byte at a time, fails
/// the fetch instead of holding the tool before its first connection.
pub fn fetch_routing_table(addr: SocketAddr, timeout: Duration) -> Result<RoutingTable, String> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let deadline = Instant::now() + timeout;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    Encoder::new().encode_request(
        &RequestFrame {
            id: 1,
            epoch: 0,
            request: Request::GetRoutingTable,
        },
        &mut out,
    );
    stream
        .write_all(&out)
        .map_err(|e| format!("cannot send to {addr}: {e}"))?;
    let limits = Limits::default();
    let mut decoder = FrameDecoder::new(limits.frame_bytes_max);
    let mut buf = bytes::BytesMut::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if let Some(frame) = decoder
            .decode(&mut buf)
            .map_err(|e| format!("routing table from {addr}: {e}"))?
        {
            let (_, response) = protocol::decode_response(frame, &limits)
                .map_err(|e| format!("routing table from {addr}: {e}"))?;
            return match response {
                Response::RoutingTable(table) => Ok(table),
                Response::Error { code, message, .. } => Err(format!(
                    "{addr} refused the routing table request: {code}: {message}"
                )),
                other => Err(format!(
                    "{addr} answered the routing table request with {other:?}"
                )),
            };
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "{addr} did not send the routing table within {timeout:?}"
            ));
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        let n = stream.read(&mut chunk).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                format!("{addr} did not send the routing table within {timeout:?}")
            }
            _ => format!("reading the routing table from {addr}: {e}"),
        })?;
        if n == 0 {
            return Err(format!(
                "{addr} closed the connection before sending the routing table"
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Flattens a routing table into endpoints and a coordinator per partition.
pub fn plan_from_table(table: &RoutingTable) -> Result<ClusterPlan, String> {
    if !table.q.is_power_of_two() || table.partitions.len() != table.q as usize {
        return Err(format!(
            "routing table has q = {} and {} partitions",
            table.q,
            table.partitions.len()
        ));
    }
    let mut endpoints: Vec<SocketAddr> = Vec::new();
    let mut addrs: Vec<Vec<SocketAddr>> = Vec::with_capacity(table.partitions.len());
    for (p, list) in table.partitions.iter().enumerate() {
        if list.is_empty() {
            return Err(format!("partition {p} has no replicas"));
        }
        let mut replica_addrs = Vec::with_capacity(list.len());
        for &(node_index, shard) in list {
            let node = table
                .nodes
                .get(node_index as usize)
                .ok_or_else(|| format!("partition {p} names node {node_index}"))?;
            let port = *node
                .shard_ports
                .get(usize::from(shard))
                .ok_or_else(|| format!("partition {p} names shard {shard} of node {}", node.id))?;
            replica_addrs.push(SocketAddr::new(node.addr, port));
        }
        addrs.push(replica_addrs);
    }
    // Coordinators first (the steady-state endpoints), then the failover
    // targets, so endpoint numbering does not depend on N.
    for rank in 0..addrs.iter().map(Vec::len).max().unwrap_or(0) {
        for list in &addrs {
            if let Some(addr) = list.get(rank) {
                if !endpoints.contains(addr) {
                    endpoints.push(*addr);
                }
            }
        }
    }
    let position = |addr: &SocketAddr| endpoints.iter().position(|e| e == addr).unwrap() as u32;
    let replicas: Vec<Vec<u32>> = addrs
        .iter()
        .map(|list| list.iter().map(position).collect())
        .collect();
    let coordinator: Vec<u32> = replicas.iter().map(|list| list[0]).collect();
    assert_eq!(coordinator.len(), table.q as usize);
    Ok(ClusterPlan {
        epoch: table.epoch,
        partition_bits: table.q.trailing_zeros(),
        endpoints,
        coordinator,
        replicas,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynakv::protocol::RoutingNode;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn every_partition_routes_to_its_first_replica() {
        let node = |id, port| RoutingNode {
            id,
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            client_port: port,
            shard_ports: vec![port + 1, port + 2],
            weight: 2,
        };
        let table = RoutingTable {
            epoch: 3,
            q: 4,
            n_val: 2,
            nodes: vec![node(1, 7000), node(2, 8000)],
            partitions: vec![
                vec![(0, 0), (1, 0)],
                vec![(1, 1), (0, 1)],
                vec![(0, 1), (1, 1)],
                vec![(0, 0), (1, 1)],
            ],
        };
        let plan = plan_from_table(&table).expect("plan");
        assert_eq!(plan.partition_bits, 2);
        assert_eq!(plan.epoch, 3);
        let local = |port| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        assert_eq!(
            plan.endpoints,
            vec![local(7001), local(8002), local(7002), local(8001)]
        );
        assert_eq!(plan.coordinator, vec![0, 1, 2, 0]);
        assert_eq!(
            plan.replicas,
            vec![vec![0, 3], vec![1, 2], vec![2, 1], vec![0, 1]]
        );
        // Node 1's shard 1 (port 7002) is down: its partition fails over.
        let without = plan.without(&[local(7002)]).expect("plan");
        assert_eq!(
            without.endpoints,
            vec![local(7001), local(8002), local(8001)]
        );
        assert_eq!(without.coordinator, vec![0, 1, 1, 0]);
        assert!(plan.without(&[local(7001), local(8001)]).is_err());
    }
}
