//! The connection to the fleet's Redis: standalone or Redis Cluster, opened
//! lazily, every call bounded by `cluster.timeout`, dropped on error and
//! reopened on the next use (so a restarted Redis is picked up on its own).

use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, Value};

use crate::config::fleet_file::{FleetConfig, RedisTarget};

/// An open connection. Both kinds multiplex, so clones share it and calls
/// on clones run concurrently (one script call per shard at once).
#[derive(Clone)]
pub enum Handle {
    Standalone(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Handle {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Handle::Standalone(c) => c.req_packed_command(cmd),
            Handle::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Handle::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Handle::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Handle::Standalone(c) => c.get_db(),
            Handle::Cluster(c) => c.get_db(),
        }
    }
}

/// Why a call failed: Redis's error, or no answer within the timeout.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("unexpected reply: {0}")]
    Reply(String),
}

/// Opens connections to the fleet's Redis.
pub struct Link {
    target: RedisTarget,
    timeout: Duration,
    conn: Option<Handle>,
}

impl Link {
    pub fn new(cfg: &FleetConfig) -> Self {
        Self {
            target: cfg.target.clone(),
            timeout: cfg.timeout,
            conn: None,
        }
    }

    async fn open(&self) -> Result<Handle, RedisError> {
        match &self.target {
            RedisTarget::Standalone(url) => {
                let client = redis::Client::open(url.as_str())?;
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout));
                Ok(Handle::Standalone(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                ))
            }
            RedisTarget::Cluster(nodes) => {
                let client = redis::cluster::ClusterClient::builder(nodes.clone())
                    .connection_timeout(self.timeout)
                    .response_timeout(self.timeout)
                    .retries(1)
                    .build()?;
                Ok(Handle::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// The open connection, opening it first if needed (within the timeout).
    pub async fn handle(&mut self) -> Result<Handle, LinkError> {
        if let Some(h) = &self.conn {
            return Ok(h.clone());
        }
        let opened = self.within(self.open()).await?;
        self.conn = Some(opened.clone());
        Ok(opened)
    }

    /// Drops the connection after a failed call: the next use reopens it.
    pub fn reset(&mut self) {
        self.conn = None;
    }

    /// Awaits `call` for at most the configured timeout.
    pub async fn within<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, RedisError>>,
    ) -> Result<T, LinkError> {
        bounded(self.timeout, call).await
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// Awaits `call` for at most `timeout`.
pub async fn bounded<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, RedisError>>,
) -> Result<T, LinkError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(LinkError::Redis(e)),
        Err(_) => Err(LinkError::Timeout(timeout)),
    }
}
