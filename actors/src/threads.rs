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
