//! How a call made from Python runs on the package's own Tokio runtime.
//!
//! Every RPC method returns a [`Pending`]: the call, not yet started. The sync
//! facade calls [`Pending::wait`], which drives it to completion with the GIL
//! released; the asyncio facade awaits [`Pending::future`], which runs it on the
//! runtime and resolves an asyncio future on the caller's event loop. One Rust
//! method per RPC therefore serves both `Client` and `AsyncClient`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use pyo3::exceptions::{PyRuntimeError, PyStopAsyncIteration, PyStopIteration};
use pyo3::intern;
use pyo3::prelude::*;
use tokio::runtime::Runtime;

use crate::bridge::Route;
use crate::error::to_py_err;
use crate::value::Value;

/// What a call ends with: plain data, or the client error.
pub type Outcome = Result<Value, arbiter_client::Error>;
/// A call that has not started yet.
pub type BoxCall = Pin<Box<dyn Future<Output = Outcome> + Send + 'static>>;
/// A stream of items as plain data.
pub type BoxStream = arbiter_client::ResultStream<Value>;

/// How often a blocking wait wakes to let Python handle signals (Ctrl-C).
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// The package's runtime, started on first use and shared by every client, so
/// one process keeps one set of worker threads however many clients it makes.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("arbiter-client")
            .build()
            .expect("the Tokio runtime starts (threads and an I/O driver are available)")
    })
}

/// Runs `fut` to completion on the runtime with the GIL released, waking every
/// [`SIGNAL_CHECK`] so Ctrl-C interrupts a long wait (dropping `fut` cancels the call).
fn block_on<T: Send>(
    py: Python<'_>,
    fut: &mut (dyn Future<Output = T> + Send + Unpin),
) -> PyResult<T> {
    loop {
        let step = py.detach(|| {
            runtime().block_on(async { tokio::time::timeout(SIGNAL_CHECK, &mut *fut).await })
        });
        match step {
            Ok(value) => return Ok(value),
            Err(_elapsed) => py.check_signals()?,
        }
    }
}

fn outcome_to_py(py: Python<'_>, outcome: Outcome) -> PyResult<Py<PyAny>> {
    match outcome {
        Ok(value) => Ok(value.to_py(py)?.unbind()),
        Err(error) => Err(to_py_err(py, &error)),
    }
}

/// One call, started by `wait()` (blocking, GIL released) or `future()` (asyncio).
#[pyclass(module = "arbiter._arbiter", frozen)]
pub struct Pending {
    call: Mutex<Option<BoxCall>>,
}

impl Pending {
    pub fn new(call: impl Future<Output = Outcome> + Send + 'static) -> Self {
        Self {
            call: Mutex::new(Some(Box::pin(call))),
        }
    }

    fn take(&self) -> PyResult<BoxCall> {
        self.call
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("this call was already started"))
    }
}

#[pymethods]
impl Pending {
    /// Runs the call and blocks until it finishes, with the GIL released.
    fn wait(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut call = self.take()?;
        let outcome = block_on(py, &mut call)?;
        outcome_to_py(py, outcome)
    }

    /// Runs the call on the runtime and returns an asyncio future of the running
    /// event loop that resolves with its result. Cancelling the future cancels the call.
    fn future<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let call = self.take()?;
        spawn_into_future(py, call, outcome_to_py)
    }
}

/// Set once the interpreter starts to exit (an `atexit` hook): from then on the
/// runtime's threads no longer attach to Python.
static EXITING: AtomicBool = AtomicBool::new(false);
/// How many runtime threads are attached to Python (or about to be) right now.
static ATTACHED: AtomicUsize = AtomicUsize::new(0);

/// Runs `f` attached to Python from a runtime thread, unless the interpreter is
/// exiting. A thread that still holds (or waits for) the GIL when finalization
/// starts makes CPython abort ("PyGILState_Release: thread state must be current"),
/// so [`quiesce`] waits for the threads counted here before the interpreter goes.
pub(crate) fn attach_unless_exiting<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> Option<R> {
    ATTACHED.fetch_add(1, Ordering::SeqCst);
    let result = if EXITING.load(Ordering::SeqCst) {
        None
    } else {
        Python::try_attach(f)
    };
    ATTACHED.fetch_sub(1, Ordering::SeqCst);
    result
}

/// Registered with `atexit`: stops runtime threads from attaching to Python and
/// waits (GIL released, at most 2 s) for those attached to finish. Futures still
/// pending then are never resolved; nobody is left to await them.
#[pyfunction]
fn quiesce(py: Python<'_>) {
    EXITING.store(true, Ordering::SeqCst);
    py.detach(|| {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while ATTACHED.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}

/// Registers [`quiesce`] to run when the interpreter exits.
pub fn register_exit_hook(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let hook = wrap_pyfunction!(quiesce, m)?;
    m.py().import("atexit")?.call_method1("register", (hook,))?;
    Ok(())
}

/// Spawns `work` on the runtime and returns an asyncio future of the running loop
/// that its result, turned into Python by `convert` on the loop's thread, resolves
/// (see [`bridge`](crate::bridge) for how the result gets there).
fn spawn_into_future<'py, F, T>(
    py: Python<'py>,
    work: F,
    convert: fn(Python<'_>, T) -> PyResult<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let (event_loop, route) = Route::to_running_loop(py)?;
    let future = event_loop.call_method0(intern!(py, "create_future"))?;
    let target = future.clone().unbind();
    let task = runtime().spawn(async move {
        let result = work.await;
        route.deliver(target, Box::new(move |py: Python<'_>| convert(py, result)));
    });
    future.call_method1(
        intern!(py, "add_done_callback"),
        (AbortOnDone {
            task: task.abort_handle(),
        },),
    )?;
    Ok(future)
}

/// Done-callback of an asyncio future: when the future is cancelled, the call
/// running for it on the runtime is aborted too (a no-op once the call finished).
#[pyclass(module = "arbiter._arbiter", frozen)]
struct AbortOnDone {
    task: tokio::task::AbortHandle,
}

#[pymethods]
impl AbortOnDone {
    fn __call__(&self, _future: &Bound<'_, PyAny>) {
        self.task.abort();
    }
}

/// State of a server stream: opened on the first read.
enum StreamState {
    Opening(Pin<Box<dyn Future<Output = Result<BoxStream, arbiter_client::Error>> + Send>>),
    Open(BoxStream),
    Closed,
}

struct StreamShared {
    state: tokio::sync::Mutex<StreamState>,
    closed: AtomicBool,
    close_requested: tokio::sync::Notify,
}

/// A server stream (audit tail, export): `next()` blocks, `next_future()` is for
/// asyncio. Both signal the end (StopIteration / StopAsyncIteration) once the
/// stream has ended or was closed.
#[pyclass(module = "arbiter._arbiter", frozen)]
pub struct Stream {
    shared: Arc<StreamShared>,
}

impl Stream {
    pub fn new(
        open: impl Future<Output = Result<BoxStream, arbiter_client::Error>> + Send + 'static,
    ) -> Self {
        Self {
            shared: Arc::new(StreamShared {
                state: tokio::sync::Mutex::new(StreamState::Opening(Box::pin(open))),
                closed: AtomicBool::new(false),
                close_requested: tokio::sync::Notify::new(),
            }),
        }
    }
}

/// Reads the next item, opening the stream first if needed. A `close()` from
/// another thread ends a read that is waiting for the server.
async fn next_item(shared: Arc<StreamShared>) -> Result<Option<Value>, arbiter_client::Error> {
    let close = shared.close_requested.notified();
    tokio::pin!(close);
    // Registered before the flag is read, so a close between the two is not missed.
    close.as_mut().enable();
    let mut state = shared.state.lock().await;
    if shared.closed.load(Ordering::Acquire) {
        *state = StreamState::Closed;
        return Ok(None);
    }
    loop {
        let step = match &mut *state {
            StreamState::Opening(open) => tokio::select! {
                _ = close.as_mut() => None,
                opened = open => Some(opened.map(StreamState::Open)),
            },
            StreamState::Open(stream) => {
                let item = tokio::select! {
                    _ = close.as_mut() => None,
                    item = stream.next() => Some(item),
                };
                let result = match item {
                    None | Some(None) => Ok(None),
                    Some(Some(Ok(value))) => return Ok(Some(value)),
                    Some(Some(Err(error))) => Err(error),
                };
                *state = StreamState::Closed;
                return result;
            }
            StreamState::Closed => return Ok(None),
        };
        match step {
            Some(Ok(open)) => *state = open,
            Some(Err(error)) => {
                *state = StreamState::Closed;
                return Err(error);
            }
            None => {
                *state = StreamState::Closed;
                return Ok(None);
            }
        }
    }
}

fn item_to_py(
    py: Python<'_>,
    item: Result<Option<Value>, arbiter_client::Error>,
    end: fn() -> PyErr,
) -> PyResult<Py<PyAny>> {
    match item {
        Ok(Some(value)) => Ok(value.to_py(py)?.unbind()),
        Ok(None) => Err(end()),
        Err(error) => Err(to_py_err(py, &error)),
    }
}

#[pymethods]
impl Stream {
    /// The next item, blocking with the GIL released; raises StopIteration at the end.
    fn next(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut read = Box::pin(next_item(self.shared.clone()));
        let item = block_on(py, &mut read)?;
        item_to_py(py, item, || PyStopIteration::new_err(()))
    }

    /// An asyncio future of the next item; it raises StopAsyncIteration at the end.
    fn next_future<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let shared = self.shared.clone();
        spawn_into_future(py, next_item(shared), |py, item| {
            item_to_py(py, item, || PyStopAsyncIteration::new_err(()))
        })
    }

    /// Ends the stream and the server call behind it; a read waiting in another
    /// thread or task ends too, and later reads end at once.
    fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.close_requested.notify_waiters();
        // Drop the connection now unless a reader holds the state; that reader
        // sees the flag and drops it itself.
        if let Ok(mut state) = self.shared.state.try_lock() {
            *state = StreamState::Closed;
        }
    }
}
