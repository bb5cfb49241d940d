//! deploy/kubernetes/daemonset.yaml (#17, item 5), without a cluster:
//! - a schema check: `kubernetes-validate --strict` (PyPI; the Kubernetes OpenAPI schemas as JSON
//!   schema, no cluster needed; scripts/test installs it in target/peers/python)
//!   against Kubernetes 1.30 and 1.37; strict refuses unknown fields, which the test shows on a
//!   copy with a misspelt field and one with a wrongly typed value;
//! - what the schema cannot know: host network, the xdp backend's capabilities (the systemd
//!   drop-in's set) plus what the drop to `[server] user` needs, probes on /healthz at the port
//!   the ConfigMap's `[metrics]` listens on, Prometheus annotations naming that port, the config
//!   mounted where `--config` looks, its user the image's, and the ConfigMap's stratumd.toml
//!   passing `stratumd --check-config`.
//!
//! Without kubernetes-validate these skip, in CI they fail.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn daemonset_path() -> PathBuf {
    Path::new(REPO).join("deploy/kubernetes/daemonset.yaml")
}

/// The venv scripts/test makes (its python has PyYAML, a kubernetes-validate dependency).
fn venv() -> Option<PathBuf> {
    let dir = Path::new(REPO).join("target/peers/python/bin");
    let ok = require(
        dir.join("kubernetes-validate").is_file(),
        "kubernetes-validate is not installed (scripts/test puts it in target/peers/python)",
    );
    ok.then_some(dir)
}

/// `kubernetes-validate --strict -k VERSION FILE`: (passed, what it said).
fn validate(bin: &Path, version: &str, file: &Path) -> (bool, String) {
    let out = Command::new(bin.join("kubernetes-validate"))
        .args(["--strict", "--no-warn", "-k", version])
        .arg(file)
        .output()
        .expect("run kubernetes-validate");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn the_daemonset_passes_the_kubernetes_schema_which_refuses_wrong_fields() {
    let Some(bin) = venv() else { return };
    for version in ["1.30.0", "1.37.0"] {
        let (ok, said) = validate(&bin, version, &daemonset_path());
        assert!(ok && said.matches("passed").count() == 3, "{version}: {said}");
    }
    let text = std::fs::read_to_string(daemonset_path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (from, to, why) in [
        ("hostNetwork: true", "hostNetwrk: true", "hostNetwrk"),
        ("readOnlyRootFilesystem: true", "readOnlyRootFilesystem: \"yes\"", "readOnlyRootFilesystem"),
        ("periodSeconds: 30", "periodSecs: 30", "periodSecs"),
    ] {
        assert_eq!(text.matches(from).count(), 1, "{from}");
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, text.replace(from, to)).unwrap();
        let (ok, said) = validate(&bin, "1.30.0", &bad);
        assert!(!ok && said.contains(why), "`{to}` passed: {said}");
    }
}

/// Every document of the YAML file, as JSON.
fn documents(bin: &Path) -> Vec<Value> {
    let mut child = Command::new(bin.join("python3"))
        .args(["-c", "import sys, json, yaml; json.dump(list(yaml.safe_load_all(sys.stdin)), sys.stdout)"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&std::fs::read(daemonset_path()).unwrap()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

/// A `KEY = VALUE` line's value in `[section]` of a TOML text (the shipped files' plain form).
fn toml_value(text: &str, section: &str, key: &str) -> Option<String> {
    let mut current = String::new();
    for line in text.lines().map(|l| l.split('#').next().unwrap().trim()) {
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = s.to_string();
        } else if current == section {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim() == key {
                    return Some(v.trim().trim_matches('"').to_string());
                }
            }
        }
    }
    None
}

#[test]
fn the_daemonset_runs_the_xdp_backend_on_the_host_network_with_probes_and_scrape_annotations() {
    let Some(bin) = venv() else { return };
    let docs = documents(&bin);
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Namespace", "ConfigMap", "DaemonSet"]);
    let (config_map, ds) = (&docs[1], &docs[2]);
    let namespace = docs[0]["metadata"]["name"].as_str().unwrap();
    assert_eq!(
        (config_map["metadata"]["namespace"].as_str(), ds["metadata"]["namespace"].as_str()),
        (Some(namespace), Some(namespace))
    );
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(ds["spec"]["selector"]["matchLabels"], ds["spec"]["template"]["metadata"]["labels"]);
    assert_eq!(
        (spec["hostNetwork"].as_bool(), spec["dnsPolicy"].as_str()),
        (Some(true), Some("ClusterFirstWithHostNet"))
    );
    let containers = spec["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];

    // The config: a ConfigMap key, mounted where --config points, valid for this stratumd.
    let args = strings(&c["args"]);
    assert_eq!(args[0], "--config");
    let config_path = Path::new(&args[1]);
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| Path::new(m["mountPath"].as_str().unwrap()) == config_path.parent().unwrap())
        .expect("the config's directory is mounted");
    let volume = spec["volumes"].as_array().unwrap().iter().find(|v| v["name"] == mount["name"]).unwrap();
    assert_eq!(volume["configMap"]["name"], config_map["metadata"]["name"]);
    let key = config_path.file_name().unwrap().to_str().unwrap();
    let toml = config_map["data"][key].as_str().expect("the ConfigMap has the file --config names");
    assert_eq!(toml_value(toml, "server", "backend").as_deref(), Some("xdp"));
    // The NIC is the node's: check the rest against loopback, as tests/cli.rs does for deploy/.
    let (ok, out, err, _) = check_config(&toml.replace("interface = \"eth0\"", "interface = \"lo\""));
    if cfg!(feature = "xdp") {
        assert!(ok, "the ConfigMap's stratumd.toml: {out}{err}");
    }
    // Its [server] user is the image's (the Dockerfile's --uid).
    let dockerfile = std::fs::read_to_string(Path::new(REPO).join("Dockerfile")).unwrap();
    let uid = dockerfile.split("--uid ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap();
    assert_eq!(toml_value(toml, "server", "user").as_deref(), Some(uid));
    // The control socket's directory is writable (the root file system is not).
    let runtime = dockerfile.lines().find_map(|l| l.strip_prefix("ENV RUNTIME_DIRECTORY=")).unwrap();
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert!(c["volumeMounts"].as_array().unwrap().iter().any(|m| m["mountPath"] == runtime), "{runtime} mounted");

    // Capabilities: the xdp drop-in's, plus what becoming [server] user takes; nothing else.
    let drop_in = std::fs::read_to_string(Path::new(REPO).join("deploy/stratumd-xdp.conf")).unwrap();
    let xdp: BTreeSet<String> = drop_in
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .unwrap()
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_string())
        .collect();
    let sc = &c["securityContext"];
    let added: BTreeSet<String> = strings(&sc["capabilities"]["add"]).into_iter().collect();
    let user_change: BTreeSet<String> = ["SETUID", "SETGID", "CHOWN"].map(String::from).into();
    assert_eq!(added, xdp.union(&user_change).cloned().collect::<BTreeSet<_>>());
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert_eq!((sc["runAsUser"].as_u64(), sc["allowPrivilegeEscalation"].as_bool()), (Some(0), Some(false)));

    // Probes on /healthz and the scrape annotations, at the port [metrics] listens on.
    let metrics_port: u64 = toml_value(toml, "metrics", "listen").unwrap().rsplit(':').next().unwrap().parse().unwrap();
    let ports = c["ports"].as_array().unwrap();
    let named = |name: &str| ports.iter().find(|p| p["name"] == name).map(|p| p["containerPort"].as_u64().unwrap());
    assert_eq!(named("metrics"), Some(metrics_port));
    assert_eq!(ports.iter().find(|p| p["name"] == "ntp").map(|p| p["protocol"].clone()), Some("UDP".into()));
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], "/healthz", "{probe}");
        let port = get["port"].as_u64().or_else(|| named(get["port"].as_str().unwrap()));
        assert_eq!(port, Some(metrics_port), "{probe}");
    }
    let annotations = &ds["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], metrics_port.to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
}
