//! A `git cat-file --batch` kept running beside a mirror: reading a file at a commit is a
//! line written and an answer read, not a `git` started.
//!
//! Objects fetched into the mirror later are found too: git looks at the object store
//! again when it lacks an object.

use std::io;
use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// One mirror's running `git cat-file --batch`.
#[derive(Debug)]
pub struct Reader {
    _child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Reader {
    /// Starts one for the bare repository at `mirror`.
    pub fn start(mirror: &Path) -> io::Result<Self> {
        let mut child = Command::new("git")
            .arg("--git-dir")
            .arg(mirror)
            .args(["cat-file", "--batch"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let (Some(input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(io::Error::other("git cat-file has no pipes"));
        };
        Ok(Self {
            _child: child,
            input,
            output: BufReader::new(output),
        })
    }

    /// The blob at `commit:path`; `None` if there is no such commit, or no file at that
    /// path, or `commit` is not a commit id. Any error leaves the reader unusable: start
    /// another.
    pub async fn read(&mut self, commit: &str, path: &str) -> io::Result<Option<Vec<u8>>> {
        // One object name per line: a name with a line break in it would be two questions.
        if !commit.bytes().all(|b| b.is_ascii_hexdigit()) || path.contains(['\n', '\r']) {
            return Ok(None);
        }
        self.input
            .write_all(format!("{commit}:{path}\n").as_bytes())
            .await?;
        self.input.flush().await?;
        let mut header = String::new();
        if self.output.read_line(&mut header).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        // `<oid> <type> <size>`, or `<name> missing` (or `ambiguous`).
        let fields: Vec<&str> = header.trim_end().rsplitn(3, ' ').collect();
        let [size, kind, _oid] = fields[..] else {
            return Ok(None);
        };
        let Ok(size) = size.parse::<usize>() else {
            return Ok(None);
        };
        let mut content = vec![0; size + 1];
        self.output.read_exact(&mut content).await?;
        content.pop(); // the line break after the content
        Ok((kind == "blob").then_some(content))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// What git says in `dir`, as someone with a name and an address.
    pub(in crate::mirror) fn git(dir: &Path, args: &[&str]) -> String {
        let output = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
            .args(args)
            .output()
            .expect("git runs");
        assert!(output.status.success(), "git {args:?}: {output:?}");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    #[tokio::test]
    async fn reads_files_at_commits_including_ones_made_after_it_started() {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = dir.path();
        git(repo, &["init", "-q"]);
        std::fs::write(repo.join(".kiln.yml"), "one\n").expect("write");
        std::fs::create_dir(repo.join("ci")).expect("mkdir");
        std::fs::write(repo.join("ci/x"), "x").expect("write");
        git(repo, &["add", "."]);
        git(repo, &["commit", "-qm", "one"]);
        let first = git(repo, &["rev-parse", "HEAD"]);

        let mut reader = Reader::start(&repo.join(".git")).expect("start");
        assert_eq!(
            reader.read(&first, ".kiln.yml").await.expect("read"),
            Some(b"one\n".to_vec())
        );
        assert_eq!(reader.read(&first, "nope").await.expect("read"), None);
        // A directory is not a file.
        assert_eq!(reader.read(&first, "ci").await.expect("read"), None);
        let unknown = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(reader.read(unknown, ".kiln.yml").await.expect("read"), None);
        assert_eq!(
            reader
                .read("HEAD\nmaster", ".kiln.yml")
                .await
                .expect("read"),
            None
        );

        std::fs::write(repo.join(".kiln.yml"), "two\n").expect("write");
        git(repo, &["commit", "-qam", "two"]);
        let second = git(repo, &["rev-parse", "HEAD"]);
        assert_eq!(
            reader.read(&second, ".kiln.yml").await.expect("read"),
            Some(b"two\n".to_vec())
        );
        assert_eq!(
            reader.read(&first, ".kiln.yml").await.expect("read"),
            Some(b"one\n".to_vec())
        );
    }
}
