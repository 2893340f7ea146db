//! Secrets: their values live on the worker, one file per name in the secrets directory
//! (`<dir>/<NAME>`, a trailing newline dropped) or, failing that, in the worker's own
//! environment as `KILN_SECRET_<NAME>`. A task gets the ones its step names, as environment
//! variables, and every value is masked in its log.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::lines::{LogLine, LogSink};

/// Values shorter than this are not masked: masking every `1` or `ab` in a log would make it
/// unreadable and protect nothing.
pub const MIN_MASKED_LEN: usize = 4;

/// What a masked value is shown as.
pub const MASK: &str = "***";

/// Where a worker finds secret values.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    dir: Option<PathBuf>,
}

impl Secrets {
    /// Secrets in `dir` (if any), then in the environment.
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self { dir }
    }

    /// The values of `names`, or why one cannot be had.
    pub fn resolve(&self, names: &[String]) -> Result<BTreeMap<String, String>, String> {
        let mut values = BTreeMap::new();
        for name in names {
            let from_file = self.dir.as_ref().and_then(|dir| {
                std::fs::read_to_string(dir.join(name))
                    .ok()
                    .map(|v| v.trim_end_matches(['\r', '\n']).to_owned())
            });
            let value = from_file
                .or_else(|| std::env::var(format!("KILN_SECRET_{name}")).ok())
                .ok_or_else(|| {
                    let file = self.dir.as_ref().map_or_else(String::new, |d| {
                        format!("no file {}, ", d.join(name).display())
                    });
                    format!(
                        "the secret `{name}` is not on this worker ({file}no KILN_SECRET_{name})"
                    )
                })?;
            values.insert(name.clone(), value);
        }
        Ok(values)
    }
}

/// A log that masks secret values on their way to `inner`.
#[derive(Debug)]
pub struct Masked<'a, L> {
    inner: &'a L,
    /// Longest first, so a value containing another is masked whole.
    values: Vec<String>,
}

impl<'a, L: LogSink> Masked<'a, L> {
    /// A value of several lines (a key in PEM form) is masked line by line, as logs hold
    /// lines.
    pub fn new(inner: &'a L, values: impl IntoIterator<Item = String>) -> Self {
        let mut values: Vec<String> = values
            .into_iter()
            .flat_map(|v| {
                let lines: Vec<String> = v
                    .lines()
                    .map(|l| l.trim_end_matches('\r').to_owned())
                    .collect();
                std::iter::once(v).chain(lines)
            })
            .filter(|v| v.len() >= MIN_MASKED_LEN)
            .collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Self { inner, values }
    }

    fn mask(&self, text: &str) -> String {
        self.values
            .iter()
            .fold(text.to_owned(), |text, value| text.replace(value, MASK))
    }
}

impl<L: LogSink> LogSink for Masked<'_, L> {
    async fn write(&self, lines: &[LogLine]) {
        if self.values.is_empty() {
            return self.inner.write(lines).await;
        }
        let masked: Vec<LogLine> = lines
            .iter()
            .map(|line| LogLine {
                fd: line.fd,
                text: self.mask(&line.text),
            })
            .collect();
        self.inner.write(&masked).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::lines::Fd;

    #[derive(Default)]
    struct Kept(Mutex<Vec<String>>);

    impl LogSink for Kept {
        async fn write(&self, lines: &[LogLine]) {
            let mut kept = self.0.lock().expect("lock");
            kept.extend(lines.iter().map(|l| l.text.clone()));
        }
    }

    #[tokio::test]
    async fn masks_every_value_longest_first_and_leaves_short_ones() {
        let kept = Kept::default();
        let masked = Masked::new(
            &kept,
            [
                "hunter2".into(),
                "hunter2-extra".into(),
                "ab".into(),
                "-----BEGIN KEY-----\r\nc2VjcmV0IGtleQ==\n-----END KEY-----".into(),
            ],
        );
        let line = |text: &str| LogLine {
            fd: Fd::Out,
            text: text.into(),
        };
        masked
            .write(&[
                line("token=hunter2-extra and hunter2"),
                line("ab stays: a short value is not masked"),
                line("key line c2VjcmV0IGtleQ=="),
            ])
            .await;
        assert_eq!(
            *kept.0.lock().expect("lock"),
            [
                "token=*** and ***",
                "ab stays: a short value is not masked",
                "key line ***",
            ]
        );
    }

    #[test]
    fn reads_values_from_files_then_the_environment() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("FROM_FILE"), "file-value\r\n").expect("write");
        let secrets = Secrets::new(Some(dir.path().to_owned()));
        let values = secrets.resolve(&["FROM_FILE".into()]).expect("found");
        assert_eq!(values["FROM_FILE"], "file-value");
        let missing = secrets
            .resolve(&["KILN_TEST_NO_SUCH_SECRET".into()])
            .expect_err("missing");
        assert!(missing.contains("no file"), "{missing}");
        assert!(
            missing.contains("no KILN_SECRET_KILN_TEST_NO_SUCH_SECRET"),
            "{missing}"
        );
    }
}
