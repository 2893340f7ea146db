//! A Windows Job Object holding a task's processes: everything the task starts, at any
//! depth, is in it and goes with it, whether it ends, times out or is cancelled. It is what
//! a process group is on Unix. `taskkill /T` would walk the tree instead, and miss a process
//! whose parent had already exited.
//!
//! The task's process is started suspended (with [`CREATION_FLAGS`]), put in the job, and
//! only then let run, so nothing it starts can escape the job by starting first.
//!
//! One of Kiln's two `unsafe` modules (with `parent_death.rs`): the calls into Windows,
//! each on handles this module owns.
#![allow(unsafe_code)]

use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle, RawHandle};

use windows_sys::Win32::Foundation::INVALID_HANDLE_VALUE;
use windows_sys::Win32::System::Diagnostics::ToolHelp::{
    CreateToolhelp32Snapshot, TH32CS_SNAPTHREAD, THREADENTRY32, Thread32First, Thread32Next,
};
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
    JOBOBJECT_EXTENDED_LIMIT_INFORMATION, JobObjectExtendedLimitInformation,
    SetInformationJobObject, TerminateJobObject,
};
use windows_sys::Win32::System::Threading::{
    CREATE_SUSPENDED, OpenThread, ResumeThread, THREAD_SUSPEND_RESUME,
};

/// How the task's process is created: suspended, until [`JobObject::hold`] lets it run.
pub(super) const CREATION_FLAGS: u32 = CREATE_SUSPENDED;

/// The exit code of the processes the job kills.
const KILLED_EXIT_CODE: u32 = 1;

/// A job that kills every process in it when it is closed (dropped).
#[derive(Debug)]
pub(super) struct JobObject(OwnedHandle);

impl JobObject {
    /// Puts `process` (the suspended process whose id is `pid`) in a new job, then lets it
    /// run. On an error the process stays suspended, for the caller to kill.
    pub(super) fn hold(process: RawHandle, pid: u32) -> io::Result<Self> {
        // SAFETY: no security attributes and no name are valid arguments; the handle
        // returned is checked, then owned.
        let job = unsafe {
            owned(
                CreateJobObjectW(std::ptr::null(), std::ptr::null()),
                std::ptr::null_mut(),
            )
        }?;
        let job = Self(job);
        let mut limits = JOBOBJECT_EXTENDED_LIMIT_INFORMATION::default();
        limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
        let size = u32::try_from(size_of_val(&limits)).expect("a small structure");
        // SAFETY: `limits` is the structure this information class names, of `size` bytes,
        // and outlives the call.
        succeeded(unsafe {
            SetInformationJobObject(
                job.0.as_raw_handle(),
                JobObjectExtendedLimitInformation,
                (&raw const limits).cast(),
                size,
            )
        })?;
        // SAFETY: both handles are open: the job's is owned here, the process's by the
        // caller's `Child`.
        succeeded(unsafe { AssignProcessToJobObject(job.0.as_raw_handle(), process) })?;
        resume(pid)?;
        Ok(job)
    }

    /// Kills every process in the job, now.
    pub(super) fn kill(&self) {
        // SAFETY: the job's handle is open while `self` lives. A job already empty is the
        // goal, not an error.
        unsafe { TerminateJobObject(self.0.as_raw_handle(), KILLED_EXIT_CODE) };
    }
}

/// Lets the threads of the suspended process `pid` run (a new process has one).
fn resume(pid: u32) -> io::Result<()> {
    // SAFETY: the flags are valid; the handle returned is checked, then owned.
    let snapshot = unsafe {
        owned(
            CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0),
            INVALID_HANDLE_VALUE,
        )
    }?;
    let mut entry = THREADENTRY32 {
        dwSize: u32::try_from(size_of::<THREADENTRY32>()).expect("a small structure"),
        ..Default::default()
    };
    let mut resumed = 0;
    // SAFETY: `entry` is a THREADENTRY32 with its size set, as the snapshot calls require.
    let mut more = unsafe { Thread32First(snapshot.as_raw_handle(), &raw mut entry) } != 0;
    while more {
        if entry.th32OwnerProcessID == pid {
            // SAFETY: as above; the thread's handle is checked, then owned.
            let thread = unsafe {
                owned(
                    OpenThread(THREAD_SUSPEND_RESUME, 0, entry.th32ThreadID),
                    std::ptr::null_mut(),
                )
            }?;
            // SAFETY: the thread's handle is open and may suspend and resume it.
            if unsafe { ResumeThread(thread.as_raw_handle()) } == u32::MAX {
                return Err(io::Error::last_os_error());
            }
            resumed += 1;
        }
        // SAFETY: as for `Thread32First`.
        more = unsafe { Thread32Next(snapshot.as_raw_handle(), &raw mut entry) } != 0;
    }
    if resumed == 0 {
        return Err(io::Error::other(
            "the task's process has no thread to resume",
        ));
    }
    Ok(())
}

/// `handle` owned (closed when dropped), or the last error when it is `failed`, the value
/// the call that returned it fails with.
///
/// # Safety
///
/// `handle` must be a handle the caller owns and nothing else closes, or `failed`.
unsafe fn owned(handle: RawHandle, failed: RawHandle) -> io::Result<OwnedHandle> {
    if handle == failed {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: an open handle that the caller owns, as the function requires.
    Ok(unsafe { OwnedHandle::from_raw_handle(handle) })
}

/// The last error unless a Windows call returned `TRUE`.
fn succeeded(result: i32) -> io::Result<()> {
    if result == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
