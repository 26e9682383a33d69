//! The kubelet's side of CRI, for tests: a client of containerd's CRI plugin
//! (the `k8s-cri` crate's generated `runtime.v1` client over the test
//! containerd's private socket) with one blocking, bounded method per call a
//! kubelet makes, and the pause image that the plugin starts every pod
//! sandbox from, built here because no registry can be reached.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::process::output_within;

/// The CRI `runtime.v1` messages, for tests that build their own.
pub use k8s_cri::v1 as api;

/// How long one CRI call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// The reference the test containerd's CRI plugin is configured to start
/// sandboxes from ([`crate::containerd::Containerd::start_cri`]).
pub const PAUSE_IMAGE: &str = "cwasi.test/pause:1";

/// The source of the pause program.
const PAUSE_SOURCE: &str = include_str!("../pause/pause.c");

/// Builds the static pause program with the host's C compiler and packs it
/// as the image [`PAUSE_IMAGE`], in a tarball under `dir`. Panics with the
/// fix if no C compiler with a static libc is installed.
pub fn pause_image(dir: &Path) -> PathBuf {
    let source = dir.join("pause.c");
    let program = dir.join("pause");
    std::fs::write(&source, PAUSE_SOURCE).expect("write pause.c");
    let out = output_within(
        Command::new("cc")
            .args(["-static", "-Os", "-o"])
            .arg(&program)
            .arg(&source),
        Duration::from_secs(60),
    )
    .expect("cc did not finish within 60 s");
    assert!(
        out.status.success(),
        "cannot build the static pause program (install gcc and libc6-dev): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tarball = dir.join("pause.tar");
    let file = std::fs::File::create(&tarball).expect("create pause.tar");
    cwasi_oci::write_executable_image(&program, PAUSE_IMAGE, std::io::BufWriter::new(file))
        .expect("pack the pause image");
    tarball
}

/// A CRI client of one containerd, as a kubelet holds it.
pub struct CriClient {
    rt: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
}

impl CriClient {
    /// Connects to the CRI service on containerd's gRPC socket.
    pub fn connect(socket: &Path) -> CriClient {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let path = socket.to_path_buf();
        let channel = rt
            .block_on(async {
                tokio::time::timeout(
                    CALL_TIMEOUT,
                    Endpoint::from_static("http://[::]:50051").connect_with_connector(
                        tower::service_fn(move |_: Uri| {
                            let path = path.clone();
                            async move {
                                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                                    tokio::net::UnixStream::connect(path).await?,
                                ))
                            }
                        }),
                    ),
                )
                .await
            })
            .unwrap_or_else(|_| panic!("CRI: no connection within {CALL_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("CRI: cannot connect to {}: {e}", socket.display()));
        CriClient {
            rt,
            client: RuntimeServiceClient::new(channel),
        }
    }

    /// Runs one call within [`CALL_TIMEOUT`]; its status if it failed.
    fn call<T, F>(
        &mut self,
        what: &str,
        f: impl FnOnce(RuntimeServiceClient<Channel>) -> F,
    ) -> Result<T, tonic::Status>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let fut = f(self.client.clone());
        self.rt
            .block_on(async { tokio::time::timeout(CALL_TIMEOUT, fut).await })
            .unwrap_or_else(|_| panic!("CRI {what} did not answer within {CALL_TIMEOUT:?}"))
            .map(tonic::Response::into_inner)
    }

    /// `RunPodSandbox` with `runtime_handler`; the sandbox id.
    pub fn run_pod(&mut self, config: &cri::PodSandboxConfig, runtime_handler: &str) -> String {
        let request = cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: runtime_handler.to_string(),
        };
        self.call("RunPodSandbox", |mut c| async move {
            c.run_pod_sandbox(request).await
        })
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}"))
        .pod_sandbox_id
    }

    /// `PodSandboxStatus`.
    pub fn pod_status(&mut self, pod: &str) -> cri::PodSandboxStatus {
        let request = cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.to_string(),
            verbose: false,
        };
        self.call("PodSandboxStatus", |mut c| async move {
            c.pod_sandbox_status(request).await
        })
        .unwrap_or_else(|e| panic!("PodSandboxStatus: {e}"))
        .status
        .expect("PodSandboxStatus without a status")
    }

    /// `CreateContainer` then `StartContainer`; the container id.
    pub fn start_container(
        &mut self,
        pod: &str,
        config: &cri::ContainerConfig,
        sandbox: &cri::PodSandboxConfig,
    ) -> String {
        let request = cri::CreateContainerRequest {
            pod_sandbox_id: pod.to_string(),
            config: Some(config.clone()),
            sandbox_config: Some(sandbox.clone()),
        };
        let id = self
            .call("CreateContainer", |mut c| async move {
                c.create_container(request).await
            })
            .unwrap_or_else(|e| panic!("CreateContainer: {e}"))
            .container_id;
        let request = cri::StartContainerRequest {
            container_id: id.clone(),
        };
        self.call("StartContainer", |mut c| async move {
            c.start_container(request).await
        })
        .unwrap_or_else(|e| panic!("StartContainer {id}: {e}"));
        id
    }

    /// `ContainerStatus`.
    pub fn container_status(&mut self, id: &str) -> cri::ContainerStatus {
        let request = cri::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        };
        self.call("ContainerStatus", |mut c| async move {
            c.container_status(request).await
        })
        .unwrap_or_else(|e| panic!("ContainerStatus {id}: {e}"))
        .status
        .expect("ContainerStatus without a status")
    }

    /// Polls `ContainerStatus` until the container has exited; panics after
    /// `within`.
    pub fn wait_exited(&mut self, id: &str, within: Duration) -> cri::ContainerStatus {
        let deadline = Instant::now() + within;
        loop {
            let status = self.container_status(id);
            if status.state == cri::ContainerState::ContainerExited as i32 {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "container {id} did not exit within {within:?}: {status:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `StopContainer` with a grace period in seconds: the stop signal, then
    /// SIGKILL when it runs out, as a kubelet stops a container.
    pub fn stop_container(&mut self, id: &str, grace_seconds: i64) {
        let request = cri::StopContainerRequest {
            container_id: id.to_string(),
            timeout: grace_seconds,
        };
        self.call("StopContainer", |mut c| async move {
            c.stop_container(request).await
        })
        .unwrap_or_else(|e| panic!("StopContainer {id}: {e}"));
    }

    /// `StopPodSandbox` then `RemovePodSandbox`, as a kubelet deletes a pod
    /// once its containers are stopped.
    pub fn remove_pod(&mut self, pod: &str) {
        let id = pod.to_string();
        self.call("StopPodSandbox", |mut c| async move {
            c.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: id })
                .await
        })
        .unwrap_or_else(|e| panic!("StopPodSandbox {pod}: {e}"));
        let id = pod.to_string();
        self.call("RemovePodSandbox", |mut c| async move {
            c.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
                .await
        })
        .unwrap_or_else(|e| panic!("RemovePodSandbox {pod}: {e}"));
    }

    /// `ListPodSandbox` and `ListContainers`: the ids containerd still knows.
    pub fn records(&mut self) -> (Vec<String>, Vec<String>) {
        let pods = self
            .call("ListPodSandbox", |mut c| async move {
                c.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
                    .await
            })
            .unwrap_or_else(|e| panic!("ListPodSandbox: {e}"))
            .items
            .into_iter()
            .map(|p| p.id)
            .collect();
        let containers = self
            .call("ListContainers", |mut c| async move {
                c.list_containers(cri::ListContainersRequest { filter: None })
                    .await
            })
            .unwrap_or_else(|e| panic!("ListContainers: {e}"))
            .containers
            .into_iter()
            .map(|c| c.id)
            .collect();
        (pods, containers)
    }
}

/// A pod's sandbox config as a kubelet writes it for a pod on the host
/// network: metadata, annotations and the log directory.
pub fn pod_config(
    name: &str,
    annotations: &[(&str, &str)],
    log_directory: &Path,
) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.to_string(),
            uid: format!("uid-{name}-{}", std::process::id()),
            namespace: "default".to_string(),
            attempt: 0,
        }),
        // On the host network the pod shares the node's UTS namespace, so it
        // cannot set a hostname of its own.
        hostname: String::new(),
        log_directory: log_directory.display().to_string(),
        annotations: to_map(annotations),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container's config: its image, args (empty: the image's), env, and
/// host paths mounted `(host, container)`; its log is `<name>.log` in the
/// pod's log directory.
pub fn container_config(
    name: &str,
    image: &str,
    args: &[&str],
    env: &[(&str, &str)],
    mounts: &[(&Path, &str)],
) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.to_string(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        args: args.iter().map(|a| a.to_string()).collect(),
        envs: env
            .iter()
            .map(|(k, v)| cri::KeyValue {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
        mounts: mounts
            .iter()
            .map(|(host, path)| cri::Mount {
                host_path: host.display().to_string(),
                container_path: path.to_string(),
                ..Default::default()
            })
            .collect(),
        log_path: format!("{name}.log"),
        ..Default::default()
    }
}

/// The text of a CRI log file: each line `<time> <stream> <tag> <text>`
/// becomes `<stream>: <text>`.
pub fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(4, ' ');
            let (_time, stream, _tag) = (parts.next()?, parts.next()?, parts.next()?);
            Some(format!("{stream}: {}\n", parts.next().unwrap_or("")))
        })
        .collect()
}

fn to_map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
