//! Choosing a path for one edge: gathering where the callee is (the node
//! directory, the cluster registry), asking the pure selector, probing the
//! direct data plane, adopting a served module, and building the chosen
//! path's client.

use std::sync::{Arc, Weak};

use super::facts::{spill_tier, Facts};
use super::{keep_decision, Decision, RuntimeRouter, HOST_CALLER};
use crate::call::route::PathSpec;
use crate::call::transport::Transport;
use crate::config::{FunctionSpec, Mode, ModeOverride};
use crate::deadline::Deadline;
use crate::engine::{load_module_bytes, unobserved};
use crate::error::{CallError, ErrorCode, RuntimeError};
use crate::guest::function::{Function, LinkedModule};
use crate::guest::state::Router;
use crate::identity::policy::CallPolicy;
use crate::identity::CallerIdentity;
use crate::node_dir::EndpointRecord;
use crate::selector::{select, Choice, DirectProbe, Loaded, Placement, Selection};
use crate::transport::direct::client::DirectClient;
use crate::transport::direct::peer::{ClientSetup, Failure, Peer, CONNECT_TIMEOUT};
use crate::transport::embedded::EmbeddedClient;
use crate::transport::fallback::{Fallback, PathReport};
use crate::transport::local::client::{LocalClient, LocalSettings};
use crate::transport::remote::{RemoteClient, RemoteEndpoint};

/// A chosen path, ready to install in a route.
pub(super) struct Chosen {
    /// The mode and why.
    pub selection: Selection,
    /// The path.
    pub path: PathSpec,
    /// Where calls spill while the path is full, if anywhere.
    pub spill: Option<PathSpec>,
    /// The fingerprint of the facts it was chosen from.
    pub placement: u64,
}

impl RuntimeRouter {
    /// Gathers where `target` is, asks the selector, and builds the client
    /// of the chosen path.
    pub(super) fn choose(
        &self,
        caller: Option<&str>,
        caller_namespace: &str,
        target: &str,
        lookup_by: Deadline,
    ) -> Result<Chosen, CallError> {
        let facts = self.gather(caller_namespace, target, lookup_by)?;
        self.decide(caller, caller_namespace, target, facts, lookup_by)
    }

    /// Where `target` is, as seen from `caller_namespace`: its live records
    /// in the node directory, the caller's namespace first, and, when
    /// nothing on this node can serve the call, its announcements on other
    /// nodes, as the registry says by `lookup_by`.
    pub(super) fn gather(
        &self,
        caller_namespace: &str,
        target: &str,
        lookup_by: Deadline,
    ) -> Result<Facts, CallError> {
        if let Some(reason) = self.unloadable.get(target) {
            return Err(CallError::new(
                ErrorCode::NotCallable,
                format!("function '{target}' cannot be called: {reason}"),
            ));
        }
        let mut local = match &self.sources.here {
            Some(here) => here.find(target, lookup_by)?,
            None => Vec::new(),
        };
        // The caller's own namespace first.
        local.sort_by_key(|r| r.namespace != caller_namespace);
        let embeddable_here = self
            .functions
            .get(target)
            .is_some_and(|f| f.spec.namespace == caller_namespace);
        // The next tier is looked up too where calls may spill to it.
        let may_spill = self.limits.spill_over
            && self.mode == ModeOverride::Auto
            && local.first().is_some_and(|r| r.slots.is_some());
        let (remote, registry_error) = if (local.is_empty() || may_spill) && !embeddable_here {
            match self.announced_elsewhere(caller_namespace, target, lookup_by) {
                Ok(remote) => (remote, None),
                Err(e) => (Vec::new(), Some(e)),
            }
        } else {
            (Vec::new(), None)
        };
        Ok(Facts {
            local,
            remote,
            registry_error,
        })
    }

    /// Asks the selector about `facts` and builds the client of the chosen
    /// path (probing the direct data plane and adopting a served module on
    /// the way, where the facts call for it).
    pub(super) fn decide(
        &self,
        caller: Option<&str>,
        caller_namespace: &str,
        target: &str,
        facts: Facts,
        lookup_by: Deadline,
    ) -> Result<Chosen, CallError> {
        let fingerprint = facts.fingerprint();
        let Facts {
            local,
            remote,
            registry_error,
        } = facts;
        let mut loaded_names: Vec<&str> = self.functions.keys().map(String::as_str).collect();
        loaded_names.sort_unstable();
        let here = self.functions.get(target);
        let (probe, peers) = match remote.first() {
            Some(r) if self.mode.allows(Mode::RemoteDirect) => {
                let (probe, peers) = self.probe_direct(&remote, &r.namespace, lookup_by);
                (Some(probe), peers)
            }
            _ => (None, Vec::new()),
        };
        let adopted = self.adopt_served(caller_namespace, target, here, &local);
        let function = adopted.as_ref().map(|(f, _)| f).or(here);
        let placement = Placement {
            caller_namespace,
            target,
            loaded: function.map(|f| Loaded {
                namespace: &f.spec.namespace,
                adopted_from: adopted.as_ref().map(|(_, r)| r),
            }),
            loaded_names: &loaded_names,
            local: &local,
            node_dir: self.node_dir.as_ref().map(|d| d.root()),
            remote: &remote,
            registry_error: registry_error.as_ref(),
            broker: self.broker.as_ref().map(|b| (b.display(), b.node())),
            direct: probe.as_ref(),
            mode: self.mode,
        };
        let (selection, choice) = select(&placement)?;
        let spill = match &choice {
            Choice::Local(r) if self.limits.spill_over => spill_tier(&placement, r),
            _ => None,
        };
        let mut peers = Some(peers);
        // A local path with a known number of call slots counts this
        // caller's calls on it, so that a spill path (now, or found by a
        // later look) takes the calls that would wait for a slot.
        let capacity = match &choice {
            Choice::Local(r) if self.limits.spill_over => r.slots.map(|n| n as usize),
            _ => None,
        };
        let me = self.identity(caller, caller_namespace)?;
        let built = self.client(choice, function, &adopted, &mut peers, &me, target);
        let path = PathSpec {
            mode: selection.mode,
            key: built.0,
            transport: built.1,
            capacity,
        };
        let mut selection = selection;
        let spill = spill.map(|(s, choice)| {
            let (key, transport) = self.client(choice, None, &None, &mut peers, &me, target);
            selection.reason = format!(
                "{}; while this caller's calls fill its {} call slot(s), further calls spill to {key}",
                selection.reason,
                path.capacity.unwrap_or(0)
            );
            PathSpec {
                mode: s.mode,
                key,
                transport,
                capacity: None,
            }
        });
        Ok(Chosen {
            selection,
            path,
            spill,
            placement: fingerprint,
        })
    }

    /// The client of `choice` (with `function`, the callee loaded here,
    /// and `adopted`, the record it was adopted from, for an embedded
    /// one; `peers`, taken by the first direct client), and its key.
    fn client(
        &self,
        choice: Choice<'_>,
        function: Option<&Arc<Function>>,
        adopted: &Option<(Arc<Function>, EndpointRecord)>,
        peers: &mut Option<Vec<Arc<Peer>>>,
        me: &Arc<CallerIdentity>,
        target: &str,
    ) -> (String, Box<dyn Transport>) {
        let max = self.limits.max_payload_bytes;
        let from_host = me.function().is_none();
        match (choice, function, &self.broker) {
            (Choice::Embedded, Some(f), _) => {
                let key = match adopted {
                    Some((_, r)) => {
                        format!("embedded {} (served at {})", r.digest, r.socket.display())
                    }
                    None => "embedded".to_string(),
                };
                let client = if from_host {
                    EmbeddedClient::held(f, me.clone())
                } else {
                    EmbeddedClient::new(f, me.clone())
                };
                (key, Box::new(client))
            }
            (Choice::Local(r), ..) => (
                format!("local {}", r.socket.display()),
                Box::new(LocalClient::new(
                    target.to_string(),
                    me,
                    r.socket.clone(),
                    LocalSettings {
                        max_payload: max,
                        spin: self.limits.spin_budget,
                        spill_queue: self.limits.spill_over.then_some(self.limits.spill_queue),
                    },
                )),
            ),
            (Choice::RemoteDirect(r), _, Some(broker)) => {
                let peers = peers.take().unwrap_or_default();
                let key = format!(
                    "remote-direct {}",
                    peers
                        .iter()
                        .map(|p| format!("'{}' at {}", p.node, p.addr))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                // Direct, else the broker: a call that reaches no node goes
                // through the broker until the next look finds nodes again.
                let direct = DirectClient::new(target.to_string(), me, max, peers);
                let via_broker = RemoteClient::new(
                    broker.clone(),
                    me.clone(),
                    r.namespace.clone(),
                    target.to_string(),
                    max,
                );
                let client = Fallback::new(
                    target,
                    Box::new(direct),
                    Box::new(via_broker),
                    ("remote-direct", "remote-broker"),
                    self.path_report(me.function().unwrap_or(HOST_CALLER), target),
                );
                (key, Box::new(client))
            }
            (Choice::RemoteBroker(r), _, Some(broker)) => (
                format!("remote-broker {} via {}", r.namespace, broker.display()),
                Box::new(RemoteClient::new(
                    broker.clone(),
                    me.clone(),
                    r.namespace.clone(),
                    target.to_string(),
                    max,
                )),
            ),
            _ => unreachable!("the selector chooses only among the candidates it was given"),
        }
    }

    /// The identity of `caller` (a function, or the host) of `namespace`
    /// on this node, which its route's transport sends with every call.
    fn identity(
        &self,
        caller: Option<&str>,
        namespace: &str,
    ) -> Result<Arc<CallerIdentity>, CallError> {
        let function = caller.filter(|c| *c != HOST_CALLER);
        CallerIdentity::new(namespace, function, &self.node)
            .map(Arc::new)
            .map_err(|e| CallError::new(ErrorCode::Denied, e.to_string()))
    }

    /// How this node connects to others directly.
    fn client_setup(&self) -> ClientSetup {
        ClientSetup {
            tls: self.direct.tls.as_ref().map(|t| t.client.clone()),
            allow_plain: self.direct.allow_plain,
        }
    }

    /// Where a route's transport says that it changed paths: the log, and
    /// the decisions `--explain` prints.
    fn path_report(&self, caller: &str, target: &str) -> PathReport {
        let decisions = Arc::downgrade(&self.decisions);
        let (caller, target) = (caller.to_string(), target.to_string());
        Arc::new(move |what: String| {
            tracing::warn!(caller = %caller, target = %target, "{what}");
            let Some(decisions) = decisions.upgrade() else {
                return;
            };
            let mode = if what.starts_with("remote-direct") {
                Mode::RemoteDirect
            } else {
                Mode::RemoteBroker
            };
            keep_decision(
                &decisions,
                Decision {
                    caller: caller.clone(),
                    target: target.clone(),
                    outcome: Ok(Selection { mode, reason: what }),
                },
            );
        })
    }

    /// Tries the direct data plane to every node of `namespace` in
    /// `remote`, by `deadline`: the reachable ones, with a pooled
    /// connection each, and why the others are not.
    fn probe_direct(
        &self,
        remote: &[RemoteEndpoint],
        namespace: &str,
        deadline: Deadline,
    ) -> (DirectProbe, Vec<Arc<Peer>>) {
        let setup = self.client_setup();
        let mut probe = DirectProbe::default();
        let mut peers = Vec::new();
        for r in remote.iter().filter(|r| r.namespace == namespace) {
            let peer = match Peer::new(&r.node, r.data_addr.as_deref(), &setup) {
                Ok(p) => p,
                Err(why) => {
                    probe.unreachable.push(why);
                    continue;
                }
            };
            match peer.warm_up(deadline.nested(CONNECT_TIMEOUT * 3)) {
                Ok(()) => {
                    probe
                        .reachable
                        .push(format!("node '{}' at {}", peer.node, peer.addr));
                    peers.push(Arc::new(peer));
                }
                Err(Failure::Final(e)) if e.code == ErrorCode::Denied => {
                    probe.denied.get_or_insert(e);
                }
                Err(f) => probe.unreachable.push(f.into_error().message),
            }
        }
        (probe, peers)
    }

    /// Announcements of `target` on other nodes, the caller's namespace
    /// first (none without a registry), as the registry says by `deadline`.
    fn announced_elsewhere(
        &self,
        caller_namespace: &str,
        target: &str,
        deadline: Deadline,
    ) -> Result<Vec<RemoteEndpoint>, CallError> {
        let Some(elsewhere) = &self.sources.elsewhere else {
            return Ok(Vec::new());
        };
        let mut remote = elsewhere.find(target, deadline).inspect_err(|e| {
            tracing::warn!("cannot ask {}: {e}", elsewhere.describe());
        })?;
        remote.sort_by_key(|r| r.namespace != caller_namespace);
        Ok(remote)
    }

    /// A same-namespace function another process of this node serves and
    /// published, loaded here to be embedded (when allowed and possible).
    fn adopt_served(
        &self,
        caller_namespace: &str,
        target: &str,
        here: Option<&Arc<Function>>,
        local: &[EndpointRecord],
    ) -> Option<(Arc<Function>, EndpointRecord)> {
        let wants_embedded = matches!(
            self.mode,
            ModeOverride::Auto | ModeOverride::Force(Mode::Embedded)
        );
        if !self.embed_served
            || !wants_embedded
            || here.is_some_and(|f| f.spec.namespace == caller_namespace)
        {
            return None;
        }
        let record = local
            .iter()
            .find(|r| r.namespace == caller_namespace && r.embed.is_some())?;
        match self.adopt(record) {
            Ok(f) => Some((f, record.clone())),
            Err(e) => {
                tracing::warn!(
                    target,
                    "cannot embed the served function, calling it locally: {e}"
                );
                None
            }
        }
    }

    /// Loads the module a same-namespace server of this node published, and
    /// links it here, once per name, namespace and digest.
    fn adopt(&self, record: &EndpointRecord) -> Result<Arc<Function>, RuntimeError> {
        let rules = record.embed.as_ref().and_then(|e| e.allow_callers.clone());
        let key = (
            record.name.clone(),
            record.namespace.clone(),
            record.digest.clone(),
            rules.clone(),
        );
        let mut adopted = self.adopted.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = adopted.get(&key) {
            return Ok(f.clone());
        }
        let (Some(dir), Some(embed)) = (&self.node_dir, &record.embed) else {
            return Err(RuntimeError::Config("nothing to embed".into()));
        };
        let bytes = dir.read_module(embed, &record.digest, self.limits.max_module_bytes)?;
        let label = dir.root().join(&embed.module_file);
        let module = load_module_bytes(&self.engine, bytes.into(), &label, &unobserved)?;
        let mut spec = FunctionSpec::new(&record.name, &record.namespace, label);
        spec.args = embed.args.clone();
        spec.env = embed.env.clone();
        spec.seed.handler = embed.seed_handler.clone();
        if let Some(rules) = &rules {
            // The server's policy holds wherever its function runs.
            spec.policy = CallPolicy::parse(rules).map_err(RuntimeError::Config)?;
        }
        let linked = LinkedModule::link(&self.linkers, spec, module)?;
        let router: Weak<dyn Router> = self.me.clone();
        let f = Arc::new(Function::new(linked, self.limits.clone(), router));
        tracing::info!(name = %record.name, namespace = %record.namespace, digest = %record.digest, "embedding a function served on this node");
        adopted.insert(key, f.clone());
        Ok(f)
    }
}
