//! How a call that finished on a Tokio worker resolves its asyncio future.
//!
//! An asyncio future may only be touched on its event loop's thread, with the GIL.
//! The obvious bridge (the worker attaches to Python and calls
//! `loop.call_soon_threadsafe`) makes every result wait for the GIL, which the loop
//! thread holds whenever it runs Python: under load a worker waits up to the
//! interpreter's switch interval (5 ms), and even on an idle loop the GIL changes
//! hands twice more per call. So each event loop gets a [`Mailbox`] instead: the
//! worker pushes the finished result (plain Rust data) and, only when the mailbox
//! was empty, writes one byte to a socket the loop watches (`add_reader`). The loop
//! thread then drains every result that arrived since, converting and resolving them
//! in one callback with the GIL it already holds. A worker never attaches to Python.
//!
//! Loops that cannot watch a file descriptor (Windows' proactor loop, and any platform
//! without Unix sockets) keep the `call_soon_threadsafe` path.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::exceptions::PyNotImplementedError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyWeakrefMethods, PyWeakrefReference};

/// Turns a finished call into its Python result once the GIL is held.
pub type Convert = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

/// Where a finished call goes: the mailbox of its loop, or the loop itself through
/// `call_soon_threadsafe` when the loop cannot watch a socket.
pub enum Route {
    Mailbox(Arc<Mailbox>),
    Threadsafe(Py<PyAny>),
}

impl Route {
    /// The route to the running event loop of this thread (found once per loop).
    pub fn to_running_loop(py: Python<'_>) -> PyResult<(Bound<'_, PyAny>, Route)> {
        let event_loop = get_running_loop(py)?.call0()?;
        let route = match Mailbox::of(&event_loop)? {
            Some(mailbox) => Route::Mailbox(mailbox),
            None => Route::Threadsafe(event_loop.clone().unbind()),
        };
        Ok((event_loop, route))
    }

    /// Hands `result` to the loop, from any thread. `future` is resolved on the loop's
    /// thread; a loop that is closed by then never resolves it (nobody waits any more).
    pub fn deliver(self, future: Py<PyAny>, result: Convert) {
        match self {
            Route::Mailbox(mailbox) => mailbox.push(Delivery { future, result }),
            Route::Threadsafe(event_loop) => threadsafe(event_loop, future, result),
        }
    }
}

/// `asyncio.get_running_loop`, looked up once rather than imported on every call.
fn get_running_loop(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static GET: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    GET.import(py, "asyncio", "get_running_loop")
}

/// One finished call on its way to the loop.
struct Delivery {
    future: Py<PyAny>,
    result: Convert,
}

/// The finished calls of one event loop, and how they wake it.
pub struct Mailbox {
    /// The loop, weakly: the mailbox must not keep a finished loop alive, and a live
    /// weak reference also makes the identity check sound (no reused address).
    event_loop: Py<PyWeakrefReference>,
    queue: Mutex<Vec<Delivery>>,
    /// None for a loop that cannot watch a socket: remembered so that it is not asked
    /// again on every call.
    wake: Option<wake::Pair>,
    /// Cleared when the loop lets go of its reader ([`Drain`] is dropped), which it does
    /// when it is closed: the mailbox is then forgotten on the next miss and its sockets
    /// closed, without waiting for the garbage collector to free the loop itself (a
    /// process that runs a loop per test or per request would otherwise pile them up).
    watched: AtomicBool,
}

/// The mailboxes of the loops that have made calls, searched by loop (usually one).
static MAILBOXES: Mutex<Vec<Arc<Mailbox>>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Mailbox {
    /// The mailbox of `event_loop`, made and registered with the loop on first use;
    /// None when the loop cannot watch a socket.
    fn of(event_loop: &Bound<'_, PyAny>) -> PyResult<Option<Arc<Mailbox>>> {
        let py = event_loop.py();
        let gone = {
            // No Python code runs while the lock is held: it could switch the GIL to a
            // thread that then waits for this lock.
            let mut boxes = lock(&MAILBOXES);
            let found = boxes.iter().find(|m| {
                m.watched.load(Ordering::Acquire)
                    && m.event_loop
                        .bind(py)
                        .upgrade()
                        .is_some_and(|known| known.is(event_loop))
            });
            if let Some(mailbox) = found {
                return Ok(mailbox.wake.is_some().then(|| mailbox.clone()));
            }
            // A miss: forget the loops that are closed or gone; they are dropped below,
            // outside the lock.
            let (live, gone): (Vec<_>, Vec<_>) =
                std::mem::take(&mut *boxes).into_iter().partition(|m| {
                    m.watched.load(Ordering::Acquire) && m.event_loop.bind(py).upgrade().is_some()
                });
            *boxes = live;
            gone
        };
        drop(gone);
        let Some(wake) = wake::Pair::new() else {
            return Ok(None);
        };
        let fd = wake.reader_fd();
        let weak = PyWeakrefReference::new(event_loop)?.unbind();
        let mailbox = Arc::new(Mailbox {
            event_loop: weak.clone_ref(py),
            queue: Mutex::new(Vec::new()),
            wake: Some(wake),
            watched: AtomicBool::new(true),
        });
        let drain = Drain {
            mailbox: mailbox.clone(),
        };
        let mailbox = match event_loop.call_method1(intern!(py, "add_reader"), (fd, drain)) {
            Ok(_) => mailbox,
            Err(e) if e.is_instance_of::<PyNotImplementedError>(py) => Arc::new(Mailbox {
                event_loop: weak,
                queue: Mutex::new(Vec::new()),
                wake: None,
                // Nothing to watch: it lives as long as its loop.
                watched: AtomicBool::new(true),
            }),
            Err(e) => return Err(e),
        };
        lock(&MAILBOXES).push(mailbox.clone());
        Ok(mailbox.wake.is_some().then_some(mailbox))
    }

    /// From any thread, without the GIL: queue the result and wake the loop if it
    /// had nothing queued (otherwise a wake-up is on its way already).
    fn push(&self, delivery: Delivery) {
        let first = {
            let mut queue = lock(&self.queue);
            queue.push(delivery);
            queue.len() == 1
        };
        if let (true, Some(wake)) = (first, &self.wake) {
            wake.notify();
        }
    }

    /// On the loop's thread: resolve every queued future.
    fn drain(&self, py: Python<'_>) {
        // Clear the wake-ups before taking the queue: a result pushed after the take
        // then wakes the loop again instead of waiting for the next one.
        if let Some(wake) = &self.wake {
            wake.clear();
        }
        let batch = std::mem::take(&mut *lock(&self.queue));
        for delivery in batch {
            resolve(py, delivery.future.bind(py), (delivery.result)(py));
        }
    }
}

/// The reader callback of a loop's mailbox.
#[pyclass(module = "arbiter._arbiter", frozen)]
struct Drain {
    mailbox: Arc<Mailbox>,
}

#[pymethods]
impl Drain {
    fn __call__(&self, py: Python<'_>) {
        self.mailbox.drain(py);
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        self.mailbox.watched.store(false, Ordering::Release);
    }
}

/// Sets the result or exception of `future` unless it is done (cancelled) already.
/// Runs on the loop's thread; an error here has nobody to go to, so it is dropped.
fn resolve(py: Python<'_>, future: &Bound<'_, PyAny>, result: PyResult<Py<PyAny>>) {
    let done = future
        .call_method0(intern!(py, "done"))
        .and_then(|d| d.is_truthy());
    if !matches!(done, Ok(false)) {
        return;
    }
    let _ = match result {
        Ok(value) => future.call_method1(intern!(py, "set_result"), (value,)),
        Err(err) => future.call_method1(intern!(py, "set_exception"), (err.into_value(py),)),
    };
}

/// The fallback: attach on the worker and have the loop resolve the future.
fn threadsafe(event_loop: Py<PyAny>, future: Py<PyAny>, result: Convert) {
    crate::pending::attach_unless_exiting(|py| {
        let value = match result(py) {
            Ok(value) => Ok(value),
            Err(err) => Err(err.into_value(py).into_any()),
        };
        let (ok, value) = match value {
            Ok(value) => (true, value),
            Err(value) => (false, value),
        };
        // A closed loop means nobody waits any more, so the error is dropped.
        let _ = resolver(py).and_then(|resolve| {
            event_loop.call_method1(py, "call_soon_threadsafe", (resolve, future, ok, value))
        });
    });
}

fn resolver(py: Python<'_>) -> PyResult<Py<PyAny>> {
    static RESOLVE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    RESOLVE
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(wrap_pyfunction!(resolve_future, py)?.into_any().unbind())
        })
        .map(|f| f.clone_ref(py))
}

/// Sets the result or exception of `future` unless it is done (cancelled) already.
#[pyfunction]
fn resolve_future(future: &Bound<'_, PyAny>, ok: bool, value: Bound<'_, PyAny>) -> PyResult<()> {
    if future.call_method0("done")?.is_truthy()? {
        return Ok(());
    }
    if ok {
        future.call_method1("set_result", (value,))?;
    } else {
        future.call_method1("set_exception", (value,))?;
    }
    Ok(())
}

/// The socket pair a mailbox wakes its loop with.
#[cfg(unix)]
mod wake {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    pub struct Pair {
        reader: UnixStream,
        writer: UnixStream,
    }

    impl Pair {
        /// None when the process cannot make one (out of descriptors): the caller
        /// falls back to `call_soon_threadsafe`.
        pub fn new() -> Option<Pair> {
            let (reader, writer) = UnixStream::pair().ok()?;
            reader.set_nonblocking(true).ok()?;
            writer.set_nonblocking(true).ok()?;
            Some(Pair { reader, writer })
        }

        pub fn reader_fd(&self) -> i32 {
            self.reader.as_raw_fd()
        }

        /// One byte per empty → non-empty transition; a full buffer (a loop that is
        /// not draining) already holds a wake-up, so that error is ignored.
        pub fn notify(&self) {
            let _ = (&self.writer).write(&[1]);
        }

        pub fn clear(&self) {
            let mut buf = [0u8; 64];
            while let Ok(n) = (&self.reader).read(&mut buf) {
                if n < buf.len() {
                    break;
                }
            }
        }
    }
}

/// Without Unix sockets every loop takes the `call_soon_threadsafe` path.
#[cfg(not(unix))]
mod wake {
    pub struct Pair;

    impl Pair {
        pub fn new() -> Option<Pair> {
            None
        }

        pub fn reader_fd(&self) -> i32 {
            -1
        }

        pub fn notify(&self) {}

        pub fn clear(&self) {}
    }
}
