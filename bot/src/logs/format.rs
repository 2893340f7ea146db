//! An archived log's bytes: gzip of one JSON object per line (`{"fd":"out","line":"…"}`), in
//! the stream's order, so a log reads back exactly as the worker stored it.

use std::borrow::Cow;
use std::io::{self, BufRead, BufReader, Read, Write};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};

use crate::store::RawLine;

/// The most an archive may hold once decompressed: a log is capped at 100,000 lines in
/// Redis, so anything larger is not one Kiln wrote.
const MAX_DECOMPRESSED: u64 = 512 * 1024 * 1024;

#[derive(Serialize, Deserialize)]
struct Entry<'a> {
    #[serde(borrow)]
    fd: Cow<'a, str>,
    #[serde(borrow)]
    line: Cow<'a, str>,
}

/// `lines`, archived.
pub fn encode(lines: &[RawLine]) -> Vec<u8> {
    let mut out = GzEncoder::new(Vec::new(), Compression::default());
    for raw in lines {
        let entry = Entry {
            fd: Cow::Borrowed(&raw.fd),
            line: Cow::Borrowed(&raw.line),
        };
        // Writing to memory cannot fail, nor serialising two strings.
        let _ = serde_json::to_writer(&mut out, &entry);
        let _ = out.write_all(b"\n");
    }
    out.finish().unwrap_or_default()
}

/// The lines of an archive.
pub fn decode(bytes: &[u8]) -> io::Result<Vec<RawLine>> {
    let reader = BufReader::new(GzDecoder::new(bytes).take(MAX_DECOMPRESSED));
    let mut lines = Vec::new();
    for text in reader.lines() {
        let text = text?;
        let entry: Entry = serde_json::from_str(&text)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        lines.push(RawLine {
            fd: entry.fd.into_owned(),
            line: entry.line.into_owned(),
        });
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(fd: &str, line: &str) -> RawLine {
        RawLine {
            fd: fd.into(),
            line: line.into(),
        }
    }

    #[test]
    fn a_log_reads_back_as_it_was_stored() {
        let lines = vec![
            line("out", "plain"),
            line("err", "a \"quoted\"\ttab and \u{1b}[31mcolour\u{1b}[0m"),
            line("kiln", "[kiln] step 1 passed"),
            line("out", ""),
        ];
        let bytes = encode(&lines);
        assert_eq!(&bytes[..2], [0x1f, 0x8b], "gzip");
        assert_eq!(decode(&bytes).expect("decodes"), lines);
        assert_eq!(decode(&encode(&[])).expect("decodes"), Vec::new());
    }

    #[test]
    fn a_repetitive_log_is_small() {
        let lines: Vec<RawLine> = (0..1000)
            .map(|i| line("out", &format!("compiling crate {i} of 1000")))
            .collect();
        let bytes = encode(&lines);
        assert!(bytes.len() < 8 * 1024, "{} bytes", bytes.len());
    }

    #[test]
    fn what_is_not_an_archive_is_refused() {
        assert!(decode(b"not gzip").is_err());
        let mut out = GzEncoder::new(Vec::new(), Compression::default());
        out.write_all(b"{\"fd\": 1}\n").expect("writes");
        assert!(decode(&out.finish().expect("finishes")).is_err());
    }
}
