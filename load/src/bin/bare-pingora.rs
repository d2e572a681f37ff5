//! `bare-pingora --listen 127.0.0.1:P --upstream 127.0.0.1:U`: the throughput
//! bench's baseline — Pingora's proxy with the default `ProxyHttp` behaviour
//! (only `upstream_peer` is written) and Pingora's default server settings
//! apart from the thread count. It shows what Breakwater costs on top of the
//! framework it is built on.

use async_trait::async_trait;
use clap::Parser;
use pingora::prelude::*;
use pingora::server::configuration::{Opt, ServerConf};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    listen: String,
    #[arg(long)]
    upstream: String,
    /// Worker threads of the proxy service.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Directory for the pid file and upgrade socket Pingora insists on.
    #[arg(long, default_value = "/tmp")]
    run_dir: String,
}

struct Bare {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() {
    let args = Args::parse();
    let conf = ServerConf {
        threads: args.threads.max(1),
        pid_file: format!("{}/bare-pingora.pid", args.run_dir),
        upgrade_sock: format!("{}/bare-pingora.sock", args.run_dir),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(
        &server.configuration,
        Bare {
            upstream: args.upstream,
        },
    );
    proxy.add_tcp(&args.listen);
    server.add_service(proxy);
    server.run_forever();
}
