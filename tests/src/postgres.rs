//! A private PostgreSQL cluster for one test (initdb into a temporary directory, its own port), so a test can
//! stop and start the database under a running server without touching the shared one other tests use.

use std::path::PathBuf;
use std::process::Command;

/// Where Debian installs the server binaries.
fn pg_bin(name: &str) -> PathBuf {
    let root = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|dirs| dirs.filter_map(Result::ok).map(|d| d.path()).max())
        .expect("PostgreSQL server binaries under /usr/lib/postgresql");
    root.join("bin").join(name)
}

/// Runs a PostgreSQL tool as the `postgres` user when we are root (the server refuses to run as root).
fn run_as_postgres(program: PathBuf, args: &[&str]) {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let status = if is_root {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(&program)
            .args(args)
            .status()
    } else {
        Command::new(&program).args(args).status()
    }
    .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    assert!(
        status.success(),
        "{} {args:?} failed: {status}",
        program.display()
    );
}

/// The TLS files of a TLS-only cluster, as PEM.
pub struct ServerTls<'a> {
    pub cert_pem: &'a str,
    pub key_pem: &'a str,
    /// The CA client certificates must chain to.
    pub client_ca_pem: &'a str,
}

pub struct PrivatePostgres {
    dir: PathBuf,
    pub port: u16,
}

impl PrivatePostgres {
    /// initdb (trust auth) and start on a free port.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// As [`Self::start`], but TLS only, as managed PostgreSQL runs (RDS sets `rds.force_ssl=1`): `ssl = on` with
    /// this certificate and key (PEM), plaintext connections rejected, and client certificates signed by
    /// `client_ca` accepted for the role `certuser` (`cert` authentication).
    pub fn start_tls(tls: &ServerTls<'_>) -> Self {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<&ServerTls<'_>>) -> Self {
        let dir =
            std::env::temp_dir().join(format!("tablecrypt-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let _ = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status();
        let port = crate::process::free_addr().port();
        let data = dir.join("data");
        run_as_postgres(
            pg_bin("initdb"),
            &[
                "-D",
                data.to_str().unwrap_or_default(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        if let Some(tls) = tls {
            for (name, pem) in [
                ("server.crt", tls.cert_pem),
                ("server.key", tls.key_pem),
                ("client-ca.crt", tls.client_ca_pem),
            ] {
                let path = data.join(name);
                std::fs::write(&path, pem).expect("write a TLS file");
                std::fs::set_permissions(
                    &path,
                    std::os::unix::fs::PermissionsExt::from_mode(0o600),
                )
                .expect("chmod 600");
                let _ = Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(&path)
                    .status();
            }
            let conf = data.join("postgresql.conf");
            let mut settings = std::fs::read_to_string(&conf).expect("postgresql.conf");
            settings.push_str(
                "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
                 ssl_ca_file = 'client-ca.crt'\n",
            );
            std::fs::write(&conf, settings).expect("write postgresql.conf");
            // First match wins: plaintext refused, certuser by certificate only, everyone else trusted over TLS.
            let hba = data.join("pg_hba.conf");
            let rules = "hostnossl all all all reject\n\
                         hostssl all certuser 127.0.0.1/32 cert\n\
                         hostssl all all 127.0.0.1/32 trust\n\
                         local all all trust\n";
            std::fs::write(&hba, rules).expect("write pg_hba.conf");
        }
        let cluster = Self { dir, port };
        cluster.start_server();
        cluster
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data(&self) -> String {
        self.dir.join("data").to_string_lossy().into_owned()
    }

    /// Starts (or restarts) the server and waits until it accepts connections.
    pub fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log").to_string_lossy().into_owned();
        run_as_postgres(
            pg_bin("pg_ctl"),
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
    }

    /// Stops it the way a failover or a restart does: fast shutdown, every connection cut.
    pub fn stop_server(&self) {
        run_as_postgres(
            pg_bin("pg_ctl"),
            &["-D", &self.data(), "-m", "fast", "-w", "stop"],
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(pg_bin("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
