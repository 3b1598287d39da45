//! Configuration files for Debian's trojan (1.16), server and client, as the
//! interoperability tests and the bench write them. Plain functions of the
//! standard library only, so that both can include this file.

use std::net::SocketAddr;

/// A trojan server on 127.0.0.1:`port` that takes `password` with the
/// certificate and key at the paths `cert` and `key`, and hands anything else
/// to 127.0.0.1:`fallback_port`.
pub fn server_config(port: u16, fallback_port: u16, password: &str, cert: &str, key: &str) -> String {
    format!(
        r#"{{
    "run_type": "server",
    "local_addr": "127.0.0.1",
    "local_port": {port},
    "remote_addr": "127.0.0.1",
    "remote_port": {fallback_port},
    "password": ["{password}"],
    "log_level": 1,
    "ssl": {{
        "cert": "{cert}",
        "key": "{key}",
        "key_password": "",
        "prefer_server_cipher": true,
        "alpn": ["http/1.1"],
        "reuse_session": true,
        "session_ticket": false,
        "session_timeout": 600,
        "plain_http_response": "",
        "curves": "",
        "dhparam": ""
    }},
    "tcp": {{ "prefer_ipv4": false, "no_delay": true, "keep_alive": true, "reuse_port": false, "fast_open": false, "fast_open_qlen": 20 }},
    "mysql": {{ "enabled": false }}
}}"#
    )
}

/// A trojan client on 127.0.0.1:`port` to the server at `server` with
/// `password`, checking the server's certificate against the CA at the path
/// `ca` under the name localhost.
pub fn client_config(port: u16, server: SocketAddr, password: &str, ca: &str) -> String {
    format!(
        r#"{{
    "run_type": "client",
    "local_addr": "127.0.0.1",
    "local_port": {port},
    "remote_addr": "{ip}",
    "remote_port": {server_port},
    "password": ["{password}"],
    "log_level": 1,
    "ssl": {{
        "verify": true,
        "verify_hostname": true,
        "cert": "{ca}",
        "sni": "localhost",
        "alpn": ["http/1.1"],
        "reuse_session": true,
        "session_ticket": false,
        "curves": ""
    }},
    "tcp": {{ "no_delay": true, "keep_alive": true, "reuse_port": false, "fast_open": false, "fast_open_qlen": 20 }}
}}"#,
        ip = server.ip(),
        server_port = server.port(),
    )
}
