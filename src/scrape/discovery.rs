//! Target discovery: static lists, files of target groups (re-read when they change) and
//! Kubernetes pods opting in by annotation. Every target is a label set carrying `__address__`,
//! optionally `__scheme__`, `__profile__` (only this profile) and `__profile_path__`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

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
//
// Minimal mirrors of the core/v1 `PodList` JSON (only the fields discovery reads), so the pod
// list is read without `kube` + `k8s-openapi` (minutes of compile time on a small machine).

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PodList {
    pub items: Vec<Pod>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Pod {
    pub metadata: ObjectMeta,
    pub spec: PodSpec,
    pub status: PodStatus,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ObjectMeta {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PodSpec {
    pub node_name: String,
    pub containers: Vec<Container>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Container {
    pub name: String,
    pub ports: Vec<ContainerPort>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ContainerPort {
    pub name: String,
    pub container_port: u16,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PodStatus {
    pub phase: String,
    #[serde(rename = "podIP")]
    pub pod_ip: String,
}

pub const ANNOTATION_PREFIX: &str = "profiles.grafana.com/";

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Targets of running pods annotated `profiles.grafana.com/<profile>.scrape: "true"`, one per
/// pod and profile, at `<.port>` (a number or a container port name; default: the first
/// container port) and `<.path>` (default: the profile's). `service_name` is
/// `pyroscope.io/service_name` or `<namespace>/<container>`, as Alloy infers it.
pub fn pod_targets(pods: &PodList) -> Vec<TargetLabels> {
    let mut targets = Vec::new();
    for pod in &pods.items {
        if pod.status.pod_ip.is_empty() || matches!(pod.status.phase.as_str(), "Succeeded" | "Failed") {
            continue;
        }
        let annotations = &pod.metadata.annotations;
        let profiles: Vec<&str> = annotations
            .iter()
            .filter_map(|(key, value)| {
                let profile = key.strip_prefix(ANNOTATION_PREFIX)?.strip_suffix(".scrape")?;
                (value == "true").then_some(profile)
            })
            .collect();
        for profile in profiles {
            let annotation = |suffix: &str| annotations.get(&format!("{ANNOTATION_PREFIX}{profile}.{suffix}"));
            let port_text = annotation("port").or_else(|| annotation("port_name"));
            let container_ports = pod
                .spec
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().map(move |p| (c, p)));
            let found = match port_text {
                Some(text) => match text.parse::<u16>() {
                    Ok(number) => Some((
                        pod.spec
                            .containers
                            .iter()
                            .find(|c| c.ports.iter().any(|p| p.container_port == number))
                            .or(pod.spec.containers.first()),
                        number,
                    )),
                    Err(_) => container_ports
                        .clone()
                        .find(|(_, port)| &port.name == text)
                        .map(|(c, p)| (Some(c), p.container_port)),
                },
                None => container_ports.clone().next().map(|(c, p)| (Some(c), p.container_port)),
            };
            let Some((container, port)) = found else {
                tracing::debug!(pod = %pod.metadata.name, profile, "annotated pod has no usable port");
                continue;
            };
            let container_name = container.map_or("", |c| c.name.as_str());
            let mut labels = TargetLabels::new();
            labels.insert(ADDRESS.into(), format!("{}:{port}", pod.status.pod_ip));
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
                .unwrap_or_else(|| format!("{}/{container_name}", pod.metadata.namespace));
            labels.insert("service_name".into(), service);
            labels.insert("namespace".into(), pod.metadata.namespace.clone());
            labels.insert("pod".into(), pod.metadata.name.clone());
            labels.insert("container".into(), container_name.to_string());
            labels.insert("__meta_kubernetes_namespace".into(), pod.metadata.namespace.clone());
            labels.insert("__meta_kubernetes_pod_name".into(), pod.metadata.name.clone());
            labels.insert("__meta_kubernetes_pod_ip".into(), pod.status.pod_ip.clone());
            labels.insert("__meta_kubernetes_pod_node_name".into(), pod.spec.node_name.clone());
            labels.insert(
                "__meta_kubernetes_pod_container_name".into(),
                container_name.to_string(),
            );
            for (key, value) in &pod.metadata.labels {
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

/// Lists pods from the API server: in-cluster (service account token and CA) or the configured
/// `api_server` (e.g. `kubectl proxy`).
pub async fn list_pods(config: &KubernetesSdConfig) -> Result<PodList, String> {
    const SA: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
    let in_cluster = std::env::var("KUBERNETES_SERVICE_HOST").ok().map(|host| {
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        format!("https://{host}:{port}")
    });
    let server = config
        .api_server
        .clone()
        .or(in_cluster)
        .unwrap_or_else(|| "http://127.0.0.1:8001".into());
    let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
    if let Ok(pem) = std::fs::read(format!("{SA}/ca.crt")) {
        let certificate = reqwest::Certificate::from_pem(&pem).map_err(|err| err.to_string())?;
        builder = builder.add_root_certificate(certificate);
    }
    let client = builder.build().map_err(|err| err.to_string())?;
    let token = std::fs::read_to_string(format!("{SA}/token")).ok();
    let urls: Vec<String> = if config.namespaces.is_empty() {
        vec![format!("{server}/api/v1/pods")]
    } else {
        config
            .namespaces
            .iter()
            .map(|ns| format!("{server}/api/v1/namespaces/{ns}/pods"))
            .collect()
    };
    let mut all = PodList::default();
    for url in urls {
        let mut request = client.get(&url);
        if let Some(token) = &token {
            request = request.bearer_auth(token.trim());
        }
        let response = request.send().await.map_err(|err| format!("{url}: {err}"))?;
        if !response.status().is_success() {
            return Err(format!("{url}: {}", response.status()));
        }
        let body = response.bytes().await.map_err(|err| format!("{url}: {err}"))?;
        let list: PodList = serde_json::from_slice(&body).map_err(|err| format!("{url}: {err}"))?;
        all.items.extend(list.items);
    }
    Ok(all)
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
        let pods: PodList = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let mut targets = pod_targets(&pods);
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
}
