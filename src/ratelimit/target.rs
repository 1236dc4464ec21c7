//! Which Redis deployment holds the shared state, and how to connect to it.
//!
//! One URL names the deployment:
//!
//! - `redis://[user:password@]host:port/db`, `rediss://…` (TLS) or `unix:///path`: one node;
//! - `redis+sentinel://[user:password@]host:port,host:port/service[/db]` (`rediss+sentinel://`
//!   for TLS to the sentinels and the nodes): the sentinels are asked for `service`'s primary,
//!   and asked again whenever the breaker opens, so after a failover writes go to the new
//!   primary (never a replica: a decision must read its own writes);
//! - `redis+cluster://[user:password@]host:port,host:port/` (`rediss+cluster://`): a Cluster;
//!   the redis crate's cluster client learns the slot map from these seeds and follows
//!   `MOVED`/`ASK` itself.
//!
//! The credentials are those of the data nodes (an ACL user, or `:password@` for plain AUTH);
//! sentinels are reached without credentials. TLS trusts the system roots unless a CA file is
//! given, and presents a client certificate when one is given.

use super::TlsFiles;
use std::path::PathBuf;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use redis::{
    ClientTlsConfig, Cmd, ConnectionAddr, IntoConnectionInfo, Pipeline, RedisError, RedisFuture,
    TlsCertificates, TlsMode, Value,
};

impl TlsFiles {
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.cert_file.is_none() && self.key_file.is_none()
    }

    /// Reads the files; `None` when none is set.
    fn load(&self) -> Result<Option<TlsCertificates>, TargetError> {
        if self.is_empty() {
            return Ok(None);
        }
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| TargetError::TlsFile {
                path: path.clone(),
                source,
            })
        };
        let client_tls = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Some(ClientTlsConfig {
                client_cert: read(cert)?,
                client_key: read(key)?,
            }),
            (None, None) => None,
            _ => return Err(TargetError::CertWithoutKey),
        };
        let root_cert = self.ca_file.as_ref().map(read).transpose()?;
        Ok(Some(TlsCertificates {
            client_tls,
            root_cert,
        }))
    }
}

/// Why a URL or its TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{0}")]
    Url(String),
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error("cannot read {}: {source}", path.display())]
    TlsFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a client certificate needs both cert_file and key_file")]
    CertWithoutKey,
    #[error(
        "TLS files are given but the URL is not rediss://, rediss+sentinel:// or rediss+cluster://"
    )]
    TlsWithoutTls,
}

/// Checks a URL and reads its TLS files, as [`RedisStore::new`](super::RedisStore::new) will.
pub(crate) fn check_target(url: &str, tls: &TlsFiles) -> Result<(), TargetError> {
    Target::parse(url, tls).map(drop)
}

/// A parsed URL, ready to connect (cheap to clone).
#[derive(Clone)]
pub(crate) enum Target {
    Node(redis::Client),
    Sentinel(Box<SentinelTarget>),
    Cluster(ClusterClient),
}

#[derive(Clone)]
pub(crate) struct SentinelTarget {
    sentinels: Vec<ConnectionAddr>,
    service: String,
    db: i64,
    username: Option<String>,
    password: Option<String>,
    tls: bool,
    certs: Option<TlsCertificates>,
}

impl std::fmt::Debug for Target {
    // Never prints credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.mode())
    }
}

impl Target {
    /// Parses `url` and reads the TLS files; makes no connection.
    pub(crate) fn parse(url: &str, tls: &TlsFiles) -> Result<Target, TargetError> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            TargetError::Url(
                "no scheme (redis://, rediss://, redis+sentinel://, redis+cluster://, unix://)"
                    .into(),
            )
        })?;
        let (base, secure) = match scheme {
            "redis" | "unix" | "redis+unix" => ("node", false),
            "rediss" => ("node", true),
            "redis+sentinel" => ("sentinel", false),
            "rediss+sentinel" => ("sentinel", true),
            "redis+cluster" => ("cluster", false),
            "rediss+cluster" => ("cluster", true),
            other => {
                return Err(TargetError::Url(format!(
                    "unknown scheme `{other}` (redis, rediss, redis+sentinel, rediss+sentinel, redis+cluster, rediss+cluster, unix)"
                )));
            }
        };
        if !secure && !tls.is_empty() {
            return Err(TargetError::TlsWithoutTls);
        }
        let certs = tls.load()?;
        if base == "node" {
            let client = match certs {
                Some(certs) => redis::Client::build_with_tls(url, certs)?,
                None => redis::Client::open(url)?,
            };
            return Ok(Target::Node(client));
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, authority),
        };
        if hosts.is_empty() || hosts.split(',').any(str::is_empty) {
            return Err(TargetError::Url(
                "no host:port list after the scheme".into(),
            ));
        }
        let node_scheme = if secure { "rediss" } else { "redis" };
        let credentials = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
        // Each host as a one-node URL, so the redis crate does the parsing and decoding.
        let nodes = hosts
            .split(',')
            .map(|host| format!("{node_scheme}://{credentials}{host}/").into_connection_info())
            .collect::<Result<Vec<_>, _>>()?;
        if base == "cluster" {
            if !path.is_empty() {
                return Err(TargetError::Url(
                    "a Cluster has only database 0: nothing may follow the host list".into(),
                ));
            }
            let mut builder = ClusterClientBuilder::new(nodes);
            if let Some(certs) = certs {
                builder = builder.certs(certs);
            }
            return Ok(Target::Cluster(builder.build()?));
        }
        let mut parts = path.split('/').filter(|p| !p.is_empty());
        let service = parts
            .next()
            .ok_or_else(|| {
                TargetError::Url("no service name after the sentinels (…/mymaster)".into())
            })?
            .to_owned();
        let db = match parts.next() {
            None => 0,
            Some(db) => db
                .parse()
                .map_err(|_| TargetError::Url(format!("`{db}` is not a database number")))?,
        };
        if parts.next().is_some() {
            return Err(TargetError::Url(
                "only /service[/db] may follow the sentinels".into(),
            ));
        }
        let first = nodes.first().map(|n| n.redis.clone()).unwrap_or_default();
        let sentinels = nodes
            .into_iter()
            .map(|n| match n.addr {
                // The sentinel client fills in the certificates.
                ConnectionAddr::TcpTls { host, port, .. } => ConnectionAddr::TcpTls {
                    host,
                    port,
                    insecure: false,
                    tls_params: None,
                },
                addr => addr,
            })
            .collect();
        Ok(Target::Sentinel(Box::new(SentinelTarget {
            sentinels,
            service,
            db,
            username: first.username,
            password: first.password,
            tls: secure,
            certs,
        })))
    }

    pub(crate) fn mode(&self) -> &'static str {
        match self {
            Target::Node(_) => "node",
            Target::Sentinel(_) => "sentinel",
            Target::Cluster(_) => "cluster",
        }
    }

    /// One connection attempt (no retries inside: the store's connection task paces them).
    pub(crate) async fn connect(&self, timeout: Duration) -> Result<Connection, RedisError> {
        match self {
            Target::Node(client) => manager(client.clone(), timeout).await,
            Target::Sentinel(sentinel) => {
                let client = sentinel.primary().await?;
                manager(client, timeout).await
            }
            Target::Cluster(client) => {
                let config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(timeout);
                Ok(Connection::Cluster(
                    client.get_async_connection_with_config(config).await?,
                ))
            }
        }
    }
}

impl SentinelTarget {
    /// Asks the sentinels (in order) for the current primary; the redis crate checks that the
    /// address it is given answers `ROLE` as a primary.
    async fn primary(&self) -> Result<redis::Client, RedisError> {
        let mut builder = SentinelClientBuilder::new(
            self.sentinels.clone(),
            self.service.clone(),
            SentinelServerType::Master,
        )?
        .set_client_to_redis_db(self.db);
        if let Some(username) = &self.username {
            builder = builder.set_client_to_redis_username(username.clone());
        }
        if let Some(password) = &self.password {
            builder = builder.set_client_to_redis_password(password.clone());
        }
        if self.tls {
            builder = builder
                .set_client_to_redis_tls_mode(TlsMode::Secure)
                .set_client_to_sentinel_tls_mode(TlsMode::Secure);
            if let Some(certs) = &self.certs {
                builder = builder
                    .set_client_to_redis_certificates(certs.clone())
                    .set_client_to_sentinel_certificates(certs.clone());
            }
        }
        builder.build()?.async_get_client().await
    }
}

async fn manager(client: redis::Client, timeout: Duration) -> Result<Connection, RedisError> {
    // No retries inside the manager: calls waiting on a retrying manager would only time
    // out, and the connection task and the breaker already pace the retries. (After an I/O
    // error the manager still reconnects by itself, once per failed call.)
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(timeout)
        .set_number_of_retries(0);
    Ok(Connection::Node(
        ConnectionManager::new_with_config(client, config).await?,
    ))
}

/// A connection to whichever deployment: one node (or the primary a sentinel named), or a
/// Cluster routing each command by its key's slot.
#[derive(Clone)]
pub(crate) enum Connection {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Node(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Node(c) => c.req_packed_commands(cmd, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Node(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<Target, TargetError> {
        Target::parse(url, &TlsFiles::default())
    }

    #[test]
    fn each_deployment_parses() {
        for (url, mode) in [
            ("redis://127.0.0.1:6379/", "node"),
            ("redis://app:s%40cret@127.0.0.1:6379/2", "node"),
            ("rediss://redis.example:6380/", "node"),
            ("unix:///run/redis/redis.sock", "node"),
            (
                "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster",
                "sentinel",
            ),
            (
                "redis+sentinel://lw:pw@10.0.0.1:26379/mymaster/3",
                "sentinel",
            ),
            ("rediss+sentinel://10.0.0.1:26379/mymaster", "sentinel"),
            ("redis+cluster://10.0.0.1:7000,10.0.0.2:7001/", "cluster"),
            ("rediss+cluster://lw:pw@10.0.0.1:7000", "cluster"),
        ] {
            match parse(url) {
                Ok(target) => assert_eq!(target.mode(), mode, "{url}"),
                Err(e) => panic!("{url}: {e}"),
            }
        }
    }

    #[test]
    fn sentinel_credentials_go_to_the_nodes() {
        let Ok(Target::Sentinel(s)) = parse("redis+sentinel://lw:p%40ss@h1:1,h2:2/svc/4") else {
            panic!("not a sentinel target");
        };
        assert_eq!(s.service, "svc");
        assert_eq!(s.db, 4);
        assert_eq!(s.username.as_deref(), Some("lw"));
        assert_eq!(s.password.as_deref(), Some("p@ss"));
        assert_eq!(s.sentinels.len(), 2);
    }

    #[test]
    fn bad_urls_say_why() {
        for (url, why) in [
            ("127.0.0.1:6379", "no scheme"),
            ("http://h:1/", "unknown scheme"),
            ("redis+sentinel://h:1", "no service name"),
            ("redis+sentinel://h:1/svc/x", "not a database number"),
            ("redis+sentinel:///svc", "no host:port"),
            ("redis+cluster://h:1,,h:2/", "no host:port"),
            ("redis+cluster://h:1/2", "only database 0"),
        ] {
            match parse(url) {
                Ok(_) => panic!("{url} accepted"),
                Err(e) => assert!(e.to_string().contains(why), "{url}: {e}"),
            }
        }
        let tls = TlsFiles {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsFiles::default()
        };
        assert!(matches!(
            Target::parse("redis://h:1/", &tls),
            Err(TargetError::TlsWithoutTls)
        ));
        assert!(matches!(
            Target::parse("rediss://h:1/", &tls),
            Err(TargetError::TlsFile { .. })
        ));
        let half = TlsFiles {
            cert_file: Some("/nonexistent/c.pem".into()),
            ..TlsFiles::default()
        };
        assert!(matches!(
            Target::parse("rediss://h:1/", &half),
            Err(TargetError::CertWithoutKey)
        ));
    }
}
