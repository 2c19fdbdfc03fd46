//! Command-line parsing for `dynakv-bench`.
//!
//! Job: turn `argv` into a validated [`Config`] or a [`UsageError`] that names
//! the offending flag. Invariant: every `Config` this module returns is
//! runnable as far as flags can tell (non-zero counts, ranges in order,
//! options that apply only to one target are rejected for the others), so the
//! engine asserts rather than re-validates.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

/// Bounds on what a run may ask for; beyond them a run measures the tool,
/// not the target, or exhausts memory.
pub const CONNECTIONS_MAX: u32 = 100_000;
pub const PIPELINE_MAX: u32 = 4096;
pub const THREADS_MAX: u32 = 1024;
pub const VALUE_SIZE_BYTES_MAX: u32 = 16 * 1024 * 1024;
pub const KEYS_MAX: u64 = 1 << 40;

pub const USAGE: &str = "\
usage: dynakv-bench --target URL [options]

target:
  --target URL          dynakv://HOST:PORT (default scheme), redis://HOST:PORT,
                        memcache://HOST:PORT
workload:
  --workload W          ping|get|put|mixed|ycsb-a|ycsb-b|ycsb-c|ycsb-d|ycsb-f|cart
                        (default mixed)
  --read-ratio F        fraction of reads, 0..1 (mixed: default 0.9; overrides
                        the YCSB mixes)
  --keys N              key-space size (default 100000)
  --key-dist D          uniform|zipfian|latest (default uniform; ycsb-a/b/c/f
                        default zipfian, ycsb-d latest)
  --value-size N|N-M    value bytes, fixed or uniform in [N, M] (default 64)
  --load | --no-load    force / skip the load phase that writes every key once
                        (default: load for get, mixed, ycsb-*; not for ping,
                        put, cart)
  --r N --w N --n N     per-request quorum overrides (dynakv only)
  --dw N                durable writes: a put is acknowledged once N replicas
                        have fdatasynced it (dynakv only; at most --w when given)
run:
  --duration D          measured time, e.g. 10s, 500ms, 2m (default 10s)
  --ops N               measured operations instead of a duration
  --warmup D            unmeasured time before measuring (default 0s)
  --connections N       total connections (clients) over all threads (default 50)
  --pipeline N          requests in flight per connection (default 1)
  --threads N           event-loop threads, one io_uring each (default 1)
  --pin                 pin thread i to the i-th allowed CPU
  --rate R              open loop: R requests/s in total, latency measured from
                        each request's intended send time (default: closed loop)
  --timeout D           per-request timeout (default 2s)
  --connect-timeout D   connect timeout (default 2s)
  --seed N              random seed (default 1)
output:
  --json FILE           write results as JSON
  --hdr-log FILE        write an HdrHistogram interval log (.hlog): one compressed
                        histogram of the measured latencies per second, in us
  --hdr-percentiles FILE  write the run's latency percentile distribution (.hgrm text)
  --plot FILE.svg       write a latency-by-percentile plot
  --no-progress         no live progress line (it is shown only on a terminal)
  -h, --help            this text
";

/// The protocol a target speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Dynakv,
    Redis,
    Memcache,
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Dynakv => "dynakv",
            Scheme::Redis => "redis",
            Scheme::Memcache => "memcache",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Target {
    pub scheme: Scheme,
    pub addr: SocketAddr,
    /// The URL as given, for reports.
    pub url: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Ping,
    Get,
    Put,
    Mixed,
    YcsbA,
    YcsbB,
    YcsbC,
    YcsbD,
    YcsbF,
    Cart,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Ping => "ping",
            Workload::Get => "get",
            Workload::Put => "put",
            Workload::Mixed => "mixed",
            Workload::YcsbA => "ycsb-a",
            Workload::YcsbB => "ycsb-b",
            Workload::YcsbC => "ycsb-c",
            Workload::YcsbD => "ycsb-d",
            Workload::YcsbF => "ycsb-f",
            Workload::Cart => "cart",
        }
    }

    fn parse(s: &str) -> Option<Workload> {
        const ALL: [Workload; 10] = [
            Workload::Ping,
            Workload::Get,
            Workload::Put,
            Workload::Mixed,
            Workload::YcsbA,
            Workload::YcsbB,
            Workload::YcsbC,
            Workload::YcsbD,
            Workload::YcsbF,
            Workload::Cart,
        ];
        ALL.into_iter().find(|w| w.name() == s)
    }

    /// The read fraction of the workload's mix, before `--read-ratio`.
    pub fn default_read_ratio(self) -> f64 {
        match self {
            Workload::Ping | Workload::Put | Workload::Cart => 0.0,
            Workload::Get | Workload::YcsbC => 1.0,
            Workload::Mixed => 0.9,
            Workload::YcsbA | Workload::YcsbF => 0.5,
            Workload::YcsbB | Workload::YcsbD => 0.95,
        }
    }

    fn default_key_dist(self) -> KeyDist {
        match self {
            Workload::YcsbA | Workload::YcsbB | Workload::YcsbC | Workload::YcsbF => {
                KeyDist::Zipfian
            }
            Workload::YcsbD => KeyDist::Latest,
            _ => KeyDist::Uniform,
        }
    }

    /// Whether the workload reads keys it expects to exist, so a load phase
    /// runs unless `--no-load`.
    fn loads_by_default(self) -> bool {
        !matches!(self, Workload::Ping | Workload::Put | Workload::Cart)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyDist {
    Uniform,
    Zipfian,
    Latest,
}

impl KeyDist {
    pub fn name(self) -> &'static str {
        match self {
            KeyDist::Uniform => "uniform",
            KeyDist::Zipfian => "zipfian",
            KeyDist::Latest => "latest",
        }
    }
}

/// Value sizes, uniform in `[min, max]` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueSize {
    pub min: u32,
    pub max: u32,
}

/// How long the measured phase lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunLength {
    DurationNs(u64),
    Ops(u64),
}

/// Per-request quorum overrides for dynakv (§4.5, §5 of the design).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuorumOverride {
    pub r: Option<u8>,
    pub w: Option<u8>,
    /// Replicas that must have made a put durable (`fdatasync`) before it is
    /// acknowledged; the server's default (0, buffered) when unset.
    pub dw: Option<u8>,
    pub n: Option<u8>,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub target: Target,
    pub workload: Workload,
    pub read_ratio: f64,
    pub keys: u64,
    pub key_dist: KeyDist,
    pub value_size: ValueSize,
    pub load: bool,
    pub warmup_ns: u64,
    pub run: RunLength,
    pub connections: u32,
    pub pipeline: u32,
    pub threads: u32,
    /// Open-loop total rate in requests per second; `None` is closed loop.
    pub rate: Option<f64>,
    pub timeout_ns: u64,
    pub connect_timeout_ns: u64,
    pub seed: u64,
    pub quorum: QuorumOverride,
    pub json: Option<PathBuf>,
    /// HdrHistogram interval log (one histogram per second).
    pub hdr_log: Option<PathBuf>,
    /// HdrHistogram percentile distribution text of the whole run.
    pub hdr_percentiles: Option<PathBuf>,
    pub plot: Option<PathBuf>,
    pub progress: bool,
    /// Pin thread i to the i-th CPU the process may run on.
    pub pin: bool,
}

/// A flag problem; printed with the usage text, exit status 2.
#[derive(Debug, PartialEq, Eq)]
pub enum UsageError {
    /// `-h` or `--help`: not an error, but ends parsing the same way.
    Help,
    UnknownFlag(String),
    MissingValue(String),
    BadValue {
        flag: String,
        value: String,
        why: String,
    },
    MissingTarget,
    Conflict(String),
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsageError::Help => write!(f, "help requested"),
            UsageError::UnknownFlag(flag) => write!(f, "unknown flag {flag}"),
            UsageError::MissingValue(flag) => write!(f, "{flag} needs a value"),
            UsageError::BadValue { flag, value, why } => {
                write!(f, "bad value {value:?} for {flag}: {why}")
            }
            UsageError::MissingTarget => write!(f, "--target is required"),
            UsageError::Conflict(why) => write!(f, "{why}"),
        }
    }
}

/// Parses a duration: a number with a unit `ns`, `us`, `ms`, `s`, `m` or `h`
/// (fractions allowed, e.g. `1.5s`); a bare number is seconds.
pub fn parse_duration_ns(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err("expected a number, e.g. 10s or 500ms".into());
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{number:?} is not a number"))?;
    let scale_ns: f64 = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "" | "s" => 1e9,
        "m" | "min" => 60e9,
        "h" => 3600e9,
        other => return Err(format!("unknown unit {other:?} (use ns, us, ms, s, m, h)")),
    };
    let ns = value * scale_ns;
    if !ns.is_finite() || ns >= u64::MAX as f64 {
        return Err("duration too large".into());
    }
    Ok(ns.round() as u64)
}

/// Parses `N` or `N-M` bytes (with optional `k`/`K` = 1024 suffixes).
pub fn parse_value_size(text: &str) -> Result<ValueSize, String> {
    let parse_one = |s: &str| -> Result<u32, String> {
        let s = s.trim();
        let (digits, scale) = match s.strip_suffix(['k', 'K']) {
            Some(d) => (d, 1024u64),
            None => (s, 1u64),
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{s:?} is not a byte count"))?;
        let bytes = n.checked_mul(scale).ok_or("too large")?;
        if bytes > u64::from(VALUE_SIZE_BYTES_MAX) {
            return Err(format!("at most {VALUE_SIZE_BYTES_MAX} bytes"));
        }
        Ok(bytes as u32)
    };
    let (min, max) = match text.split_once('-') {
        Some((a, b)) => (parse_one(a)?, parse_one(b)?),
        None => {
            let n = parse_one(text)?;
            (n, n)
        }
    };
    if min > max {
        return Err("range must be N-M with N <= M".into());
    }
    Ok(ValueSize { min, max })
}

/// Parses a target URL; a missing scheme means dynakv.
pub fn parse_target(text: &str) -> Result<Target, String> {
    let (scheme, rest) = match text.split_once("://") {
        Some(("dynakv", rest)) => (Scheme::Dynakv, rest),
        Some(("redis", rest)) => (Scheme::Redis, rest),
        Some(("memcache", rest)) | Some(("memcached", rest)) => (Scheme::Memcache, rest),
        Some((other, _)) => {
            return Err(format!(
                "unknown scheme {other:?} (use dynakv, redis, memcache)"
            ))
        }
        None => (Scheme::Dynakv, text),
    };
    let rest = rest.trim_end_matches('/');
    let addr = rest
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {rest:?}: {e} (expected HOST:PORT)"))?
        .next()
        .ok_or_else(|| format!("{rest:?} resolves to no address"))?;
    Ok(Target {
        scheme,
        addr,
        url: format!("{}://{}", scheme.name(), rest),
    })
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, UsageError> {
    value.parse().map_err(|_| UsageError::BadValue {
        flag: flag.into(),
        value: value.into(),
        why: "not a number".into(),
    })
}

fn bad(flag: &str, value: &str, why: impl Into<String>) -> UsageError {
    UsageError::BadValue {
        flag: flag.into(),
        value: value.into(),
        why: why.into(),
    }
}

/// Parses the arguments after the program name.
pub fn parse_args(args: &[String]) -> Result<Config, UsageError> {
    let mut target = None;
    let mut workload = Workload::Mixed;
    let mut read_ratio = None;
    let mut keys = 100_000u64;
    let mut key_dist = None;
    let mut value_size = ValueSize { min: 64, max: 64 };
    let mut load = None;
    let mut warmup_ns = 0u64;
    let mut duration_ns = None;
    let mut ops = None;
    let mut connections = 50u32;
    let mut pipeline = 1u32;
    let mut threads = 1u32;
    let mut rate = None;
    let mut timeout_ns = 2_000_000_000u64;
    let mut connect_timeout_ns = 2_000_000_000u64;
    let mut seed = 1u64;
    let mut quorum = QuorumOverride::default();
    let mut json = None;
    let mut hdr_log = None;
    let mut hdr_percentiles = None;
    let mut plot = None;
    let mut progress = true;
    let mut pin = false;

    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg, None),
        };
        const SWITCHES: [&str; 6] = [
            "-h",
            "--help",
            "--load",
            "--no-load",
            "--no-progress",
            "--pin",
        ];
        const VALUED: [&str; 26] = [
            "--target",
            "--workload",
            "--read-ratio",
            "--keys",
            "--key-dist",
            "--value-size",
            "--warmup",
            "--duration",
            "--ops",
            "--connections",
            "-c",
            "--pipeline",
            "--threads",
            "-t",
            "--rate",
            "--timeout",
            "--connect-timeout",
            "--seed",
            "--r",
            "--w",
            "--dw",
            "--n",
            "--json",
            "--hdr-log",
            "--hdr-percentiles",
            "--plot",
        ];
        if !SWITCHES.contains(&flag) && !VALUED.contains(&flag) {
            return Err(UsageError::UnknownFlag(arg.into()));
        }
        let takes_value = VALUED.contains(&flag);
        let value = if takes_value {
            match inline {
                Some(v) => v,
                None => {
                    i += 1;
                    args.get(i)
                        .cloned()
                        .ok_or_else(|| UsageError::MissingValue(flag.into()))?
                }
            }
        } else {
            if inline.is_some() {
                return Err(bad(flag, arg, "takes no value"));
            }
            String::new()
        };
        let v = value.as_str();
        match flag {
            "-h" | "--help" => return Err(UsageError::Help),
            "--load" => load = Some(true),
            "--no-load" => load = Some(false),
            "--no-progress" => progress = false,
            "--pin" => pin = true,
            "--target" => target = Some(parse_target(v).map_err(|why| bad(flag, v, why))?),
            "--workload" => {
                workload = Workload::parse(v).ok_or_else(|| bad(flag, v, "unknown workload"))?
            }
            "--read-ratio" => {
                let f: f64 = number(flag, v)?;
                if !(0.0..=1.0).contains(&f) {
                    return Err(bad(flag, v, "must be between 0 and 1"));
                }
                read_ratio = Some(f);
            }
            "--keys" => {
                keys = number(flag, v)?;
                if keys == 0 || keys > KEYS_MAX {
                    return Err(bad(flag, v, format!("must be 1..={KEYS_MAX}")));
                }
            }
            "--key-dist" => {
                key_dist = Some(match v {
                    "uniform" => KeyDist::Uniform,
                    "zipfian" => KeyDist::Zipfian,
                    "latest" => KeyDist::Latest,
                    _ => return Err(bad(flag, v, "use uniform, zipfian or latest")),
                })
            }
            "--value-size" => value_size = parse_value_size(v).map_err(|why| bad(flag, v, why))?,
            "--warmup" => warmup_ns = parse_duration_ns(v).map_err(|why| bad(flag, v, why))?,
            "--duration" => {
                let d = parse_duration_ns(v).map_err(|why| bad(flag, v, why))?;
                if d == 0 {
                    return Err(bad(flag, v, "must be positive"));
                }
                duration_ns = Some(d);
            }
            "--ops" => {
                let n: u64 = number(flag, v)?;
                if n == 0 {
                    return Err(bad(flag, v, "must be positive"));
                }
                ops = Some(n);
            }
            "--connections" | "-c" => {
                connections = number(flag, v)?;
                if connections == 0 || connections > CONNECTIONS_MAX {
                    return Err(bad(flag, v, format!("must be 1..={CONNECTIONS_MAX}")));
                }
            }
            "--pipeline" => {
                pipeline = number(flag, v)?;
                if pipeline == 0 || pipeline > PIPELINE_MAX {
                    return Err(bad(flag, v, format!("must be 1..={PIPELINE_MAX}")));
                }
            }
            "--threads" | "-t" => {
                threads = number(flag, v)?;
                if threads == 0 || threads > THREADS_MAX {
                    return Err(bad(flag, v, format!("must be 1..={THREADS_MAX}")));
                }
            }
            "--rate" => {
                let r: f64 = number(flag, v)?;
                if !(r.is_finite() && r > 0.0) {
                    return Err(bad(flag, v, "must be a positive rate"));
                }
                rate = Some(r);
            }
            "--timeout" => {
                timeout_ns = parse_duration_ns(v).map_err(|why| bad(flag, v, why))?;
                if timeout_ns == 0 {
                    return Err(bad(flag, v, "must be positive"));
                }
            }
            "--connect-timeout" => {
                connect_timeout_ns = parse_duration_ns(v).map_err(|why| bad(flag, v, why))?;
                if connect_timeout_ns == 0 {
                    return Err(bad(flag, v, "must be positive"));
                }
            }
            "--seed" => seed = number(flag, v)?,
            "--r" | "--w" | "--dw" | "--n" => {
                let q: u8 = number(flag, v)?;
                if q == 0 {
                    return Err(bad(flag, v, "must be at least 1"));
                }
                match flag {
                    "--r" => quorum.r = Some(q),
                    "--w" => quorum.w = Some(q),
                    "--dw" => quorum.dw = Some(q),
                    _ => quorum.n = Some(q),
                }
            }
            "--json" => json = Some(PathBuf::from(v)),
            "--hdr-log" => hdr_log = Some(PathBuf::from(v)),
            "--hdr-percentiles" => hdr_percentiles = Some(PathBuf::from(v)),
            "--plot" => plot = Some(PathBuf::from(v)),
            _ => return Err(UsageError::UnknownFlag(arg.into())),
        }
        i += 1;
    }

    let target = target.ok_or(UsageError::MissingTarget)?;
    let run = match (duration_ns, ops) {
        (Some(_), Some(_)) => {
            return Err(UsageError::Conflict(
                "give --duration or --ops, not both".into(),
            ))
        }
        (None, Some(n)) => RunLength::Ops(n),
        (Some(d), None) => RunLength::DurationNs(d),
        (None, None) => RunLength::DurationNs(10_000_000_000),
    };
    if quorum != QuorumOverride::default() && target.scheme != Scheme::Dynakv {
        return Err(UsageError::Conflict(
            "--r/--w/--dw/--n apply only to dynakv targets".into(),
        ));
    }
    if let (Some(r), Some(n)) = (quorum.r, quorum.n) {
        if r > n {
            return Err(UsageError::Conflict("--r must not exceed --n".into()));
        }
    }
    if let (Some(w), Some(n)) = (quorum.w, quorum.n) {
        if w > n {
            return Err(UsageError::Conflict("--w must not exceed --n".into()));
        }
    }
    if let (Some(dw), Some(w)) = (quorum.dw, quorum.w.or(quorum.n)) {
        if dw > w {
            return Err(UsageError::Conflict(
                "--dw must not exceed --w (or --n)".into(),
            ));
        }
    }
    if threads > connections {
        return Err(UsageError::Conflict(format!(
            "--threads ({threads}) must not exceed --connections ({connections})"
        )));
    }
    let read_ratio = read_ratio.unwrap_or(workload.default_read_ratio());
    let key_dist = key_dist.unwrap_or(workload.default_key_dist());
    let load = load.unwrap_or(workload.loads_by_default());
    Ok(Config {
        target,
        workload,
        read_ratio,
        keys,
        key_dist,
        value_size,
        load,
        warmup_ns,
        run,
        connections,
        pipeline,
        threads,
        rate,
        timeout_ns,
        connect_timeout_ns,
        seed,
        quorum,
        json,
        hdr_log,
        hdr_percentiles,
        plot,
        progress,
        pin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration_ns("10s"), Ok(10_000_000_000));
        assert_eq!(parse_duration_ns("500ms"), Ok(500_000_000));
        assert_eq!(parse_duration_ns("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_duration_ns("2m"), Ok(120_000_000_000));
        assert_eq!(parse_duration_ns("250us"), Ok(250_000));
        assert_eq!(parse_duration_ns("3"), Ok(3_000_000_000));
        assert_eq!(parse_duration_ns("7ns"), Ok(7));
        assert!(parse_duration_ns("s").is_err());
        assert!(parse_duration_ns("10 parsecs").is_err());
        assert!(parse_duration_ns("1x").is_err());
        assert!(parse_duration_ns("").is_err());
    }

    #[test]
    fn value_sizes_parse_fixed_and_ranges() {
        assert_eq!(parse_value_size("64"), Ok(ValueSize { min: 64, max: 64 }));
        assert_eq!(
            parse_value_size("16-1k"),
            Ok(ValueSize { min: 16, max: 1024 })
        );
        assert!(parse_value_size("100-10").is_err());
        assert!(parse_value_size("abc").is_err());
        assert!(parse_value_size("1000000000").is_err());
    }

    #[test]
    fn targets_parse_with_default_scheme() {
        let t = parse_target("127.0.0.1:7000").expect("target");
        assert_eq!(t.scheme, Scheme::Dynakv);
        assert_eq!(t.addr.port(), 7000);
        assert_eq!(
            parse_target("redis://127.0.0.1:6379").map(|t| t.scheme),
            Ok(Scheme::Redis)
        );
        assert_eq!(
            parse_target("memcache://127.0.0.1:11211").map(|t| t.scheme),
            Ok(Scheme::Memcache)
        );
        assert!(parse_target("http://127.0.0.1:80").is_err());
        assert!(parse_target("redis://nohostport").is_err());
    }

    #[test]
    fn workloads_pick_their_defaults() {
        let c = parse_args(&args("--target redis://127.0.0.1:1 --workload ycsb-d")).expect("ok");
        assert_eq!(c.key_dist, KeyDist::Latest);
        assert!((c.read_ratio - 0.95).abs() < 1e-9);
        assert!(c.load);
        let c = parse_args(&args("--target redis://127.0.0.1:1 --workload put")).expect("ok");
        assert!(!c.load);
        assert_eq!(c.run, RunLength::DurationNs(10_000_000_000));
        let c = parse_args(&args(
            "--target redis://127.0.0.1:1 --workload get --no-load --ops 5 --key-dist zipfian",
        ))
        .expect("ok");
        assert!(!c.load);
        assert_eq!(c.run, RunLength::Ops(5));
        assert_eq!(c.key_dist, KeyDist::Zipfian);
    }

    #[test]
    fn durable_write_quorum_parses_and_is_bounded_by_w() {
        let t = "--target dynakv://127.0.0.1:1 --workload put";
        let c = parse_args(&args(&format!("{t} --dw 1"))).expect("ok");
        assert_eq!(c.quorum.dw, Some(1));
        let c = parse_args(&args(&format!("{t} --w 2 --dw 2"))).expect("ok");
        assert_eq!((c.quorum.w, c.quorum.dw), (Some(2), Some(2)));
        assert!(matches!(
            parse_args(&args(&format!("{t} --w 1 --dw 2"))),
            Err(UsageError::Conflict(_))
        ));
        assert!(matches!(
            parse_args(&args(&format!("{t} --n 1 --dw 2"))),
            Err(UsageError::Conflict(_))
        ));
        assert!(parse_args(&args(&format!("{t} --dw 0"))).is_err());
        assert!(matches!(
            parse_args(&args("--target redis://127.0.0.1:1 --workload put --dw 1")),
            Err(UsageError::Conflict(_))
        ));
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        assert_eq!(
            parse_args(&args("--workload get")).err(),
            Some(UsageError::MissingTarget)
        );
        assert!(matches!(
            parse_args(&args("--target redis://127.0.0.1:1 --frobnicate")),
            Err(UsageError::UnknownFlag(_))
        ));
        assert!(matches!(
            parse_args(&args("--target redis://127.0.0.1:1 --connections")),
            Err(UsageError::MissingValue(_))
        ));
        assert!(matches!(
            parse_args(&args("--target redis://127.0.0.1:1 --connections 0")),
            Err(UsageError::BadValue { .. })
        ));
        assert!(matches!(
            parse_args(&args("--target redis://127.0.0.1:1 --r 2")),
            Err(UsageError::Conflict(_))
        ));
        assert!(matches!(
            parse_args(&args("--target 127.0.0.1:1 --duration 1s --ops 3")),
            Err(UsageError::Conflict(_))
        ));
        assert!(matches!(
            parse_args(&args("--target 127.0.0.1:1 --threads 4 --connections 2")),
            Err(UsageError::Conflict(_))
        ));
        assert_eq!(parse_args(&args("--help")).err(), Some(UsageError::Help));
        let c = parse_args(&args("--target=127.0.0.1:9 --r=1 --n=3")).expect("ok");
        assert_eq!(
            c.quorum,
            QuorumOverride {
                r: Some(1),
                w: None,
                dw: None,
                n: Some(3)
            }
        );
    }
}
