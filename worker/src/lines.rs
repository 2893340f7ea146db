//! A task's output: lines, where they go, and how frames that are not lines become lines.

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;

/// The longest line kept whole, in bytes; a longer one is cut into pieces this long, so one
/// runaway line cannot grow a buffer without bound.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// Splits stdout and stderr frames into lines, each stream with its own partial line.
#[derive(Debug, Default)]
pub struct LineSplitter {
    out: Vec<u8>,
    err: Vec<u8>,
}

impl LineSplitter {
    /// Feeds one frame; complete lines are pushed onto `lines`.
    pub fn push(&mut self, fd: Fd, frame: &[u8], lines: &mut Vec<LogLine>) {
        let buffer = match fd {
            Fd::Out => &mut self.out,
            // Kiln's lines are written whole, never split; were one fed here, it would be
            // kept apart from stdout.
            Fd::Err | Fd::Kiln => &mut self.err,
        };
        for &byte in frame {
            if byte == b'\n' {
                lines.push(take_line(fd, buffer));
            } else {
                buffer.push(byte);
                if buffer.len() >= MAX_LINE_BYTES {
                    lines.push(take_line(fd, buffer));
                }
            }
        }
    }

    /// The last lines, which had no newline at the end.
    pub fn finish(&mut self, lines: &mut Vec<LogLine>) {
        for (fd, buffer) in [(Fd::Out, &mut self.out), (Fd::Err, &mut self.err)] {
            if !buffer.is_empty() {
                lines.push(take_line(fd, buffer));
            }
        }
    }
}

/// Which output a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fd {
    Out,
    Err,
    /// Kiln's own lines: how the task was prepared, what it kept.
    Kiln,
}

impl Fd {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Out => "out",
            Self::Err => "err",
            Self::Kiln => kiln_shared::log_line::KILN_FD,
        }
    }
}

/// One line of a task's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub fd: Fd,
    pub text: String,
}

/// Where a running task's lines go: Redis on a worker, the terminal for `kiln-worker run`.
pub trait LogSink: Sync {
    /// Takes a batch of lines, in order. Never fails: losing log lines must not fail a task.
    fn write(&self, lines: &[LogLine]) -> impl Future<Output = ()> + Send;
}

/// Writes a line of Kiln's own into the task's log.
pub async fn note(log: &impl LogSink, text: String) {
    log.write(&[LogLine {
        fd: Fd::Kiln,
        text: format!("{} {text}", kiln_shared::log_line::KILN_PREFIX),
    }])
    .await;
}

/// Batches a runner has read and not yet handed to the writer, at most: a task that prints
/// faster than Redis stores waits for it, so memory stays bounded (a batch is one read).
const QUEUED_BATCHES: usize = 8;

/// Once a write has gathered this many lines, batches waiting beyond go to the next write.
pub const MAX_WRITE_LINES: usize = 4096;

/// Writes under way at once: while Redis stores one, the next is on its way to it.
const WRITES_IN_FLIGHT: usize = 2;

/// Where a runner hands the lines it has read, while the writer stores earlier ones.
#[derive(Debug)]
pub struct Batches(tokio::sync::mpsc::Sender<Vec<LogLine>>);

impl Batches {
    /// Hands over `lines` (leaving it empty), waiting only if the writer is far behind.
    pub async fn send(&self, lines: &mut Vec<LogLine>) {
        if !lines.is_empty() {
            // The writer lives as long as the runner: a send cannot fail.
            let _ = self.0.send(std::mem::take(lines)).await;
        }
    }
}

/// Runs `read`, which reads a task's output and hands its lines to [`Batches`], while the
/// lines go to `log`: reading the next output overlaps storing the last, and what piles up
/// during a write is written together in the next. Returns when both are done.
pub async fn pipelined<T>(log: &impl LogSink, read: impl AsyncFnOnce(Batches) -> T) -> T {
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Vec<LogLine>>(QUEUED_BATCHES);
    let write = async {
        let mut writing = FuturesOrdered::new();
        loop {
            let mut batch = tokio::select! {
                lines = receiver.recv(), if writing.len() < WRITES_IN_FLIGHT => match lines {
                    Some(lines) => lines,
                    None => break,
                },
                Some(()) = writing.next() => continue,
            };
            while batch.len() < MAX_WRITE_LINES
                && let Ok(more) = receiver.try_recv()
            {
                batch.extend(more);
            }
            let mut write = Box::pin(async move { log.write(&batch).await });
            // Polled once now, so that its lines are on their way before the next write's.
            if futures_util::poll!(write.as_mut()).is_pending() {
                writing.push_back(write);
            }
        }
        while writing.next().await.is_some() {}
    };
    let (value, ()) = tokio::join!(read(Batches(sender)), write);
    value
}

fn take_line(fd: Fd, buffer: &mut Vec<u8>) -> LogLine {
    let mut bytes = std::mem::take(buffer);
    if bytes.last() == Some(&b'\r') {
        bytes.pop();
    }
    LogLine {
        fd,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(lines: &[LogLine]) -> Vec<(&str, &str)> {
        lines
            .iter()
            .map(|l| (l.fd.as_str(), l.text.as_str()))
            .collect()
    }

    #[test]
    fn joins_frames_into_lines_per_stream() {
        let mut splitter = LineSplitter::default();
        let mut lines = Vec::new();
        splitter.push(Fd::Out, b"hel", &mut lines);
        splitter.push(Fd::Err, b"oops\r\nwa", &mut lines);
        splitter.push(Fd::Out, b"lo\nworld\n\n", &mut lines);
        splitter.push(Fd::Err, b"rn", &mut lines);
        splitter.finish(&mut lines);
        assert_eq!(
            texts(&lines),
            [
                ("err", "oops"),
                ("out", "hello"),
                ("out", "world"),
                ("out", ""),
                ("err", "warn")
            ]
        );
    }

    /// Keeps every batch it is given.
    #[derive(Default)]
    struct Kept(std::sync::Mutex<Vec<Vec<String>>>);

    impl LogSink for Kept {
        async fn write(&self, lines: &[LogLine]) {
            let texts = lines.iter().map(|l| l.text.clone()).collect();
            self.0.lock().expect("not poisoned").push(texts);
            tokio::task::yield_now().await;
        }
    }

    /// Takes each batch when its write begins; a write lasts longer the earlier it began, and
    /// how many are under way at once is counted.
    #[derive(Default)]
    struct Slow {
        begun: std::sync::Mutex<Vec<String>>,
        under_way: std::sync::atomic::AtomicUsize,
        most_under_way: std::sync::atomic::AtomicUsize,
    }

    impl LogSink for Slow {
        async fn write(&self, lines: &[LogLine]) {
            use std::sync::atomic::Ordering::SeqCst;
            let so_far = {
                let mut begun = self.begun.lock().expect("not poisoned");
                begun.extend(lines.iter().map(|l| l.text.clone()));
                begun.len()
            };
            let now = self.under_way.fetch_add(1, SeqCst) + 1;
            self.most_under_way.fetch_max(now, SeqCst);
            for _ in so_far..1000 {
                tokio::task::yield_now().await;
            }
            self.under_way.fetch_sub(1, SeqCst);
        }
    }

    #[tokio::test]
    async fn writes_overlap_but_begin_in_order() {
        let slow = Slow::default();
        pipelined(&slow, async |batches: Batches| {
            for n in 0..1000 {
                let mut lines = vec![LogLine {
                    fd: Fd::Out,
                    text: n.to_string(),
                }];
                batches.send(&mut lines).await;
            }
        })
        .await;
        let begun = slow.begun.into_inner().expect("not poisoned");
        let expected: Vec<String> = (0..1000).map(|n| n.to_string()).collect();
        assert_eq!(begun, expected);
        assert_eq!(slow.under_way.into_inner(), 0, "every write ended");
        assert_eq!(slow.most_under_way.into_inner(), WRITES_IN_FLIGHT);
    }

    #[tokio::test]
    async fn pipelined_writes_keep_every_line_in_order() {
        let kept = Kept::default();
        let read = pipelined(&kept, async |batches: Batches| {
            for n in 0..1000 {
                let mut lines = vec![LogLine {
                    fd: Fd::Out,
                    text: n.to_string(),
                }];
                batches.send(&mut lines).await;
                assert!(lines.is_empty());
            }
            "read"
        })
        .await;
        assert_eq!(read, "read");
        let batches = kept.0.into_inner().expect("not poisoned");
        let all: Vec<String> = batches.iter().flatten().cloned().collect();
        let expected: Vec<String> = (0..1000).map(|n| n.to_string()).collect();
        assert_eq!(all, expected);
        assert!(
            batches
                .iter()
                .all(|b| !b.is_empty() && b.len() <= MAX_WRITE_LINES)
        );
    }

    #[test]
    fn cuts_runaway_lines_and_survives_bad_utf8() {
        let mut splitter = LineSplitter::default();
        let mut lines = Vec::new();
        splitter.push(Fd::Out, &vec![b'x'; MAX_LINE_BYTES + 3], &mut lines);
        splitter.push(Fd::Out, b"\xff\n", &mut lines);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].text.len(), MAX_LINE_BYTES);
        assert_eq!(lines[1].text, "xxx\u{FFFD}");
    }
}
