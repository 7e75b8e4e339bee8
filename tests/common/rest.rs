//! The slurmrestd backend (`cluster.backend: rest`) of the test cluster: v0.0.38 with JWT at
//! [`REST_URL`]; tokens come from `scontrol token` (the tests run as root, which may mint one
//! for any user). [`slow_submits_proxy`] holds back submits on their way to it.

use super::slurm_conf;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The test cluster's slurmrestd.
pub const REST_URL: &str = "http://127.0.0.1:16820";

/// A fresh JWT for `user` from `scontrol token`, valid for `lifespan` seconds.
pub fn token(user: &str, lifespan: u32) -> String {
    let output = Command::new("scontrol")
        .env("SLURM_CONF", slurm_conf())
        .args([
            "token",
            &format!("username={user}"),
            &format!("lifespan={lifespan}"),
        ])
        .output()
        .expect("scontrol runs");
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    text.trim().strip_prefix("SLURM_JWT=").unwrap().to_owned()
}

/// Writes `dir/stackctl.yaml` for slurmrestd at `url` acting as `user`, with `owner` and
/// `log_dir` (absolute, and it must exist: nothing over REST can create it). The token comes
/// from `SLURM_JWT`.
pub fn configure(dir: &Path, owner: &str, log_dir: &Path, url: &str, user: &str) {
    std::fs::write(
        dir.join("stackctl.yaml"),
        format!(
            "owner: {owner}\nlog_dir: {}\ncluster:\n  backend: rest\n  url: {url}\n  user: {user}\n",
            log_dir.display()
        ),
    )
    .unwrap();
}

/// `stackctl -C dir args` over REST with `token` in `SLURM_JWT` and no `SLURM_CONF`, so
/// nothing it does can reach Slurm but through slurmrestd.
pub fn command(dir: &Path, token: &str, args: &[&str]) -> Command {
    let mut command = super::stackctl(dir, args);
    command.env_remove("SLURM_CONF").env("SLURM_JWT", token);
    command
}

/// Starts a proxy in front of the test cluster's slurmrestd that holds back every real submit
/// (`POST …/job/submit` of anything but a lock placeholder) for `delay`; every other request
/// passes at once, and every answer comes straight from slurmrestd. Returns the proxy's URL;
/// it serves until the test process exits. The REST counterpart of [`super::slow_submits`].
pub fn slow_submits_proxy(delay: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = relay(client, delay);
            });
        }
    });
    url
}

/// Relays one client connection to slurmrestd: answers are copied back as they come, requests
/// are read one at a time (head, then `Content-Length` bytes of body) and forwarded whole,
/// real submits after `delay`.
fn relay(client: TcpStream, delay: Duration) -> std::io::Result<()> {
    let mut upstream = TcpStream::connect(REST_URL.trim_start_matches("http://"))?;
    let (mut answers, mut to_client) = (upstream.try_clone()?, client.try_clone()?);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut answers, &mut to_client);
        let _ = to_client.shutdown(Shutdown::Write);
    });
    let mut requests = BufReader::new(client);
    loop {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            if requests.read_until(b'\n', &mut head)? == 0 {
                return upstream.shutdown(Shutdown::Write);
            }
        }
        let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let length = text
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .map_or(0, |value| value.trim().parse().unwrap_or(0));
        let mut body = vec![0; length];
        requests.read_exact(&mut body)?;
        let submit = text.starts_with("post ") && text.contains("/job/submit ");
        if submit && !String::from_utf8_lossy(&body).contains("stackctl-lock") {
            std::thread::sleep(delay);
        }
        upstream.write_all(&head)?;
        upstream.write_all(&body)?;
    }
}
