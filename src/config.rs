//! Server configuration: built-in defaults, a TOML file, and command-line
//! flags, applied in that order (a flag overrides the file, the file overrides
//! the default).
//!
//! Every option has one name, used both as the TOML key and, with `_` written
//! as `-`, as the `--flag`. `docs/configuration.md` lists them all with their
//! defaults; a test keeps that page and [`ServerConfig::OPTIONS`] in step.
//!
//! This module only parses and validates; it opens no files other than the
//! config file it is pointed at, and binds nothing.

use std::net::SocketAddr;
use std::path::PathBuf;

/// The complete configuration of one `dynakv server` process.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Directory holding `node.id` and one sub-directory per shard.
    pub data_dir: PathBuf,
    /// The node-level client address: thin clients connect here and their
    /// requests are forwarded once, internally, to the owning shard.
    pub listen: SocketAddr,
    /// First per-shard client port; shard `i` listens on `shard_port_base + i`
    /// on the IP of `listen`. 0 means `listen.port() + 1`.
    pub shard_port_base: u16,
    /// Number of shards (glommio executors). 0 means one per available core.
    pub shards: usize,
    /// Pin each shard's executor to its own core.
    pub pin_shards: bool,
    /// Number of partitions Q of the hash space; a power of two, fixed at
    /// cluster creation.
    pub partitions: u32,
    /// Replication factor N (clamped to the number of nodes).
    pub n_val: u8,
    /// Default read quorum R.
    pub r: u8,
    /// Default write quorum W.
    pub w: u8,
    /// Default number of replicas that must fsync before a put is acknowledged.
    pub dw: u8,
    /// Bytes of io_uring-registered memory per shard; 0 sizes it from
    /// `RLIMIT_MEMLOCK` and the shard count.
    pub io_memory_bytes: usize,
    /// How long an idle shard keeps polling its rings before it sleeps, in
    /// microseconds (glommio's `spin_before_park`); 0 sleeps at once.
    pub spin_before_park_us: u64,
    /// Let glommio poll disk completions (its IOPOLL ring) even where the
    /// block device has no poll queues. Off: file I/O goes to the main ring
    /// unless sysfs says the device polls (`runtime::disk`).
    pub disk_poll_always: bool,
    /// Set up each shard's main io_uring with `IORING_SETUP_COOP_TASKRUN`: a
    /// socket's readiness waits for the shard's next kernel entry instead of
    /// interrupting it (the patched glommio in `vendor/`). Off: as upstream.
    pub io_uring_coop_taskrun: bool,
    /// Client connections learn when their sockets have bytes from one
    /// epoll instance per listener (`runtime::readiness`). Off: each waits
    /// with glommio's own poll, armed again after every read.
    pub epoll_client_reads: bool,
    /// Maximum simultaneous client connections per shard.
    pub connections_max: usize,
    /// Maximum simultaneous client connections per shard from one source
    /// IP address.
    pub connections_per_address_max: usize,
    /// Maximum requests in flight on one connection before the server stops
    /// reading from it (back-pressure).
    pub in_flight_per_connection_max: usize,
    /// A connection with no complete request for this long is closed.
    pub idle_timeout_ms: u64,
    /// Maximum simultaneous inbound internode (and admin) connections per
    /// shard, with or without a cluster secret.
    pub internode_connections_max: usize,
    /// Maximum simultaneous inbound internode connections per shard from
    /// one source IP address (a peer node holds one per sending shard).
    pub internode_connections_per_address_max: usize,
    /// An inbound internode connection with no complete frame for this long
    /// is closed (silent or slow); outgoing links close themselves after
    /// half of it without traffic, so healthy peers never hit it.
    pub internode_idle_timeout_ms: u64,
    /// Maximum key size in bytes.
    pub key_bytes_max: usize,
    /// Maximum value size in bytes.
    pub value_bytes_max: usize,
    /// Maximum size of one protocol frame in bytes.
    pub frame_bytes_max: usize,
    /// Write-buffer flush interval in microseconds.
    pub flush_interval_us: u64,
    /// Write-buffer size per shard in bytes.
    pub write_buffer_bytes: usize,
    /// Most write-buffer flush writes in flight at once per shard
    /// (`StoreConfig::flushes_in_flight_max`), 1..=`FLUSHES_IN_FLIGHT_MAX`.
    pub flushes_in_flight_max: usize,
    /// Bytes of zeros that durable writes keep written ahead of a shard's records
    /// (`StoreConfig::prewrite_bytes`); 0 turns it off. The zeros never go
    /// past the segment's end, so a value above `segment_size_bytes` means
    /// "the rest of the segment" (and a small segment needs no change here).
    pub prewrite_bytes: u64,
    /// Bytes of records a shard keeps in its read cache
    /// (`StoreConfig::read_cache_bytes`); 0 turns it off. A get that misses
    /// it and the write buffer reads the disk (direct I/O: no page cache).
    pub read_cache_bytes: usize,
    /// Log segment size in bytes.
    pub segment_size_bytes: u64,
    /// Dead fraction of a segment above which compaction rewrites it.
    pub compaction_dead_fraction: f64,
    /// Compaction rate limit in bytes per second per shard.
    pub compaction_bytes_per_second: u64,
    /// Whether a mostly dead segment is compacted from the index, reading
    /// only its live records (docs/storage.md §7a).
    pub compaction_from_index: bool,
    /// The internode address: shard `i` listens for other nodes' replica,
    /// gossip and admin traffic on `PORT + i` of this IP, and outgoing
    /// internode connections leave from this IP. `None` means the IP of
    /// `listen` and port `listen.port() + 100`.
    pub internode_listen: Option<SocketAddr>,
    /// Internode addresses of other nodes to gossip with (seed nodes,
    /// Dynamo §4.8.2). Empty: a one-node cluster until an admin join.
    pub seeds: Vec<SocketAddr>,
    /// Capacity weight: this node's share of the partitions. 0 means the
    /// number of shards.
    pub weight: u32,
    /// One gossip round (and heartbeat) per interval.
    pub gossip_interval_ms: u64,
    /// A peer not heard from for this long is routed around.
    pub suspect_after_ms: u64,
    /// A replica silent for this long is replaced by a fallback.
    pub replica_timeout_ms: u64,
    /// A client request not answered by then fails with `Timeout`.
    pub request_timeout_ms: u64,
    /// Hint replay runs at most once per interval.
    pub hint_replay_interval_ms: u64,
    /// Test only (chaos tool): each SIGUSR1 moves this node's clock forward
    /// by this many milliseconds, each SIGUSR2 back. 0: signals not handled.
    pub debug_clock_jump_ms: u64,
    /// Test only, deliberately broken: replicas keep only the last sibling
    /// of every key (last write wins), so the chaos checker must fail.
    pub debug_last_write_wins: bool,
    /// The admin HTTP address (`/metrics`, `/health`), served by shard 0.
    /// `None`: no admin HTTP port.
    pub http_listen: Option<SocketAddr>,
    /// Log line format on stderr: `text` (human-readable) or `json`.
    pub log_format: LogFormat,
    /// Which log lines are written: a level (`info`, `warn`, …, `off`) or
    /// `target=level` directives separated by commas (docs/metrics.md §6).
    pub log_level: String,
    /// Foreground p99 latency above which the background queue's shares
    /// are halved (the utilization monitor's target), in microseconds.
    pub foreground_latency_target_us: u64,
    /// The fewest shares the background task queue gets (foreground: 1000).
    pub background_shares_min: usize,
    /// The most shares the background task queue gets (an idle foreground).
    pub background_shares_max: usize,
    /// Partition handoff rate limit per shard at full background share, in
    /// keys per second (received handoff and hint messages: twice this).
    pub handoff_keys_per_second: u64,
    /// The Redis-protocol (RESP2, RESP3 after `HELLO 3`) listener; `None` (the default) runs none.
    /// Every shard accepts on it, like the node port (docs/resp.md).
    pub resp_listen: Option<SocketAddr>,
    /// A file holding the cluster secret; when set, internode and admin
    /// connections must pass a challenge-response handshake with it.
    pub cluster_secret_file: Option<PathBuf>,
    /// Each shard starts one anti-entropy exchange per interval (0: off,
    /// which also stops tombstone collection).
    pub aae_interval_ms: u64,
    /// Anti-entropy rate limit per shard: keys read or repaired per second.
    pub aae_keys_per_second: u64,
    /// Anti-entropy rate limit per shard: bytes read or sent per second.
    pub aae_bytes_per_second: u64,
    /// A tombstone is collected no sooner than this after it was written.
    pub tombstone_grace_ms: u64,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `tracing-subscriber`'s human-readable lines.
    Text,
    /// One JSON object per line: `ts`, `level`, `target`, `msg`, `fields`.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(()),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from("dynakv-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 7000)),
            shard_port_base: 0,
            shards: 0,
            pin_shards: true,
            partitions: 256,
            n_val: 3,
            r: 2,
            w: 2,
            dw: 0,
            io_memory_bytes: 0,
            spin_before_park_us: 0,
            disk_poll_always: false,
            io_uring_coop_taskrun: true,
            epoll_client_reads: true,
            connections_max: 10_000,
            connections_per_address_max: 1024,
            in_flight_per_connection_max: 1024,
            idle_timeout_ms: 300_000,
            internode_connections_max: 4096,
            internode_connections_per_address_max: 512,
            internode_idle_timeout_ms: 120_000,
            key_bytes_max: 1024,
            value_bytes_max: 1024 * 1024,
            frame_bytes_max: 1024 * 1024 + 64 * 1024,
            flush_interval_us: 1000,
            // 8 MiB, not the store library's 1 MiB: with 4 KiB puts at pipeline 16 it
            // halves p99 and cuts max tenfold (BENCHMARKS.md §1, "One writer makes
            // room"; first chosen when 1 MiB made 1 KiB puts queue on the flush).
            write_buffer_bytes: 8 * 1024 * 1024,
            flushes_in_flight_max: 2,
            prewrite_bytes: 1024 * 1024,
            read_cache_bytes: 32 * 1024 * 1024,
            segment_size_bytes: 64 * 1024 * 1024,
            compaction_dead_fraction: 0.5,
            compaction_bytes_per_second: 64 * 1024 * 1024,
            compaction_from_index: true,
            internode_listen: None,
            seeds: Vec::new(),
            weight: 0,
            gossip_interval_ms: 1_000,
            suspect_after_ms: 3_000,
            replica_timeout_ms: 300,
            request_timeout_ms: 1_000,
            hint_replay_interval_ms: 1_000,
            debug_clock_jump_ms: 0,
            debug_last_write_wins: false,
            http_listen: None,
            log_format: LogFormat::Text,
            log_level: "info".to_string(),
            foreground_latency_target_us: 2_000,
            background_shares_min: 10,
            background_shares_max: 500,
            handoff_keys_per_second: 10_000,
            resp_listen: None,
            cluster_secret_file: None,
            aae_interval_ms: 1_000,
            aae_keys_per_second: 20_000,
            aae_bytes_per_second: 16 * 1024 * 1024,
            tombstone_grace_ms: 3_600_000,
        }
    }
}

/// A configuration problem, reported before anything starts.
#[derive(Debug)]
pub enum ConfigError {
    /// The config file could not be read.
    Read(PathBuf, std::io::Error),
    /// The config file is not valid TOML for this schema.
    Parse(PathBuf, String),
    /// A flag is unknown or lacks its value.
    Flag(String),
    /// A value is out of its allowed range.
    Invalid(String),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Read(path, e) => write!(f, "cannot read config {}: {e}", path.display()),
            ConfigError::Parse(path, e) => write!(f, "bad config {}: {e}", path.display()),
            ConfigError::Flag(e) => write!(f, "{e}"),
            ConfigError::Invalid(e) => write!(f, "invalid configuration: {e}"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl ServerConfig {
    /// Upper bound of `flushes_in_flight_max`: each write in flight holds up
    /// to a write buffer's worth of DMA memory, and more than a few writes in
    /// flight gave no more throughput (docs/storage.md §4).
    pub const FLUSHES_IN_FLIGHT_MAX: usize = 16;

    /// Every option name, in documentation order.
    pub const OPTIONS: &'static [&'static str] = &[
        "data_dir",
        "listen",
        "shard_port_base",
        "shards",
        "pin_shards",
        "partitions",
        "n_val",
        "r",
        "w",
        "dw",
        "io_memory_bytes",
        "spin_before_park_us",
        "disk_poll_always",
        "io_uring_coop_taskrun",
        "epoll_client_reads",
        "connections_max",
        "connections_per_address_max",
        "in_flight_per_connection_max",
        "idle_timeout_ms",
        "internode_connections_max",
        "internode_connections_per_address_max",
        "internode_idle_timeout_ms",
        "key_bytes_max",
        "value_bytes_max",
        "frame_bytes_max",
        "flush_interval_us",
        "write_buffer_bytes",
        "flushes_in_flight_max",
        "prewrite_bytes",
        "read_cache_bytes",
        "segment_size_bytes",
        "compaction_dead_fraction",
        "compaction_bytes_per_second",
        "compaction_from_index",
        "internode_listen",
        "seeds",
        "weight",
        "gossip_interval_ms",
        "suspect_after_ms",
        "replica_timeout_ms",
        "request_timeout_ms",
        "hint_replay_interval_ms",
        "debug_clock_jump_ms",
        "debug_last_write_wins",
        "http_listen",
        "log_format",
        "log_level",
        "foreground_latency_target_us",
        "background_shares_min",
        "background_shares_max",
        "handoff_keys_per_second",
        "resp_listen",
        "cluster_secret_file",
        "aae_interval_ms",
        "aae_keys_per_second",
        "aae_bytes_per_second",
        "tombstone_grace_ms",
    ];

    /// Parses a TOML document.
    pub fn from_toml(text: &str, path: &std::path::Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(path.to_path_buf(), e.to_string()))
    }

    /// Builds the configuration from `server` command-line arguments: the
    /// defaults, then `--config FILE` if given, then every other flag.
    pub fn from_args(args: &[String]) -> Result<Self, ConfigError> {
        let mut config = ServerConfig::default();
        if let Some(i) = args.iter().position(|a| a == "--config") {
            let path = PathBuf::from(
                args.get(i + 1)
                    .ok_or_else(|| ConfigError::Flag("--config needs a FILE".into()))?,
            );
            let text =
                std::fs::read_to_string(&path).map_err(|e| ConfigError::Read(path.clone(), e))?;
            config = ServerConfig::from_toml(&text, &path)?;
        }
        let mut i = 0;
        while i < args.len() {
            let flag = &args[i];
            let name = flag
                .strip_prefix("--")
                .ok_or_else(|| ConfigError::Flag(format!("unexpected argument '{flag}'")))?;
            let value = args
                .get(i + 1)
                .ok_or_else(|| ConfigError::Flag(format!("{flag} needs a value")))?;
            if name != "config" {
                config.set(&name.replace('-', "_"), value)?;
            }
            i += 2;
        }
        config.validate()?;
        Ok(config)
    }

    /// Sets one option from its textual value.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ConfigError> {
            value.parse().map_err(|_| {
                ConfigError::Flag(format!(
                    "--{} has a bad value '{value}'",
                    name.replace('_', "-")
                ))
            })
        }
        match name {
            "data_dir" => self.data_dir = PathBuf::from(value),
            "listen" => self.listen = parse(name, value)?,
            "shard_port_base" => self.shard_port_base = parse(name, value)?,
            "shards" => self.shards = parse(name, value)?,
            "pin_shards" => self.pin_shards = parse(name, value)?,
            "partitions" => self.partitions = parse(name, value)?,
            "n_val" => self.n_val = parse(name, value)?,
            "r" => self.r = parse(name, value)?,
            "w" => self.w = parse(name, value)?,
            "dw" => self.dw = parse(name, value)?,
            "io_memory_bytes" => self.io_memory_bytes = parse(name, value)?,
            "spin_before_park_us" => self.spin_before_park_us = parse(name, value)?,
            "disk_poll_always" => self.disk_poll_always = parse(name, value)?,
            "io_uring_coop_taskrun" => self.io_uring_coop_taskrun = parse(name, value)?,
            "epoll_client_reads" => self.epoll_client_reads = parse(name, value)?,
            "connections_max" => self.connections_max = parse(name, value)?,
            "connections_per_address_max" => self.connections_per_address_max = parse(name, value)?,
            "in_flight_per_connection_max" => {
                self.in_flight_per_connection_max = parse(name, value)?
            }
            "idle_timeout_ms" => self.idle_timeout_ms = parse(name, value)?,
            "internode_connections_max" => self.internode_connections_max = parse(name, value)?,
            "internode_connections_per_address_max" => {
                self.internode_connections_per_address_max = parse(name, value)?
            }
            "internode_idle_timeout_ms" => self.internode_idle_timeout_ms = parse(name, value)?,
            "key_bytes_max" => self.key_bytes_max = parse(name, value)?,
            "value_bytes_max" => self.value_bytes_max = parse(name, value)?,
            "frame_bytes_max" => self.frame_bytes_max = parse(name, value)?,
            "flush_interval_us" => self.flush_interval_us = parse(name, value)?,
            "write_buffer_bytes" => self.write_buffer_bytes = parse(name, value)?,
            "flushes_in_flight_max" => self.flushes_in_flight_max = parse(name, value)?,
            "prewrite_bytes" => self.prewrite_bytes = parse(name, value)?,
            "read_cache_bytes" => self.read_cache_bytes = parse(name, value)?,
            "segment_size_bytes" => self.segment_size_bytes = parse(name, value)?,
            "compaction_dead_fraction" => self.compaction_dead_fraction = parse(name, value)?,
            "compaction_bytes_per_second" => self.compaction_bytes_per_second = parse(name, value)?,
            "compaction_from_index" => self.compaction_from_index = parse(name, value)?,
            "internode_listen" => {
                self.internode_listen = match value {
                    "" => None,
                    v => Some(parse(name, v)?),
                }
            }
            "seeds" => {
                self.seeds = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| parse(name, s))
                    .collect::<Result<_, _>>()?
            }
            "weight" => self.weight = parse(name, value)?,
            "gossip_interval_ms" => self.gossip_interval_ms = parse(name, value)?,
            "suspect_after_ms" => self.suspect_after_ms = parse(name, value)?,
            "replica_timeout_ms" => self.replica_timeout_ms = parse(name, value)?,
            "request_timeout_ms" => self.request_timeout_ms = parse(name, value)?,
            "hint_replay_interval_ms" => self.hint_replay_interval_ms = parse(name, value)?,
            "cluster_secret_file" => {
                self.cluster_secret_file = match value {
                    "" => None,
                    v => Some(PathBuf::from(v)),
                }
            }
            "resp_listen" => {
                self.resp_listen = match value {
                    "" => None,
                    v => Some(parse(name, v)?),
                }
            }
            "debug_clock_jump_ms" => self.debug_clock_jump_ms = parse(name, value)?,
            "debug_last_write_wins" => self.debug_last_write_wins = parse(name, value)?,
            "http_listen" => {
                self.http_listen = match value {
                    "" => None,
                    v => Some(parse(name, v)?),
                }
            }
            "log_format" => self.log_format = parse(name, value)?,
            "log_level" => self.log_level = value.to_string(),
            "foreground_latency_target_us" => {
                self.foreground_latency_target_us = parse(name, value)?
            }
            "background_shares_min" => self.background_shares_min = parse(name, value)?,
            "background_shares_max" => self.background_shares_max = parse(name, value)?,
            "handoff_keys_per_second" => self.handoff_keys_per_second = parse(name, value)?,
            "aae_interval_ms" => self.aae_interval_ms = parse(name, value)?,
            "aae_keys_per_second" => self.aae_keys_per_second = parse(name, value)?,
            "aae_bytes_per_second" => self.aae_bytes_per_second = parse(name, value)?,
            "tombstone_grace_ms" => self.tombstone_grace_ms = parse(name, value)?,
            _ => {
                return Err(ConfigError::Flag(format!(
                    "unknown option --{}",
                    name.replace('_', "-")
                )))
            }
        }
        Ok(())
    }

    /// Checks ranges and relations between options.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if let Err(e) = crate::runtime::log::parse_filter(&self.log_level) {
            return invalid(e);
        }
        if !self.partitions.is_power_of_two() || !(1..=65_536).contains(&self.partitions) {
            return invalid(format!(
                "partitions must be a power of two in 1..=65536, not {}",
                self.partitions
            ));
        }
        if self.spin_before_park_us > 10_000 {
            return invalid(format!(
                "spin_before_park_us must be at most 10000, not {}",
                self.spin_before_park_us
            ));
        }
        if self.shards > 256 {
            return invalid(format!("shards must be at most 256, not {}", self.shards));
        }
        if self.n_val == 0 || self.r == 0 || self.w == 0 {
            return invalid("n_val, r and w must be at least 1".into());
        }
        if self.r > self.n_val || self.w > self.n_val || self.dw > self.w {
            return invalid(format!(
                "need r <= n_val, w <= n_val and dw <= w (n_val={}, r={}, w={}, dw={})",
                self.n_val, self.r, self.w, self.dw
            ));
        }
        if self.key_bytes_max == 0 || self.key_bytes_max > 64 * 1024 {
            return invalid("key_bytes_max must be in 1..=65536".into());
        }
        if self.value_bytes_max > 64 * 1024 * 1024 {
            return invalid("value_bytes_max must be at most 64 MiB".into());
        }
        if self.frame_bytes_max < self.value_bytes_max + self.key_bytes_max + 4096 {
            return invalid(
                "frame_bytes_max must exceed value_bytes_max + key_bytes_max + 4096".into(),
            );
        }
        if !(1..=Self::FLUSHES_IN_FLIGHT_MAX).contains(&self.flushes_in_flight_max) {
            return invalid(format!(
                "flushes_in_flight_max must be in 1..={}, not {}",
                Self::FLUSHES_IN_FLIGHT_MAX,
                self.flushes_in_flight_max
            ));
        }
        if !(0.0..1.0).contains(&self.compaction_dead_fraction)
            || self.compaction_dead_fraction <= 0.0
        {
            return invalid("compaction_dead_fraction must be in (0, 1)".into());
        }
        if self.gossip_interval_ms == 0
            || self.suspect_after_ms < self.gossip_interval_ms
            || self.replica_timeout_ms == 0
            || self.request_timeout_ms == 0
            || self.hint_replay_interval_ms == 0
        {
            return invalid(
                "gossip, replica, request and hint-replay intervals must be at least 1 ms, and suspect_after_ms at least gossip_interval_ms".into(),
            );
        }
        if self.aae_keys_per_second == 0 || self.aae_bytes_per_second == 0 {
            return invalid(
                "aae_keys_per_second and aae_bytes_per_second must be at least 1".into(),
            );
        }
        if self.seeds.len() > 64 {
            return invalid("at most 64 seeds".into());
        }
        if let Some(addr) = self.internode_listen {
            if addr.ip() != self.listen.ip() {
                return invalid(format!(
                    "internode_listen {addr} must use the IP of listen {}",
                    self.listen
                ));
            }
        }
        if self.background_shares_min == 0
            || self.background_shares_min > self.background_shares_max
            || self.background_shares_max > 10_000
        {
            return invalid(format!(
                "need 1 <= background_shares_min <= background_shares_max <= 10000 (min={}, max={})",
                self.background_shares_min, self.background_shares_max
            ));
        }
        if self.handoff_keys_per_second == 0 || self.foreground_latency_target_us == 0 {
            return invalid(
                "handoff_keys_per_second and foreground_latency_target_us must be at least 1"
                    .into(),
            );
        }
        if self.connections_max == 0
            || self.connections_per_address_max == 0
            || self.in_flight_per_connection_max == 0
        {
            return invalid(
                "connections_max, connections_per_address_max and in_flight_per_connection_max must be at least 1".into(),
            );
        }
        if self.internode_connections_max == 0 || self.internode_connections_per_address_max == 0 {
            return invalid(
                "internode_connections_max and internode_connections_per_address_max must be at least 1".into(),
            );
        }
        if self.internode_idle_timeout_ms != 0
            && self.internode_idle_timeout_ms < 4 * self.gossip_interval_ms
        {
            return invalid(format!(
                "internode_idle_timeout_ms ({}) must be 0 or at least 4 gossip intervals ({} ms): gossip and heartbeats keep links busy only that often",
                self.internode_idle_timeout_ms,
                4 * self.gossip_interval_ms
            ));
        }
        Ok(())
    }

    /// The number of shards to run: the configured count, or one per core
    /// this process may run on.
    pub fn shard_count(&self) -> usize {
        if self.shards > 0 {
            self.shards
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }

    /// The client port of shard `shard`.
    pub fn shard_port(&self, shard: usize) -> u16 {
        let base = if self.shard_port_base == 0 {
            self.listen.port().wrapping_add(1)
        } else {
            self.shard_port_base
        };
        base.wrapping_add(shard as u16)
    }

    /// The internode address of shard 0 (shard `i` listens on port + `i`).
    pub fn internode_addr(&self) -> SocketAddr {
        self.internode_listen.unwrap_or_else(|| {
            SocketAddr::new(self.listen.ip(), self.listen.port().wrapping_add(100))
        })
    }

    /// The internode address of shard `shard`.
    pub fn internode_shard_addr(&self, shard: usize) -> SocketAddr {
        let base = self.internode_addr();
        SocketAddr::new(base.ip(), base.port().wrapping_add(shard as u16))
    }

    /// The capacity weight this node declares.
    pub fn weight_or_default(&self, shards: usize) -> u32 {
        if self.weight == 0 {
            shards as u32
        } else {
            self.weight
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StoreConfig;

    /// Command-line arguments as `from_args` takes them.
    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_override_file_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "shards = 3\nlisten = \"127.0.0.2:9000\"\n").unwrap();
        let args = strings(&["--config", path.to_str().unwrap(), "--shards", "2"]);
        let c = ServerConfig::from_args(&args).unwrap();
        assert_eq!(c.shards, 2, "the flag wins over the file");
        assert_eq!(
            c.listen,
            "127.0.0.2:9000".parse().unwrap(),
            "the file wins over the default"
        );
        assert_eq!(c.partitions, 256, "untouched options keep their default");
        assert_eq!(c.shard_port(1), 9002);
    }

    #[test]
    fn bad_input_is_rejected_clearly() {
        let bad = |args: &[&str]| {
            ServerConfig::from_args(&strings(args))
                .unwrap_err()
                .to_string()
        };
        assert!(bad(&["--partitions", "100"]).contains("power of two"));
        assert!(bad(&["--no-such", "1"]).contains("unknown option --no-such"));
        assert!(bad(&["--shards"]).contains("needs a value"));
        assert!(bad(&["--shards", "x"]).contains("bad value 'x'"));
        assert!(bad(&["--r", "4"]).contains("r <= n_val"));
        // A typo in the log level would otherwise read as a target name and
        // silence every line.
        assert!(bad(&["--log-level", "inf"]).contains("'inf' is not a level"));
        assert!(bad(&["--log-level", "dynakv=loud"]).contains("log_level"));
        assert!(bad(&["--spin-before-park-us", "10001"]).contains("at most 10000"));
        assert!(bad(&["--internode-connections-max", "0"]).contains("at least 1"));
        assert!(bad(&[
            "--gossip-interval-ms",
            "1000",
            "--internode-idle-timeout-ms",
            "3999"
        ])
        .contains("at least 4 gossip intervals"));
        let e = ServerConfig::from_toml("bogus = 1", std::path::Path::new("f.toml")).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn cluster_options_parse_from_file_and_flags() {
        let c = ServerConfig::from_toml(
            "listen = \"127.0.0.2:7000\"\nseeds = [\"127.0.0.1:7100\", \"127.0.0.3:7100\"]\nweight = 4\n",
            std::path::Path::new("f.toml"),
        )
        .unwrap();
        assert_eq!(c.seeds.len(), 2);
        assert_eq!(c.weight_or_default(2), 4);
        assert_eq!(c.internode_addr(), "127.0.0.2:7100".parse().unwrap());
        assert_eq!(c.internode_shard_addr(3), "127.0.0.2:7103".parse().unwrap());
        let args = strings(&[
            "--listen",
            "127.0.0.5:8000",
            "--seeds",
            "127.0.0.1:8100, 127.0.0.2:8100",
            "--internode-listen",
            "127.0.0.5:9000",
        ]);
        let c = ServerConfig::from_args(&args).unwrap();
        assert_eq!(
            c.seeds,
            vec![
                "127.0.0.1:8100".parse().unwrap(),
                "127.0.0.2:8100".parse().unwrap()
            ]
        );
        assert_eq!(c.internode_shard_addr(1), "127.0.0.5:9001".parse().unwrap());
        assert_eq!(
            c.weight_or_default(3),
            3,
            "weight defaults to the shard count"
        );
        let bad = strings(&["--internode-listen", "127.0.0.9:9000"]);
        assert!(ServerConfig::from_args(&bad)
            .unwrap_err()
            .to_string()
            .contains("must use the IP of listen"));
    }

    #[test]
    fn prewrite_bytes_defaults_to_the_stores_and_small_segments_need_no_change() {
        assert_eq!(
            ServerConfig::from_args(&[]).unwrap().prewrite_bytes,
            StoreConfig::default().prewrite_bytes,
            "the server's default is the store's"
        );
        let c = ServerConfig::from_args(&strings(&["--prewrite-bytes", "0"])).unwrap();
        assert_eq!(c.prewrite_bytes, 0, "0 turns it off");
        let c =
            ServerConfig::from_toml("prewrite_bytes = 4194304\n", std::path::Path::new("f.toml"))
                .unwrap();
        assert_eq!(c.prewrite_bytes, 4 << 20);
        c.validate().unwrap();
        // The store stops the zeros at the segment's end: a segment smaller
        // than the default prewrite is accepted as it is.
        let c = ServerConfig::from_args(&strings(&["--segment-size-bytes", "524288"])).unwrap();
        assert!(c.prewrite_bytes > c.segment_size_bytes);
        let e = ServerConfig::from_args(&strings(&["--prewrite-bytes", "lots"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--prewrite-bytes has a bad value 'lots'"), "{e}");
    }

    #[test]
    fn read_cache_bytes_defaults_to_the_stores_and_parses() {
        assert_eq!(
            ServerConfig::from_args(&[]).unwrap().read_cache_bytes,
            StoreConfig::default().read_cache_bytes,
            "the server's default is the store's"
        );
        let c = ServerConfig::from_args(&strings(&["--read-cache-bytes", "0"])).unwrap();
        assert_eq!(c.read_cache_bytes, 0, "0 turns it off");
        let c = ServerConfig::from_toml(
            "read_cache_bytes = 1073741824\n",
            std::path::Path::new("f.toml"),
        )
        .unwrap();
        assert_eq!(c.read_cache_bytes, 1 << 30);
        c.validate().unwrap();
        let e = ServerConfig::from_args(&strings(&["--read-cache-bytes", "-1"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--read-cache-bytes has a bad value '-1'"), "{e}");
    }

    #[test]
    fn flushes_in_flight_max_parses_defaults_and_is_bounded() {
        assert_eq!(ServerConfig::default().flushes_in_flight_max, 2);
        assert_eq!(
            ServerConfig::from_args(&[]).unwrap().flushes_in_flight_max,
            StoreConfig::default().flushes_in_flight_max,
            "the server's default is the store's"
        );
        let c = ServerConfig::from_args(&strings(&["--flushes-in-flight-max", "4"])).unwrap();
        assert_eq!(c.flushes_in_flight_max, 4);
        let c = ServerConfig::from_toml(
            "flushes_in_flight_max = 1\n",
            std::path::Path::new("f.toml"),
        )
        .unwrap();
        assert_eq!(c.flushes_in_flight_max, 1);
        c.validate().unwrap();
        let c = ServerConfig::from_toml(
            "flushes_in_flight_max = 0\n",
            std::path::Path::new("f.toml"),
        )
        .unwrap();
        assert!(c.validate().is_err(), "a file's 0 is refused too");
        let c = ServerConfig::from_args(&strings(&["--flushes-in-flight-max", "16"])).unwrap();
        assert_eq!(c.flushes_in_flight_max, ServerConfig::FLUSHES_IN_FLIGHT_MAX);
        for bad in ["0", "17"] {
            let e = ServerConfig::from_args(&strings(&["--flushes-in-flight-max", bad]))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!(
                    "flushes_in_flight_max must be in 1..=16, not {bad}"
                )),
                "{e}"
            );
        }
        let e = ServerConfig::from_args(&strings(&["--flushes-in-flight-max", "-1"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad value '-1'"), "{e}");
    }

    #[test]
    fn documentation_lists_every_option() {
        let doc = include_str!("../docs/configuration.md");
        for option in ServerConfig::OPTIONS {
            assert!(
                doc.contains(&format!("`{option}`")),
                "docs/configuration.md lacks `{option}`"
            );
        }
        // Every option in OPTIONS is settable, and every settable option is listed.
        let mut c = ServerConfig::default();
        for option in ServerConfig::OPTIONS {
            let e = c.set(option, "\u{0}");
            assert!(
                !matches!(e, Err(ConfigError::Flag(ref m)) if m.contains("unknown option")),
                "{option}"
            );
        }
    }
}
