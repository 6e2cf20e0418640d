//! Which hosts are this machine: the one place plain `http://` is allowed for URLs tablecrypt fetches or posts to
//! (webhooks, a JWKS), since nothing on the network can read or change traffic that never leaves the host.

/// Whether `host` (a URL's host as parsed: `localhost`, `127.0.0.1`, `[::1]` or `::1`) is a loopback address.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

    #[test]
    fn only_this_machine_is_loopback() {
        for host in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.9.9.9",
            "[::1]",
            "::1",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "10.0.0.1",
            "[::2]",
            "",
            "idp.example",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
