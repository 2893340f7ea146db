//! Whole trees of files: copied (where a work directory cannot be an overlay) and handed to
//! another user.

use std::io;
use std::path::Path;

/// Copies the tree at `from` to `to`, which must not exist: directories, files with their
/// permissions, and symbolic links as links.
pub fn copy(from: &Path, to: &Path) -> io::Result<()> {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.map_err(io::Error::other)?;
        let relative = entry.path().strip_prefix(from).map_err(io::Error::other)?;
        let target = to.join(relative);
        let kind = entry.file_type();
        if kind.is_dir() {
            std::fs::create_dir(&target)?;
        } else if kind.is_symlink() {
            symlink(entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Makes `root` and everything under it `uid:gid`'s, links themselves rather than what they
/// point to. What is theirs already is left alone: in an overlay, changing a file's owner
/// would copy it into the upper layer.
#[cfg(unix)]
pub fn chown(root: &Path, uid: u32, gid: u32) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    for entry in walkdir::WalkDir::new(root) {
        let entry = entry.map_err(io::Error::other)?;
        let metadata = entry.metadata().map_err(io::Error::other)?;
        if (metadata.uid(), metadata.gid()) != (uid, gid) {
            std::os::unix::fs::lchown(entry.path(), Some(uid), Some(gid))?;
        }
    }
    Ok(())
}

#[cfg(not(unix))]
pub fn chown(_: &Path, _: u32, _: u32) -> io::Result<()> {
    Ok(())
}

/// Makes `link` a symbolic link to where the link `original` points.
#[cfg(unix)]
fn symlink(original: &Path, link: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(std::fs::read_link(original)?, link)
}

/// Makes `link` a symbolic link to where the link `original` points.
#[cfg(windows)]
fn symlink(original: &Path, link: &Path) -> io::Result<()> {
    let points_to = std::fs::read_link(original)?;
    if std::fs::metadata(original).is_ok_and(|target| target.is_dir()) {
        std::os::windows::fs::symlink_dir(points_to, link)
    } else {
        std::os::windows::fs::symlink_file(points_to, link)
    }
}
