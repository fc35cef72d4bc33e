//! etcd clusters for the tests of a group of gateways (Debian's `etcd-server` and
//! `etcd-client`), set up as docs/OPERATIONS.md "Scaling out" tells: clients over TLS with
//! a certificate of the deployment's CA (`gateway::fleet::pki`, what `broker-cert` runs),
//! authentication on, and the gateways' user allowed only its group's prefix.

use crate::servers::{Server, addr};
use crate::tls::TestPki;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The gateways' etcd user and its password file's content.
pub const USER: (&str, &str) = ("vigie", "etcd-test-password");
const ROOT: &str = "root:etcd-root-test-password";

/// A running cluster.
#[derive(Debug)]
pub struct Cluster {
    /// Its members.
    pub members: Vec<Server>,
    /// The CA that signed the members' certificate.
    pub pki: TestPki,
    /// Where the gateways' password file is.
    pub password_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Each member's client URL.
    pub fn urls(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("https://{}", m.addr))
            .collect()
    }

    /// The `[group]` section of a gateway of the group `prefix`.
    pub fn group_toml(&self, prefix: &str) -> String {
        let urls: Vec<String> = self.urls().iter().map(|u| format!("{u:?}")).collect();
        format!(
            "[group]\netcd = [{}]\nprefix = \"{prefix}\"\nca_file = \"{}\"\nusername = \"{}\"\npassword_file = \"{}\"\nmax_txn_ops = 1024\n",
            urls.join(", "),
            self.pki.ca.display(),
            USER.0,
            self.password_file.display()
        )
    }

    /// Sets the gateways' role's permission on `prefix` (`pair/`): `Some("read")`,
    /// `Some("readwrite")`, or `None` (taken away).
    pub fn permit(&self, prefix: &str, permission: Option<&str>) {
        let revoke = [
            "role",
            "revoke-permission",
            "vigie-gateway",
            "--prefix=true",
            prefix,
        ];
        let out = self.ctl(&revoke);
        assert!(out.status.success(), "etcdctl {revoke:?}: {out:?}");
        if let Some(p) = permission {
            let grant = [
                "role",
                "grant-permission",
                "vigie-gateway",
                "--prefix=true",
                p,
                prefix,
            ];
            let out = self.ctl(&grant);
            assert!(out.status.success(), "etcdctl {grant:?}: {out:?}");
        }
    }

    /// Puts `key` (as root), or deletes it with no `value`: a gateway's key forged.
    pub fn set(&self, key: &str, value: Option<&str>) {
        let args: Vec<&str> = match value {
            Some(v) => vec!["put", key, v],
            None => vec!["del", key],
        };
        let out = self.ctl(&args);
        assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
    }

    /// `etcdctl` as root on the running members.
    fn ctl(&self, args: &[&str]) -> std::process::Output {
        let live: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.pid().is_some())
            .map(|m| format!("https://{}", m.addr))
            .collect();
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", live.join(",")))
            .arg(format!("--cacert={}", self.pki.ca.display()))
            .arg(format!("--user={ROOT}"))
            .arg("--command-timeout=3s")
            .args(args)
            .output()
            .expect("etcdctl (Debian's etcd-client)")
    }

    /// The index of the cluster's leader, among the running members.
    pub fn leader(&self) -> Option<usize> {
        let out = self.ctl(&["endpoint", "status", "-w", "json"]);
        let all: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let entry = all.as_array()?.iter().find(|e| {
            let s = &e["Status"];
            s["leader"].as_u64().is_some() && s["leader"] == s["header"]["member_id"]
        })?;
        let url = entry["Endpoint"].as_str()?;
        self.members
            .iter()
            .position(|m| url.ends_with(&m.addr.to_string()))
    }

    /// Whether every running member reports itself healthy.
    fn healthy(&self) -> bool {
        self.ctl(&["endpoint", "health"]).status.success()
    }
}

/// A cluster of `members` on 127.0.0.1, each with its own data directory, returned once a
/// leader is elected and authentication is on. Raft timings are the tests' (100 ms
/// heartbeats, 1 s elections) so a killed leader is replaced within seconds, and its
/// authentication tokens live 2 s (etcd's default is 5 minutes) so that the gateways'
/// renewal of an expired token runs in every test.
pub fn cluster(members: usize) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::tls::pki(dir.path());
    let ports: Vec<(SocketAddr, SocketAddr)> = (0..members).map(|_| (addr(), addr())).collect();
    let initial = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("e{i}=http://{peer}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut members: Vec<Server> = ports
        .iter()
        .enumerate()
        .map(|(i, &(client, peer))| member(i, client, peer, &initial, &pki))
        .collect();
    for m in &mut members {
        m.start();
    }
    let password_file = dir.path().join("etcd-password");
    std::fs::write(&password_file, format!("{}\n", USER.1)).unwrap();
    let cluster = Cluster {
        members,
        pki,
        password_file,
        _dir: dir,
    };
    let until = Instant::now() + Duration::from_secs(30);
    while cluster.leader().is_none() {
        assert!(
            Instant::now() < until,
            "no etcd leader:\n{}",
            cluster.members[0].log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    enable_auth(&cluster);
    cluster
}

/// One member: clients over TLS, peers in clear on the loopback.
fn member(i: usize, client: SocketAddr, peer: SocketAddr, initial: &str, pki: &TestPki) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let path = |p: &Path| p.display().to_string();
    let args: Vec<String> = [
        ("--name", format!("e{i}")),
        ("--data-dir", path(&data)),
        ("--listen-client-urls", format!("https://{client}")),
        ("--advertise-client-urls", format!("https://{client}")),
        ("--cert-file", path(&pki.cert)),
        ("--key-file", path(&pki.key)),
        ("--listen-peer-urls", format!("http://{peer}")),
        ("--initial-advertise-peer-urls", format!("http://{peer}")),
        ("--initial-cluster", initial.to_string()),
        ("--initial-cluster-state", "new".into()),
        (
            "--initial-cluster-token",
            // The same for every member: the cluster's identity.
            initial.to_string(),
        ),
        // Tokens expire within every test: the gateways' renewal runs.
        ("--auth-token-ttl", "2".into()),
        ("--heartbeat-interval", "100".into()),
        // As docs/OPERATIONS.md "Scaling out" runs it, with group.max_txn_ops = 1024.
        ("--max-txn-ops", "1024".into()),
        ("--auto-compaction-mode", "periodic".into()),
        ("--auto-compaction-retention", "1h".into()),
        ("--election-timeout", "1000".into()),
        ("--logger", "zap".into()),
        ("--log-level", "warn".into()),
    ]
    .into_iter()
    .flat_map(|(k, v)| [k.to_string(), v])
    .collect();
    Server::new("etcd", "etcd", &args, dir, client)
}

/// Root and the gateways' user, the gateways' role on the `trio/`, `pair/` and `bench/`
/// prefixes only, then authentication on (before it, `etcdctl` ignores `--user`).
fn enable_auth(cluster: &Cluster) {
    let user = format!("{}:{}", USER.0, USER.1);
    let grant = |prefix| {
        vec![
            "role",
            "grant-permission",
            "vigie-gateway",
            "--prefix=true",
            "readwrite",
            prefix,
        ]
    };
    let mut steps: Vec<Vec<&str>> = vec![
        vec!["user", "add", ROOT, "--interactive=false"],
        vec!["user", "grant-role", "root", "root"],
        vec!["role", "add", "vigie-gateway"],
    ];
    steps.extend(["trio/", "pair/", "bench/"].map(grant));
    steps.extend([
        vec!["user", "add", &user, "--interactive=false"],
        vec!["user", "grant-role", USER.0, "vigie-gateway"],
        vec!["auth", "enable"],
    ]);
    for step in steps {
        let out = cluster.ctl(&step);
        assert!(
            out.status.success(),
            "etcdctl {step:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(cluster.healthy(), "etcd healthy with authentication on");
}
