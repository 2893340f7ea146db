//! The Linux end of `deploy/dev/wine/git-relay.c`, the `git.exe` the Windows worker finds
//! beside its own under Wine: each git command it is given runs with Linux's git.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;

/// The Linux end of `deploy/dev/wine/git-relay.c`: runs each git command the Windows worker
/// asks for with Linux's git, its drive paths turned into Unix paths through the prefix's
/// `dosdevices`, and sends back its output and exit code. Git is killed when the asker goes
/// away (the worker killed it, at its time limit or on its own stop).
#[derive(Debug)]
pub struct GitRelay;

impl GitRelay {
    /// Serves on a free loopback port: its address, and the task serving it.
    pub async fn start(dosdevices: PathBuf) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let serving = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let dosdevices = dosdevices.clone();
                tokio::spawn(async move {
                    if let Err(error) = relay(socket, &dosdevices).await {
                        tracing::warn!(%error, "a git relay connection failed");
                    }
                });
            }
        });
        (addr, serving)
    }
}

/// Frame kinds, as `git-relay.c` reads them.
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const EXIT: u8 = 3;

async fn relay(mut socket: TcpStream, dosdevices: &Path) -> std::io::Result<()> {
    let (mut from, mut to) = socket.split();
    let count = from.read_u32_le().await?;
    let mut strings = Vec::new();
    for _ in 0..count {
        let length = from.read_u32_le().await?;
        let mut bytes = vec![0; usize::try_from(length).map_err(std::io::Error::other)?];
        from.read_exact(&mut bytes).await?;
        strings.push(String::from_utf8(bytes).map_err(std::io::Error::other)?);
    }
    let Some((directory, args)) = strings.split_first() else {
        return Err(std::io::Error::other("no directory"));
    };
    let mut child = Command::new("git")
        .args(args.iter().map(|a| unix_path(a, dosdevices)))
        .current_dir(unix_path(directory, dosdevices))
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    let (mut out_buf, mut err_buf) = (vec![0u8; 32 * 1024], vec![0u8; 32 * 1024]);
    let mut probe = [0u8; 1];
    while out.is_some() || err.is_some() {
        tokio::select! {
            read = read_some(&mut out, &mut out_buf) => match read? {
                0 => out = None,
                n => frame(&mut to, STDOUT, &out_buf[..n]).await?,
            },
            read = read_some(&mut err, &mut err_buf) => match read? {
                0 => err = None,
                n => frame(&mut to, STDERR, &err_buf[..n]).await?,
            },
            // The asker sends nothing more: this ends only when it went away.
            _ = from.read(&mut probe) => return Ok(()),
        }
    }
    let status = child.wait().await?;
    let code = status.code().unwrap_or(128);
    frame(&mut to, EXIT, &code.to_le_bytes()).await
}

async fn read_some<R: AsyncReadExt + Unpin>(
    pipe: &mut Option<R>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match pipe {
        Some(pipe) => pipe.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn frame(
    to: &mut (impl AsyncWriteExt + Unpin),
    kind: u8,
    data: &[u8],
) -> std::io::Result<()> {
    to.write_u8(kind).await?;
    to.write_u32_le(u32::try_from(data.len()).map_err(std::io::Error::other)?)
        .await?;
    to.write_all(data).await
}

/// `arg` with a leading drive path (`C:\…`, `\\?\Z:\…`) turned into the Unix path Wine maps
/// it to; anything else as it is.
fn unix_path(arg: &str, dosdevices: &Path) -> String {
    let plain = arg.strip_prefix(r"\\?\").unwrap_or(arg);
    let bytes = plain.as_bytes();
    let is_drive_path = bytes.len() >= 2
        && bytes[0].is_ascii_alphabetic()
        && bytes[1] == b':'
        && (bytes.len() == 2 || bytes[2] == b'\\' || bytes[2] == b'/');
    if !is_drive_path {
        return arg.to_owned();
    }
    let drive = dosdevices.join(format!("{}:", char::from(bytes[0].to_ascii_lowercase())));
    let Ok(root) = std::fs::canonicalize(&drive) else {
        return arg.to_owned();
    };
    let rest = plain[2..].replace('\\', "/");
    format!("{}{rest}", root.to_string_lossy().trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drive_paths_become_unix_paths() {
        let dir = tempfile::tempdir().expect("dir");
        let devices = dir.path().join("dosdevices");
        std::fs::create_dir_all(devices.join("c:")).expect("mkdir");
        std::os::unix::fs::symlink("/", devices.join("z:")).expect("symlink");
        let c = std::fs::canonicalize(devices.join("c:")).expect("c:");
        let check = |arg: &str, expect: &str| assert_eq!(unix_path(arg, &devices), expect, "{arg}");
        check(r"Z:\var\tmp\x\mirrors\a.git", "/var/tmp/x/mirrors/a.git");
        check(r"\\?\Z:\var\tmp\x", "/var/tmp/x");
        check(r"z:\", "/");
        check(r"C:\users\me", &format!("{}/users/me", c.display()));
        check("/tmp/repo.git", "/tmp/repo.git");
        check("--template=", "--template=");
        check("fetch.unpackLimit=1", "fetch.unpackLimit=1");
        check(r"Q:\nowhere", r"Q:\nowhere");
    }
}
