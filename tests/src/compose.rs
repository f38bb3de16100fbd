//! Reading `compose/`: the docker compose file, the local stack script's
//! declared ports, and the addresses inside config files. Shared by the tests
//! that keep compose and the local stack in agreement.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `compose/`, where docker-compose.yml and every component's config live.
pub fn compose_dir() -> PathBuf {
    repo_root().join("compose")
}

/// Runs `compose/local/stack ARGS...` (e.g. `up postgres`: starts what is
/// not running and waits until it answers).
pub fn stack(args: &[&str]) -> Result<()> {
    let script = compose_dir().join("local/stack");
    let status = std::process::Command::new("bash")
        .arg(&script)
        .args(args)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    anyhow::ensure!(status.success(), "compose/local/stack {args:?} failed");
    Ok(())
}

/// A file's text, with its path in the error.
pub fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// A YAML file, with its path in the error.
pub fn read_yaml(path: &Path) -> Result<serde_yaml::Value> {
    serde_yaml::from_str(&read(path)?)
        .with_context(|| format!("parsing {} as YAML", path.display()))
}

/// The ports of every component, from the `PORTS` table of compose/local/stack:
/// component name -> its ports, the main one first.
pub fn stack_ports() -> Result<BTreeMap<String, Vec<u16>>> {
    let path = compose_dir().join("local/stack");
    let script = read(&path)?;
    let block = script
        .split_once("declare -A PORTS=(")
        .and_then(|(_, rest)| rest.split_once("\n)"))
        .map(|(block, _)| block)
        .ok_or_else(|| anyhow!("{}: no `declare -A PORTS=( ... )` block", path.display()))?;
    let mut ports = BTreeMap::new();
    for line in block.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (name, list) = line
            .strip_prefix('[')
            .and_then(|l| l.split_once("]=\""))
            .and_then(|(name, rest)| Some((name, rest.strip_suffix('"')?)))
            .ok_or_else(|| anyhow!("{}: unexpected line in PORTS: {line}", path.display()))?;
        let list = list
            .split_whitespace()
            .map(|p| {
                p.parse::<u16>()
                    .with_context(|| format!("{}: port {p:?} of {name}", path.display()))
            })
            .collect::<Result<Vec<_>>>()?;
        ports.insert(name.to_owned(), list);
    }
    Ok(ports)
}

/// The main port of a component of the local stack.
pub fn port_of(ports: &BTreeMap<String, Vec<u16>>, component: &str) -> Result<u16> {
    ports
        .get(component)
        .and_then(|p| p.first().copied())
        .ok_or_else(|| anyhow!("compose/local/stack declares no port for {component}"))
}

/// The port of a `host:port` address or URL, `${env:VAR:-host:port}` included.
pub fn port_in(address: &str) -> Result<u16> {
    let address = address.trim_end_matches('}').trim_end_matches('/');
    let port = address.rsplit(':').next().unwrap_or_default();
    let port = port.split('/').next().unwrap_or_default();
    port.parse()
        .with_context(|| format!("no port in {address:?}"))
}

/// The string at `path` in a YAML document.
pub fn yaml_str<'a>(value: &'a serde_yaml::Value, path: &[&str]) -> Result<&'a str> {
    let mut v = value;
    for key in path {
        v = v
            .get(*key)
            .ok_or_else(|| anyhow!("no {}", path.join(".")))?;
    }
    v.as_str()
        .ok_or_else(|| anyhow!("{} is not a string", path.join(".")))
}
