//! Target discovery: static lists, files of target groups (re-read when they change) and
//! Kubernetes pods opting in by annotation. Every target is a label set carrying `__address__`,
//! optionally `__scheme__`, `__profile__` (only this profile) and `__profile_path__`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::Pod;

use serde::Deserialize;

use super::config::{FileSdConfig, KubernetesSdConfig, StaticConfig};

pub type TargetLabels = BTreeMap<String, String>;

pub const ADDRESS: &str = "__address__";
pub const SCHEME: &str = "__scheme__";
/// Restricts a target to one profile of its job (Kubernetes annotations name profiles one by one).
pub const PROFILE: &str = "__profile__";
pub const PROFILE_PATH: &str = "__profile_path__";

/// A group as Prometheus file discovery reads it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TargetGroup {
    pub targets: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

pub fn static_targets(configs: &[StaticConfig]) -> Vec<TargetLabels> {
    configs
        .iter()
        .flat_map(|group| {
            group.targets.iter().map(|address| {
                let mut labels = group.labels.clone();
                labels.insert(ADDRESS.into(), address.clone());
                labels
            })
        })
        .collect()
}

/// File discovery of one `file_sd_configs` entry; keeps the last good read of every file.
#[derive(Debug, Default)]
pub struct FileDiscovery {
    files: BTreeMap<PathBuf, (Option<SystemTime>, Vec<TargetLabels>)>,
}

impl FileDiscovery {
    /// Re-reads files whose modification time changed; returns the targets of all files.
    pub fn refresh(&mut self, config: &FileSdConfig) -> Vec<TargetLabels> {
        let paths: Vec<PathBuf> = config.files.iter().flat_map(|pattern| expand(pattern)).collect();
        self.files.retain(|path, _| paths.contains(path));
        for path in paths {
            let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
            if self.files.get(&path).is_some_and(|(seen, _)| *seen == modified) {
                continue;
            }
            match read_target_file(&path) {
                Ok(targets) => {
                    tracing::info!(file = %path.display(), targets = targets.len(), "file discovery read targets");
                    self.files.insert(path, (modified, targets));
                }
                Err(err) => {
                    tracing::warn!(file = %path.display(), error = %err, "file discovery: keeping the previous targets");
                    // Remember the mtime so a broken file is not re-parsed (and logged) on every poll.
                    let kept = self.files.remove(&path).map(|(_, targets)| targets).unwrap_or_default();
                    self.files.insert(path, (modified, kept));
                }
            }
        }
        self.files.values().flat_map(|(_, targets)| targets.clone()).collect()
    }
}

/// Targets of one file: a list of groups, YAML or JSON (JSON is YAML).
pub fn read_target_file(path: &Path) -> Result<Vec<TargetLabels>, String> {
    let text = std::fs::read_to_string(path).map_err(|err| err.to_string())?;
    let groups: Vec<TargetGroup> = if text.trim().is_empty() {
        Vec::new()
    } else {
        serde_yaml::from_str(&text).map_err(|err| err.to_string())?
    };
    let mut targets = static_targets(
        &groups
            .into_iter()
            .map(|group| StaticConfig {
                targets: group.targets,
                labels: group.labels,
            })
            .collect::<Vec<_>>(),
    );
    for target in &mut targets {
        target
            .entry("__meta_filepath".into())
            .or_insert_with(|| path.display().to_string());
    }
    Ok(targets)
}

/// Paths matching a pattern whose last component may hold `*` and `?`.
fn expand(pattern: &Path) -> Vec<PathBuf> {
    let name = pattern
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return vec![pattern.to_path_buf()];
    }
    let dir = pattern
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|entry| wildcard_match(&name, &entry.file_name().to_string_lossy()))
                .map(|entry| entry.path())
                .filter(|path| path.is_file())
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    paths
}

fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

// ---- Kubernetes pods ------------------------------------------------------------------------

pub const ANNOTATION_PREFIX: &str = "profiles.grafana.com/";

/// Why Kubernetes discovery could not reach the API server.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("neither in-cluster service account nor kubeconfig found: {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("api_server {url:?}: {source}")]
    ApiServer { url: String, source: http::uri::InvalidUri },
    #[error("kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// The client a `kubernetes_sd_configs` entry asks for: a kubeconfig file, an explicit API server
/// (no credentials, e.g. `kubectl proxy`), or inferred as kubectl does — the in-cluster service
/// account first, then `$KUBECONFIG` / `~/.kube/config`.
async fn client(config: &KubernetesSdConfig) -> Result<kube::Client, KubernetesError> {
    let client_config = if let Some(path) = &config.kubeconfig_file {
        let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|source| KubernetesError::Kubeconfig {
            path: path.clone(),
            source,
        })?;
        kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|source| KubernetesError::Kubeconfig {
                path: path.clone(),
                source,
            })?
    } else if let Some(url) = &config.api_server {
        let uri = url.parse::<http::Uri>().map_err(|source| KubernetesError::ApiServer {
            url: url.clone(),
            source,
        })?;
        kube::Config::new(uri)
    } else {
        kube::Config::infer().await?
    };
    Ok(kube::Client::try_from(client_config)?)
}

/// Pods of one `kubernetes_sd_configs` entry, kept current by a watch (list, then watch from its
/// resource version, relisting with backoff after errors) rather than polled: a pod that starts
/// is scraped as soon as the API server reports it, without listing the cluster every few
/// seconds from every replica.
pub struct PodDiscovery {
    stores: Vec<kube::runtime::reflector::Store<Pod>>,
    watches: Vec<tokio::task::JoinHandle<()>>,
}

impl PodDiscovery {
    /// Starts one watch per namespace (or one over all namespaces) on the current runtime;
    /// `changed` is notified after every change of the pods, and while the API server cannot be
    /// reached the watch retries on its own.
    pub fn start(job: &str, config: &KubernetesSdConfig, changed: Arc<tokio::sync::Notify>) -> Self {
        let namespaces: Vec<Option<String>> = if config.namespaces.is_empty() {
            vec![None]
        } else {
            config.namespaces.iter().cloned().map(Some).collect()
        };
        let mut stores = Vec::new();
        let mut watches = Vec::new();
        for namespace in namespaces {
            let (store, writer) = kube::runtime::reflector::store();
            stores.push(store);
            watches.push(tokio::spawn(watch_pods(
                job.to_string(),
                config.clone(),
                namespace,
                writer,
                changed.clone(),
            )));
        }
        Self { stores, watches }
    }

    pub fn targets(&self) -> Vec<TargetLabels> {
        let pods: Vec<Arc<Pod>> = self.stores.iter().flat_map(|store| store.state()).collect();
        pod_targets(pods.iter().map(|pod| pod.as_ref()))
    }
}

impl Drop for PodDiscovery {
    fn drop(&mut self) {
        for watch in &self.watches {
            watch.abort();
        }
    }
}

async fn watch_pods(
    job: String,
    config: KubernetesSdConfig,
    namespace: Option<String>,
    writer: kube::runtime::reflector::store::Writer<Pod>,
    changed: Arc<tokio::sync::Notify>,
) {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};

    const CLIENT_RETRY: std::time::Duration = std::time::Duration::from_secs(30);
    let client = loop {
        match client(&config).await {
            Ok(client) => break client,
            Err(err) => {
                tracing::warn!(%job, error = %err, "kubernetes discovery cannot reach the API server; retrying in 30s");
                tokio::time::sleep(CLIENT_RETRY).await;
            }
        }
    };
    let api: kube::Api<Pod> = match &namespace {
        Some(namespace) => kube::Api::namespaced(client, namespace),
        None => kube::Api::all(client),
    };
    let mut watch = watcher::Config::default();
    if let Some(selector) = &config.label_selector {
        watch = watch.labels(selector);
    }
    if let Some(selector) = &config.field_selector {
        watch = watch.fields(selector);
    }
    watcher(api, watch)
        .default_backoff()
        // Managed fields are most of a pod's bytes and never a label.
        .modify(|pod| pod.metadata.managed_fields = None)
        .reflect(writer)
        .for_each(|event| {
            match event {
                Ok(_) => changed.notify_one(),
                Err(err) => {
                    tracing::warn!(%job, namespace = namespace.as_deref().unwrap_or("*"), error = %err, "kubernetes pod watch failed; retrying")
                }
            }
            std::future::ready(())
        })
        .await;
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Targets of running pods annotated `profiles.grafana.com/<profile>.scrape: "true"`, one per
/// pod and profile, at `<.port>` (a number or a container port name; default: the first
/// container port) and `<.path>` (default: the profile's). `service_name` is
/// `pyroscope.io/service_name` or `<namespace>/<container>`, as Alloy infers it.
pub fn pod_targets<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Vec<TargetLabels> {
    let no_labels = BTreeMap::new();
    let mut targets = Vec::new();
    for pod in pods {
        let (Some(spec), Some(status)) = (&pod.spec, &pod.status) else {
            continue;
        };
        let Some(pod_ip) = status.pod_ip.as_deref().filter(|ip| !ip.is_empty()) else {
            continue;
        };
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            continue;
        }
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let annotations = pod.metadata.annotations.as_ref().unwrap_or(&no_labels);
        let profiles = annotations.iter().filter_map(|(key, value)| {
            let profile = key.strip_prefix(ANNOTATION_PREFIX)?.strip_suffix(".scrape")?;
            (value == "true").then_some(profile)
        });
        for profile in profiles {
            let annotation = |suffix: &str| annotations.get(&format!("{ANNOTATION_PREFIX}{profile}.{suffix}"));
            let container_ports = spec
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten().map(move |p| (c, p)));
            let found = match annotation("port").or_else(|| annotation("port_name")) {
                Some(text) => match text.parse::<u16>() {
                    Ok(number) => Some((
                        spec.containers
                            .iter()
                            .find(|c| c.ports.iter().flatten().any(|p| p.container_port == i32::from(number)))
                            .or(spec.containers.first()),
                        i32::from(number),
                    )),
                    Err(_) => container_ports
                        .clone()
                        .find(|(_, port)| port.name.as_ref() == Some(text))
                        .map(|(c, p)| (Some(c), p.container_port)),
                },
                None => container_ports.clone().next().map(|(c, p)| (Some(c), p.container_port)),
            };
            let Some((container, port)) = found else {
                tracing::debug!(pod = name, profile, "annotated pod has no usable port");
                continue;
            };
            let container_name = container.map_or("", |c| c.name.as_str());
            let mut labels = TargetLabels::new();
            labels.insert(ADDRESS.into(), format!("{pod_ip}:{port}"));
            labels.insert(PROFILE.into(), profile.to_string());
            if let Some(path) = annotation("path") {
                labels.insert(PROFILE_PATH.into(), path.clone());
            }
            if let Some(scheme) = annotation("scheme") {
                labels.insert(SCHEME.into(), scheme.clone());
            }
            let service = annotations
                .get("pyroscope.io/service_name")
                .cloned()
                .unwrap_or_else(|| format!("{namespace}/{container_name}"));
            labels.insert("service_name".into(), service);
            labels.insert("namespace".into(), namespace.to_string());
            labels.insert("pod".into(), name.to_string());
            labels.insert("container".into(), container_name.to_string());
            labels.insert("__meta_kubernetes_namespace".into(), namespace.to_string());
            labels.insert("__meta_kubernetes_pod_name".into(), name.to_string());
            labels.insert("__meta_kubernetes_pod_ip".into(), pod_ip.to_string());
            labels.insert(
                "__meta_kubernetes_pod_node_name".into(),
                spec.node_name.clone().unwrap_or_default(),
            );
            labels.insert(
                "__meta_kubernetes_pod_container_name".into(),
                container_name.to_string(),
            );
            for (key, value) in pod.metadata.labels.as_ref().unwrap_or(&no_labels) {
                labels.insert(format!("__meta_kubernetes_pod_label_{}", sanitize(key)), value.clone());
            }
            for (key, value) in annotations {
                labels.insert(
                    format!("__meta_kubernetes_pod_annotation_{}", sanitize(key)),
                    value.clone(),
                );
            }
            targets.push(labels);
        }
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*.yaml", "a.yaml"));
        assert!(wildcard_match("t?.json", "t1.json"));
        assert!(!wildcard_match("*.yaml", "a.json"));
        assert!(wildcard_match("*", ""));
    }

    #[test]
    fn file_discovery_rereads_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.yaml");
        std::fs::write(&path, "- targets: ['10.0.0.1:6060']\n  labels: {env: prod}\n").unwrap();
        std::fs::write(dir.path().join("ignored.txt"), "not matched").unwrap();
        let config = FileSdConfig {
            files: vec![dir.path().join("*.yaml")],
            ..FileSdConfig::default()
        };
        let mut discovery = FileDiscovery::default();
        let targets = discovery.refresh(&config);
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0][ADDRESS], "10.0.0.1:6060");
        assert_eq!(targets[0]["env"], "prod");

        // JSON in a second file, and a change of the first (a later mtime).
        std::fs::write(dir.path().join("b.yaml"), r#"[{"targets": ["h:1", "h:2"]}]"#).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, "- targets: ['10.0.0.2:6060']\n").unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() + std::time::Duration::from_secs(5))
            .unwrap();
        let mut addresses: Vec<String> = discovery.refresh(&config).iter().map(|t| t[ADDRESS].clone()).collect();
        addresses.sort();
        assert_eq!(addresses, ["10.0.0.2:6060", "h:1", "h:2"]);

        // A broken file keeps its last good targets.
        std::fs::write(dir.path().join("b.yaml"), "{{{").unwrap();
        let file = std::fs::File::options()
            .write(true)
            .open(dir.path().join("b.yaml"))
            .unwrap();
        file.set_modified(SystemTime::now() + std::time::Duration::from_secs(10))
            .unwrap();
        assert_eq!(discovery.refresh(&config).len(), 3);
    }

    #[test]
    fn pods_from_a_recorded_list() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/scrape/pods.json");
        let pods: k8s_openapi::List<Pod> = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let mut targets = pod_targets(&pods.items);
        targets.sort_by(|a, b| (&a[ADDRESS], &a[PROFILE]).cmp(&(&b[ADDRESS], &b[PROFILE])));
        let summary: Vec<(String, String, Option<String>, String)> = targets
            .iter()
            .map(|t| {
                (
                    t[ADDRESS].clone(),
                    t[PROFILE].clone(),
                    t.get(PROFILE_PATH).cloned(),
                    t["service_name"].clone(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("10.244.0.12:6060".into(), "cpu".into(), None, "shop/cart".into()),
                ("10.244.0.12:6060".into(), "memory".into(), None, "shop/cart".into()),
                (
                    "10.244.0.13:8080".into(),
                    "memory".into(),
                    Some("/internal/pprof/heap".into()),
                    "payments-api".into()
                ),
            ]
        );
        assert_eq!(targets[0]["__meta_kubernetes_pod_label_app"], "cart");
        assert_eq!(targets[0]["pod"], "cart-7d9f8-abcde");
    }

    /// The shipped manifest annotates Pyrite's own pod: its template, as a running pod, must
    /// give a CPU target at the container's `http` port.
    #[test]
    fn shipped_manifest_scrapes_its_own_pod() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/pyrite.yaml");
        let manifest = std::fs::read_to_string(path).unwrap();
        let stateful_set = manifest
            .split("\n---\n")
            .map(|doc| serde_yaml::from_str::<serde_yaml::Value>(doc).unwrap())
            .find(|doc| doc["kind"] == "StatefulSet")
            .unwrap();
        let template = &stateful_set["spec"]["template"];
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": serde_json::to_value(&template["metadata"]).unwrap(),
            "spec": serde_json::to_value(&template["spec"]).unwrap(),
            "status": {"phase": "Running", "podIP": "10.1.2.3"},
        }))
        .unwrap();
        let targets = pod_targets([&pod]);
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0][ADDRESS], "10.1.2.3:4040");
        assert_eq!(targets[0][PROFILE], "cpu");
    }

    /// Building an HTTPS client exercises the TLS setup (one rustls crypto provider in the tree)
    /// without a cluster; a kubeconfig that is not there is a typed error, not a panic.
    #[tokio::test]
    async fn clients_from_config() {
        let https = KubernetesSdConfig {
            api_server: Some("https://127.0.0.1:6443".into()),
            ..KubernetesSdConfig::default()
        };
        client(&https).await.unwrap();
        let missing = KubernetesSdConfig {
            kubeconfig_file: Some("/nonexistent/kubeconfig".into()),
            ..KubernetesSdConfig::default()
        };
        assert!(matches!(
            client(&missing).await,
            Err(KubernetesError::Kubeconfig { .. })
        ));
    }
}
