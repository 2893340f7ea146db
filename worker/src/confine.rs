//! Paths a repository names (artifacts, cache directories, image contexts, hashed files),
//! kept inside its checkout. A commit can make any directory of its checkout a symbolic link
//! to anywhere on the worker, so a path must not only be relative and free of `..`: no part
//! of it may be a link.

use std::io;
use std::path::{Component, Path, PathBuf};

fn refuse(relative: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("`{}` {why}", relative.display()),
    )
}

fn normal_parts(relative: &Path) -> io::Result<Vec<&std::ffi::OsStr>> {
    relative
        .components()
        .map(|c| match c {
            Component::Normal(part) => Ok(part),
            Component::CurDir => Ok(std::ffi::OsStr::new(".")),
            _ => Err(refuse(relative, "leaves the checkout")),
        })
        .filter(|p| p.as_ref().map_or(true, |p| *p != "."))
        .collect()
}

/// `workdir/relative` if it exists and no part of it is a symbolic link; `None` if it does
/// not exist.
pub fn existing(workdir: &Path, relative: &Path) -> io::Result<Option<PathBuf>> {
    let mut path = workdir.to_owned();
    for part in normal_parts(relative)? {
        path.push(part);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(refuse(relative, "passes through a symbolic link"));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(Some(path))
}

/// `workdir/relative`, ready to be written: its directories made, none of them a symbolic
/// link, and whatever file or link was at the path itself removed.
pub fn destination(workdir: &Path, relative: &Path) -> io::Result<PathBuf> {
    let parts = normal_parts(relative)?;
    let Some((file, dirs)) = parts.split_last() else {
        return Err(refuse(relative, "names no file"));
    };
    std::fs::create_dir_all(workdir)?;
    let mut path = workdir.to_owned();
    for dir in dirs {
        path.push(dir);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(refuse(relative, "passes through a symbolic link"));
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(refuse(relative, "passes through a file")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::create_dir(&path)?,
            Err(e) => return Err(e),
        }
    }
    path.push(file);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_dir() => Err(refuse(relative, "is a directory")),
        Ok(_) => std::fs::remove_file(&path).map(|()| path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(path),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn refuses_links_and_escapes() {
        let dir = tempfile::tempdir().expect("dir");
        let (work, outside) = (dir.path().join("work"), dir.path().join("outside"));
        std::fs::create_dir_all(work.join("real")).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::fs::write(work.join("real/file"), "x").expect("write");
        std::os::unix::fs::symlink(&outside, work.join("dist")).expect("link");
        std::os::unix::fs::symlink(outside.join("f"), work.join("real/link")).expect("link");

        let err = |r: io::Result<PathBuf>| r.expect_err("refused").to_string();
        assert!(err(destination(&work, Path::new("dist/x"))).contains("symbolic link"));
        assert!(err(destination(&work, Path::new("../x"))).contains("leaves the checkout"));
        assert!(err(destination(&work, Path::new("/etc/x"))).contains("leaves the checkout"));
        assert!(err(destination(&work, Path::new("real/file/x"))).contains("through a file"));
        // A link at the path itself is replaced, never written through.
        let replaced = destination(&work, Path::new("real/link")).expect("allowed");
        std::fs::write(&replaced, "in").expect("write");
        assert!(!outside.join("f").exists());
        assert_eq!(
            destination(&work, Path::new("new/dir/x")).expect("made"),
            work.join("new/dir/x")
        );

        assert!(existing(&work, Path::new("dist")).is_err());
        assert!(existing(&work, Path::new("dist/a")).is_err());
        assert_eq!(
            existing(&work, Path::new("real/file")).expect("fine"),
            Some(work.join("real/file"))
        );
        assert_eq!(
            existing(&work, Path::new("./real")).expect("fine"),
            Some(work.join("real"))
        );
        assert_eq!(
            existing(&work, Path::new("nothing/here")).expect("fine"),
            None
        );
    }
}
