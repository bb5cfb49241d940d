//! deploy/compose.yml (#17, item 3): stratumd + Prometheus + Grafana. Grafana cannot be installed
//! here (it is in no reachable registry) and neither can the Prometheus image, so what is checked
//! is everything short of `compose up`:
//! - the file passes Docker Compose's own schema (`docker-compose config`, Debian's 1.29), which
//!   does refuse a misspelt key (checked on a copy);
//! - every file it mounts exists; stratumd's mounted config passes `--check-config` and listens on
//!   the port compose publishes; the build context has the Dockerfile;
//! - Prometheus's files, laid out as compose mounts them, pass `promtool check config` (rules
//!   included), and a real Prometheus started with compose's command line in a namespace where
//!   the service names resolve scrapes a stratumd running the compose config and loads the rules;
//! - Grafana's provisioning files: the structure Grafana reads (apiVersion 1, data sources, a
//!   file provider), the data source's URL is the Prometheus service and answers queries there,
//!   the provider's path is where compose mounts the dashboard, and the dashboard JSON has what a
//!   provisioned dashboard needs (uid, title, schemaVersion, panels with ids and grid positions,
//!   its data source variable of the provisioned type, no import-time `${DS_...}` inputs);
//! - the dashboard decoded and re-encoded with Grafana's own schema types (grafana-foundation-sdk,
//!   PyPI) loses nothing but two keys the schema leaves out, and a misspelt key is caught.
//!
//! Needs docker-compose, scripts/test's Python venv (target/peers/python: PyYAML reads the YAML),
//! promtool/prometheus, root (a namespace): skips outside CI without them, fails in CI.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");

fn have_compose() -> bool {
    require(
        have_tool("docker-compose") && python().is_file(),
        "docker-compose or scripts/test's target/peers/python is missing (apt-get install docker-compose)",
    )
}

/// scripts/test's Python venv (PyYAML, grafana-foundation-sdk).
fn python() -> PathBuf {
    Path::new(DEPLOY).join("../target/peers/python/bin/python3")
}

/// YAML text as JSON, through PyYAML (in the venv as kubernetes-validate's dependency).
fn yaml(text: &str) -> Value {
    let mut child = Command::new(python())
        .args(["-c", "import sys, json, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "not YAML: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `docker-compose -f FILE config`: (ok, normalised YAML or the error).
fn compose_config(file: &Path) -> (bool, String) {
    let out = Command::new("docker-compose")
        .arg("-f")
        .arg(file)
        .arg("config")
        .env_remove("GRAFANA_ADMIN_PASSWORD")
        .output()
        .expect("run docker-compose");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
}

/// The compose file as docker-compose resolves it (paths absolute, defaults filled in).
fn resolved() -> Value {
    let (ok, text) = compose_config(&Path::new(DEPLOY).join("compose.yml"));
    assert!(ok, "docker-compose config: {text}");
    yaml(&text)
}

/// A service's bind mounts: (host path, container path).
fn binds(service: &Value) -> Vec<(PathBuf, String)> {
    service["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| {
            let v = v.as_str().unwrap();
            let mut parts = v.split(':');
            let (host, target) = (parts.next()?, parts.next()?);
            host.starts_with('/').then(|| (PathBuf::from(host), target.to_string()))
        })
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

#[test]
fn compose_file_passes_docker_composes_schema_which_refuses_a_wrong_key() {
    if !have_compose() {
        return;
    }
    let text = std::fs::read_to_string(Path::new(DEPLOY).join("compose.yml")).unwrap();
    let (ok, out) = compose_config(&Path::new(DEPLOY).join("compose.yml"));
    assert!(ok, "{out}");
    // The same file with one key misspelt, beside it (relative paths unchanged): refused.
    let dir = tempfile::tempdir_in(DEPLOY).unwrap();
    let copy = dir.path().join("compose.yml");
    std::fs::write(&copy, text.replacen("cap_drop:", "cap_dorp:", 1)).unwrap();
    let (ok, out) = compose_config(&copy);
    assert!(!ok && out.contains("cap_dorp"), "a misspelt key passed: {out}");
    let v = resolved();
    let names: BTreeSet<&str> = v["services"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(names, BTreeSet::from(["grafana", "prometheus", "stratumd"]));
}

#[test]
fn stratumd_service_runs_the_image_unprivileged_with_a_valid_mounted_config() {
    if !have_compose() {
        return;
    }
    let v = resolved();
    let s = &v["services"]["stratumd"];
    let context = PathBuf::from(s["build"]["context"].as_str().unwrap());
    assert!(context.join(s["build"]["dockerfile"].as_str().unwrap()).is_file(), "{s}");
    assert!(s.get("user").is_none(), "the image's own (non-root) user: {s}");
    assert_eq!(strings(&s["cap_drop"]), ["ALL"]);
    assert!(s.get("cap_add").is_none(), "no capability: {s}");
    let command = strings(&s["command"]);
    assert_eq!(command[0], "--config");
    let (host, _) = binds(s).into_iter().find(|(_, target)| *target == command[1]).expect("the config is mounted");
    let (ok, out, err, _) = check_config(&std::fs::read_to_string(&host).unwrap());
    assert!(ok, "{}: {out}{err}", host.display());
    // The published container port (long form, as docker-compose resolves it) is the one
    // stratumd listens on, over UDP.
    let text = std::fs::read_to_string(&host).unwrap();
    let port = &s["ports"][0];
    assert_eq!((port["protocol"].as_str(), port["published"].as_u64()), (Some("udp"), Some(123)), "{port}");
    let target = port["target"].as_u64().unwrap();
    assert!(text.contains(&format!(":{target}\"")), "stratumd does not listen on {target}: {text}");
}

/// Prometheus's files where compose mounts them, under `root`; its command line with paths
/// moved under `root` too.
fn prometheus_layout(v: &Value, root: &Path) -> Vec<String> {
    let p = &v["services"]["prometheus"];
    for (host, target) in binds(p) {
        assert!(host.exists(), "{} is mounted but missing", host.display());
        let to = root.join(target.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&host, &to).unwrap();
    }
    strings(&p["command"])
        .iter()
        .map(|a| match a.split_once("=/") {
            Some((flag, path)) => format!("{flag}={}", root.join(path).display()),
            None => a.clone(),
        })
        .collect()
}

#[test]
fn prometheus_config_as_mounted_passes_promtool() {
    if !have_compose() || !require(have_tool("promtool"), "promtool is not installed (apt-get install prometheus)") {
        return;
    }
    let v = resolved();
    let root = tempfile::tempdir().unwrap();
    let args = prometheus_layout(&v, root.path());
    let config = args.iter().find_map(|a| a.strip_prefix("--config.file=")).unwrap();
    let out = Command::new("promtool").args(["check", "config", config]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.contains("SUCCESS") && said.contains("alerts.yml"), "{said}");
}

#[test]
fn grafana_provisioning_points_at_the_prometheus_service_and_the_mounted_dashboard() {
    if !have_compose() {
        return;
    }
    let v = resolved();
    let g = &v["services"]["grafana"];
    let mounts = binds(g);
    for (host, _) in &mounts {
        assert!(host.exists(), "{} is mounted but missing", host.display());
    }
    let (provisioning, _) = mounts.iter().find(|(_, t)| t == "/etc/grafana/provisioning").expect("provisioning mount");
    // Data sources: the Prometheus service on its (default) port.
    let datasources: Vec<PathBuf> =
        std::fs::read_dir(provisioning.join("datasources")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(datasources.len(), 1, "{datasources:?}");
    let ds = yaml(&std::fs::read_to_string(&datasources[0]).unwrap());
    assert_eq!(ds["apiVersion"], 1);
    let list = ds["datasources"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    let prom = &list[0];
    assert_eq!(
        (prom["type"].as_str(), prom["access"].as_str(), prom["isDefault"].as_bool()),
        (Some("prometheus"), Some("proxy"), Some(true))
    );
    assert!(prom["name"].is_string() && prom["uid"].is_string());
    let keys: BTreeSet<&str> = prom.as_object().unwrap().keys().map(String::as_str).collect();
    let known = ["name", "uid", "type", "access", "url", "isDefault", "editable", "jsonData", "orgId", "version"];
    assert!(keys.iter().all(|k| known.contains(k)), "a key Grafana does not read: {keys:?}");
    let prometheus_listen = strings(&v["services"]["prometheus"]["command"])
        .iter()
        .find_map(|a| a.strip_prefix("--web.listen-address=").map(str::to_string))
        .unwrap_or_else(|| ":9090".into());
    assert_eq!(prom["url"], format!("http://prometheus:{}", prometheus_listen.rsplit(':').next().unwrap()));

    // Dashboards: a file provider whose path is the directory compose mounts the dashboard in.
    let dashboards: Vec<PathBuf> =
        std::fs::read_dir(provisioning.join("dashboards")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(dashboards.len(), 1, "{dashboards:?}");
    let p = yaml(&std::fs::read_to_string(&dashboards[0]).unwrap());
    assert_eq!(p["apiVersion"], 1);
    let provider = &p["providers"][0];
    assert_eq!(provider["type"], "file");
    assert!(provider["name"].is_string());
    let path = provider["options"]["path"].as_str().unwrap();
    let (dashboard, target) = mounts
        .iter()
        .find(|(_, t)| Path::new(t).parent() == Some(Path::new(path)))
        .expect("a file mounted in the provider's path");
    assert!(target.ends_with(".json"));
    assert_eq!(
        dashboard.canonicalize().unwrap(),
        Path::new(DEPLOY).join("grafana-dashboard.json").canonicalize().unwrap()
    );
    let home = g["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"].as_str().unwrap();
    assert_eq!(home, target);
    assert_eq!(g["environment"]["GF_SECURITY_ADMIN_PASSWORD"], "admin", "the documented default");

    // What Grafana needs of a provisioned dashboard file.
    let text = std::fs::read_to_string(dashboard).unwrap();
    assert!(!text.contains("${DS_"), "provisioning does not fill in __inputs");
    let d: Value = serde_json::from_str(&text).unwrap();
    let uid = d["uid"].as_str().unwrap();
    assert!(
        !uid.is_empty() && uid.len() <= 40 && uid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    );
    assert!(!d["title"].as_str().unwrap().is_empty() && d["schemaVersion"].as_u64().unwrap() >= 30);
    let variables = d["templating"]["list"].as_array().unwrap();
    let source = variables.iter().find(|x| x["type"] == "datasource").expect("a data source variable");
    assert_eq!(source["query"], prom["type"], "the variable offers the provisioned type");
    let mut ids = BTreeSet::new();
    let mut panels: Vec<&Value> = d["panels"].as_array().unwrap().iter().collect();
    let nested: Vec<&Value> = panels.iter().filter_map(|p| p["panels"].as_array()).flatten().collect();
    panels.extend(nested);
    assert!(panels.len() >= 10);
    for panel in panels {
        assert!(ids.insert(panel["id"].as_u64().expect("an integer id")), "duplicate id {}", panel["id"]);
        let kind = panel["type"].as_str().unwrap();
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(grid["y"].is_u64() && grid["h"].as_u64().unwrap() > 0 && w > 0 && x + w <= 24, "gridPos {grid}");
        if kind != "row" {
            assert_eq!(
                panel["datasource"]["uid"],
                format!("${{{}}}", source["name"].as_str().unwrap()),
                "{}",
                panel["title"]
            );
            let targets = panel["targets"].as_array().unwrap();
            assert!(!targets.is_empty() && targets.iter().all(|t| t["expr"].is_string() && t["refId"].is_string()));
        }
    }
}

/// `GET path` on `addr` from inside namespace `ns`: (status, body).
fn get_in(ns: &str, addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let (ns, path) = (format!("/run/netns/{ns}"), path.to_string());
    std::thread::spawn(move || {
        let ns = std::fs::File::open(ns).ok()?;
        // SAFETY: setns on this thread only, with a namespace file we hold open.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return None;
        }
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).ok()?;
        let (head, body) = raw.split_once("\r\n\r\n")?;
        Some((head.split_whitespace().nth(1)?.parse().ok()?, body.to_string()))
    })
    .join()
    .ok()?
}

/// /etc/netns/NAME/hosts, which `ip netns exec` puts over /etc/hosts: the compose service names.
struct Hosts(PathBuf);

impl Drop for Hosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn prometheus_run_as_compose_runs_it_scrapes_the_compose_stratumd_and_loads_the_rules() {
    if !have_compose()
        || !require(is_root() && have_tool("ip"), "needs root and ip (a namespace for the compose network)")
        || !require(have_tool("prometheus"), "prometheus is not installed (apt-get install prometheus)")
    {
        return;
    }
    let v = resolved();
    let ns = Netns::new("compose");
    let hosts = Hosts(PathBuf::from(format!("/etc/netns/{}", ns.name)));
    std::fs::create_dir_all(&hosts.0).unwrap();
    std::fs::write(hosts.0.join("hosts"), "127.0.0.1 localhost stratumd prometheus grafana\n").unwrap();

    // stratumd with the compose config (as its user in the image: the control socket's place).
    let s = &v["services"]["stratumd"];
    let config = binds(s).into_iter().find(|(_, t)| t == "/etc/stratumd/stratumd.toml").unwrap().0;
    let run = tempfile::tempdir().unwrap();
    let stratumd = ns
        .command(BIN)
        .arg("--config")
        .arg(&config)
        .env("RUNTIME_DIRECTORY", run.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _stratumd = Running(Some(stratumd));

    // Prometheus with compose's command line, its mounts laid out under a directory.
    let root = tempfile::tempdir().unwrap();
    let args = prometheus_layout(&v, root.path());
    let log = std::fs::File::create(root.path().join("prometheus.log")).unwrap();
    let prometheus = ns.command("prometheus").args(&args).stdout(Stdio::null()).stderr(log).spawn().unwrap();
    let _prometheus = Running(Some(prometheus));
    let prom_log = || std::fs::read_to_string(root.path().join("prometheus.log")).unwrap_or_default();

    // Through the Grafana data source's URL (the service name resolves as on the compose network).
    let web = SocketAddr::from(([127, 0, 0, 1], 9090));
    let deadline = Instant::now() + Duration::from_secs(30);
    let up = loop {
        let answer = get_in(&ns.name, web, "/api/v1/query?query=up%7Bjob%3D%22stratumd%22%7D");
        let value = answer.as_ref().and_then(|(_, body)| {
            let v: Value = serde_json::from_str(body).ok()?;
            v["data"]["result"][0]["value"][1].as_str().map(str::to_string)
        });
        if value.as_deref() == Some("1") {
            break answer.unwrap().1;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape stratumd:9123 in 30 s: {answer:?}\n{}",
            prom_log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(up.contains("stratumd:9123"), "{up}");
    let (status, rules) = get_in(&ns.name, web, "/api/v1/rules").unwrap();
    let rules: Value = serde_json::from_str(&rules).unwrap();
    let group = rules["data"]["groups"].as_array().unwrap().iter().find(|g| g["name"] == "stratumd").cloned();
    let count = group.as_ref().and_then(|g| g["rules"].as_array()).map_or(0, Vec::len);
    assert!(status == 200 && count >= 5, "alerts.yml's rules loaded: {rules}");
    let (_, info) = get_in(&ns.name, web, "/api/v1/query?query=stratumd_build_info").unwrap();
    assert!(info.contains("\"job\":\"stratumd\""), "{info}");
}

/// Decodes a dashboard with Grafana's own types (grafana-foundation-sdk, generated from Grafana's
/// schema, panel plugins registered) and encodes it again: what the schema does not know is
/// dropped on the way; prints each dropped or changed path.
const ROUND_TRIP: &str = r#"
import json, sys
from grafana_foundation_sdk.cog import plugins
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard
plugins.register_default_plugins()
src = json.load(open(sys.argv[1]))
back = json.loads(json.dumps(Dashboard.from_json(src), cls=JSONEncoder))
def diff(a, b, path):
    if isinstance(a, dict):
        if not isinstance(b, dict):
            print(f"{path}: not an object"); return
        for k in a:
            if k in b: diff(a[k], b[k], f"{path}.{k}")
            else: print(f"{path}.{k}: dropped")
    elif isinstance(a, list):
        if not isinstance(b, list) or len(a) != len(b):
            print(f"{path}: list changed"); return
        for i, (x, y) in enumerate(zip(a, b)): diff(x, y, f"{path}[{i}]")
    elif a != b:
        print(f"{path}: {a!r} became {b!r}")
diff(src, back, "")
"#;

fn round_trip(python: &Path, dashboard: &Path) -> Vec<String> {
    let out = Command::new(python).args(["-c", ROUND_TRIP]).arg(dashboard).output().expect("run python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// The dashboard through Grafana's schema types loses only `__inputs` (import-time, empty) and a
/// query variable's `definition` (the editor's copy of its query): every other key and value is
/// one Grafana's schema has. A misspelt panel key is caught the same way (checked on a copy).
#[test]
fn the_dashboard_round_trips_through_grafanas_schema_types() {
    let python = python();
    if !require(
        python.is_file(),
        "grafana-foundation-sdk is not installed (scripts/test puts it in target/peers/python)",
    ) {
        return;
    }
    let dashboard = Path::new(DEPLOY).join("grafana-dashboard.json");
    let lost = round_trip(&python, &dashboard);
    let expected = |l: &String| {
        l == ".__inputs: dropped" || (l.starts_with(".templating.list[") && l.ends_with("].definition: dropped"))
    };
    assert!(lost.iter().all(expected), "keys or values Grafana's schema does not have: {lost:?}");
    let text = std::fs::read_to_string(&dashboard).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, text.replacen("\"gridPos\"", "\"gridPosition\"", 1)).unwrap();
    let lost = round_trip(&python, &bad);
    assert!(lost.iter().any(|l| l.ends_with(".gridPosition: dropped")), "a misspelt key passed: {lost:?}");
}
