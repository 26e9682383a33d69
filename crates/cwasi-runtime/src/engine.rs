//! The wasmtime engine CWASI runs every function on: configuration, the epoch
//! ticker behind call timeouts, and module loading with a clear error per file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, Module};

use crate::compile_cache::{CompileCache, Fetched, Precompiled};
use crate::deadline::TickClock;
use crate::error::RuntimeError;
use crate::inspect::ModuleInfo;
use crate::load_report::LoadStage;
use crate::regular_file::{read_regular, Links};

/// How often the epoch advances. Timeouts are rounded up to this.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Number of epoch ticks that cover `timeout` (at least one, plus one for the
/// tick in progress).
pub fn ticks_for(timeout: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos();
    (timeout.as_nanos().div_ceil(tick) as u64).saturating_add(1)
}

/// Builds the engine: epoch interruption on, so that every store can carry a
/// deadline, and a background thread that advances the epoch.
pub fn new_engine() -> Result<(Engine, EpochTicker), RuntimeError> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.max_wasm_stack(crate::native_stack::WASM_STACK_PER_CALL);
    let engine = Engine::new(&config).map_err(|source| RuntimeError::Engine {
        what: "cannot create the wasmtime engine",
        source,
    })?;
    let ticker = EpochTicker::start(engine.clone())?;
    Ok((engine, ticker))
}

/// Ticks without guest code running after which a ticker parks (2 s): an
/// idle runtime (a served function nobody calls) then uses no CPU. Waking a
/// parked ticker costs the call that does it a futex wake of a thread on
/// another vCPU, which measured 15 µs of a call made after 100 ms idle,
/// and put the p99 of such calls in milliseconds; so a function called
/// every few hundred milliseconds keeps its ticker awake (200 short
/// wake-ups a second, about 0.01 % of a core) and pays none of it.
const IDLE_TICKS: u32 = 400;

/// Guest code running in this process now (instantiation, `_start`, a
/// call), and the tickers parked for want of it.
static RUNNING_GUESTS: AtomicUsize = AtomicUsize::new(0);
static PARKED_TICKERS: AtomicUsize = AtomicUsize::new(0);
static PARK: Mutex<()> = Mutex::new(());
static UNPARK: Condvar = Condvar::new();

/// Held while guest code runs, so that the epoch advances (and deadlines
/// fire) only when there is something to interrupt. Entering wakes parked
/// tickers; when none is parked it costs two atomic operations.
pub(crate) struct GuestRunning(());

impl GuestRunning {
    /// Marks guest code as running until the guard drops.
    pub fn enter() -> GuestRunning {
        // Sequentially consistent, against the ticker's park: either this
        // side sees it parked, or it sees this guest running.
        if RUNNING_GUESTS.fetch_add(1, Ordering::SeqCst) == 0
            && PARKED_TICKERS.load(Ordering::SeqCst) > 0
        {
            // Taking the lock orders this after a ticker's check or inside
            // its wait, so the wake-up cannot be lost; notifying after it is
            // released spares the woken ticker a second wait, on the lock
            // (and this thread a second futex wake for it).
            drop(PARK.lock().unwrap_or_else(|p| p.into_inner()));
            UNPARK.notify_all();
        }
        GuestRunning(())
    }
}

impl Drop for GuestRunning {
    fn drop(&mut self) {
        RUNNING_GUESTS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Parks the calling ticker until guest code runs or `stop` is set.
fn park_until_guests_run(stop: &AtomicBool) {
    let mut held = PARK.lock().unwrap_or_else(|p| p.into_inner());
    PARKED_TICKERS.fetch_add(1, Ordering::SeqCst);
    while RUNNING_GUESTS.load(Ordering::SeqCst) == 0 && !stop.load(Ordering::SeqCst) {
        held = UNPARK.wait(held).unwrap_or_else(|p| p.into_inner());
    }
    PARKED_TICKERS.fetch_sub(1, Ordering::SeqCst);
}

/// Advances the engine's epoch every [`EPOCH_TICK`] while guest code runs
/// (and for [`IDLE_TICKS`] after), until dropped, and ticks the
/// [`TickClock`] untimed calls read their deadlines from. While parked,
/// the clock reads the real time and the epoch stands still, which no
/// deadline notices: a store's deadline counts ticks from when it was
/// armed, and ticks resume before its guest code runs.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    clock: TickClock,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Result<Self, RuntimeError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let clock = TickClock::new();
        let ticks = clock.clone();
        let thread = std::thread::Builder::new()
            .name("cwasi-epoch".into())
            .spawn(move || {
                ticks.tick();
                let mut idle = 0u32;
                while !flag.load(Ordering::SeqCst) {
                    if RUNNING_GUESTS.load(Ordering::SeqCst) > 0 {
                        idle = 0;
                    } else if idle >= IDLE_TICKS {
                        ticks.stop();
                        park_until_guests_run(&flag);
                        ticks.tick();
                        idle = 0;
                        continue;
                    } else {
                        idle += 1;
                    }
                    std::thread::sleep(EPOCH_TICK);
                    ticks.tick();
                    engine.increment_epoch();
                }
                ticks.stop();
            })
            .map_err(|source| RuntimeError::Spawn {
                what: "the epoch thread",
                source,
            })?;
        Ok(EpochTicker {
            stop,
            clock,
            thread: Some(thread),
        })
    }

    /// The clock this ticker ticks.
    pub(crate) fn clock(&self) -> &TickClock {
        &self.clock
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        {
            // Taking the lock orders this after a ticker's check or inside
            // its wait, so the wake-up cannot be lost; notifying after it is
            // released spares the woken ticker a second wait, on the lock
            // (and this thread a second futex wake for it).
            drop(PARK.lock().unwrap_or_else(|p| p.into_inner()));
            UNPARK.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a function's file compiles to: a core module (the core ABI) or a
/// component (WASI 0.2 and `wit/function.wit`).
#[derive(Clone)]
pub enum Compiled {
    /// A core WebAssembly module.
    Module(Module),
    /// A component.
    Component(Component),
}

/// Whether `bytes` are a component rather than a core module: the binary
/// format's layer field (bytes 6 and 7) is 1 for a component, 0 for a core
/// module.
pub fn is_component(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\0asm") && bytes.get(6..8) == Some(&[1, 0])
}

/// A compiled module or component and what is known about it. Compiled
/// once, then instantiated for every call that needs a fresh instance.
#[derive(Clone)]
pub struct LoadedModule {
    /// The file it came from, or the name it was given when it came as bytes.
    pub path: PathBuf,
    /// The compiled module or component.
    pub module: Compiled,
    /// `sha256:<hex>` of the file, so registries can tell two builds apart.
    pub digest: String,
    /// The original bytes, kept so that a served function can publish its
    /// module in the node directory for same-namespace callers to embed.
    pub bytes: Arc<[u8]>,
    /// Its ABI surface.
    pub info: ModuleInfo,
}

/// Reads, validates and compiles a module. The path may be a symbolic link
/// (the user named it), but it must end at a regular file of at most
/// `max_bytes`. Every failure names the file; `observe` hears whether it
/// was compiled or came from the compile cache.
pub(crate) fn load_module(
    engine: &Engine,
    path: &Path,
    max_bytes: u64,
    observe: &dyn Fn(LoadStage, bool),
) -> Result<LoadedModule, RuntimeError> {
    let bytes = read_regular(path, max_bytes, Links::Follow)?;
    load_module_bytes(engine, bytes.into(), path, observe)
}

/// Reads a module or component file as `run` and `serve` read one: only a
/// regular file (a FIFO or a device is refused without blocking), of at
/// most `max_bytes`, refused before it is read whole if it is larger.
pub fn read_module_file(path: &Path, max_bytes: u64) -> Result<Vec<u8>, RuntimeError> {
    read_regular(path, max_bytes, Links::Follow)
}

/// Validates and compiles a module given as bytes (an OCI layer, a module
/// published in the node directory); `label` names it in errors. `observe`
/// hears each [`LoadStage`], with whether it is a component.
pub(crate) fn load_module_bytes(
    engine: &Engine,
    bytes: Arc<[u8]>,
    label: &Path,
    observe: &dyn Fn(LoadStage, bool),
) -> Result<LoadedModule, RuntimeError> {
    if !bytes.starts_with(b"\0asm") {
        return Err(RuntimeError::NotWasm {
            path: label.to_path_buf(),
        });
    }
    let invalid = |e: wasmtime::Error| RuntimeError::InvalidModule {
        path: label.to_path_buf(),
        message: format!("{e:#}"),
    };
    let digest = digest_of(&bytes);
    let cache = CompileCache::for_engine(engine);
    let (module, info) = if is_component(&bytes) {
        let component = compile_observed(&cache, engine, &digest, true, observe, || {
            Component::from_binary(engine, &bytes)
        })
        .map_err(invalid)?;
        let info = ModuleInfo::of_component(&component, engine);
        (Compiled::Component(component), info)
    } else {
        let module = compile_observed(&cache, engine, &digest, false, observe, || {
            Module::from_binary(engine, &bytes)
        })
        .map_err(invalid)?;
        let info = ModuleInfo::of(&module);
        (Compiled::Module(module), info)
    };
    Ok(LoadedModule {
        path: label.to_path_buf(),
        module,
        digest,
        bytes,
        info,
    })
}

/// Compiled code from the cache, or from `compile`, timed, with `observe`
/// told what happened.
fn compile_observed<T: Precompiled>(
    cache: &Option<CompileCache>,
    engine: &Engine,
    digest: &str,
    component: bool,
    observe: &dyn Fn(LoadStage, bool),
    compile: impl FnOnce() -> wasmtime::Result<T>,
) -> wasmtime::Result<T> {
    let started = std::cell::Cell::new(None);
    let timed = || {
        observe(LoadStage::Compiling, component);
        started.set(Some(Instant::now()));
        compile()
    };
    let (compiled, fetched) = match cache {
        Some(cache) => cache.get(engine, digest, timed)?,
        None => (timed()?, Fetched::Compiled { kept: false }),
    };
    let stage = match fetched {
        Fetched::Hit => LoadStage::FromCache,
        Fetched::Compiled { kept } => LoadStage::Compiled {
            elapsed: started.get().map(|t| t.elapsed()).unwrap_or_default(),
            cached: kept,
        },
    };
    observe(stage, component);
    Ok(compiled)
}

/// An observer that hears nothing, for loads nobody reports.
pub(crate) fn unobserved(_: LoadStage, _: bool) {}

/// `sha256:<hex>` of a module's bytes: how records and stores name modules.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// What `cwasi inspect` reports about a module.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// `sha256:<hex>` of the file.
    pub digest: String,
    /// Its ABI surface.
    pub info: ModuleInfo,
}

/// Reads a module, on an engine of its own, and reports its digest and ABI
/// surface; every failure names the file.
pub fn inspect_module(path: &Path) -> Result<Inspection, RuntimeError> {
    let bytes = read_module_file(path, crate::config::Limits::default().max_module_bytes)?;
    inspect_module_bytes(path, &bytes)
}

/// [`inspect_module`] of a module already read (with
/// [`read_module_file`]); `label` names it in errors. A core module is
/// validated and read without being compiled, so inspecting it takes
/// little memory beyond its bytes; a component is compiled.
pub fn inspect_module_bytes(label: &Path, bytes: &[u8]) -> Result<Inspection, RuntimeError> {
    let (engine, _ticker) = new_engine()?;
    if is_component(bytes) || !bytes.starts_with(b"\0asm") {
        let module = load_module_bytes(&engine, bytes.into(), label, &unobserved)?;
        return Ok(Inspection {
            digest: module.digest,
            info: module.info,
        });
    }
    let invalid = |message: String| RuntimeError::InvalidModule {
        path: label.to_path_buf(),
        message,
    };
    Module::validate(&engine, bytes).map_err(|e| invalid(format!("{e:#}")))?;
    let info = ModuleInfo::parse(bytes).map_err(|e| invalid(e.to_string()))?;
    Ok(Inspection {
        digest: digest_of(bytes),
        info,
    })
}
