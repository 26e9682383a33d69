//! A function loaded in this process: its spec, its compiled and pre-linked
//! module, its pool of warm instances, and what it counts of the calls it
//! serves.

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::instance::{InstanceRecipe, LinkedPre, WarmInstance};
use super::linkers::Linkers;
use super::state::{CallerId, HostState, Router};
use crate::call::CallMeta;
use crate::config::{FunctionSpec, Limits, Mode};
use crate::engine::{Compiled, LoadedModule};
use crate::error::{CallError, ErrorCode, RuntimeError};

/// A module linked against the host functions, not yet tied to a runtime.
pub(crate) struct LinkedModule {
    spec: FunctionSpec,
    module: LoadedModule,
    pre: LinkedPre,
}

impl LinkedModule {
    /// Links `module` for `spec`, checking the seed settings against it.
    pub fn link(
        linkers: &Linkers,
        spec: FunctionSpec,
        module: LoadedModule,
    ) -> Result<LinkedModule, RuntimeError> {
        if let Some(h) = &spec.seed.handler {
            if !module.info.is_seed_callee(h) {
                return Err(RuntimeError::Config(format!(
                    "function '{}': handler '{h}' must be an export of type (i32, i32) -> () next to \
                     allocate(i32) -> i32 in {}",
                    spec.name,
                    spec.module.display()
                )));
            }
        }
        if module.info.is_seed_caller() && spec.seed.connect_to.is_none() {
            tracing::warn!(function = %spec.name, "imports cwasi_export.func_connect but has no connect_to target");
        }
        let pre = match &module.module {
            Compiled::Module(m) => linkers.module.instantiate_pre(m).map(LinkedPre::Module),
            Compiled::Component(c) => linkers
                .component
                .instantiate_pre(c)
                .map(LinkedPre::Component),
        };
        let pre = pre.map_err(|e| RuntimeError::Instantiate {
            function: spec.name.clone(),
            message: if module.info.is_component() {
                format!(
                    "{e:#} (CWASI provides WASI 0.2 and cwasi:function/invoke@0.1.0 to components)"
                )
            } else {
                format!(
                    "{e:#} (CWASI provides WASI preview 1, `cwasi` and `cwasi_export` imports only)"
                )
            },
        })?;
        Ok(LinkedModule { spec, module, pre })
    }

    /// The function's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }
}

/// One function loaded in this process.
pub(crate) struct Function {
    /// What it is and how it runs.
    pub spec: FunctionSpec,
    /// Its compiled module.
    pub module: LoadedModule,
    pre: LinkedPre,
    /// Who it is when it calls.
    caller: Arc<CallerId>,
    limits: Arc<Limits>,
    router: Weak<dyn Router>,
    /// The instance returned last, taken and given back with one atomic
    /// swap each: back-to-back calls take no lock. It counts as one of the
    /// idle instances.
    hot: AtomicPtr<WarmInstance>,
    /// The other idle instances. Boxed on purpose (clippy's `vec_box`):
    /// an instance moves between the pool, a call and `hot` as a pointer.
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<WarmInstance>>>,
    /// How many times an instance that grew beyond
    /// `Limits::max_idle_growth_bytes` went back to the pool: the idle
    /// trimmer's sign of activity (`guest::trim`).
    oversized_released: AtomicU64,
    /// The calls it runs for other processes.
    pub served: ServedStats,
}

/// What a function counts of the calls it serves to other processes (local,
/// remote-direct and remote-broker): embedded calls are counted by their
/// caller's route, in the same process, and cost no more here.
#[derive(Default)]
pub(crate) struct ServedStats {
    in_flight: AtomicU64,
    calls: [AtomicU64; 3],
    failures: [AtomicU64; 3],
}

/// The modes a server takes calls through, in [`ServedStats`] order.
const SERVED_MODES: [Mode; 3] = [Mode::Local, Mode::RemoteDirect, Mode::RemoteBroker];

impl ServedStats {
    /// Calls from other processes running now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a call that starts; the guard counts its end.
    pub fn enter(&self, via: Mode) -> ServedCall<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let index = SERVED_MODES.iter().position(|&m| m == via).unwrap_or(0);
        self.calls[index].fetch_add(1, Ordering::Relaxed);
        ServedCall { stats: self, index }
    }
}

/// One served call in progress: leaving it (drop) ends it.
pub(crate) struct ServedCall<'a> {
    stats: &'a ServedStats,
    index: usize,
}

impl ServedCall<'_> {
    /// Counts the call as failed.
    pub fn failed(&self) {
        self.stats.failures[self.index].fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for ServedCall<'_> {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A snapshot of one loaded function, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FunctionReport {
    /// The function's name.
    pub name: String,
    /// Its trust domain.
    pub namespace: String,
    /// Warm instances waiting in its pool.
    pub pooled_instances: usize,
    /// Calls from other processes running now.
    pub in_flight: u64,
    /// Calls served to other processes, with how many failed, by mode
    /// (local, remote-direct, remote-broker).
    pub served: Vec<(Mode, u64, u64)>,
}

// A `WarmInstance` is handed between threads (a started call runs on a
// worker); `hot` relies on that.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<WarmInstance>();
};

impl Function {
    /// A function of a runtime whose calls route through `router`.
    pub fn new(linked: LinkedModule, limits: Arc<Limits>, router: Weak<dyn Router>) -> Function {
        let LinkedModule { spec, module, pre } = linked;
        Function {
            caller: Arc::new(CallerId {
                name: spec.name.clone(),
                namespace: spec.namespace.clone(),
                connect_to: spec.seed.connect_to.clone(),
            }),
            spec,
            module,
            pre,
            limits,
            router,
            hot: AtomicPtr::new(std::ptr::null_mut()),
            idle: Mutex::new(Vec::new()),
            oversized_released: AtomicU64::new(0),
            served: ServedStats::default(),
        }
    }

    /// Its counters and pool, now.
    pub fn report(&self) -> FunctionReport {
        let hot = usize::from(!self.hot.load(Ordering::Relaxed).is_null());
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).len();
        let s = &self.served;
        FunctionReport {
            name: self.spec.name.clone(),
            namespace: self.spec.namespace.clone(),
            pooled_instances: hot + idle,
            in_flight: s.in_flight.load(Ordering::Relaxed),
            served: SERVED_MODES
                .iter()
                .enumerate()
                .map(|(i, &m)| {
                    let calls = s.calls[i].load(Ordering::Relaxed);
                    (m, calls, s.failures[i].load(Ordering::Relaxed))
                })
                .collect(),
        }
    }

    /// The seed handler export, if one is configured and present.
    pub fn seed_handler(&self) -> Option<&str> {
        self.spec
            .seed
            .handler
            .as_deref()
            .filter(|h| self.module.info.is_seed_callee(h))
    }

    /// Whether other functions can call it.
    pub fn is_callable(&self) -> bool {
        self.module.info.is_callable() || self.seed_handler().is_some()
    }

    /// Why it cannot be called.
    pub fn not_callable_reason(&self) -> String {
        format!(
            "function '{}' ({}) cannot be called: it exports neither cwasi_alloc + cwasi_handle, \
             nor a configured seed handler, nor (a component) cwasi:function/handler",
            self.spec.name,
            self.module.path.display()
        )
    }

    /// The limits it runs under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A fresh instance, armed for `call`.
    pub fn instantiate(&self, call: CallMeta) -> Result<Box<WarmInstance>, RuntimeError> {
        let wasi = build_wasi(&self.spec).map_err(|message| self.instantiate_error(message))?;
        let state = HostState::new(
            wasi,
            &self.limits,
            self.caller.clone(),
            self.router.clone(),
            call,
        );
        let not_callable = || self.not_callable_reason();
        let recipe = InstanceRecipe {
            pre: &self.pre,
            info: &self.module.info,
            seed_handler: self.seed_handler(),
            not_callable: &not_callable,
        };
        let mut inst =
            WarmInstance::new(&recipe, state).map_err(|message| self.instantiate_error(message))?;
        // What instantiation grew is the instance's own size; its calls'
        // growth counts from here.
        inst.store.data_mut().limiter.settle();
        Ok(Box::new(inst))
    }

    fn instantiate_error(&self, message: String) -> RuntimeError {
        RuntimeError::Instantiate {
            function: self.spec.name.clone(),
            message,
        }
    }

    /// Takes a warm instance, or creates one, armed for `call`.
    pub fn acquire(&self, call: CallMeta) -> Result<Box<WarmInstance>, CallError> {
        let idle = self
            .take_hot()
            .or_else(|| self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop());
        match idle {
            Some(mut inst) => {
                inst.arm(call);
                Ok(inst)
            }
            None => {
                tracing::debug!(function = %self.spec.name, "instantiating");
                self.instantiate(call)
                    .map_err(|e| CallError::new(ErrorCode::CalleeTrapped, e.to_string()))
            }
        }
    }

    /// Returns an instance after a call that left it in a known state; one
    /// whose state is unknown (it trapped, timed out or broke the ABI) is
    /// dropped instead.
    pub fn release(&self, mut inst: Box<WarmInstance>, outcome: Result<(), &CallError>) {
        inst.store.data_mut().pending.clear();
        let max = self.limits.max_idle_instances;
        if max == 0 || outcome.is_err_and(|e| !e.leaves_callee_reusable()) {
            return;
        }
        if self.is_oversized(&inst) {
            self.oversized_released.fetch_add(1, Ordering::Relaxed);
        }
        let Err(inst) = self.park_hot(inst) else {
            return;
        };
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() + 1 < max {
            idle.push(inst);
        }
    }
}

/// Trimming the pool when the function is idle (`guest::trim`).
impl Function {
    /// Takes the instance in the `hot` slot, if there is one.
    fn take_hot(&self) -> Option<Box<WarmInstance>> {
        let hot = self.hot.swap(std::ptr::null_mut(), Ordering::Acquire);
        // SAFETY: a non-null `hot` came from `Box::into_raw` in `park_hot`,
        // and the swap made this thread its only owner.
        (!hot.is_null()).then(|| unsafe { Box::from_raw(hot) })
    }

    /// Puts `inst` in the `hot` slot; gives it back if the slot is taken.
    fn park_hot(&self, inst: Box<WarmInstance>) -> Result<(), Box<WarmInstance>> {
        let raw = Box::into_raw(inst);
        match self.hot.compare_exchange(
            std::ptr::null_mut(),
            raw,
            Ordering::Release,
            Ordering::Relaxed,
        ) {
            Ok(_) => Ok(()),
            // SAFETY: `raw` came from `Box::into_raw` just above and was
            // not stored, so this thread still owns it.
            Err(_) => Err(unsafe { Box::from_raw(raw) }),
        }
    }

    /// Whether `inst` grew more than a pooled instance may keep when idle.
    fn is_oversized(&self, inst: &WarmInstance) -> bool {
        inst.store.data().limiter.grown() > self.limits.max_idle_growth_bytes
    }

    /// How many times an oversized instance went back to the pool so far;
    /// unchanged over a while means no large call in that while.
    pub fn oversized_released(&self) -> u64 {
        self.oversized_released.load(Ordering::Relaxed)
    }

    /// Drops the pooled instances that grew more than
    /// `Limits::max_idle_growth_bytes` (instances in a call are not in the
    /// pool and are left alone); returns how many. The next call makes a
    /// fresh instance where the pool has none.
    pub fn drop_oversized_idle(&self) -> usize {
        let mut dropped: Vec<Box<WarmInstance>> = Vec::new();
        let hot = self.take_hot();
        {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let (big, kept): (Vec<_>, Vec<_>) =
                idle.drain(..).partition(|inst| self.is_oversized(inst));
            *idle = kept;
            dropped.extend(big);
            match hot {
                Some(inst) if self.is_oversized(&inst) => dropped.push(inst),
                // Back where it was, or beside the one a call parked there
                // meanwhile.
                Some(inst) => {
                    if let Err(inst) = self.park_hot(inst) {
                        idle.push(inst);
                    }
                }
                None => {}
            }
        }
        // Dropped outside the lock: freeing a store unmaps its memory.
        let count = dropped.len();
        drop(dropped);
        count
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        let hot = std::mem::replace(self.hot.get_mut(), std::ptr::null_mut());
        if !hot.is_null() {
            // SAFETY: as in `take_hot`; `&mut self` makes this the only owner.
            drop(unsafe { Box::from_raw(hot) });
        }
    }
}

fn build_wasi(spec: &FunctionSpec) -> Result<wasmtime_wasi::p1::WasiP1Ctx, String> {
    use wasmtime_wasi::{FsPerms, WasiCtxBuilder};
    let mut b = WasiCtxBuilder::new();
    let mut args = Vec::with_capacity(spec.args.len() + 1);
    args.push(spec.name.clone());
    args.extend(spec.args.iter().cloned());
    b.args(&args)
        .envs(&spec.env)
        .inherit_stdout()
        .inherit_stderr();
    for p in &spec.preopens {
        let perms = if p.writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        b.preopened_dir(&p.host, &p.guest, perms)
            .map_err(|e| format!("cannot preopen {}: {e}", p.host.display()))?;
    }
    Ok(b.build_p1())
}
