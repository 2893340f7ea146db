//! Overlay mounts (Linux): a task's work directory is its commit's pristine checkout seen
//! through an overlay, whose upper layer takes the task's changes. Making one is a mount
//! and removing it an unmount and the removal of what the task changed; neither copies the
//! checkout. Mounting needs root (or `CAP_SYS_ADMIN`); where it is refused, work
//! directories are copies.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

/// Mounts at `merged` an overlay of `lower` (read only) and `upper` (where changes go),
/// with `work` as the overlay's scratch directory; `upper` and `work` must be empty and on
/// one file system.
pub fn mount(lower: &Path, upper: &Path, work: &Path, merged: &Path) -> io::Result<()> {
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        option_path(lower)?,
        option_path(upper)?,
        option_path(work)?
    );
    nix::mount::mount(
        Some("kiln-work"),
        merged,
        Some("overlay"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(io::Error::from)
}

/// Detaches the mount at `merged` (lazily: processes still in it keep it until they leave);
/// a directory that is not a mount point is fine.
pub fn unmount(merged: &Path) -> io::Result<()> {
    match nix::mount::umount2(merged, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// The mount points of this process's mount namespace under `root`, deepest first.
pub fn mounted_under(root: &Path) -> io::Result<Vec<PathBuf>> {
    let table = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut points: Vec<PathBuf> = table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|point| PathBuf::from(unescape(point)))
        .filter(|point| point.starts_with(root) && point != root)
        .collect();
    points.sort_by_key(|point| std::cmp::Reverse(point.components().count()));
    Ok(points)
}

/// `path` as an overlay option's value: the option string separates layers with `:` and
/// options with `,`, so a path with either (or a backslash, which escapes them) is refused
/// and the work directory is copied instead.
fn option_path(path: &Path) -> io::Result<&str> {
    match path.to_str() {
        Some(text) if !text.contains([',', ':', '\\']) => Ok(text),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} cannot be an overlay layer (a comma, colon or backslash in its path)",
                path.display()
            ),
        )),
    }
}

/// A mount point as `/proc/self/mountinfo` writes it, with `\040`-style octal escapes (for
/// space, tab, newline and backslash) decoded.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let octal = bytes.get(at + 1..at + 4).and_then(|digits| {
            let text = std::str::from_utf8(digits).ok()?;
            u8::from_str_radix(text, 8).ok()
        });
        match (bytes[at], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                at += 4;
            }
            (byte, _) => {
                out.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_decoded_as_the_kernel_escapes_them() {
        assert_eq!(unescape(r"/var/tmp/a\040b\011c\134d"), "/var/tmp/a b\tc\\d");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/odd\04"), r"/odd\04", "a short escape is kept");
    }

    #[test]
    fn a_path_the_option_string_cannot_carry_is_refused() {
        assert!(option_path(Path::new("/var/tmp/kiln/pristine/x")).is_ok());
        for odd in ["/a,b", "/a:b", r"/a\b"] {
            assert!(option_path(Path::new(odd)).is_err(), "{odd}");
        }
    }
}
