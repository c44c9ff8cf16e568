//! SQLite WAL checkpoints on a thread of their own.
//!
//! In WAL mode every commit appends the pages it changed to the `-wal` file, and a
//! *checkpoint* copies them back into the database file and syncs it. SQLite runs that
//! checkpoint in the connection that committed, right after the commit, once the log holds
//! `wal_autocheckpoint` pages. The main database's writer is the one connection every write
//! queues for, and the intake journal's is the accept thread itself: a checkpoint there
//! (thousands of pages copied and synced, 20–50 ms on a busy disk) held up every write queued
//! behind it — a fallback firing, a transactional send's outcome, an accept.
//!
//! With `database.sqlite_background_checkpoint`, the writer's WAL hook replaces SQLite's
//! automatic checkpoint. SQLite's own hook checkpoints after every commit that leaves the log
//! at `wal_autocheckpoint` pages or more; this one only wakes a [`Checkpointer`] then, whose
//! thread runs the checkpoint from a connection of its own (`PRAGMA wal_checkpoint(PASSIVE)`:
//! no write lock, the writer keeps committing while the pages are copied). Nothing else
//! wakes it: below that size the log is left alone, as SQLite leaves it. Because commits go
//! on during a pass, the log often holds a few new pages when the pass ends and cannot start
//! over at once; the next commit wakes another (short) pass, until one ends with everything
//! copied and the log starts over. Should the log reach four times the threshold, the writer
//! also tries a passive checkpoint after its commit, as SQLite would; that copies something
//! only when the thread is not checkpointing (it could not open the file, or is gone), since
//! a checkpoint under way makes another one give up at once. Dropping the `Checkpointer`
//! stops its thread (after the pass under way, if any).

use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use rusqlite::{Connection, OpenFlags, ffi};
use sea_orm::DbErr;

use crate::settings::DatabaseSettings;

/// Between a writer's commits and the checkpointing thread.
pub struct WalSignal {
    /// Log size (pages) from which the thread is woken.
    threshold: c_int,
    /// Woken, not yet checkpointed; or stopping.
    state: Mutex<SignalState>,
    wake: Condvar,
    /// Pages the thread copied back so far (as told apart between passes: see
    /// [`Pass::copied_since`]).
    copied: AtomicU64,
}

#[derive(Default)]
struct SignalState {
    due: bool,
    stop: bool,
}

impl WalSignal {
    fn new(threshold: u32) -> WalSignal {
        WalSignal {
            threshold: c_int::try_from(threshold.max(1)).unwrap_or(c_int::MAX),
            state: Mutex::default(),
            wake: Condvar::new(),
            copied: AtomicU64::new(0),
        }
    }

    /// A commit left `frames` pages in the log: whether the writer must checkpoint itself
    /// (the thread fell four times the threshold behind).
    fn committed(&self, frames: c_int) -> bool {
        if frames < self.threshold {
            return false;
        }
        if let Ok(mut s) = self.state.lock()
            && !s.due
        {
            s.due = true;
            self.wake.notify_one();
        }
        frames >= self.threshold.saturating_mul(4)
    }

    /// Wait until a checkpoint is due; false once stopping.
    fn wait(&self) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        while !s.due && !s.stop {
            s = match self.wake.wait(s) {
                Ok(s) => s,
                Err(_) => return false,
            };
        }
        s.due = false;
        !s.stop
    }

    fn stop(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.stop = true;
            self.wake.notify_one();
        }
    }
}

/// SQLite's WAL hook: called on the writer's thread after each commit with the log's size.
extern "C" fn wal_hook(
    arg: *mut c_void,
    db: *mut ffi::sqlite3,
    name: *const c_char,
    frames: c_int,
) -> c_int {
    // SAFETY: `arg` is the `&'static WalSignal` given to `install` (leaked, never freed).
    let signal = unsafe { &*(arg as *const WalSignal) };
    if signal.committed(frames) {
        // SAFETY: SQLite passes the committing connection and its database's name, valid for
        // the duration of this call, as its own automatic checkpoint does.
        unsafe {
            ffi::sqlite3_wal_checkpoint_v2(
                db,
                name,
                ffi::SQLITE_CHECKPOINT_PASSIVE,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            );
        }
    }
    ffi::SQLITE_OK
}

/// Make `db`'s commits wake `signal`'s thread instead of checkpointing themselves.
///
/// # Safety
/// `db` must be an open connection, used only by its own thread during this call.
pub unsafe fn install(db: *mut ffi::sqlite3, signal: &'static WalSignal) {
    // SAFETY: per this function's contract; the hook's argument lives for the program.
    unsafe {
        ffi::sqlite3_wal_hook(
            db,
            Some(wal_hook),
            signal as *const WalSignal as *mut c_void,
        );
    }
}

/// The checkpointing thread of one database file; dropping it stops the thread.
pub struct Checkpointer {
    signal: &'static WalSignal,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.signal.stop();
    }
}

impl Checkpointer {
    /// Start the thread `thread` that checkpoints `path` (a SQLite file in WAL mode) when a
    /// writer with [`Checkpointer::signal`] installed finds `threshold` pages in the log,
    /// syncing as `synchronous` (`FULL`, `NORMAL` or `OFF`) says.
    fn start(
        path: &str,
        threshold: u32,
        synchronous: &'static str,
        thread: &'static str,
    ) -> std::io::Result<Arc<Checkpointer>> {
        // One per database opened: it must outlive every connection whose hook points to it,
        // and those may outlive this handle.
        let signal: &'static WalSignal = Box::leak(Box::new(WalSignal::new(threshold)));
        let path = path.to_string();
        std::thread::Builder::new()
            .name(thread.to_string())
            .spawn(move || run(&path, synchronous, thread, signal))?;
        Ok(Arc::new(Checkpointer { signal }))
    }

    /// The thread of the file `path` when `database.sqlite_background_checkpoint` is on.
    pub fn for_file(
        settings: &DatabaseSettings,
        path: &str,
        threshold: u32,
        thread: &'static str,
    ) -> Result<Option<Arc<Checkpointer>>, DbErr> {
        if !settings.sqlite_background_checkpoint {
            return Ok(None);
        }
        Checkpointer::start(path, threshold, super::sync_level(settings), thread)
            .map(Some)
            .map_err(|e| DbErr::Custom(format!("starting the {thread} thread: {e}")))
    }

    /// What a writer's connection installs (see [`install`]).
    pub fn signal(&self) -> &'static WalSignal {
        self.signal
    }

    /// Pages this thread copied back into the database file so far.
    pub fn pages_copied(&self) -> u64 {
        self.signal.copied.load(Ordering::Relaxed)
    }
}

fn run(path: &str, synchronous: &str, thread: &'static str, signal: &'static WalSignal) {
    // Opened at the first pass: the writer may not have created the file yet.
    let mut conn: Option<Connection> = None;
    let mut failing = false;
    let mut prev = Pass::default();
    while signal.wait() {
        let started = Instant::now();
        let pass = match &conn {
            Some(c) => checkpoint(c),
            None => open(path, synchronous).and_then(|c| {
                let pass = checkpoint(&c);
                conn = Some(c);
                pass
            }),
        };
        match pass {
            Ok(pass) => {
                failing = false;
                let copied = pass.copied_since(prev);
                prev = pass;
                if copied > 0 {
                    signal
                        .copied
                        .fetch_add(copied.unsigned_abs(), Ordering::Relaxed);
                    let took = started.elapsed().as_secs_f64();
                    tracing::debug!(
                        thread,
                        pages = copied,
                        log = pass.log,
                        took_ms = took * 1000.0,
                        "WAL checkpointed"
                    );
                    metrics::counter!("msghub_sqlite_checkpointed_pages_total", "thread" => thread)
                        .increment(copied.unsigned_abs());
                    metrics::histogram!("msghub_sqlite_checkpoint_seconds", "thread" => thread)
                        .record(took);
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(file = %path, error = %e, "a WAL checkpoint failed; retrying (meanwhile the writer checkpoints past four times the threshold)");
                }
                failing = true;
            }
        }
    }
}

fn open(path: &str, synchronous: &str) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // The copied pages are synced as the writers' own checkpoints synced them.
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "cache_size", -256)?;
    Ok(conn)
}

/// What one passive checkpoint found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Pass {
    /// Pages in the log.
    pub log: i64,
    /// Pages of the log that are in the database file (all of them, unless a reader still
    /// needs older ones or a writer committed meanwhile).
    pub checkpointed: i64,
}

impl Pass {
    /// Pages this pass copied, after `prev`: the log starts again from its first page once
    /// everything in it was copied and a writer comes. Approximate: a log that started over
    /// and grew past its old size between two passes, or pages a writer's own checkpoint
    /// copied between them, are miscounted.
    fn copied_since(&self, prev: Pass) -> i64 {
        if self.log >= prev.log {
            (self.checkpointed - prev.checkpointed).max(0)
        } else {
            self.checkpointed.max(0)
        }
    }
}

/// One passive checkpoint: SQLite answers `(busy, log, checkpointed)`, the counts -1 when the
/// file is not in WAL mode.
fn checkpoint(conn: &Connection) -> rusqlite::Result<Pass> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok(Pass {
            log: r.get(1)?,
            checkpointed: r.get(2)?,
        })
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn commits_wake_the_thread_from_the_threshold_and_checkpoint_themselves_from_four_times_it() {
        let signal = WalSignal::new(100);
        assert!(!signal.committed(99));
        assert!(!signal.state.lock().unwrap().due);
        assert!(!signal.committed(100));
        assert!(signal.state.lock().unwrap().due);
        // Woken: the wait returns at once, and the next one would sleep again.
        assert!(signal.wait());
        assert!(!signal.state.lock().unwrap().due);
        assert!(!signal.committed(399));
        assert!(signal.committed(400));
        signal.stop();
        assert!(!signal.wait(), "a stopped thread's wait ends at once");
    }

    #[test]
    fn pages_copied_count_from_the_last_pass_or_from_a_restarted_log() {
        let prev = Pass {
            log: 100,
            checkpointed: 60,
        };
        let grown = Pass {
            log: 150,
            checkpointed: 150,
        };
        assert_eq!(grown.copied_since(prev), 90);
        let restarted = Pass {
            log: 40,
            checkpointed: 40,
        };
        assert_eq!(restarted.copied_since(prev), 40);
        assert_eq!(prev.copied_since(prev), 0);
    }
}
