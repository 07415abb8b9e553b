//! `bench-hello 127.0.0.1:PORT`: `GET /` answers `ok`, nothing else.

use std::process::ExitCode;

use axum::Router;
use axum::routing::get;

const USAGE: &str = "usage: bench-hello 127.0.0.1:PORT";

#[tokio::main]
async fn main() -> ExitCode {
    let run = async {
        let addr = kisum_bench::listen_arg(USAGE)?;
        let router = Router::new().route("/", get(|| async { "ok" }));
        kisum_bench::serve(addr, router).await
    };
    match run.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench-hello: {error:#}");
            ExitCode::FAILURE
        }
    }
}
