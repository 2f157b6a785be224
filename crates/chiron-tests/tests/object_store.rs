//! The host's object store on S3, for a service spread over several machines: a real
//! S3-compatible server process (moto's, from PyPI, which `scripts/setup-test-servers.sh`
//! installs), a distributed job and its queries through it, and what the bucket holds after.
#![allow(clippy::expect_used)] // test helpers: a failed step is a failed test

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chiron_tests::*;

/// An S3-compatible server on a free loopback port, stopped when dropped.
struct S3Server {
    child: Child,
    port: u16,
}

impl S3Server {
    fn start() -> Self {
        let bin = workspace_root().join("target/test-servers/s3/bin/moto_server");
        assert!(
            bin.exists(),
            "no S3 server at {}: run scripts/setup-test-servers.sh (the test command does)",
            bin.display()
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the S3 server starts");
        let server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the S3 server did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// One plain HTTP request; returns the status line and the body.
    fn request(&self, method: &str, path: &str) -> (String, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n",
            self.port
        )
        .expect("request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("response");
        let status = response.lines().next().unwrap_or_default().to_owned();
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    /// Every key in `bucket`.
    fn keys(&self, bucket: &str) -> Vec<String> {
        let (status, body) = self.request("GET", &format!("/{bucket}?list-type=2"));
        assert!(status.contains("200"), "{status}: {body}");
        body.split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split_once("</Key>").map(|(key, _)| key.to_owned()))
            .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_distributed_job_runs_on_an_s3_store() {
    let s3 = S3Server::start();
    let (status, body) = s3.request("PUT", "/chiron");
    assert!(
        status.contains("200"),
        "bucket not created: {status}: {body}"
    );
    let options: Vec<OsString> = [
        "--store",
        "s3://chiron/service",
        "--store-option",
        &format!("endpoint=http://127.0.0.1:{}", s3.port),
        "--store-option",
        "region=us-east-1",
        "--store-option",
        "access_key_id=chiron-test",
        "--store-option",
        "secret_access_key=chiron-test",
        "--store-option",
        "allow_http=true",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    let service = Service::start_in(tempfile::tempdir().expect("temp dir"), &options);
    let ticket = iris_trains_distributed(&service, 2);

    // Everything the host stored went to the bucket, under the prefix; nothing to its disk.
    let keys = s3.keys("chiron");
    let job = &ticket.job_id;
    for expected in [
        format!("service/jobs/{job}.json"),
        format!("service/models/{job}.sealed"),
        format!("service/checkpoints/{job}.sealed"),
    ] {
        assert!(keys.contains(&expected), "{expected} not in {keys:?}");
    }
    for prefix in ["service/programs/", "service/datasets/", "service/models/"] {
        assert!(
            keys.iter().any(|k| k.starts_with(prefix)),
            "nothing under {prefix}: {keys:?}"
        );
    }
    assert!(!service.state_dir().join("objects").exists());
}
