//! The `dynakv` command: the server and a scriptable client.
//!
//! The command line is a contract that tests and users script against (see
//! README.md): exit status 0 only on success, one clear line on stderr on
//! failure, and `--json` output of exactly one line.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine;
use dynakv::client::{Client, ClientOptions};
use dynakv::protocol::{Quorum, R_ALL};

const USAGE: &str = "usage:
  dynakv server [--config FILE] [--data-dir DIR] [--listen IP:PORT] [--shards N] [--OPTION VALUE ...]
  dynakv put KEY VALUE [--context TOKEN] [--w N] [--dw N] [--base64] [--node IP:PORT] [--json]
  dynakv get KEY [--r N|all] [--base64] [--node IP:PORT] [--json]
  dynakv del KEY --context TOKEN [--w N] [--dw N] [--node IP:PORT]
  dynakv ping [--node IP:PORT] [--json]
  dynakv admin join --node NEW --cluster MEMBER [--stage]   (internode addresses: IP:PORT of shard 0)
  dynakv admin leave [--node ADDR] [--member ADDR] [--stage] [--wait [--wait-s S]]
  dynakv admin weight --weight W [--node ADDR] [--member ADDR] [--stage]
  dynakv admin plan|commit|clear [--node ADDR] [--json]
  dynakv admin where KEY [--node ADDR] [--json]
  dynakv admin ring [--node ADDR] [--json]
  dynakv admin status [--node ADDR] [--all] [--json]
  dynakv admin hotkeys [--node ADDR] [--json]
  dynakv admin aae [--node ADDR] [--json]
  (admin: --cluster-secret-file PATH or $DYNAKV_CLUSTER_SECRET_FILE when the cluster has a secret)
common: --node defaults to $DYNAKV_NODE or 127.0.0.1:7000 (admin: $DYNAKV_ADMIN_NODE or 127.0.0.1:7100); --timeout-ms defaults to 5000.
server options and their defaults: docs/configuration.md";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    let result = match command.as_str() {
        "server" => server(rest),
        "put" | "get" | "del" | "delete" | "ping" => client_command(command, rest),
        "admin" => admin_command(rest),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(CliError::Usage(format!("unknown command '{other}'"))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Usage(message)) => {
            eprintln!("dynakv: {message}\n{USAGE}");
            ExitCode::from(2)
        }
        Err(CliError::Failed(message)) => {
            eprintln!("dynakv: {message}");
            ExitCode::from(1)
        }
    }
}

enum CliError {
    /// The command line itself is wrong (exit 2).
    Usage(String),
    /// The command ran and failed (exit 1).
    Failed(String),
}

fn server(args: &[String]) -> Result<(), CliError> {
    let config = dynakv::config::ServerConfig::from_args(args)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    dynakv::runtime::run(config).map_err(|e| CliError::Failed(e.to_string()))
}

/// Parsed client flags: positional arguments and `--name value` pairs.
struct Flags {
    positional: Vec<String>,
    options: Vec<(String, Option<String>)>,
}

const BOOLEAN_FLAGS: &[&str] = &["json", "base64", "stage", "wait", "all"];
const VALUE_FLAGS: &[&str] = &[
    "node",
    "context",
    "r",
    "w",
    "dw",
    "timeout-ms",
    "cluster",
    "member",
    "weight",
    "wait-s",
];

impl Flags {
    fn parse(args: &[String]) -> Result<Flags, CliError> {
        let mut flags = Flags {
            positional: Vec::new(),
            options: Vec::new(),
        };
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            if let Some(name) = arg.strip_prefix("--") {
                if BOOLEAN_FLAGS.contains(&name) {
                    flags.options.push((name.to_string(), None));
                } else if VALUE_FLAGS.contains(&name) {
                    let value = args
                        .get(i + 1)
                        .ok_or_else(|| CliError::Usage(format!("{arg} needs a value")))?;
                    flags.options.push((name.to_string(), Some(value.clone())));
                    i += 1;
                } else {
                    return Err(CliError::Usage(format!("unknown flag {arg}")));
                }
            } else {
                flags.positional.push(arg.clone());
            }
            i += 1;
        }
        Ok(flags)
    }

    fn has(&self, name: &str) -> bool {
        self.options.iter().any(|(n, _)| n == name)
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    fn count(&self, name: &str) -> Result<Option<u8>, CliError> {
        match self.value(name) {
            None => Ok(None),
            Some("all") if name == "r" => Ok(Some(R_ALL)),
            Some(v) => match v.parse::<u8>() {
                Ok(n) if n > 0 || name == "dw" => Ok(Some(n)),
                _ => Err(CliError::Usage(format!(
                    "--{name} must be a number from 1 to 254{}",
                    if name == "r" { " or 'all'" } else { "" }
                ))),
            },
        }
    }
}

/// `dynakv admin …`: one request over a node's internode port.
fn admin_command(args: &[String]) -> Result<(), CliError> {
    use dynakv::runtime::admin::{admin_request, AdminRequest};
    let flags = Flags::parse(args)?;
    let parse_addr = |text: &str| -> Result<SocketAddr, CliError> {
        text.to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| CliError::Usage(format!("bad address '{text}'")))
    };
    let node_text = flags
        .value("node")
        .map(str::to_string)
        .or_else(|| std::env::var("DYNAKV_ADMIN_NODE").ok())
        .unwrap_or_else(|| "127.0.0.1:7100".into());
    let node = parse_addr(&node_text)?;
    let timeout_ms: u64 = match flags.value("timeout-ms") {
        None => 5000,
        Some(v) => v
            .parse()
            .map_err(|_| CliError::Usage("--timeout-ms must be a number".into()))?,
    };
    let request = match flags.positional.first().map(String::as_str) {
        Some("status") => AdminRequest::Status,
        Some("ring") => AdminRequest::Ring,
        Some("hotkeys") => AdminRequest::HotKeys,
        Some("leave") => AdminRequest::Leave {
            target: flags.value("member").map(parse_addr).transpose()?,
            stage: flags.has("stage"),
        },
        Some("weight") => AdminRequest::Weight {
            target: flags.value("member").map(parse_addr).transpose()?,
            weight: flags
                .value("weight")
                .ok_or_else(|| CliError::Usage("admin weight needs --weight W".into()))?
                .parse()
                .map_err(|_| CliError::Usage("--weight must be a number".into()))?,
            stage: flags.has("stage"),
        },
        Some("plan") => AdminRequest::Plan,
        Some("commit") => AdminRequest::Commit,
        Some("clear") => AdminRequest::Clear,
        Some("where") => AdminRequest::Where {
            key: flags
                .positional
                .get(1)
                .cloned()
                .ok_or_else(|| CliError::Usage("admin where needs a KEY".into()))?,
        },
        Some("aae") => AdminRequest::Aae,
        Some("join") => {
            let member = flags
                .value("cluster")
                .ok_or_else(|| CliError::Usage("admin join needs --cluster MEMBER".into()))?;
            AdminRequest::Join {
                member: parse_addr(member)?,
            }
        }
        Some(other) => return Err(CliError::Usage(format!("unknown admin command '{other}'"))),
        None => return Err(CliError::Usage("admin needs a command".into())),
    };
    let secret_file = flags
        .value("cluster-secret-file")
        .map(str::to_string)
        .or_else(|| std::env::var("DYNAKV_CLUSTER_SECRET_FILE").ok())
        .filter(|path| !path.is_empty());
    let secret = match secret_file {
        Some(path) => Some(
            dynakv::runtime::auth::ClusterSecret::load(std::path::Path::new(&path))
                .map_err(CliError::Failed)?,
        ),
        None => None,
    };
    let staged_join = match &request {
        AdminRequest::Join { member } if flags.has("stage") => Some(*member),
        _ => None,
    };
    let text = if let Some(member) = staged_join {
        dynakv::runtime::admin::stage_join(
            node,
            member,
            Duration::from_millis(timeout_ms),
            secret.as_ref(),
        )
    } else if request == AdminRequest::Status && flags.has("all") {
        dynakv::runtime::admin::cluster_status(
            node,
            flags.has("json"),
            Duration::from_millis(timeout_ms),
            secret.as_ref(),
        )
    } else {
        admin_request(
            node,
            &request,
            flags.has("json"),
            Duration::from_millis(timeout_ms),
            secret.as_ref(),
        )
    }
    .map_err(CliError::Failed)?;
    if text.ends_with('\n') {
        print!("{text}");
    } else {
        println!("{text}");
    }
    let leaving_self = matches!(
        request,
        AdminRequest::Leave {
            target: None,
            stage: false
        }
    );
    if leaving_self && flags.has("wait") {
        // Drain: wait until the node handed everything off and left the
        // member list; then it can be stopped.
        let wait_s: u64 = match flags.value("wait-s") {
            None => 600,
            Some(v) => v
                .parse()
                .map_err(|_| CliError::Usage("--wait-s must be a number".into()))?,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(wait_s);
        loop {
            let status = admin_request(
                node,
                &AdminRequest::Status,
                true,
                Duration::from_millis(timeout_ms),
                secret.as_ref(),
            )
            .map_err(CliError::Failed)?;
            if status.contains("\"status\": \"removed\"") {
                println!("drained: the node handed its data off and left; it can be stopped");
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(CliError::Failed(format!(
                    "the node did not finish its handoff within {wait_s} s"
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}

fn client_command(command: &str, args: &[String]) -> Result<(), CliError> {
    let flags = Flags::parse(args)?;
    let node_text = flags
        .value("node")
        .map(str::to_string)
        .or_else(|| std::env::var("DYNAKV_NODE").ok())
        .unwrap_or_else(|| "127.0.0.1:7000".into());
    let node: SocketAddr = node_text
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            CliError::Usage(format!("--node '{node_text}' is not an IP:PORT address"))
        })?;
    let timeout_ms: u64 = match flags.value("timeout-ms") {
        None => 5000,
        Some(v) => v
            .parse()
            .map_err(|_| CliError::Usage("--timeout-ms must be a number".into()))?,
    };
    let quorum = Quorum {
        r: flags.count("r")?,
        w: flags.count("w")?,
        dw: flags.count("dw")?,
        n: None,
    };
    let base64 = flags.has("base64");
    let json = flags.has("json");
    let expect = |n: usize, what: &str| {
        if flags.positional.len() == n {
            Ok(())
        } else {
            Err(CliError::Usage(format!("{command} takes {what}")))
        }
    };
    let options = ClientOptions {
        timeout: Duration::from_millis(timeout_ms),
        ..ClientOptions::default()
    };
    let connect =
        || Client::connect(node, options.clone()).map_err(|e| CliError::Failed(e.to_string()));
    match command {
        "ping" => {
            expect(0, "no arguments")?;
            let started = std::time::Instant::now();
            connect()?
                .ping()
                .map_err(|e| CliError::Failed(e.to_string()))?;
            let micros = started.elapsed().as_micros();
            if json {
                println!(
                    "{{\"node\": {}, \"ok\": true, \"micros\": {micros}}}",
                    dynakv::json::string(&node.to_string())
                );
            } else {
                println!("pong from {node} in {micros} µs");
            }
        }
        "get" => {
            expect(1, "one KEY")?;
            let key = decode_arg(&flags.positional[0], base64, "KEY")?;
            let got = connect()?
                .get_with(&key, quorum)
                .map_err(|e| CliError::Failed(e.to_string()))?;
            let token = encode_token(&got.context);
            let values: Vec<String> = got
                .values
                .iter()
                .map(|v| show_value(v, base64))
                .collect::<Result<_, _>>()?;
            if json {
                let values: Vec<String> = values.iter().map(|v| dynakv::json::string(v)).collect();
                println!(
                    "{{\"key\": {}, \"found\": {}, \"context\": {}, \"values\": [{}]}}",
                    dynakv::json::string(&flags.positional[0]),
                    got.found,
                    dynakv::json::string(&token),
                    values.join(", ")
                );
            } else if !got.found {
                println!("(not found)\ncontext: {token}");
            } else {
                for value in &values {
                    println!("{value}");
                }
                println!("context: {token}");
            }
        }
        "put" => {
            expect(2, "KEY and VALUE")?;
            let key = decode_arg(&flags.positional[0], base64, "KEY")?;
            let value = decode_arg(&flags.positional[1], base64, "VALUE")?;
            let context = flags.value("context").map(decode_token).transpose()?;
            let new_context = connect()?
                .put(&key, &value, context.as_deref(), quorum)
                .map_err(|e| CliError::Failed(e.to_string()))?;
            let token = encode_token(&new_context);
            if json {
                println!("{{\"context\": {}}}", dynakv::json::string(&token));
            } else {
                println!("ok\ncontext: {token}");
            }
        }
        _ => {
            expect(1, "one KEY")?;
            let key = decode_arg(&flags.positional[0], base64, "KEY")?;
            let context =
                decode_token(flags.value("context").ok_or_else(|| {
                    CliError::Usage("del needs --context TOKEN (from get)".into())
                })?)?;
            connect()?
                .delete(&key, &context, quorum)
                .map_err(|e| CliError::Failed(e.to_string()))?;
            if json {
                println!("{{\"deleted\": true}}");
            } else {
                println!("ok");
            }
        }
    }
    Ok(())
}

fn decode_arg(text: &str, base64: bool, what: &str) -> Result<Vec<u8>, CliError> {
    if base64 {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| CliError::Usage(format!("{what} is not valid base64: {e}")))
    } else {
        Ok(text.as_bytes().to_vec())
    }
}

fn show_value(value: &[u8], base64: bool) -> Result<String, CliError> {
    if base64 {
        return Ok(base64::engine::general_purpose::STANDARD.encode(value));
    }
    String::from_utf8(value.to_vec())
        .map_err(|_| CliError::Failed("a value is not UTF-8 text; use --base64".into()))
}

/// Contexts travel as URL-safe base64 text so they survive shells and JSON.
fn encode_token(context: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(context)
}

fn decode_token(token: &str) -> Result<Vec<u8>, CliError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim())
        .map_err(|_| {
            CliError::Failed("bad context: the token is not one that `dynakv get` printed".into())
        })
}
