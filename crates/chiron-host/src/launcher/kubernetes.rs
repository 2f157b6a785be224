//! The Kubernetes launcher: each enclave a pod, in a confidential-VM runtime class.
//!
//! The host runs in the cluster (`deploy/kubernetes/host.yaml`) under a service account
//! that may create, read and delete pods in its namespace and nothing else. Each enclave
//! is one pod the host creates, with `restartPolicy: Never`: a lost enclave is replaced by
//! the host, not by a controller, since only the host holds what a replacement needs (a
//! parameter server's checkpoint, a worker's ticket) and a replacement, with a key of its
//! own, must be attested again. The host reaches each pod at its pod IP; a distributed
//! job's workers reach their parameter server through the host's relay, listening on the
//! host pod's IP. Nothing the cluster says (names, labels, DNS, secrets) identifies an
//! enclave: the owner and the peers attest it.
//!
//! The API is spoken directly (JSON over HTTPS with the pod's service-account token and the
//! cluster's CA, as every in-cluster client does): three calls, create, read and delete a
//! pod, need no client framework.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::net::TcpStream;

use super::{Instance, Launch};
use crate::enclave::{Enclave, EnclaveError, Role};

/// The port an enclave pod serves the host on.
pub const CONTROL_PORT: u16 = 7800;
/// The port a parameter-server pod serves its workers on (through the host's relay).
pub const PEER_PORT: u16 = 7801;

/// Where an in-cluster client finds its credentials (the service account's projected
/// volume).
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How long a pod may take to be scheduled, started and listening.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(300);

/// How often a starting pod is looked at.
const POLL: Duration = Duration::from_millis(500);

/// How long one API call may take.
const API_TIMEOUT: Duration = Duration::from_secs(30);

/// What every enclave pod is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The namespace the pods go in (the host's own).
    pub namespace: String,
    /// The enclave image: the measured runtime, in a confidential-VM image.
    pub image: String,
    /// The runtime class that runs a pod in a confidential VM (for example `kata-qemu-snp`
    /// or `kata-qemu-tdx` under Confidential Containers).
    pub runtime_class: Option<String>,
    /// The enclave's `--tee` argument.
    pub tee: &'static str,
    /// The host pod's address, where the enclaves reach its relay.
    pub advertise: IpAddr,
    /// Arguments every enclave is served with beyond role, platform and addresses.
    pub extra_args: Vec<String>,
}

/// The pod an enclave in `role` runs in.
pub fn pod_manifest(settings: &Settings, role: Role) -> Value {
    let role = role.as_arg();
    let mut args: Vec<String> = [
        "serve",
        "--role",
        role,
        "--tee",
        settings.tee,
        "--listen",
        &format!("0.0.0.0:{CONTROL_PORT}"),
        "--peer-listen",
        &format!("0.0.0.0:{PEER_PORT}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(settings.extra_args.iter().cloned());
    let mut spec = json!({
        "restartPolicy": "Never",
        // The enclave needs nothing from the cluster: no token, no service variables.
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "containers": [{
            "name": "enclave",
            "image": settings.image,
            "args": args,
            "env": [{"name": "CHIRON_ROLE", "value": role}],
            "ports": [
                {"name": "control", "containerPort": CONTROL_PORT},
                {"name": "peers", "containerPort": PEER_PORT}
            ],
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "readOnlyRootFilesystem": true,
                "capabilities": {"drop": ["ALL"]}
            }
        }]
    });
    if let (Some(class), Some(spec)) = (&settings.runtime_class, spec.as_object_mut()) {
        spec.insert("runtimeClassName".into(), json!(class));
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": format!("chiron-{role}-"),
            "namespace": settings.namespace,
            "labels": {
                "app.kubernetes.io/name": "chiron-enclave",
                "app.kubernetes.io/managed-by": "chiron-host",
                "chiron.dev/role": role
            }
        },
        "spec": spec
    })
}

/// What a pod's status says about the enclave starting in it.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Not yet scheduled, pulling, or starting.
    Starting,
    /// Its container runs, at this address.
    Running(IpAddr),
    /// It ended or cannot start (a phase, or a container's waiting reason that does not
    /// pass on its own).
    Ended(String),
}

/// Reads a pod object's status.
pub fn progress(pod: &Value) -> Progress {
    let status = &pod["status"];
    match status["phase"].as_str() {
        Some(phase @ ("Succeeded" | "Failed" | "Unknown")) => {
            return Progress::Ended(format!("the pod's phase is {phase}"));
        }
        Some("Running") => {}
        _ => {}
    }
    let containers = status["containerStatuses"].as_array();
    for container in containers.into_iter().flatten() {
        if let Some(reason) = container["state"]["waiting"]["reason"].as_str()
            && matches!(
                reason,
                "ErrImagePull"
                    | "ImagePullBackOff"
                    | "InvalidImageName"
                    | "CreateContainerConfigError"
                    | "CreateContainerError"
                    | "RunContainerError"
            )
        {
            return Progress::Ended(format!("the enclave container cannot start: {reason}"));
        }
        if container["state"]["terminated"].is_object() {
            return Progress::Ended("the enclave container ended".into());
        }
    }
    let running = status["phase"].as_str() == Some("Running")
        && containers.is_some_and(|c| c.iter().all(|c| c["state"]["running"].is_object()));
    match status["podIP"].as_str().and_then(|ip| ip.parse().ok()) {
        Some(ip) if running => Progress::Running(ip),
        _ => Progress::Starting,
    }
}

/// The API server, as an in-cluster client reaches it.
#[derive(Clone)]
struct Api {
    base: String,
    http: reqwest::Client,
    token_file: PathBuf,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").field("base", &self.base).finish()
    }
}

impl Api {
    /// The cluster this pod runs in: its API server from the environment Kubernetes sets,
    /// its CA and token from the service account's volume.
    fn in_cluster(account_dir: &Path) -> anyhow::Result<Self> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST")
            .context("KUBERNETES_SERVICE_HOST is not set: the Kubernetes launcher runs in a pod")?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let host = match host.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
            _ => host,
        };
        let ca_file = account_dir.join("ca.crt");
        let ca = std::fs::read(&ca_file)
            .with_context(|| format!("cannot read the cluster's CA {}", ca_file.display()))?;
        let ca = reqwest::Certificate::from_pem(&ca)
            .with_context(|| format!("{} is not a PEM certificate", ca_file.display()))?;
        let http = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .timeout(API_TIMEOUT)
            .build()
            .context("cannot build the API client")?;
        Ok(Self {
            base: format!("https://{host}:{port}"),
            http,
            token_file: account_dir.join("token"),
        })
    }

    /// One call; the answer's JSON, or what went wrong in the API's own words.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, String> {
        // Re-read each time: projected tokens are rotated.
        let token = std::fs::read_to_string(&self.token_file)
            .map_err(|e| format!("cannot read the service-account token: {e}"))?;
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token.trim())
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| e.to_string())?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            Ok(value)
        } else {
            // A `Status` object says why.
            let message = value["message"].as_str().unwrap_or("no message");
            Err(format!("{status}: {message}"))
        }
    }
}

/// A pod the host created; deleted when stopped or dropped.
#[derive(Debug)]
pub struct Pod {
    api: Api,
    namespace: String,
    name: String,
    deleted: bool,
}

impl Pod {
    fn path(namespace: &str, name: &str) -> String {
        format!("/api/v1/namespaces/{namespace}/pods/{name}")
    }

    /// Deletes the pod at once (no grace period: its enclave's secrets go with it).
    pub async fn delete(&mut self) {
        if !self.deleted {
            self.deleted = true;
            let path = format!(
                "{}?gracePeriodSeconds=0",
                Self::path(&self.namespace, &self.name)
            );
            let _ = self.api.call(reqwest::Method::DELETE, &path, None).await;
        }
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let mut pod = Pod {
                api: self.api.clone(),
                namespace: std::mem::take(&mut self.namespace),
                name: std::mem::take(&mut self.name),
                deleted: false,
            };
            self.deleted = true;
            runtime.spawn(async move { pod.delete().await });
        }
    }
}

/// Starts each enclave as a pod of the cluster the host runs in.
#[derive(Debug)]
pub struct Pods {
    settings: Settings,
    api: Api,
}

impl Pods {
    /// A launcher for the cluster this host runs in.
    pub fn in_cluster(settings: Settings) -> anyhow::Result<Self> {
        Ok(Self {
            api: Api::in_cluster(Path::new(SERVICE_ACCOUNT_DIR))?,
            settings,
        })
    }

    /// The namespace this pod runs in, from its service account.
    pub fn own_namespace() -> Option<String> {
        std::fs::read_to_string(Path::new(SERVICE_ACCOUNT_DIR).join("namespace"))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    async fn check(&self) -> anyhow::Result<()> {
        let path = format!(
            "/api/v1/namespaces/{}/pods?limit=1",
            self.settings.namespace
        );
        self.api
            .call(reqwest::Method::GET, &path, None)
            .await
            .map(drop)
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot list pods in namespace {}: {e} (the host's service account needs \
                     the Role in deploy/kubernetes/host.yaml)",
                    self.settings.namespace
                )
            })
    }

    async fn start(&self, role: Role) -> Result<Enclave, EnclaveError> {
        let namespace = &self.settings.namespace;
        let created = self
            .api
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/namespaces/{namespace}/pods"),
                Some(&pod_manifest(&self.settings, role)),
            )
            .await
            .map_err(EnclaveError::Cluster)?;
        let name = created["metadata"]["name"]
            .as_str()
            .ok_or_else(|| EnclaveError::Cluster("the created pod has no name".into()))?
            .to_owned();
        // From here on, dropping `pod` deletes it, whatever goes wrong.
        let pod = Pod {
            api: self.api.clone(),
            namespace: namespace.clone(),
            name,
            deleted: false,
        };
        let path = Pod::path(namespace, &pod.name);
        let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            let status = self
                .api
                .call(reqwest::Method::GET, &path, None)
                .await
                .map_err(EnclaveError::Cluster)?;
            match progress(&status) {
                Progress::Ended(reason) => return Err(EnclaveError::Cluster(reason)),
                Progress::Running(ip) => {
                    // Running is not yet listening: the enclave's start may take a while.
                    let connecting = TcpStream::connect(SocketAddr::new(ip, CONTROL_PORT));
                    if let Ok(Ok(stream)) = tokio::time::timeout(POLL * 4, connecting).await {
                        stream.set_nodelay(true).map_err(EnclaveError::Connect)?;
                        return Ok(Enclave::from_stream(stream, Some(Instance::Pod(pod))));
                    }
                }
                Progress::Starting => {}
            }
            tokio::time::sleep(POLL).await;
        }
        Err(EnclaveError::StartupTimeout(STARTUP_TIMEOUT))
    }
}

impl Launch for Pods {
    fn init_platform(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(self.check())
    }

    fn spawn(&self, role: Role) -> BoxFuture<'_, Result<Enclave, EnclaveError>> {
        Box::pin(self.start(role))
    }

    fn relay_bind(&self) -> SocketAddr {
        SocketAddr::new(self.settings.advertise, 0)
    }

    fn relay_address(&self, port: u16) -> String {
        SocketAddr::new(self.settings.advertise, port).to_string()
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    fn example() -> Settings {
        Settings {
            namespace: "chiron".into(),
            image: "registry.example/chiron-enclave:0.1.0".into(),
            runtime_class: Some("kata-qemu-snp".into()),
            tee: "auto",
            advertise: IpAddr::from([10, 0, 0, 5]),
            extra_args: Vec::new(),
        }
    }

    #[test]
    fn the_shipped_pod_example_is_what_the_launcher_creates() {
        let shipped = include_str!("../../../../deploy/kubernetes/enclave-pod.example.json");
        let shipped: Value = serde_json::from_str(shipped).expect("the example is JSON");
        assert_eq!(pod_manifest(&example(), Role::Worker), shipped);
    }

    #[test]
    fn a_pod_without_a_runtime_class_leaves_it_to_the_cluster() {
        let settings = Settings {
            runtime_class: None,
            ..example()
        };
        let pod = pod_manifest(&settings, Role::ParameterServer);
        assert!(pod["spec"].get("runtimeClassName").is_none());
        assert_eq!(pod["metadata"]["labels"]["chiron.dev/role"], "ps");
        assert_eq!(pod["spec"]["containers"][0]["args"][2], "ps");
    }

    /// Pod objects as the API server returns them, in the states a start goes through.
    #[test]
    fn pod_status_is_read_as_the_api_server_writes_it() {
        let pod = |status: Value| json!({"kind": "Pod", "apiVersion": "v1", "status": status});
        assert_eq!(
            progress(&pod(json!({"phase": "Pending", "qosClass": "BestEffort"}))),
            Progress::Starting
        );
        assert_eq!(
            progress(&pod(json!({
                "phase": "Pending",
                "podIP": "10.244.1.7",
                "containerStatuses": [{"name": "enclave", "ready": false,
                    "state": {"waiting": {"reason": "ContainerCreating"}}}]
            }))),
            Progress::Starting
        );
        assert_eq!(
            progress(&pod(json!({
                "phase": "Running",
                "podIP": "10.244.1.7",
                "podIPs": [{"ip": "10.244.1.7"}],
                "containerStatuses": [{"name": "enclave", "ready": true,
                    "state": {"running": {"startedAt": "2026-11-30T18:00:00Z"}}}]
            }))),
            Progress::Running(IpAddr::from([10, 244, 1, 7]))
        );
        assert!(matches!(
            progress(&pod(json!({
                "phase": "Pending",
                "containerStatuses": [{"name": "enclave",
                    "state": {"waiting": {"reason": "ImagePullBackOff",
                        "message": "Back-off pulling image"}}}]
            }))),
            Progress::Ended(reason) if reason.contains("ImagePullBackOff")
        ));
        assert!(matches!(
            progress(&pod(json!({
                "phase": "Running",
                "podIP": "10.244.1.7",
                "containerStatuses": [{"name": "enclave",
                    "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]
            }))),
            Progress::Ended(_)
        ));
        assert!(matches!(
            progress(&pod(json!({"phase": "Failed"}))),
            Progress::Ended(_)
        ));
    }
}
