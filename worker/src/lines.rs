//! A task's output: lines, where they go, and how frames that are not lines become lines.

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
            Fd::Err => &mut self.err,
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
}

impl Fd {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Out => "out",
            Self::Err => "err",
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
