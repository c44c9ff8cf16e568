//! Names and scheduling priorities of the hub's own threads.
//!
//! Threads are named, so `top -H`, `perf` and `/proc/<pid>/task/*/comm` tell them apart.
//!
//! A blast keeps the dispatch thread and SQLite's writer busy for seconds at a time. On a
//! machine whose cores are all busy, the threads that answer requests (HTTP workers, the
//! accept writer and the intake journal's connection) then wait for a core behind them, and a
//! transactional send's answer with them. Opt-in (`server.background_nice`), the background
//! threads get a lower priority (a positive nice value): the scheduler still gives them every
//! idle cycle, and a smaller weight when the cores are contended, so a request's thread runs
//! first when it wakes — and so does every other busy process on the machine, which is why it
//! is off by default. Linux only; elsewhere these do nothing.
//!
//! The threads that answer requests ask the scheduler for a short time slice instead
//! (`server.request_slice_us`, 100 µs by default, [`request_slice_current`]): on Linux 6.12
//! and later (EEVDF with custom slices), a task's slice sets how soon it runs after waking,
//! not its share of the cores. A request's thread that wakes on a busy machine is run within
//! about its own short slice, ahead of the tasks with the default slice (a few milliseconds),
//! while every thread keeps its weight: the blast's threads, the other processes and the
//! request threads get the same CPU time as before. Threads they start (a connection's, a
//! blocking pool's) get the default slice (`SCHED_FLAG_RESET_ON_FORK`). It needs no
//! privilege; older kernels take the request and ignore it.

/// Name the calling thread (what `top -H`, `perf` and `/proc/<pid>/task/*/comm` show; at most
/// 15 bytes are kept) and set its nice value.
pub fn name_current(name: &str, nice: i32) {
    #[cfg(target_os = "linux")]
    {
        if let Ok(c) = std::ffi::CString::new(
            name.as_bytes()
                .iter()
                .take(15)
                .copied()
                .collect::<Vec<u8>>(),
        ) {
            // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes, which
            // `c` outlives; the other arguments are unused.
            unsafe {
                libc::prctl(libc::PR_SET_NAME, c.as_ptr(), 0, 0, 0);
            }
        }
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        set_nice(tid, nice);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (name, nice);
}

/// Set the nice value of every thread of this process whose name starts with `prefix`; the
/// number of threads changed.
pub fn renice_named(prefix: &str, nice: i32) -> usize {
    #[cfg(target_os = "linux")]
    {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return 0;
        };
        let mut changed = 0;
        for task in tasks.flatten() {
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<i32>().ok())
            else {
                continue;
            };
            let named = std::fs::read_to_string(task.path().join("comm"))
                .map(|comm| comm.trim_end().starts_with(prefix))
                .unwrap_or(false);
            if named && set_nice(tid, nice) {
                changed += 1;
            }
        }
        changed
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (prefix, nice);
        0
    }
}

/// Ask for a time slice of `micros` microseconds (the kernel keeps it within 0.1–100 ms) for
/// the calling thread, keeping its policy and nice value, not for the threads it starts; 0
/// leaves the kernel's default. Whether the request was taken (kernels without custom slices
/// take it and ignore it).
pub fn request_slice_current(micros: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        if micros == 0 {
            return true;
        }
        let mut attr = SchedAttr::default();
        let size = std::mem::size_of::<SchedAttr>() as libc::c_uint;
        // SAFETY: sched_getattr writes at most `size` bytes into `attr`, a repr(C) struct of
        // that size; pid 0 is the calling thread.
        let got = unsafe {
            libc::syscall(
                libc::SYS_sched_getattr,
                0,
                &mut attr as *mut SchedAttr,
                size,
                0,
            )
        };
        if got != 0 || attr.sched_policy != libc::SCHED_OTHER as u32 {
            return false;
        }
        attr.size = size;
        // Threads started by this one get the default slice back.
        attr.sched_flags = SCHED_FLAG_RESET_ON_FORK;
        attr.sched_runtime = u64::from(micros) * 1000;
        // SAFETY: sched_setattr reads `attr.size` bytes from `attr`; pid 0 is the calling
        // thread. Only the slice changes: the policy and nice value are the ones just read.
        let set =
            unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
        if set != 0 {
            tracing::debug!(micros, "the kernel refused a request thread's time slice");
        }
        set == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = micros;
        false
    }
}

/// `sched_attr.sched_flags`: children do not inherit the thread's scheduling attributes.
#[cfg(target_os = "linux")]
const SCHED_FLAG_RESET_ON_FORK: u64 = 0x01;

/// The kernel's `struct sched_attr` (SCHED_ATTR_SIZE_VER1, 56 bytes).
#[cfg(target_os = "linux")]
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
    sched_util_min: u32,
    sched_util_max: u32,
}

#[cfg(target_os = "linux")]
fn set_nice(tid: i32, nice: i32) -> bool {
    if nice == 0 {
        return true;
    }
    // On Linux, PRIO_PROCESS with a thread id sets that one thread's nice value. Raising it
    // needs no privilege; a failure leaves the thread as it was, which is only slower.
    // SAFETY: setpriority takes plain integers.
    let done =
        unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice.clamp(-20, 19)) };
    if done != 0 {
        tracing::warn!(tid, nice, "could not lower a background thread's priority");
    }
    done == 0
}

/// A tokio runtime with one worker thread of its own, shut down without waiting when dropped
/// (dropping a runtime the usual way blocks, which an async caller must not do).
pub struct OwnRuntime {
    handle: tokio::runtime::Handle,
    runtime: Option<tokio::runtime::Runtime>,
}

impl OwnRuntime {
    /// `slice_us`: the time slice its thread asks for (see [`request_slice_current`]).
    pub fn new(name: &str, slice_us: u32) -> std::io::Result<OwnRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name)
            .on_thread_start(move || {
                request_slice_current(slice_us);
            })
            .enable_all()
            .build()?;
        Ok(OwnRuntime {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The nice value of the calling thread.
    fn current_nice() -> i32 {
        // SAFETY: gettid has no preconditions; getpriority only reads.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    // Nice 19, the lowest priority: raising a thread's nice value needs no privilege, whatever
    // nice value the tests themselves run at.
    #[test]
    fn a_named_thread_gets_its_name_and_nice_value() {
        let seen = std::thread::spawn(|| {
            name_current("msghub-test-priority-thread", 19);
            let comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap_or_default();
            (comm.trim_end().to_string(), current_nice())
        })
        .join()
        .ok();
        assert_eq!(seen, Some(("msghub-test-pri".to_string(), 19)));
    }

    /// The calling thread's `sched_attr`; `None` where the call is not allowed (a sandbox).
    fn current_attr() -> Option<SchedAttr> {
        let mut attr = SchedAttr::default();
        // SAFETY: as in `request_slice_current`.
        let got = unsafe {
            libc::syscall(
                libc::SYS_sched_getattr,
                0,
                &mut attr as *mut SchedAttr,
                std::mem::size_of::<SchedAttr>() as libc::c_uint,
                0,
            )
        };
        (got == 0).then_some(attr)
    }

    #[test]
    fn a_request_thread_keeps_its_nice_value_with_its_slice_and_its_children_do_not_get_it() {
        let seen = std::thread::spawn(|| {
            // 19: raising a thread's nice value needs no privilege, whatever the tests run at.
            name_current("slice-thread", 19);
            let before = current_attr()?;
            let taken = request_slice_current(250);
            let after = current_attr()?;
            let child = std::thread::spawn(current_attr).join().ok()??;
            Some((
                before.sched_runtime,
                taken,
                after,
                child.sched_runtime,
                current_nice(),
            ))
        })
        .join()
        .ok();
        let Some(seen) = seen else {
            unreachable!("the thread panicked")
        };
        // A sandbox that refuses sched_getattr: nothing to check.
        let Some((before, taken, after, child, nice)) = seen else {
            return;
        };
        assert!(taken, "sched_setattr refused the slice");
        assert_eq!(nice, 19);
        assert_eq!(after.sched_policy, libc::SCHED_OTHER as u32);
        // Kernels with custom slices (6.12+) report the one asked for; older ones report 0.
        if before != 0 {
            assert_eq!(after.sched_runtime, 250_000);
            assert_eq!(child, before, "a child thread kept the short slice");
        }
    }

    #[test]
    fn an_own_runtime_runs_its_tasks_on_its_named_thread_with_the_short_slice() {
        let Ok(rt) = OwnRuntime::new("own-rt-test", 300) else {
            unreachable!("the runtime did not start")
        };
        let seen = std::thread::spawn(move || {
            let task = rt.handle().spawn(async {
                let comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap_or_default();
                (comm.trim_end().to_string(), current_attr())
            });
            rt.handle().block_on(task).ok()
        })
        .join()
        .ok()
        .flatten();
        let Some((comm, attr)) = seen else {
            unreachable!("the task did not run")
        };
        assert_eq!(comm, "own-rt-test");
        // Kernels with custom slices (6.12+) report it; older ones and sandboxes do not.
        if let Some(attr) = attr.filter(|a| a.sched_runtime != 0) {
            assert_eq!(attr.sched_runtime, 300_000);
        }
    }

    #[test]
    fn threads_are_reniced_by_name() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let worker = std::thread::Builder::new()
            .name("renice-me-0".into())
            .spawn(move || {
                let _ = ready_tx.send(());
                let _ = rx.recv();
                current_nice()
            })
            .ok();
        let _ = ready_rx.recv();
        let before = current_nice();
        assert_eq!(renice_named("renice-me", 19), 1);
        let _ = tx.send(());
        assert_eq!(worker.and_then(|w| w.join().ok()), Some(19));
        // The caller's own thread is untouched.
        assert_eq!(current_nice(), before);
    }
}
