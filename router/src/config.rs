//! The router's TOML config: plain data, defaults in one place, validated as a whole.
//!
//! [`load`] parses and validates a file and reports every problem at once, each with the file,
//! the field path (`shards[2].replicas[0].url`) and, where the parser knows it, the line.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// A config that could not be read, parsed or validated.
#[derive(Debug, thiserror::Error)]
#[error("{}: {}", file.display(), problems.join("; "))]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// Every problem found, each naming its field (and line when known).
    pub problems: Vec<String>,
}

/// The whole config file.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listeners, region and data directory.
    #[serde(default)]
    pub server: ServerConfig,
    /// Replica choice, write consistency and deadlines.
    #[serde(default)]
    pub routing: RoutingConfig,
    /// The shards; each owns a part of every collection.
    #[serde(default)]
    pub shards: Vec<ShardConfig>,
    /// The result cache; absent means no cache.
    pub cache: Option<CacheConfig>,
}

/// `[server]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Client API address.
    pub listen: String,
    /// `/metrics` and `/admin/*` address.
    pub admin: String,
    /// This router's region, for the geo policy.
    pub region: String,
    /// Where built-in shards keep their data.
    pub data_dir: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:6333".into(),
            admin: "127.0.0.1:9901".into(),
            region: "local".into(),
            data_dir: PathBuf::from("./data"),
        }
    }
}

/// How a read picks one replica of a shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadPolicy {
    /// Fewest requests in flight (power of two choices).
    #[default]
    LeastConn,
    /// Weighted round robin.
    RoundRobin,
    /// Replicas in the caller's region first, others when none there is healthy.
    Geo,
}

/// How many replicas must acknowledge a write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteConsistency {
    /// One replica.
    One,
    /// A majority of the shard's replicas.
    #[default]
    Quorum,
    /// Every replica.
    All,
}

impl WriteConsistency {
    /// Acknowledgements needed out of `replicas`.
    pub fn required(self, replicas: usize) -> usize {
        match self {
            WriteConsistency::One => 1.min(replicas),
            WriteConsistency::Quorum => replicas / 2 + 1,
            WriteConsistency::All => replicas,
        }
    }
}

/// `[routing]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Default replica choice for reads.
    pub read_policy: ReadPolicy,
    /// Acknowledgements a write needs.
    pub write_consistency: WriteConsistency,
    /// Deadline for one request end to end, in milliseconds.
    pub timeout_ms: u64,
    /// Answer with the shards that did respond (marked `partial`) instead of failing.
    pub allow_partial: bool,
    /// Per-collection overrides of the read policy.
    pub collections: BTreeMap<String, CollectionRouting>,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            read_policy: ReadPolicy::default(),
            write_consistency: WriteConsistency::default(),
            timeout_ms: 2000,
            allow_partial: false,
            collections: BTreeMap::new(),
        }
    }
}

/// `[routing.collections.NAME]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionRouting {
    /// Replica choice for this collection's reads.
    pub read_policy: ReadPolicy,
}

/// `[[shards]]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShardConfig {
    /// A stable id: point placement depends on it.
    pub name: Spanned<String>,
    /// An in-process shard (the shardd library) instead of remote replicas.
    #[serde(default)]
    pub builtin: bool,
    /// The shard's replicas.
    #[serde(default)]
    pub replicas: Vec<ReplicaConfig>,
}

/// One replica of a shard.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaConfig {
    /// `http://host:port` of a shardd.
    pub url: Spanned<String>,
    /// The replica's region, for the geo policy.
    #[serde(default)]
    pub region: Option<String>,
    /// Share of round-robin traffic.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// `[cache]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// In-process cache size.
    pub l1_max_bytes: u64,
    /// Seconds a result stays cached.
    pub ttl_s: u64,
    /// Redis for the shared second tier; absent means in-process only.
    pub redis_url: Option<String>,
}

impl Config {
    /// The config used without `--config`: one built-in shard and the default server settings.
    pub fn embedded() -> Config {
        Config {
            shards: vec![ShardConfig {
                name: Spanned::new(0..0, "local".into()),
                builtin: true,
                replicas: Vec::new(),
            }],
            ..Config::default()
        }
    }

    /// The config as `/admin/config` shows it: credentials in URLs replaced by `***`.
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        if let Some(cache) = c.cache.as_mut() {
            cache.redis_url = cache.redis_url.as_deref().map(redact_url);
        }
        for shard in &mut c.shards {
            for r in &mut shard.replicas {
                let span = r.url.span();
                r.url = Spanned::new(span, redact_url(r.url.get_ref()));
            }
        }
        c
    }

    /// Every problem of the config, each with its field path and line when known.
    pub fn problems(&self, source: &str) -> Vec<String> {
        let line = |span: std::ops::Range<usize>| -> String {
            if span.end == 0 || span.start > source.len() {
                String::new()
            } else {
                format!(" (line {})", source[..span.start].matches('\n').count() + 1)
            }
        };
        let mut out = Vec::new();
        for (field, addr) in [
            ("server.listen", &self.server.listen),
            ("server.admin", &self.server.admin),
        ] {
            if addr.parse::<SocketAddr>().is_err() {
                out.push(format!("{field}: `{addr}` is not an IP:port address"));
            }
        }
        if self.server.listen == self.server.admin && !self.server.listen.ends_with(":0") {
            out.push("server.admin: must differ from server.listen".into());
        }
        if !(1..=600_000).contains(&self.routing.timeout_ms) {
            out.push(format!(
                "routing.timeout_ms: must be between 1 and 600000, got {}",
                self.routing.timeout_ms
            ));
        }
        if self.shards.is_empty() {
            out.push("shards: at least one [[shards]] entry is needed".into());
        }
        let mut names = HashSet::new();
        let mut urls = HashSet::new();
        for (i, shard) in self.shards.iter().enumerate() {
            let at = format!("shards[{i}]");
            let name = shard.name.get_ref();
            if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                out.push(format!(
                    "{at}.name{}: `{name}` must be non-empty without spaces",
                    line(shard.name.span())
                ));
            } else if !names.insert(name.clone()) {
                out.push(format!(
                    "{at}.name{}: `{name}` is used by another shard",
                    line(shard.name.span())
                ));
            }
            match (shard.builtin, shard.replicas.is_empty()) {
                (true, false) => out.push(format!(
                    "{at}.replicas{}: a builtin shard has no replicas",
                    line(shard.name.span())
                )),
                (false, true) => out.push(format!(
                    "{at}.replicas{}: a remote shard needs at least one replica",
                    line(shard.name.span())
                )),
                _ => {}
            }
            for (j, r) in shard.replicas.iter().enumerate() {
                let at = format!("{at}.replicas[{j}]");
                let url = r.url.get_ref();
                if let Err(why) = check_url(url) {
                    out.push(format!("{at}.url{}: `{url}` {why}", line(r.url.span())));
                } else if !urls.insert(url.trim_end_matches('/').to_string()) {
                    out.push(format!(
                        "{at}.url{}: `{url}` is listed twice",
                        line(r.url.span())
                    ));
                }
                if r.weight == 0 {
                    out.push(format!(
                        "{at}.weight{}: must be at least 1",
                        line(r.url.span())
                    ));
                }
            }
        }
        if let Some(cache) = &self.cache {
            if cache.l1_max_bytes == 0 {
                out.push("cache.l1_max_bytes: must be greater than 0".into());
            }
            if cache.ttl_s == 0 {
                out.push("cache.ttl_s: must be greater than 0".into());
            }
            if let Some(url) = &cache.redis_url {
                if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                    out.push(format!(
                        "cache.redis_url: `{}` must start with redis:// or rediss://",
                        redact_url(url)
                    ));
                }
            }
        }
        out
    }
}

/// Accepts `http://host:port` (an optional trailing `/`); shardd speaks plain HTTP.
fn check_url(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("must start with http://")?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('/') || authority.contains('@') {
        return Err("must be http://host:port without a path or credentials");
    }
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or("needs an explicit :port")?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err("needs a host and a port between 1 and 65535");
    }
    Ok(())
}

/// Replaces the password (or lone user) in `scheme://user:password@host` with `***`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!(
                "{}{user}{}***{}",
                &url[..s + 3],
                if user.is_empty() { "" } else { ":" },
                &url[at..]
            )
        }
        _ => url.to_string(),
    }
}

/// Parses and validates a config file.
pub fn load(path: &Path) -> Result<(Config, String), ConfigError> {
    let fail = |problems: Vec<String>| ConfigError {
        file: path.to_path_buf(),
        problems,
    };
    let source =
        std::fs::read_to_string(path).map_err(|e| fail(vec![format!("cannot read: {e}")]))?;
    let config = parse(&source).map_err(fail)?;
    Ok((config, source))
}

/// Parses and validates config text.
pub fn parse(source: &str) -> Result<Config, Vec<String>> {
    let config: Config =
        toml::from_str(source).map_err(|e| vec![e.to_string().trim().replace('\n', " ")])?;
    match config.problems(source) {
        problems if problems.is_empty() => Ok(config),
        problems => Err(problems),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = r#"
[server]
listen = "127.0.0.1:6333"
admin = "127.0.0.1:9901"
region = "eu-west"

[routing]
read_policy = "geo"
write_consistency = "quorum"
timeout_ms = 1500

[routing.collections.docs]
read_policy = "round_robin"

[[shards]]
name = "s0"
replicas = [
  { url = "http://127.0.0.1:7001", region = "eu-west", weight = 2 },
  { url = "http://127.0.0.1:7002", region = "us-east" },
]

[[shards]]
name = "local"
builtin = true

[cache]
l1_max_bytes = 1048576
ttl_s = 60
redis_url = "redis://user:hunter2@127.0.0.1:6379"
"#;

    #[test]
    fn a_full_config_parses_with_defaults_filled() {
        let c = parse(CLUSTER).unwrap();
        assert_eq!(c.routing.read_policy, ReadPolicy::Geo);
        assert_eq!(
            c.routing.collections["docs"].read_policy,
            ReadPolicy::RoundRobin
        );
        assert_eq!(c.shards[0].replicas[1].weight, 1);
        assert!(c.shards[1].builtin);
        assert_eq!(c.server.data_dir, PathBuf::from("./data"));
    }

    #[test]
    fn every_problem_is_reported_with_its_path_and_line() {
        let bad = r#"
[routing]
timeout_ms = 0

[[shards]]
name = "s0"
replicas = [{ url = "https://x:1" }, { url = "http://a:7001", weight = 0 }]

[[shards]]
name = "s0"
builtin = true
replicas = [{ url = "http://a:7001" }]
"#;
        let problems = parse(bad).unwrap_err();
        let all = problems.join("\n");
        for needle in [
            "routing.timeout_ms",
            "shards[0].replicas[0].url (line 7): `https://x:1` must start with http://",
            "shards[0].replicas[1].weight",
            "shards[1].name (line 10): `s0` is used by another shard",
            "shards[1].replicas (line 10): a builtin shard has no replicas",
            "shards[1].replicas[0].url (line 12): `http://a:7001` is listed twice",
        ] {
            assert!(all.contains(needle), "missing `{needle}` in:\n{all}");
        }
    }

    #[test]
    fn unknown_keys_and_syntax_errors_name_the_line() {
        let err = parse("[server]\nlisten = \"127.0.0.1:1\"\nlisen = \"x\"\n")
            .unwrap_err()
            .join("");
        assert!(
            err.contains("line 3") && err.contains("unknown field `lisen`"),
            "{err}"
        );
        let err = parse("[[shards]\nname = 1").unwrap_err().join("");
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn the_embedded_default_is_valid_and_secrets_are_redacted() {
        assert!(Config::embedded().problems("").is_empty());
        let c = parse(CLUSTER).unwrap().redacted();
        assert_eq!(
            c.cache.unwrap().redis_url.unwrap(),
            "redis://user:***@127.0.0.1:6379"
        );
        assert_eq!(redact_url("redis://:pw@h:1"), "redis://***@h:1");
        assert_eq!(redact_url("http://h:1"), "http://h:1");
    }

    #[test]
    fn the_example_configs_are_valid_and_embedded_toml_is_the_default() {
        for (name, text) in [
            ("embedded", include_str!("../../config/embedded.toml")),
            ("local-3x2", include_str!("../../config/local-3x2.toml")),
            ("two-region", include_str!("../../config/two-region.toml")),
        ] {
            assert!(
                parse(text).is_ok(),
                "config/{name}.toml: {:?}",
                parse(text).err()
            );
        }
        let written =
            serde_json::to_value(parse(include_str!("../../config/embedded.toml")).unwrap())
                .unwrap();
        assert_eq!(written, serde_json::to_value(Config::embedded()).unwrap());
    }

    #[test]
    fn quorum_is_a_majority() {
        assert_eq!(WriteConsistency::Quorum.required(2), 2);
        assert_eq!(WriteConsistency::Quorum.required(3), 2);
        assert_eq!(WriteConsistency::One.required(3), 1);
        assert_eq!(WriteConsistency::All.required(3), 3);
    }
}
