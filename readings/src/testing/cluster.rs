//! Private clusters: a PostgreSQL server of a test's own, started and stopped with
//! `scripts/lib.sh`, for tests that take the database away or need settings of their own.

use std::time::Duration;

use super::suffix;
use crate::config::DbConfig;

/// A PostgreSQL cluster of a test's own, started and stopped with the project's scripts
/// (`scripts/lib.sh`), for tests that take the database away or need server settings of
/// their own (TLS, password authentication).
pub struct PrivateCluster {
    pub dir: std::path::PathBuf,
    pub port: u16,
    /// Server settings given with [`PrivateCluster::set`], applied on every start.
    settings: Vec<(String, String)>,
    /// `PG_TARGET` for this cluster; by default the tests' own (see
    /// [`expected_kind`](super::expected_kind)).
    target: Option<&'static str>,
}

impl PrivateCluster {
    pub fn start() -> PrivateCluster {
        let cluster = PrivateCluster::prepare();
        cluster.launch();
        cluster
    }

    /// A cluster with its directory and port chosen but not started: add
    /// [`file`](PrivateCluster::file)s and [`set`](PrivateCluster::set)tings, then
    /// [`launch`](PrivateCluster::launch) it.
    pub fn prepare() -> PrivateCluster {
        let dir = repo_root()
            .join(".local/test/clusters")
            .join(suffix())
            .join("pgdata");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        PrivateCluster {
            dir,
            port,
            settings: Vec::new(),
            target: None,
        }
    }

    /// Starts this cluster without TimescaleDB preloaded, whatever the tests' target: the
    /// state of a server right after TimescaleDB's package is installed.
    pub fn without_timescaledb(mut self) -> PrivateCluster {
        self.target = Some("postgres");
        self
    }

    /// Writes `contents` to file `name` beside the data directory, readable by the server
    /// alone (mode 0600, owned by the `postgres` OS user when the tests run as root, as the
    /// server then does), and returns its path: for `ssl_key_file`, `hba_file` and the like.
    pub fn file(&self, name: &str, contents: &[u8]) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let home = self.dir.parent().expect("cluster directory");
        std::fs::create_dir_all(home).expect("create the cluster directory");
        let path = home.join(name);
        std::fs::write(&path, contents).expect("write a cluster file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .expect("chmod a cluster file");
        self.lib(&format!(
            "if is_root; then chown postgres:postgres '{}'; fi",
            path.display()
        ));
        path
    }

    /// A server setting, passed as `-c name='value'` whenever the server starts.
    pub fn set(&mut self, name: &str, value: impl std::fmt::Display) {
        let value = value.to_string();
        assert!(
            !value.contains('\''),
            "a setting value with a quote: {value}"
        );
        self.settings.push((name.to_owned(), value));
    }

    /// Starts the server (initialising the cluster on the first start).
    pub fn launch(&self) {
        self.lib(&format!(
            "start_postgres '{}' {} test",
            self.dir.display(),
            self.port
        ));
    }

    /// Stops the server (`pg_ctl stop -m fast`), keeping the data.
    pub fn stop(&self) {
        self.lib(&format!("stop_postgres '{}'", self.dir.display()));
    }

    /// Starts the stopped server again on the same port.
    pub fn restart(&self) {
        self.launch();
    }

    pub fn db_config(&self) -> DbConfig {
        DbConfig {
            url: format!("postgres://postgres@127.0.0.1:{}/sensors", self.port),
            pool_size: 4,
            connect_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(30),
            ..Default::default()
        }
    }

    fn lib(&self, command: &str) {
        let options: Vec<String> = self
            .settings
            .iter()
            .map(|(name, value)| format!("-c {name}='{value}'"))
            .collect();
        let mut bash = std::process::Command::new("bash");
        bash.arg("-c")
            .arg(format!(
                "set -euo pipefail; source '{}/scripts/lib.sh'; ensure_pg_bin; {command}",
                repo_root().display()
            ))
            .env("PG_EXTRA_OPTS", options.join(" "));
        if let Some(target) = self.target {
            bash.env("PG_TARGET", target);
        }
        let status = bash.status().expect("run bash");
        assert!(status.success(), "{command} failed");
    }
}

fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        self.stop();
        if let Some(d) = self.dir.parent() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
