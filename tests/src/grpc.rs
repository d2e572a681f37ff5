//! A real gRPC upstream and client (tonic) for the integration tests.
//!
//! The service `test.Echo` is written by hand, the way tonic's generated
//! code is, so the harness needs no `protoc`: `Unary` echoes, `ServerStream`
//! sends `n` messages (and, for the text `stall`, then never ends: tonic
//! does not enforce `grpc-timeout`), `ClientStream` joins what it got,
//! `Bidi` echoes each message. The upstream counts calls, records each call's `grpc-timeout`,
//! and can be told to fail every call with a gRPC status.

// tonic's service traits fix the error type to `Status` (176 bytes).
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use http::uri::PathAndQuery;
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::codec::ProstCodec;
use tonic::server::{
    ClientStreamingService, Grpc, NamedService, ServerStreamingService, StreamingService,
    UnaryService,
};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

/// The one message type: text and a number.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    #[prost(string, tag = "1")]
    pub text: String,
    #[prost(uint32, tag = "2")]
    pub n: u32,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Status>> + Send>>;
type MsgStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send>>;

#[derive(Default)]
struct State {
    calls: AtomicUsize,
    /// A gRPC code every call fails with; 0 for none.
    fail_code: AtomicI32,
    timeouts: Mutex<Vec<Option<String>>>,
}

impl State {
    /// Books a call; the forced failure, if any.
    fn enter<T>(&self, req: &Request<T>) -> Result<(), Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let timeout = req
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.timeouts.lock().unwrap().push(timeout);
        match self.fail_code.load(Ordering::SeqCst) {
            0 => Ok(()),
            code => Err(Status::new(tonic::Code::from(code), "told to fail")),
        }
    }
}

/// `test.Echo` on an ephemeral loopback port.
pub struct GrpcUpstream {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GrpcUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GrpcUpstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State::default());
        let svc = EchoServer(state.clone());
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        Self { addr, state, task }
    }

    /// Calls that reached the upstream.
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Fails every call with `code` from now on (`Code::Ok` to stop).
    pub fn fail_with(&self, code: tonic::Code) {
        self.state.fail_code.store(code as i32, Ordering::SeqCst);
    }

    /// The `grpc-timeout` of every call so far.
    pub fn timeouts(&self) -> Vec<Option<String>> {
        self.state.timeouts.lock().unwrap().clone()
    }
}

#[derive(Clone)]
struct EchoServer(Arc<State>);

impl NamedService for EchoServer {
    const NAME: &'static str = "test.Echo";
}

struct UnarySvc(Arc<State>);
impl UnaryService<Msg> for UnarySvc {
    type Response = Msg;
    type Future = BoxFuture<Response<Msg>>;
    fn call(&mut self, req: Request<Msg>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move {
            state.enter(&req)?;
            Ok(Response::new(req.into_inner()))
        })
    }
}

struct ServerStreamSvc(Arc<State>);
impl ServerStreamingService<Msg> for ServerStreamSvc {
    type Response = Msg;
    type ResponseStream = MsgStream;
    type Future = BoxFuture<Response<MsgStream>>;
    fn call(&mut self, req: Request<Msg>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move {
            state.enter(&req)?;
            let m = req.into_inner();
            // `stall`: after the n messages the stream never ends (an
            // upstream that ignores the caller's deadline).
            let stall = m.text == "stall";
            let out = futures::stream::iter((0..m.n).map(move |i| {
                Ok(Msg {
                    text: m.text.clone(),
                    n: i,
                })
            }));
            if stall {
                let out = out.chain(futures::stream::pending());
                return Ok(Response::new(Box::pin(out) as MsgStream));
            }
            Ok(Response::new(Box::pin(out) as MsgStream))
        })
    }
}

struct ClientStreamSvc(Arc<State>);
impl ClientStreamingService<Msg> for ClientStreamSvc {
    type Response = Msg;
    type Future = BoxFuture<Response<Msg>>;
    fn call(&mut self, req: Request<Streaming<Msg>>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move {
            state.enter(&req)?;
            let mut stream = req.into_inner();
            let (mut text, mut n) = (String::new(), 0);
            while let Some(m) = stream.next().await {
                let m = m?;
                text.push_str(&m.text);
                n += 1;
            }
            Ok(Response::new(Msg { text, n }))
        })
    }
}

struct BidiSvc(Arc<State>);
impl StreamingService<Msg> for BidiSvc {
    type Response = Msg;
    type ResponseStream = MsgStream;
    type Future = BoxFuture<Response<MsgStream>>;
    fn call(&mut self, req: Request<Streaming<Msg>>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move {
            state.enter(&req)?;
            let out = req.into_inner().map(|m| {
                m.map(|m| Msg {
                    text: m.text.to_uppercase(),
                    n: m.n,
                })
            });
            Ok(Response::new(Box::pin(out) as MsgStream))
        })
    }
}

impl<B> tower_service::Service<http::Request<B>> for EchoServer
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let state = self.0.clone();
        let codec = ProstCodec::<Msg, Msg>::default;
        match req.uri().path() {
            "/test.Echo/Unary" => {
                Box::pin(async move { Ok(Grpc::new(codec()).unary(UnarySvc(state), req).await) })
            }
            "/test.Echo/ServerStream" => Box::pin(async move {
                Ok(Grpc::new(codec())
                    .server_streaming(ServerStreamSvc(state), req)
                    .await)
            }),
            "/test.Echo/ClientStream" => Box::pin(async move {
                Ok(Grpc::new(codec())
                    .client_streaming(ClientStreamSvc(state), req)
                    .await)
            }),
            "/test.Echo/Bidi" => {
                Box::pin(async move { Ok(Grpc::new(codec()).streaming(BidiSvc(state), req).await) })
            }
            _ => Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

/// A tonic client for `test.Echo` at `addr` (plaintext HTTP/2).
pub struct EchoClient(tonic::client::Grpc<Channel>);

impl EchoClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        Self(tonic::client::Grpc::new(channel))
    }

    async fn ready(&mut self) {
        self.0.ready().await.expect("channel ready");
    }

    pub async fn unary(&mut self, req: Request<Msg>) -> Result<Response<Msg>, Status> {
        self.ready().await;
        self.0
            .unary(
                req,
                PathAndQuery::from_static("/test.Echo/Unary"),
                ProstCodec::default(),
            )
            .await
    }

    pub async fn server_stream(&mut self, req: Request<Msg>) -> Result<Vec<Msg>, Status> {
        self.ready().await;
        let resp = self
            .0
            .server_streaming(
                req,
                PathAndQuery::from_static("/test.Echo/ServerStream"),
                ProstCodec::default(),
            )
            .await?;
        collect(resp.into_inner()).await
    }

    pub async fn client_stream(&mut self, msgs: Vec<Msg>) -> Result<Msg, Status> {
        self.ready().await;
        let resp = self
            .0
            .client_streaming(
                Request::new(futures::stream::iter(msgs)),
                PathAndQuery::from_static("/test.Echo/ClientStream"),
                ProstCodec::default(),
            )
            .await?;
        Ok(resp.into_inner())
    }

    pub async fn bidi(&mut self, msgs: Vec<Msg>) -> Result<Vec<Msg>, Status> {
        self.ready().await;
        let resp = self
            .0
            .streaming(
                Request::new(futures::stream::iter(msgs)),
                PathAndQuery::from_static("/test.Echo/Bidi"),
                ProstCodec::default(),
            )
            .await?;
        collect(resp.into_inner()).await
    }
}

/// Every message of a response stream, or its error status.
async fn collect(mut stream: Streaming<Msg>) -> Result<Vec<Msg>, Status> {
    let mut out = Vec::new();
    while let Some(m) = stream.message().await? {
        out.push(m);
    }
    Ok(out)
}
